package proofs_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/chipledger/chipledger/proofs"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// The derived escrow-test vector of reference/transparency-specs.md §7: a
// checkpoint of the 8-leaf RFC 6962 test tree.
const (
	escrowOrigin = "example.com/escrow-test"
	escrowSeed   = "escrow-ledger interop test log key v1" // SHA-256 of this is the Ed25519 seed
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func escrowVerifier(t testing.TB) *proofs.LogVerifier {
	t.Helper()
	v, err := proofs.NewLogVerifier(strings.TrimSpace(string(readTestdata(t, "escrow-test.vkey"))))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// testLog is a log key made for one test.
type testLog struct {
	signer   note.Signer
	vkey     string
	verifier *proofs.LogVerifier
}

func newTestLog(t testing.TB, name string) *testLog {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := proofs.NewLogVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return &testLog{signer: s, vkey: vkey, verifier: v}
}

// sign returns body signed as a note by signers.
func sign(t testing.TB, body string, signers ...note.Signer) []byte {
	t.Helper()
	signed, err := note.Sign(&note.Note{Text: body}, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func TestCheckpointMarshalMatchesFormatsLog(t *testing.T) {
	for _, c := range []proofs.Checkpoint{
		{Origin: escrowOrigin, Size: 8, Hash: root(8)},
		{Origin: "go.sum database tree", Size: 6476701, Hash: root(3)},
		{Origin: "x", Size: 0, Hash: proofs.EmptyRoot()},
		{Origin: "example.com/ü", Size: math.MaxUint64, Hash: [32]byte{0: 0xff, 31: 0xfe}},
	} {
		want := log.Checkpoint{Origin: c.Origin, Size: c.Size, Hash: c.Hash[:]}.Marshal()
		if got := c.Marshal(); !bytes.Equal(got, want) {
			t.Errorf("Marshal() = %q, formats/log gives %q", got, want)
		}
		if got, err := proofs.ParseCheckpoint(c.Marshal()); err != nil || got != c {
			t.Errorf("ParseCheckpoint(Marshal(%+v)) = %+v, %v", c, got, err)
		}
	}
}

func TestParseCheckpointRejectsNonCanonicalBodies(t *testing.T) {
	const r8 = "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="
	tests := []struct{ name, body string }{
		{"empty", ""},
		{"no final newline", "o\n8\n" + r8},
		{"two lines", "o\n8\n"},
		{"extension line", "o\n8\n" + r8 + "\nextension\n"},
		{"empty extension line", "o\n8\n" + r8 + "\n\n"},
		{"CRLF", "o\r\n8\r\n" + r8 + "\r\n"},
		{"empty origin", "\n8\n" + r8 + "\n"},
		{"tab in origin", "o\to\n8\n" + r8 + "\n"},
		{"DEL in origin", "o\x7f\n8\n" + r8 + "\n"},
		{"C1 control in origin", "o\u0085\n8\n" + r8 + "\n"},
		{"invalid UTF-8 origin", "o\xff\n8\n" + r8 + "\n"},
		{"empty size", "o\n\n" + r8 + "\n"},
		{"leading zero", "o\n08\n" + r8 + "\n"},
		{"zero with leading zero", "o\n00\n" + r8 + "\n"},
		{"plus sign", "o\n+8\n" + r8 + "\n"},
		{"negative", "o\n-1\n" + r8 + "\n"},
		{"space before size", "o\n 8\n" + r8 + "\n"},
		{"hex size", "o\n0x8\n" + r8 + "\n"},
		{"size above 2^64-1", "o\n18446744073709551616\n" + r8 + "\n"},
		{"empty root", "o\n8\n\n"},
		{"non-zero padding bits", "o\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyh=\n"},
		{"unpadded root", "o\n8\n" + strings.TrimSuffix(r8, "=") + "\n"},
		{"URL-safe alphabet", "o\n8\n" + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)) + "\n"},
		{"CR inside root", "o\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg\r=\n"},
		{"trailing space after root", "o\n8\n" + r8 + " \n"},
		{"31-byte root", "o\n8\n" + base64.StdEncoding.EncodeToString(make([]byte, 31)) + "\n"},
		{"33-byte root", "o\n8\n" + base64.StdEncoding.EncodeToString(make([]byte, 33)) + "\n"},
	}
	for _, tt := range tests {
		if c, err := proofs.ParseCheckpoint([]byte(tt.body)); !errors.Is(err, proofs.ErrMalformedCheckpoint) {
			t.Errorf("%s: ParseCheckpoint(%q) = %+v, %v; want ErrMalformedCheckpoint", tt.name, tt.body, c, err)
		}
	}
}

func TestSignedCheckpointVerifiesHereAndWithReferenceLibraries(t *testing.T) {
	tl := newTestLog(t, "example.com/log")
	want := proofs.Checkpoint{Origin: "example.com/log", Size: 8, Hash: root(8)}
	signed := sign(t, string(want.Marshal()), tl.signer)

	if got, err := tl.verifier.VerifyCheckpoint(signed); err != nil || got != want {
		t.Errorf("VerifyCheckpoint = %+v, %v; want %+v", got, err, want)
	}
	v, err := note.NewVerifier(tl.vkey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(signed, note.VerifierList(v)); err != nil {
		t.Errorf("note.Open: %v", err)
	}
	cp, rest, _, err := log.ParseCheckpoint(signed, want.Origin, tl.verifier.Verifier())
	if err != nil {
		t.Fatalf("formats/log.ParseCheckpoint: %v", err)
	}
	if cp.Origin != want.Origin || cp.Size != want.Size || !bytes.Equal(cp.Hash, want.Hash[:]) || rest != nil {
		t.Errorf("formats/log.ParseCheckpoint = %+v, rest %q; want %+v", cp, rest, want)
	}
}

func TestVerifyCheckpointRejects(t *testing.T) {
	tl := newTestLog(t, "example.com/log")
	body := string(proofs.Checkpoint{Origin: "example.com/log", Size: 8, Hash: root(8)}.Marshal())
	signed := sign(t, body, tl.signer)
	impostor := newTestLog(t, "example.com/log") // same name, different key
	other := newTestLog(t, "example.com/other")
	r7, r8 := root(7), root(8)
	root7, root8 := base64.StdEncoding.EncodeToString(r7[:]), base64.StdEncoding.EncodeToString(r8[:])

	tests := []struct {
		name   string
		signed []byte
		want   error
	}{
		{"tampered size", bytes.Replace(signed, []byte("\n8\n"), []byte("\n9\n"), 1), proofs.ErrBadSignature},
		{"tampered root", bytes.Replace(signed, []byte(root8), []byte(root7), 1), proofs.ErrBadSignature},
		{"corrupted signature", corruptSignature(t, signed), proofs.ErrBadSignature},
		{"same name, other key", sign(t, body, impostor.signer), proofs.ErrBadSignature},
		{"other log's key", sign(t, body, other.signer), proofs.ErrBadSignature},
		{"no signature", []byte(body), proofs.ErrBadSignature},
		{"body without signature block", []byte(body + "\n"), proofs.ErrBadSignature},
		{"wrong origin", sign(t, strings.Replace(body, "example.com/log", "example.com/other", 1), tl.signer), proofs.ErrWrongOrigin},
		{"extension line", sign(t, body+"extension\n", tl.signer), proofs.ErrMalformedCheckpoint},
		{"non-canonical base64", sign(t, strings.Replace(body, "Qyg=", "Qyh=", 1), tl.signer), proofs.ErrMalformedCheckpoint},
		{"leading zero in size", sign(t, strings.Replace(body, "\n8\n", "\n08\n", 1), tl.signer), proofs.ErrMalformedCheckpoint},
	}
	for _, tt := range tests {
		if c, err := tl.verifier.VerifyCheckpoint(tt.signed); !errors.Is(err, tt.want) {
			t.Errorf("%s: VerifyCheckpoint = %+v, %v; want %v", tt.name, c, err, tt.want)
		}
	}
}

// corruptSignature flips a bit of the first signature's Ed25519 bytes,
// keeping its key hash, so the note names the right key but fails to verify.
func corruptSignature(t testing.TB, signed []byte) []byte {
	t.Helper()
	text, sigs := splitNote(t, signed)
	line, rest, _ := bytes.Cut(sigs, []byte("\n"))
	sp := bytes.LastIndexByte(line, ' ')
	sig, err := base64.StdEncoding.DecodeString(string(line[sp+1:]))
	if err != nil {
		t.Fatal(err)
	}
	sig[len(sig)-1] ^= 1
	return slices.Concat(text, line[:sp+1], []byte(base64.StdEncoding.EncodeToString(sig)+"\n"), rest)
}

// splitNote splits a signed note into its text with the blank line, and its
// signature lines.
func splitNote(t testing.TB, signed []byte) (text, sigs []byte) {
	t.Helper()
	i := bytes.LastIndex(signed, []byte("\n\n"))
	if i < 0 {
		t.Fatalf("%q is not a signed note", signed)
	}
	return signed[:i+2], signed[i+2:]
}

func TestCorruptedSignatureIsAnInvalidSignatureError(t *testing.T) {
	tl := newTestLog(t, "example.com/log")
	signed := sign(t, string(proofs.Checkpoint{Origin: "example.com/log", Size: 1, Hash: root(1)}.Marshal()), tl.signer)
	_, err := tl.verifier.VerifyCheckpoint(corruptSignature(t, signed))
	var invalid *note.InvalidSignatureError
	if !errors.Is(err, proofs.ErrBadSignature) || !errors.As(err, &invalid) {
		t.Errorf("err = %v, want ErrBadSignature wrapping *note.InvalidSignatureError", err)
	}
}

func TestGoldenEscrowCheckpointVerifies(t *testing.T) {
	v := escrowVerifier(t)
	want := proofs.Checkpoint{Origin: escrowOrigin, Size: 8, Hash: root(8)}
	for _, file := range []string{"escrow-test.checkpoint", "escrow-test-cosigned.checkpoint"} {
		signed := readTestdata(t, file)
		got, n, err := v.VerifyCheckpointNote(signed)
		if err != nil || got != want {
			t.Errorf("%s: VerifyCheckpointNote = %+v, %v; want %+v", file, got, err, want)
			continue
		}
		if len(n.Sigs) != 1 || n.Sigs[0].Name != escrowOrigin {
			t.Errorf("%s: verified signatures %+v, want only the log's", file, n.Sigs)
		}
		if _, err := note.Open(signed, note.VerifierList(v.Verifier())); err != nil {
			t.Errorf("%s: note.Open: %v", file, err)
		}
		if _, _, _, err := log.ParseCheckpoint(signed, escrowOrigin, v.Verifier()); err != nil {
			t.Errorf("%s: formats/log.ParseCheckpoint: %v", file, err)
		}
	}
}

// Ed25519 is deterministic, so every replica signs a checkpoint to the same
// bytes (DESIGN.md §3.6): signing the golden body with the key derived from
// the documented seed must reproduce the golden note exactly.
func TestGoldenEscrowCheckpointSignatureIsDeterministic(t *testing.T) {
	seed := sha256.Sum256([]byte(escrowSeed))
	skey := "PRIVATE+KEY+example.com/escrow-test+ee5744bd+" + base64.StdEncoding.EncodeToString(append([]byte{1}, seed[:]...))
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	want := readTestdata(t, "escrow-test.checkpoint")
	body := proofs.Checkpoint{Origin: escrowOrigin, Size: 8, Hash: root(8)}.Marshal()
	if got := sign(t, string(body), s); !bytes.Equal(got, want) {
		t.Errorf("signed golden body =\n%s\nwant\n%s", got, want)
	}
}

func TestSumDBCheckpointIsRejectedForItsOriginOnly(t *testing.T) {
	// sum.golang.org signs with key name "sum.golang.org" but origin
	// "go.sum database tree"; a chipledger log's key name is its origin.
	vkey := strings.TrimSpace(string(readTestdata(t, "sum.golang.org.vkey")))
	signed := readTestdata(t, "sum.golang.org.checkpoint")
	v, err := proofs.NewLogVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := log.ParseCheckpoint(signed, "go.sum database tree", v.Verifier()); err != nil {
		t.Fatalf("formats/log.ParseCheckpoint: %v", err)
	}
	if c, err := v.VerifyCheckpoint(signed); !errors.Is(err, proofs.ErrWrongOrigin) {
		t.Errorf("VerifyCheckpoint = %+v, %v; want ErrWrongOrigin", c, err)
	}
}

func TestVerifyCheckpointNoteChecksOtherVerifiers(t *testing.T) {
	tl := newTestLog(t, "example.com/log")
	w := newTestLog(t, "example.com/witness")
	body := string(proofs.Checkpoint{Origin: "example.com/log", Size: 8, Hash: root(8)}.Marshal())

	_, n, err := tl.verifier.VerifyCheckpointNote(sign(t, body, tl.signer, w.signer), w.verifier.Verifier())
	if err != nil || len(n.Sigs) != 2 {
		t.Errorf("log and witness signatures: note %+v, %v; want both signatures verified", n, err)
	}
	// note.Open accepts a note any known key signed; the log's own
	// signature is still required.
	if _, _, err := tl.verifier.VerifyCheckpointNote(sign(t, body, w.signer), w.verifier.Verifier()); !errors.Is(err, proofs.ErrBadSignature) {
		t.Errorf("witness signature only: err = %v, want ErrBadSignature", err)
	}
	_, badWitness := splitNote(t, corruptSignature(t, sign(t, body, w.signer)))
	withLog := slices.Concat(sign(t, body, tl.signer), badWitness)
	if _, _, err := tl.verifier.VerifyCheckpointNote(withLog, w.verifier.Verifier()); !errors.Is(err, proofs.ErrBadSignature) {
		t.Errorf("invalid witness signature: err = %v, want ErrBadSignature", err)
	}
	if _, err := tl.verifier.VerifyCheckpoint(withLog); err != nil {
		t.Errorf("invalid signature by a key not asked for: %v, want it ignored", err)
	}
}

func TestNewLogVerifierRejectsBadKeys(t *testing.T) {
	seed := sha256.Sum256([]byte(escrowSeed))
	for _, vkey := range []string{
		"",
		"example.com/escrow-test",
		"PRIVATE+KEY+example.com/escrow-test+ee5744bd+" + base64.StdEncoding.EncodeToString(append([]byte{1}, seed[:]...)),
		"example.com/escrow-test+ee5744be+Aat1KQYsJ+N7bAnOuAK3472OstHs3Zwd58qaxrbomY7I", // wrong key hash
		"example.com/other+ee5744bd+Aat1KQYsJ+N7bAnOuAK3472OstHs3Zwd58qaxrbomY7I",       // wrong name
		"example.com/escrow-test+ee5744bd+Aat1KQYsJ+N7bAnOuAK3472OstHs3Zwd58qaxrbomY7",  // truncated
	} {
		if _, err := proofs.NewLogVerifier(vkey); !errors.Is(err, proofs.ErrBadKey) {
			t.Errorf("NewLogVerifier(%q) = %v, want ErrBadKey", vkey, err)
		}
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add(proofs.Checkpoint{Origin: escrowOrigin, Size: 8, Hash: root(8)}.Marshal())
	f.Add([]byte("go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n"))
	f.Add([]byte("o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"))
	f.Add([]byte("o\n08\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\next\n"))
	f.Add([]byte("o\n18446744073709551615\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV=\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := proofs.ParseCheckpoint(body)
		if err != nil {
			if !errors.Is(err, proofs.ErrMalformedCheckpoint) {
				t.Fatalf("error %v does not wrap ErrMalformedCheckpoint", err)
			}
			return
		}
		if got := c.Marshal(); !bytes.Equal(got, body) {
			t.Fatalf("Marshal(ParseCheckpoint(%q)) = %q", body, got)
		}
		var ref log.Checkpoint
		rest, err := ref.Unmarshal(body)
		if err != nil || ref.Origin != c.Origin || ref.Size != c.Size || !bytes.Equal(ref.Hash, c.Hash[:]) || rest != nil {
			t.Fatalf("formats/log reads %q as %+v, rest %q, %v; we read %+v", body, ref, rest, err, c)
		}
	})
}
