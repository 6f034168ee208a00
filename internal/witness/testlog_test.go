package witness

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"

	"github.com/chipledger/chipledger/proofs"
)

// testKey returns an Ed25519 note key pair (type 0x01) named name whose
// seed is SHA-256(label), so that golden files stay valid.
func testKey(t testing.TB, name, label string) (skey, vkey string) {
	t.Helper()
	seed := sha256.Sum256([]byte(label))
	pub := ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.Split(vkey, "+")[1]
	skey = "PRIVATE+KEY+" + name + "+" + id + "+" + base64.StdEncoding.EncodeToString(append([]byte{0x01}, seed[:]...))
	return skey, vkey
}

// A testLog is an in-memory log: a Merkle tree whose leaf i is
// "<prefix> i", and an Ed25519 key named after the origin.
type testLog struct {
	origin   string
	vkey     string
	signer   note.Signer
	verifier note.Verifier
	tree     *testonly.Tree
}

// newTestLog returns a log of n leaves named "leaf i".
func newTestLog(t testing.TB, origin string, n int) *testLog {
	t.Helper()
	return newForkedLog(t, origin, n, n, "")
}

// newForkedLog returns a log of n leaves under origin's usual key whose
// first common leaves are those of newTestLog and whose later leaves
// differ from them by label: a fork, when label is not empty.
func newForkedLog(t testing.TB, origin string, common, n int, label string) *testLog {
	t.Helper()
	skey, vkey := testKey(t, origin, "log key "+origin)
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	tr := testonly.New(rfc6962.DefaultHasher)
	for i := range n {
		if i < common {
			tr.AppendData(fmt.Appendf(nil, "leaf %d", i))
		} else {
			tr.AppendData(fmt.Appendf(nil, "leaf %d %s", i, label))
		}
	}
	return &testLog{origin: origin, vkey: vkey, signer: s, verifier: v, tree: tr}
}

func (l *testLog) root(size uint64) [32]byte { return [32]byte(l.tree.HashAt(size)) }

// checkpoint returns the log's signed checkpoint of the given size.
func (l *testLog) checkpoint(t testing.TB, size uint64) []byte {
	t.Helper()
	return l.sign(t, string(proofs.Checkpoint{Origin: l.origin, Size: size, Hash: l.root(size)}.Marshal()))
}

// sign returns text signed by the log's key.
func (l *testLog) sign(t testing.TB, text string) []byte {
	t.Helper()
	b, err := note.Sign(&note.Note{Text: text}, l.signer)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// proof returns the consistency proof from size old to size.
func (l *testLog) proof(t testing.TB, old, size uint64) [][32]byte {
	t.Helper()
	p, err := l.tree.ConsistencyProof(old, size)
	if err != nil {
		t.Fatal(err)
	}
	var hs [][32]byte
	for _, h := range p {
		hs = append(hs, [32]byte(h))
	}
	return hs
}

// request returns the add-checkpoint body that moves a witness from old to
// size.
func (l *testLog) request(t testing.TB, old, size uint64) []byte {
	t.Helper()
	return mustMarshal(t, Request{OldSize: old, Proof: l.proof(t, old, size), Checkpoint: l.checkpoint(t, size)})
}

func mustMarshal(t testing.TB, r Request) []byte {
	t.Helper()
	b, err := MarshalRequest(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testWitnessKey returns the witness's key pair.
func testWitnessKey(t testing.TB) (skey, vkey string) {
	return testKey(t, "witness.example/w1", "witness key")
}

// newTestWitness returns a Witness following logs, with state in dir,
// cosigning with transparency-dev/formats' cosignature/v1 signer.
func newTestWitness(t testing.TB, dir string, logs ...*testLog) *Witness {
	t.Helper()
	skey, _ := testWitnessKey(t)
	c, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	var vkeys []string
	for _, l := range logs {
		vkeys = append(vkeys, l.vkey)
	}
	w, err := New(Config{Signer: c, Logs: vkeys, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() }) // a second Close, after a restart's, is harmless
	return w
}

// cosignatureVerifier returns the verifier of the test witness's
// cosignatures, built by transparency-dev/formats.
func cosignatureVerifier(t testing.TB) note.Verifier {
	t.Helper()
	_, vkey := testWitnessKey(t)
	v, err := fnote.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// post sends body to h's add-checkpoint endpoint.
func post(h http.Handler, body []byte) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/add-checkpoint", bytes.NewReader(body)))
	return rec
}

// advance moves w's state for l through sizes, failing unless each step is
// cosigned.
func advance(t testing.TB, w *Witness, l *testLog, sizes ...uint64) {
	t.Helper()
	old, _, _ := w.Latest(l.origin)
	for _, size := range sizes {
		if rec := post(w.Handler(), l.request(t, old, size)); rec.Code != http.StatusOK {
			t.Fatalf("add-checkpoint %d -> %d: %d %s", old, size, rec.Code, rec.Body)
		}
		old = size
	}
}

// checkLatest fails unless w's latest cosigned tree for l is l's tree of
// the given size.
func checkLatest(t testing.TB, w *Witness, l *testLog, size uint64) {
	t.Helper()
	got, root, ok := w.Latest(l.origin)
	if !ok || got != size || root != l.root(size) {
		t.Fatalf("Latest = %d %x %v, want %d %x true", got, root, ok, size, l.root(size))
	}
}
