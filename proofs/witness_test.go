package proofs_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

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
