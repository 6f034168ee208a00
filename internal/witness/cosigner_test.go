package witness

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// The signed-note key pair of the x/mod note documentation
// (transparency-specs.md §2.5), and its cosignature/v1 verifier key as
// formats/note.VKeyToCosignatureV1 gives it (§2.4).
const (
	peterSkey     = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
	peterVkey     = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
	peterCosigKey = "PeterNeumann+18b9780b+BBpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
)

func TestCosignerVerifierKeyMatchesPublishedVector(t *testing.T) {
	c, err := NewCosigner(peterSkey)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.VerifierKey(); got != peterCosigKey {
		t.Fatalf("VerifierKey = %q, want %q", got, peterCosigKey)
	}
	if got, err := fnote.VKeyToCosignatureV1(peterVkey); err != nil || got != peterCosigKey {
		t.Fatalf("formats gives %q, %v", got, err)
	}
	if c.Name() != "PeterNeumann" || c.KeyHash() != 0x18b9780b {
		t.Fatalf("Name, KeyHash = %q, %08x", c.Name(), c.KeyHash())
	}
}

// TestCosignatureVerifiesWithFormats checks the cosignature/v1 format
// against the independent implementation in transparency-dev/formats.
func TestCosignatureVerifiesWithFormats(t *testing.T) {
	c, err := NewCosigner(peterSkey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := fnote.NewVerifierForCosignatureV1(peterVkey)
	if err != nil {
		t.Fatal(err)
	}
	text := "example.com/log\n8\n" + hashA + "\n"
	at := time.Unix(1_700_000_123, 999_000_000)
	signed, err := note.Sign(&note.Note{Text: text}, signerAt{c, at})
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		t.Fatalf("formats does not verify %q: %v", signed, err)
	}
	ts, err := fnote.CoSigV1Timestamp(n.Sigs[0])
	if err != nil || !ts.Equal(time.Unix(1_700_000_123, 0)) {
		t.Fatalf("timestamp %v, %v; want %v", ts, err, at.Truncate(time.Second))
	}

	// The same key as a plain Ed25519 note key has another ID, so the
	// cosignature is not mistaken for a log signature.
	plain, err := note.NewVerifier(peterVkey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(signed, note.VerifierList(plain)); err == nil {
		t.Fatal("a plain Ed25519 verifier accepts the cosignature")
	}
	// A cosignature covers the text and the time.
	forged := strings.Replace(string(signed), "\n8\n", "\n9\n", 1)
	if _, err := note.Open([]byte(forged), note.VerifierList(v)); err == nil {
		t.Fatal("cosignature verifies for another size")
	}
	sig, _ := base64.StdEncoding.DecodeString(n.Sigs[0].Base64)
	sig[4+7]++ // the timestamp's last byte
	restamped := text + "\n— PeterNeumann " + base64.StdEncoding.EncodeToString(sig) + "\n"
	if _, err := note.Open([]byte(restamped), note.VerifierList(v)); err == nil {
		t.Fatal("cosignature verifies with another timestamp")
	}
}

func TestCosignerSignUsesTheCurrentTime(t *testing.T) {
	c, err := NewCosigner(peterSkey)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Truncate(time.Second)
	signed, err := note.Sign(&note.Note{Text: "a\nb\nc\n"}, c)
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	v, _ := fnote.NewVerifierForCosignatureV1(peterVkey)
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	ts, _ := fnote.CoSigV1Timestamp(n.Sigs[0])
	if ts.Before(before) || ts.After(after) {
		t.Fatalf("timestamp %v not in [%v, %v]", ts, before, after)
	}
}

func TestNewCosignerAcceptsACosignatureTypeKey(t *testing.T) {
	// The skey of PeterNeumann's seed with type 0x04 and the 0x04 key ID.
	seed, _ := base64.StdEncoding.DecodeString(strings.SplitN(peterSkey, "+", 5)[4])
	seed[0] = algCosignatureV1
	c, err := NewCosigner("PRIVATE+KEY+PeterNeumann+18b9780b+" + base64.StdEncoding.EncodeToString(seed))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.VerifierKey(); got != peterCosigKey {
		t.Fatalf("VerifierKey = %q, want %q", got, peterCosigKey)
	}
}

func TestNewCosignerRejectsBadKeys(t *testing.T) {
	seed := strings.SplitN(peterSkey, "+", 5)[4]
	withAlg := func(alg byte) string {
		b, _ := base64.StdEncoding.DecodeString(seed)
		b[0] = alg
		return base64.StdEncoding.EncodeToString(b)
	}
	tests := []struct {
		name, skey string
	}{
		{"verifier key", peterVkey},
		{"empty", ""},
		{"not PRIVATE", "PUBLIC+KEY+PeterNeumann+c74f20a3+" + seed},
		{"extra field", peterSkey + "+x"},
		{"empty name", "PRIVATE+KEY++c74f20a3+" + seed},
		{"name with space", "PRIVATE+KEY+Peter Neumann+c74f20a3+" + seed},
		{"wrong key ID", "PRIVATE+KEY+PeterNeumann+c74f20a4+" + seed},
		{"key ID of another name", "PRIVATE+KEY+PeterNeumann2+c74f20a3+" + seed},
		{"short key ID", "PRIVATE+KEY+PeterNeumann+c74f20a+" + seed},
		{"bad base64", "PRIVATE+KEY+PeterNeumann+c74f20a3+" + seed[1:]},
		{"short seed", "PRIVATE+KEY+PeterNeumann+c74f20a3+" + base64.StdEncoding.EncodeToString(make([]byte, 32))},
		{"ECDSA type", "PRIVATE+KEY+PeterNeumann+c74f20a3+" + withAlg(0x02)},
		{"0x04 type with the 0x01 key ID", "PRIVATE+KEY+PeterNeumann+c74f20a3+" + withAlg(algCosignatureV1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewCosigner(tt.skey)
			if !errors.Is(err, ErrBadSignerKey) {
				t.Fatalf("NewCosigner(%q) = %v, %v; want ErrBadSignerKey", tt.skey, c, err)
			}
			if strings.Contains(err.Error(), seed) {
				t.Fatalf("error %q includes the key", err)
			}
		})
	}
}

func TestSignAtRefusesTimesBefore1970AndUnterminatedText(t *testing.T) {
	c, err := NewCosigner(peterSkey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SignAt(time.Unix(-1, 0), []byte("a\nb\nc\n")); err == nil {
		t.Error("SignAt accepts a time before 1970")
	}
	if _, err := c.SignAt(testTime, []byte("a\nb\nc")); err == nil {
		t.Error("SignAt accepts text without a final newline")
	}
}
