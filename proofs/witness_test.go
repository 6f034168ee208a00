package proofs_test

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/chipledger/chipledger/internal/witness/witnesstest"
	"github.com/chipledger/chipledger/proofs"
)

// testWitness is a cosignature/v1 witness key made for one test.
type testWitness struct {
	signer note.Signer
	vkey   string // the 0x01 key, as a policy may name it
}

func newTestWitness(t testing.TB, name string) testWitness {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	return testWitness{signer: s, vkey: vkey}
}

// policyText is a tlog-policy with the witnesses in one group of threshold k.
func policyText(t testing.TB, k string, ws ...testWitness) []byte {
	t.Helper()
	var b strings.Builder
	var names []string
	for i, w := range ws {
		cv, err := fnote.VKeyToCosignatureV1(w.vkey)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("w%d", i)
		names = append(names, name)
		fmt.Fprintf(&b, "witness %s %s https://%s.example/\n", name, cv, name)
	}
	fmt.Fprintf(&b, "group main %s %s\nquorum main\n", k, strings.Join(names, " "))
	return []byte(b.String())
}

func TestVerifyWitnessedCheckpointCountsTheQuorum(t *testing.T) {
	l := newTestLog(t, "example.com/witnessed")
	ws := []testWitness{newTestWitness(t, "w0.example"), newTestWitness(t, "w1.example"), newTestWitness(t, "w2.example")}
	p, err := proofs.ParseWitnessPolicy(policyText(t, "2", ws...))
	if err != nil {
		t.Fatal(err)
	}
	body := proofs.Checkpoint{Origin: "example.com/witnessed", Size: 5, Hash: [32]byte{1}}.Marshal()
	outsider := newTestWitness(t, "outsider.example")
	for _, tc := range []struct {
		name    string
		signers []note.Signer
		want    error
	}{
		{"log only", []note.Signer{l.signer}, proofs.ErrNotWitnessed},
		{"one witness", []note.Signer{l.signer, ws[0].signer}, proofs.ErrNotWitnessed},
		{"one witness and an outsider", []note.Signer{l.signer, ws[2].signer, outsider.signer}, proofs.ErrNotWitnessed},
		{"two witnesses", []note.Signer{l.signer, ws[0].signer, ws[2].signer}, nil},
		{"all three", []note.Signer{l.signer, ws[0].signer, ws[1].signer, ws[2].signer}, nil},
		{"witnesses without the log", []note.Signer{ws[0].signer, ws[1].signer}, proofs.ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			signed := sign(t, string(body), tc.signers...)
			c, err := l.verifier.VerifyWitnessedCheckpoint(signed, p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("VerifyWitnessedCheckpoint: %v, want %v", err, tc.want)
			}
			if err == nil && c.Size != 5 {
				t.Fatalf("size %d, want 5", c.Size)
			}
			// The independent reading: x/mod's note.Open with the
			// cosignature verifiers counts the same witnesses.
			vs := []note.Verifier{l.verifier.Verifier()}
			for _, w := range ws {
				v, err := fnote.NewVerifierForCosignatureV1(w.vkey)
				if err != nil {
					t.Fatal(err)
				}
				vs = append(vs, v)
			}
			n, err := note.Open(signed, note.VerifierList(vs...))
			if tc.want == proofs.ErrBadSignature {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := len(n.Sigs) - 1; (got >= 2) != (tc.want == nil) {
				t.Fatalf("note.Open verified %d cosignatures, VerifyWitnessedCheckpoint said %v", got, err)
			}
		})
	}
}

func TestVerifyWitnessedCheckpointRejectsABadCosignature(t *testing.T) {
	l := newTestLog(t, "example.com/witnessed")
	ws := []testWitness{newTestWitness(t, "w0.example"), newTestWitness(t, "w1.example")}
	p, err := proofs.ParseWitnessPolicy(policyText(t, "any", ws...))
	if err != nil {
		t.Fatal(err)
	}
	body := proofs.Checkpoint{Origin: "example.com/witnessed", Size: 9, Hash: [32]byte{2}}.Marshal()
	good := sign(t, string(body), l.signer, ws[0].signer, ws[1].signer)
	if _, err := l.verifier.VerifyWitnessedCheckpoint(good, p); err != nil {
		t.Fatal(err)
	}
	// A cosignature over another checkpoint, pasted under this one.
	other := sign(t, string(proofs.Checkpoint{Origin: "example.com/witnessed", Size: 10, Hash: [32]byte{3}}.Marshal()), ws[1].signer)
	_, otherSigs := splitNote(t, other)
	text, sigs := splitNote(t, sign(t, string(body), l.signer, ws[0].signer))
	forged := append(append(text, sigs...), otherSigs...)
	if _, err := l.verifier.VerifyWitnessedCheckpoint(forged, p); !errors.Is(err, proofs.ErrBadSignature) {
		t.Fatalf("a pasted cosignature: %v, want ErrBadSignature", err)
	}
}

