package witness

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/chipledger/chipledger/proofs"
)

// peterCosigKey is the cosignature/v1 (0x04) form of the
// c2sp.org/signed-note example key "PeterNeumann".
const peterCosigKey = "PeterNeumann+18b9780b+BBpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"

func TestNewRejectsBadConfigs(t *testing.T) {
	l := newTestLog(t, "example.com/log", 1)
	skey, _ := testWitnessKey(t)
	signer, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no signer", Config{Logs: []string{l.vkey}, StateDir: t.TempDir()}},
		{"no state directory", Config{Signer: signer, Logs: []string{l.vkey}}},
		{"no logs", Config{Signer: signer, StateDir: t.TempDir()}},
		{"bad log key", Config{Signer: signer, Logs: []string{"example.com/log+00000000+AAAA"}, StateDir: t.TempDir()}},
		{"cosignature key as log key", Config{Signer: signer, Logs: []string{peterCosigKey}, StateDir: t.TempDir()}},
		{"log key twice", Config{Signer: signer, Logs: []string{l.vkey, l.vkey}, StateDir: t.TempDir()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if w, err := New(tt.cfg); err == nil {
				t.Fatalf("New = %v, want an error", w)
			}
		})
	}
}

// TestAddCheckpointStatuses checks each row of the tlog-witness status
// table. Every case starts from a fresh witness that has cosigned the test
// log up to size 4 (or nothing, when from is 0), and the state must not
// move unless the answer is 200.
func TestAddCheckpointStatuses(t *testing.T) {
	const origin = "example.com/log"
	l := newTestLog(t, origin, 16)
	other := newTestLog(t, "example.com/other", 16)
	// A log that shares only the first 2 leaves with l.
	fork := newForkedLog(t, origin, 2, 16, "fork")
	// A key named like the log, which the witness does not trust.
	impostorKey, _ := testKey(t, origin, "impostor key")
	impostor := &testLog{origin: origin, signer: mustSigner(t, impostorKey)}

	withProof := func(old, size uint64, proof [][32]byte) func(*testing.T) []byte {
		return func(t *testing.T) []byte {
			return mustMarshal(t, Request{OldSize: old, Proof: proof, Checkpoint: l.checkpoint(t, size)})
		}
	}
	flipped := func(old, size uint64, i int) func(*testing.T) []byte {
		return func(t *testing.T) []byte {
			p := l.proof(t, old, size)
			if i < 0 {
				i += len(p)
			}
			p[i][0] ^= 1
			return mustMarshal(t, Request{OldSize: old, Proof: p, Checkpoint: l.checkpoint(t, size)})
		}
	}
	checkpointBody := func(old uint64, cp func(*testing.T) []byte) func(*testing.T) []byte {
		return func(t *testing.T) []byte { return mustMarshal(t, Request{OldSize: old, Checkpoint: cp(t)}) }
	}
	raw := func(s string) func(*testing.T) []byte { return func(*testing.T) []byte { return []byte(s) } }

	tests := []struct {
		name     string
		from     uint64 // size cosigned before the request; 0 for none
		method   string // POST if empty
		body     func(*testing.T) []byte
		code     int
		sizeBody string // for a 409 of type text/x.tlog.size
		newSize  uint64 // state after a 200
	}{
		{name: "first checkpoint", body: func(t *testing.T) []byte { return l.request(t, 0, 4) }, code: 200, newSize: 4},
		{name: "first checkpoint of the empty tree", body: func(t *testing.T) []byte { return l.request(t, 0, 0) }, code: 200, newSize: 0},
		{name: "growth", from: 4, body: func(t *testing.T) []byte { return l.request(t, 4, 11) }, code: 200, newSize: 11},
		{name: "same checkpoint again", from: 4, body: func(t *testing.T) []byte { return l.request(t, 4, 4) }, code: 200, newSize: 4},
		{name: "unknown origin", from: 4, body: func(t *testing.T) []byte { return other.request(t, 0, 4) }, code: 404},
		{name: "signed by an untrusted key of the log's name", from: 4, body: func(t *testing.T) []byte {
			return mustMarshal(t, Request{OldSize: 4, Proof: l.proof(t, 4, 8), Checkpoint: impostor.sign(t, string(proofs.Checkpoint{Origin: origin, Size: 8, Hash: l.root(8)}.Marshal()))})
		}, code: 403},
		{name: "log signature that does not verify", from: 4, body: checkpointBody(4, func(t *testing.T) []byte {
			return bytes.Replace(l.checkpoint(t, 4), []byte("\n4\n"), []byte("\n5\n"), 1)
		}), code: 403},
		{name: "only unknown signatures", from: 4, body: checkpointBody(4, func(t *testing.T) []byte {
			return []byte(string(proofs.Checkpoint{Origin: origin, Size: 4, Hash: l.root(4)}.Marshal()) + "\n— someone.else AAAAAAAA\n")
		}), code: 403},
		{name: "no signature block", from: 4, body: checkpointBody(4, func(*testing.T) []byte {
			return proofs.Checkpoint{Origin: origin, Size: 4}.Marshal()
		}), code: 400},
		{name: "signed text that is not a checkpoint", from: 4, body: checkpointBody(4, func(t *testing.T) []byte {
			return l.sign(t, origin+"\n04\n"+hashA+"\n")
		}), code: 400},
		{name: "checkpoint with an extension line", from: 4, body: checkpointBody(4, func(t *testing.T) []byte {
			return l.sign(t, string(proofs.Checkpoint{Origin: origin, Size: 4, Hash: l.root(4)}.Marshal())+"ext\n")
		}), code: 400},
		{name: "old size beyond the checkpoint", from: 4, body: withProof(5, 4, nil), code: 400},
		{name: "old size beyond the checkpoint and the witness", from: 4, body: withProof(9, 8, nil), code: 400},
		{name: "old size 0 after cosigning", from: 4, body: func(t *testing.T) []byte { return l.request(t, 0, 8) }, code: 409, sizeBody: "4\n"},
		{name: "old size behind", from: 4, body: func(t *testing.T) []byte { return l.request(t, 2, 8) }, code: 409, sizeBody: "4\n"},
		{name: "old size ahead", from: 4, body: func(t *testing.T) []byte { return l.request(t, 6, 8) }, code: 409, sizeBody: "4\n"},
		{name: "old size ahead of a new witness", body: func(t *testing.T) []byte { return l.request(t, 3, 8) }, code: 409, sizeBody: "0\n"},
		{name: "rollback", from: 4, body: func(t *testing.T) []byte { return l.request(t, 3, 3) }, code: 409, sizeBody: "4\n"},
		{name: "same size, other root", from: 4, body: checkpointBody(4, func(t *testing.T) []byte {
			return l.sign(t, string(proofs.Checkpoint{Origin: origin, Size: 4, Hash: l.root(3)}.Marshal()))
		}), code: 409},
		{name: "empty tree with a non-empty root", body: checkpointBody(0, func(t *testing.T) []byte {
			return l.sign(t, string(proofs.Checkpoint{Origin: origin, Size: 0, Hash: l.root(3)}.Marshal()))
		}), code: 409},
		{name: "fork", from: 4, body: func(t *testing.T) []byte {
			return mustMarshal(t, Request{OldSize: 4, Proof: fork.proof(t, 4, 8), Checkpoint: fork.checkpoint(t, 8)})
		}, code: 422},
		{name: "proof of the fork's own prefix", from: 4, body: func(t *testing.T) []byte {
			return mustMarshal(t, Request{OldSize: 4, Proof: l.proof(t, 4, 8), Checkpoint: fork.checkpoint(t, 8)})
		}, code: 422},
		{name: "flipped first proof hash", from: 4, body: flipped(4, 11, 0), code: 422},
		{name: "flipped last proof hash", from: 4, body: flipped(4, 11, -1), code: 422},
		{name: "growth from a size that is not a power of 2", from: 5, body: func(t *testing.T) []byte { return l.request(t, 5, 13) }, code: 200, newSize: 13},
		{name: "flipped seed hash", from: 5, body: flipped(5, 13, 0), code: 422},
		{name: "flipped middle proof hash", from: 5, body: flipped(5, 13, 1), code: 422},
		{name: "flipped last proof hash from 5", from: 5, body: flipped(5, 13, -1), code: 422},
		{name: "missing proof", from: 4, body: withProof(4, 11, nil), code: 422},
		{name: "proof for other sizes", from: 4, body: func(t *testing.T) []byte { return withProof(4, 11, l.proof(t, 5, 11))(t) }, code: 422},
		{name: "proof from 0", body: func(t *testing.T) []byte { return withProof(0, 8, l.proof(t, 4, 8))(t) }, code: 422},
		{name: "proof between equal sizes", from: 4, body: func(t *testing.T) []byte { return withProof(4, 4, l.proof(t, 2, 4))(t) }, code: 422},
		{name: "malformed body", from: 4, body: raw("olde 4\n\nx\n"), code: 400},
		{name: "64 proof lines", from: 4, body: raw("old 4\n" + strings.Repeat(hashA+"\n", 64) + "\n" + origin + "\n"), code: 400},
		{name: "GET", from: 4, method: http.MethodGet, body: raw(""), code: 405},
		{name: "PUT", from: 4, method: http.MethodPut, body: func(t *testing.T) []byte { return l.request(t, 4, 8) }, code: 405},
		{name: "body over the limit", from: 4, body: func(t *testing.T) []byte {
			return append(l.request(t, 4, 8), bytes.Repeat([]byte("— x AAAA\n"), MaxRequestSize/9)...)
		}, code: 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newTestWitness(t, t.TempDir(), l)
			if tt.from > 0 {
				advance(t, w, l, tt.from)
			}
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			rec := serve(w.Handler(), method, tt.body(t))
			if rec.Code != tt.code {
				t.Fatalf("status %d %q, want %d", rec.Code, rec.Body, tt.code)
			}
			isSize := rec.Header().Get("Content-Type") == sizeContentType
			switch {
			case tt.sizeBody != "" && (!isSize || rec.Body.String() != tt.sizeBody):
				t.Fatalf("409 %q of type %q, want %q of type %s", rec.Body, rec.Header().Get("Content-Type"), tt.sizeBody, sizeContentType)
			case tt.sizeBody == "" && isSize:
				t.Fatalf("%d %q is of type %s", rec.Code, rec.Body, sizeContentType)
			}
			if tt.code == http.StatusOK {
				checkLatest(t, w, l, tt.newSize)
				checkCosignatures(t, l, rec.Body.Bytes(), tt.newSize)
				return
			}
			if tt.from == 0 {
				if size, _, ok := w.Latest(origin); ok {
					t.Fatalf("refused request left state at size %d", size)
				}
				return
			}
			checkLatest(t, w, l, tt.from)
		})
	}
}

