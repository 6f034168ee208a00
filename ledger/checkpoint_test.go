package ledger

import (
	"bytes"
	"strings"
	"testing"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

func TestCheckpointsVerifyWithIndependentLibraries(t *testing.T) {
	const origin = "ledger.example.com/chipledger/test"
	skey, vkey, err := GenerateLogKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := NewLogSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	if signer.Origin() != origin || signer.VerifierKey() != vkey {
		t.Fatalf("signer origin %q key %q, want %q %q", signer.Origin(), signer.VerifierKey(), origin, vkey)
	}
	s := seventyK(t)
	st := s.State()
	signed, err := signer.Sign(st.Size, st.Root)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		t.Fatalf("note.Open: %v", err)
	}
	if !strings.HasPrefix(n.Text, origin+"\n70000\n") {
		t.Fatalf("checkpoint body %q", n.Text)
	}
	cp, _, _, err := log.ParseCheckpoint(signed, origin, v)
	if err != nil {
		t.Fatalf("formats/log.ParseCheckpoint: %v", err)
	}
	if cp.Size != st.Size || !bytes.Equal(cp.Hash, st.Root[:]) {
		t.Fatalf("parsed checkpoint %d %x, want %d %x", cp.Size, cp.Hash, st.Size, st.Root)
	}
	// Deterministic: signing again gives the same bytes.
	if again, _ := signer.Sign(st.Size, st.Root); !bytes.Equal(again, signed) {
		t.Fatal("signing the same tree twice gave different checkpoints")
	}

	// A tampered body, another key and another origin are rejected.
	tampered := bytes.Replace(signed, []byte("\n70000\n"), []byte("\n70001\n"), 1)
	if _, err := note.Open(tampered, note.VerifierList(v)); err == nil {
		t.Error("note.Open accepted a tampered checkpoint")
	}
	if _, _, _, err := log.ParseCheckpoint(tampered, origin, v); err == nil {
		t.Error("ParseCheckpoint accepted a tampered checkpoint")
	}
	_, otherV, _ := GenerateLogKey(origin)
	ov, _ := note.NewVerifier(otherV)
	if _, err := note.Open(signed, note.VerifierList(ov)); err == nil {
		t.Error("note.Open accepted a checkpoint under another key")
	}
	if _, _, _, err := log.ParseCheckpoint(signed, "other.example.com/log", v); err == nil {
		t.Error("ParseCheckpoint accepted a checkpoint for another origin")
	}
}

func TestNewLogSignerRejectsBadKeys(t *testing.T) {
	for _, k := range []string{"", "PRIVATE+KEY+x", "example.com/log+01234567+AbCd"} {
		if _, err := NewLogSigner(k); err == nil {
			t.Errorf("NewLogSigner(%q) succeeded", k)
		}
	}
}

func TestNewLogSignerSaysAVerifierKeyIsNotTheSecretKey(t *testing.T) {
	_, vkey, err := GenerateLogKey("test.example.com/log")
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewLogSigner(vkey + "\n")
	if err == nil || !strings.Contains(err.Error(), "public verifier key") || !strings.Contains(err.Error(), "chipledger keys --out") {
		t.Errorf("NewLogSigner(verifier key): %v, want it to say this is the public verifier key", err)
	}
}

func TestGenerateLogKeyRejectsOriginsThatCannotNameAKey(t *testing.T) {
	for _, origin := range []string{"", "bad origin", "bad+origin", "tab\tin", "new\nline", "nbsp\u00a0x", "\xff"} {
		if skey, _, err := GenerateLogKey(origin); err == nil {
			t.Errorf("GenerateLogKey(%q) made %q", origin, skey)
		} else if !strings.Contains(err.Error(), "origin") {
			t.Errorf("GenerateLogKey(%q): %v does not name the origin", origin, err)
		}
	}
	for _, origin := range []string{"ledger.example.com/log", "x", "ünïcode.example/log"} {
		skey, _, err := GenerateLogKey(origin)
		if err != nil {
			t.Errorf("GenerateLogKey(%q): %v", origin, err)
			continue
		}
		if _, err := NewLogSigner(skey); err != nil {
			t.Errorf("the key made for %q does not load: %v", origin, err)
		}
	}
}