func TestParseWitnessPolicy(t *testing.T) {
	w := newTestWitness(t, "w0.example")
	cv, err := fnote.VKeyToCosignatureV1(w.vkey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, text string
		ok         bool
	}{
		{"single witness as quorum", "witness w0 " + cv + " https://w0.example/\nquorum w0\n", true},
		{"the 0x01 key", "witness w0 " + w.vkey + " https://w0.example/\nquorum w0\n", true},
		{"log line ignored", "log " + w.vkey + "\nwitness w0 " + cv + " https://w0.example/\nquorum w0\n", true},
		{"quorum none", "witness w0 " + cv + " https://w0.example/\nquorum none\n", false},
		{"no quorum", "witness w0 " + cv + " https://w0.example/\n", false},
		{"threshold above members", "witness w0 " + cv + " https://w0.example/\ngroup g 2 w0\nquorum g\n", false},
		{"unknown member", "witness w0 " + cv + " https://w0.example/\ngroup g 1 w9\nquorum g\n", false},
		{"bad key", "witness w0 nonsense https://w0.example/\nquorum w0\n", false},
		{"unknown keyword", "witnesses w0\nquorum w0\n", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := proofs.ParseWitnessPolicy([]byte(tc.text))
			if (err == nil) != tc.ok {
				t.Fatalf("ParseWitnessPolicy: %v, want ok=%v", err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, proofs.ErrBadPolicy) {
					t.Fatalf("error %v does not wrap ErrBadPolicy", err)
				}
				return
			}
			eps := p.Endpoints()
			v, ok := eps["https://w0.example/add-checkpoint"]
			if len(eps) != 1 || !ok || v.Name() != "w0.example" {
				t.Fatalf("endpoints %v, want w0.example at https://w0.example/add-checkpoint", eps)
			}
			if vs := p.Verifiers(); len(vs) != 1 || vs[0].KeyHash() != v.KeyHash() {
				t.Fatalf("verifiers %v", vs)
			}
		})
	}
}

func TestVerifyWitnessedCheckpointBetweenCountsOnlyRecentCosignatures(t *testing.T) {
	l := newTestLog(t, "example.com/witnessed")
	body := string(proofs.Checkpoint{Origin: "example.com/witnessed", Size: 7, Hash: [32]byte{4}}.Marshal())
	signed := sign(t, body, l.signer)
	now := time.Now().Truncate(time.Second)
	old, future := now.Add(-2*time.Hour), now.Add(time.Hour)
	var policy strings.Builder
	lines := map[string]map[time.Time]string{}
	for i := range 3 {
		name := fmt.Sprintf("w%d.example", i)
		lines[name] = map[time.Time]string{}
		for _, at := range []time.Time{old, now, future} {
			line, vkey := witnesstest.CosignAt(sha256.Sum256([]byte(name)), name, body, at)
			lines[name][at] = line
			if at == now {
				fmt.Fprintf(&policy, "witness w%d %s https://w%d.example/\n", i, vkey, i)
			}
		}
	}
	policy.WriteString("group main 2 w0 w1 w2\nquorum main\n")
	p, err := proofs.ParseWitnessPolicy([]byte(policy.String()))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		cosigs    []string
		notBefore time.Time
		want      error
	}{
		{"two recent", []string{lines["w0.example"][now], lines["w2.example"][now]}, now.Add(-time.Hour), nil},
		{"one recent, two old", []string{lines["w0.example"][old], lines["w1.example"][old], lines["w2.example"][now]}, now.Add(-time.Hour), proofs.ErrNotWitnessed},
		{"two old, old enough", []string{lines["w0.example"][old], lines["w1.example"][old]}, now.Add(-3 * time.Hour), nil},
		{"all recent, asked for the future", []string{lines["w0.example"][now], lines["w1.example"][now]}, now.Add(2 * time.Minute), proofs.ErrNotWitnessed},
		{"one from a clock running ahead", []string{lines["w0.example"][now], lines["w1.example"][future]}, now.Add(-time.Hour), proofs.ErrNotWitnessed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			note := slices.Clone(signed)
			for _, c := range tc.cosigs {
				note = append(note, c...)
			}
			// Every line is a valid cosignature whatever its age.
			if _, err := l.verifier.VerifyWitnessedCheckpoint(note, p); err != nil && len(tc.cosigs) >= 2 {
				t.Fatalf("VerifyWitnessedCheckpoint: %v", err)
			}
			c, err := l.verifier.VerifyWitnessedCheckpointBetween(note, p, tc.notBefore, now.Add(time.Minute))
			if !errors.Is(err, tc.want) {
				t.Fatalf("VerifyWitnessedCheckpointBetween: %v, want %v", err, tc.want)
			}
			if err == nil && c.Size != 7 {
				t.Fatalf("size %d", c.Size)
			}
		})
	}
}