// TestCosignedChain submits a chain of growing checkpoints and checks each
// answer: one signature line, by the witness's key, that verifies over the
// checkpoint with the verifiers a client would use, and stamped with the
// time it was made.
func TestCosignedChain(t *testing.T) {
	l := newTestLog(t, "example.com/log", 64)
	w := newTestWitness(t, t.TempDir(), l)
	old := uint64(0)
	for _, size := range []uint64{1, 2, 3, 4, 4, 5, 8, 13, 21, 32, 33, 64} {
		before := time.Now().Truncate(time.Second)
		rec := post(w.Handler(), l.request(t, old, size))
		after := time.Now()
		if rec.Code != http.StatusOK {
			t.Fatalf("%d -> %d: %d %s", old, size, rec.Code, rec.Body)
		}
		if got := rec.Header().Get("Content-Type"); got != "text/plain; charset=utf-8" {
			t.Errorf("Content-Type %q", got)
		}
		ts := checkCosignatures(t, l, rec.Body.Bytes(), size)
		if ts.Before(before) || ts.After(after) {
			t.Fatalf("%d -> %d: cosignature time %v, not in [%v, %v]", old, size, ts, before, after)
		}
		checkLatest(t, w, l, size)
		old = size
	}
}

// TestFormatsSignerCosigns runs the witness with a fresh cosigner of
// transparency-dev/formats, which stamps the current time itself.
func TestFormatsSignerCosigns(t *testing.T) {
	l := newTestLog(t, "example.com/log", 8)
	skey, _ := testWitnessKey(t)
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{Signer: s, Logs: []string{l.vkey}, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Truncate(time.Second)
	rec := post(w.Handler(), l.request(t, 0, 8))
	after := time.Now()
	if rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if ts := checkCosignatures(t, l, rec.Body.Bytes(), 8); ts.Before(before) || ts.After(after) {
		t.Fatalf("cosignature time %v not in [%v, %v]", ts, before, after)
	}
}

// checkCosignatures checks that lines is exactly one signature line that
// verifies as the test witness's cosignature of l's checkpoint of the given
// size, and returns its timestamp.
func checkCosignatures(t *testing.T, l *testLog, lines []byte, size uint64) time.Time {
	t.Helper()
	if bytes.Count(lines, []byte("\n")) != 1 || !bytes.HasPrefix(lines, []byte("— witness.example/w1 ")) {
		t.Fatalf("response %q is not one signature line by the witness", lines)
	}
	cp := l.checkpoint(t, size)
	n, err := note.Open(append(cp, lines...), note.VerifierList(l.verifier, cosignatureVerifier(t)))
	if err != nil {
		t.Fatalf("checkpoint and cosignature do not verify: %v", err)
	}
	if len(n.Sigs) != 2 || n.Sigs[1].Name != "witness.example/w1" || len(n.UnverifiedSigs) != 0 {
		t.Fatalf("verified signatures %+v, unverified %+v", n.Sigs, n.UnverifiedSigs)
	}
	ts, err := fnote.CoSigV1Timestamp(n.Sigs[1])
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func TestStateSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	l := newTestLog(t, "example.com/log", 16)
	first := newTestWitness(t, dir, l)
	advance(t, first, l, 3, 9)
	first.Close() // the restart

	w := newTestWitness(t, dir, l)
	checkLatest(t, w, l, 9)
	for _, tt := range []struct {
		old, size uint64
		code      int
	}{
		{0, 9, http.StatusConflict},
		{3, 9, http.StatusConflict},
		{3, 3, http.StatusConflict}, // rollback
		{9, 3, http.StatusBadRequest},
	} {
		r := Request{OldSize: tt.old, Checkpoint: l.checkpoint(t, tt.size)}
		if tt.old <= tt.size {
			r.Proof = l.proof(t, tt.old, tt.size)
		}
		if rec := post(w.Handler(), mustMarshal(t, r)); rec.Code != tt.code {
			t.Errorf("old %d size %d after restart: %d %q, want %d", tt.old, tt.size, rec.Code, rec.Body, tt.code)
		}
	}
	checkLatest(t, w, l, 9)
	advance(t, w, l, 12)
	w.Close()
	checkLatest(t, newTestWitness(t, dir, l), l, 12)
}

// TestStateIsOnDiskWhenTheAnswerArrives reads the state file right after a
// 200: it must already hold the cosigned checkpoint.
func TestStateIsOnDiskWhenTheAnswerArrives(t *testing.T) {
	dir := t.TempDir()
	l := newTestLog(t, "example.com/log", 8)
	w := newTestWitness(t, dir, l)
	for _, size := range []uint64{5, 8} {
		advance(t, w, l, size)
		got, err := os.ReadFile(stateFile(dir, l.origin))
		if err != nil {
			t.Fatal(err)
		}
		if want := (proofs.Checkpoint{Origin: l.origin, Size: size, Hash: l.root(size)}).Marshal(); !bytes.Equal(got, want) {
			t.Fatalf("state file holds %q, want %q", got, want)
		}
	}
}

func TestAFailedStoreReturnsNoCosignature(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	l := newTestLog(t, "example.com/log", 8)
	w := newTestWitness(t, dir, l)
	advance(t, w, l, 3)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	rec := post(w.Handler(), l.request(t, 3, 8))
	if rec.Code != http.StatusInternalServerError || bytes.Contains(rec.Body.Bytes(), []byte("—")) {
		t.Fatalf("store failed, answer %d %q; want 500 without a cosignature", rec.Code, rec.Body)
	}
	checkLatest(t, w, l, 3)
}

func TestNewRefusesUnreadableState(t *testing.T) {
	l := newTestLog(t, "example.com/log", 8)
	tests := []struct {
		name, content string
	}{
		{"empty", ""},
		{"garbage", "not a checkpoint"},
		{"truncated", string(proofs.Checkpoint{Origin: l.origin, Size: 5, Hash: l.root(5)}.Marshal()[:30])},
		{"other origin", string(proofs.Checkpoint{Origin: "example.com/other", Size: 5, Hash: l.root(5)}.Marshal())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(stateFile(dir, l.origin), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			skey, _ := testWitnessKey(t)
			c, _ := fnote.NewSignerForCosignatureV1(skey)
			if w, err := New(Config{Signer: c, Logs: []string{l.vkey}, StateDir: dir}); err == nil {
				t.Fatalf("New on a state file holding %q = %v, want an error", tt.content, w)
			}
		})
	}
}

func TestLatestOfUnknownAndNewLogs(t *testing.T) {
	l := newTestLog(t, "example.com/log", 8)
	w := newTestWitness(t, t.TempDir(), l)
	if _, _, ok := w.Latest(l.origin); ok {
		t.Error("Latest of a log never cosigned is ok")
	}
	if _, _, ok := w.Latest("example.com/unknown"); ok {
		t.Error("Latest of an unknown log is ok")
	}
}

func TestKeyRotationAcceptsEitherKey(t *testing.T) {
	l := newTestLog(t, "example.com/log", 8)
	rotated := newTestLog(t, "example.com/log", 8)
	nextSkey, nextVkey := testKey(t, l.origin, "next key")
	rotated.signer = mustSigner(t, nextSkey)
	skey, _ := testWitnessKey(t)
	c, _ := fnote.NewSignerForCosignatureV1(skey)
	w, err := New(Config{Signer: c, Logs: []string{l.vkey, nextVkey}, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	advance(t, w, l, 3)
	advance(t, w, rotated, 8)
	checkLatest(t, w, l, 8)
}

// TestCheckUpdateFollowsTheSpecOrder checks the decision alone, where
// several rules apply at once: the first in the spec's order wins.
func TestCheckUpdateFollowsTheSpecOrder(t *testing.T) {
	l := newTestLog(t, "example.com/log", 16)
	at := func(size uint64) tree { return tree{size: size, root: l.root(size)} }
	tests := []struct {
		name   string
		latest tree
		old    uint64
		proof  [][32]byte
		next   tree
		want   func(error) bool
	}{
		{"old beyond next and latest", at(4), 9, nil, at(8), is(errOldTooLarge)},
		{"old beyond next, bad proof", at(4), 5, l.proof(t, 1, 4), at(4), is(errOldTooLarge)},
		{"conflict before root conflict", at(4), 3, nil, tree{size: 3, root: l.root(2)}, conflict(4)},
		{"conflict before proof", at(4), 2, l.proof(t, 1, 8), at(8), conflict(4)},
		{"root conflict before proof", at(4), 4, l.proof(t, 2, 4), tree{size: 4, root: l.root(3)}, is(errRootConflict)},
		{"proof", at(4), 4, l.proof(t, 4, 7), at(8), is(errInconsistent)},
		{"good", at(4), 4, l.proof(t, 4, 8), at(8), is(nil)},
		{"good from empty", emptyTree(), 0, nil, at(8), is(nil)},
		{"same", at(4), 4, nil, at(4), is(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkUpdate(tt.latest, tt.old, tt.proof, tt.next); !tt.want(err) {
				t.Fatalf("checkUpdate = %v", err)
			}
		})
	}
}

func is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) && (target != nil || err == nil) }
}