// TestParseWitnessPolicyRefusesWhatTheSpecForbids: c2sp.org/tlog-policy
// requires a group threshold k with 1 <= k <= n, each name listed at most
// once in a group, and no two witnesses with the same public key. Each
// policy below breaks one rule in a way that lets fewer cosignatures than
// it seems to ask for (here one, or none) meet its quorum, so it is
// refused rather than read the way transparency-dev/formats reads it.
func TestParseWitnessPolicyRefusesWhatTheSpecForbids(t *testing.T) {
	l := newTestLog(t, "example.com/witnessed")
	w0, w1 := newTestWitness(t, "w0.example"), newTestWitness(t, "w1.example")
	cv0, err := fnote.VKeyToCosignatureV1(w0.vkey)
	if err != nil {
		t.Fatal(err)
	}
	cv1, err := fnote.VKeyToCosignatureV1(w1.vkey)
	if err != nil {
		t.Fatal(err)
	}
	body := string(proofs.Checkpoint{Origin: "example.com/witnessed", Size: 5, Hash: [32]byte{1}}.Marshal())
	logOnly := sign(t, body, l.signer)
	byW0 := sign(t, body, l.signer, w0.signer)
	for _, tc := range []struct {
		name, text string
		// enough is a checkpoint the policy, read as formats reads it,
		// takes as witnessed although the policy seems to want more.
		enough []byte
	}{
		{"threshold 0 in a nested group", "witness w0 " + cv0 + " https://w0.example/\nwitness w1 " + cv1 + " https://w1.example/\ngroup inner 0 w0 w1\ngroup main 1 inner\nquorum main\n", logOnly},
		{"a group without members", "witness w0 " + cv0 + " https://w0.example/\ngroup empty all\ngroup main any empty w0\nquorum main\n", logOnly},
		{"a member listed twice", "witness w0 " + cv0 + " https://w0.example/\nwitness w1 " + cv1 + " https://w1.example/\ngroup main 2 w0 w0 w1\nquorum main\n", byW0},
		{"one key as 0x01 and 0x04", "witness w0 " + cv0 + " https://w0.example/\nwitness w1 " + w0.vkey + " https://w1.example/\ngroup main all w0 w1\nquorum main\n", byW0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := proofs.ParseWitnessPolicy([]byte(tc.text))
			if err == nil {
				_, verr := l.verifier.VerifyWitnessedCheckpoint(tc.enough, p)
				t.Fatalf("ParseWitnessPolicy accepted it (and VerifyWitnessedCheckpoint with it says %v to a checkpoint with fewer cosignatures than it names)", verr)
			}
			if !errors.Is(err, proofs.ErrBadPolicy) {
				t.Fatalf("error %v does not wrap ErrBadPolicy", err)
			}
		})
	}
}

// FuzzParseWitnessPolicy: ParseWitnessPolicy never panics, its errors wrap
// ErrBadPolicy, and a policy it accepts names at least one witness and is
// never satisfied by a note no witness signed.
func FuzzParseWitnessPolicy(f *testing.F) {
	ws := []testWitness{newTestWitness(f, "w0"), newTestWitness(f, "w1"), newTestWitness(f, "w2")}
	f.Add(policyText(f, "2", ws...))
	f.Add(policyText(f, "any", ws...))
	f.Add(policyText(f, "all", ws[:1]...))
	nested := string(policyText(f, "1", ws...))
	nested = strings.Replace(nested, "quorum main\n", "group top all main w2\nquorum top\n", 1)
	f.Add([]byte(nested))
	f.Add([]byte("log x\nquorum none\n"))
	skey, _, err := note.GenerateKey(rand.Reader, "example.com/log")
	if err != nil {
		f.Fatal(err)
	}
	logSigner, err := note.NewSigner(skey)
	if err != nil {
		f.Fatal(err)
	}
	unwitnessed, err := note.Sign(&note.Note{Text: "example.com/log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}, logSigner)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		p, err := proofs.ParseWitnessPolicy(text)
		if err != nil {
			if !errors.Is(err, proofs.ErrBadPolicy) {
				t.Fatalf("error %v does not wrap ErrBadPolicy", err)
			}
			return
		}
		if len(p.Verifiers()) == 0 {
			t.Fatalf("accepted a policy naming no witness:\n%s", text)
		}
		if p.Satisfied(unwitnessed) {
			t.Fatalf("a note no witness signed satisfies the policy:\n%s", text)
		}
	})
}