func conflict(size uint64) func(error) bool {
	return func(err error) bool {
		c, ok := errors.AsType[*ConflictError](err)
		return ok && c.Size == size
	}
}

func mustSigner(t testing.TB, skey string) note.Signer {
	t.Helper()
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serve sends body to h's add-checkpoint endpoint with method.
func serve(h http.Handler, method string, body []byte) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, "/add-checkpoint", bytes.NewReader(body)))
	return rec
}

// TestTwoWitnessesCannotShareAStateDirectory: two witnesses checking
// requests against copies of one state would each cosign a different fork
// under one key. The second New on a state directory fails until the first
// is closed.
func TestTwoWitnessesCannotShareAStateDirectory(t *testing.T) {
	dir := t.TempDir()
	l := newTestLog(t, "example.com/log", 8)
	first := newTestWitness(t, dir, l)
	skey, _ := testWitnessKey(t)
	c, _ := fnote.NewSignerForCosignatureV1(skey)
	if w, err := New(Config{Signer: c, Logs: []string{l.vkey}, StateDir: dir}); !errors.Is(err, ErrStateDirInUse) {
		if err == nil {
			w.Close()
		}
		t.Fatalf("a second witness on the state directory: %v, want ErrStateDirInUse", err)
	}
	first.Close()
	second, err := New(Config{Signer: c, Logs: []string{l.vkey}, StateDir: dir})
	if err != nil {
		t.Fatalf("a witness on the state directory once the first closed: %v", err)
	}
	second.Close()
}
