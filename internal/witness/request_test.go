package witness

import (
	"bytes"
	"errors"
	"flag"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const (
	hashA = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" // SHA-256("")
	hashB = "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=" // RFC 6962 leaf hash of ""
)

func TestMarshalRequestWritesTheSpecLayout(t *testing.T) {
	cp := []byte("example.com/log\n2\n" + hashA + "\n\n— example.com/log AAAAAA==\n")
	r := Request{OldSize: 1, Proof: [][32]byte{h32(t, hashA), h32(t, hashB)}, Checkpoint: cp}
	got := mustMarshal(t, r)
	want := "old 1\n" + hashA + "\n" + hashB + "\n\n" + string(cp)
	if string(got) != want {
		t.Fatalf("MarshalRequest = %q, want %q", got, want)
	}
	back, err := ParseRequest(got)
	if err != nil {
		t.Fatal(err)
	}
	checkRequest(t, back, r)
}

func TestParseRequestAcceptsNoProofAndTheLargestSize(t *testing.T) {
	r, err := ParseRequest([]byte("old 18446744073709551615\n\ncp\n"))
	if err != nil {
		t.Fatal(err)
	}
	checkRequest(t, r, Request{OldSize: 1<<64 - 1, Checkpoint: []byte("cp\n")})
}

func TestParseRequestAcceptsMaxProofHashes(t *testing.T) {
	body := "old 0\n" + strings.Repeat(hashA+"\n", MaxProofHashes) + "\ncp\n"
	r, err := ParseRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Proof) != MaxProofHashes {
		t.Fatalf("%d proof hashes, want %d", len(r.Proof), MaxProofHashes)
	}
}

func TestParseRequestRejectsMalformedBodies(t *testing.T) {
	// hashA with its last character changed so that the padding bits are
	// not zero: it decodes to the same bytes, but is not canonical.
	nonCanonical := hashA[:42] + "V="
	tests := []struct {
		name, body string
	}{
		{"empty", ""},
		{"no newline", "old 1"},
		{"no old prefix", "1\n\ncp\n"},
		{"capital Old", "Old 1\n\ncp\n"},
		{"tab separator", "old\t1\n\ncp\n"},
		{"two spaces", "old  1\n\ncp\n"},
		{"empty size", "old \n\ncp\n"},
		{"leading zero", "old 01\n\ncp\n"},
		{"sign", "old +1\n\ncp\n"},
		{"negative", "old -1\n\ncp\n"},
		{"trailing space", "old 1 \n\ncp\n"},
		{"CRLF", "old 1\r\n\r\ncp\n"},
		{"size overflows", "old 18446744073709551616\n\ncp\n"},
		{"short hash", "old 1\n" + hashA[:43] + "\n\ncp\n"},
		{"long hash", "old 1\n" + hashA + "A\n\ncp\n"},
		{"non-canonical hash", "old 1\n" + nonCanonical + "\n\ncp\n"},
		{"hash with CR", "old 1\n" + hashA[:20] + "\r" + hashA[21:] + "\n\ncp\n"},
		{"URL-safe base64", "old 1\n" + strings.ReplaceAll(strings.ReplaceAll(hashA, "+", "-"), "/", "_") + "\n\ncp\n"},
		{"48-byte hash", "old 1\n" + strings.Repeat("A", 64) + "\n\ncp\n"},
		{"64 proof lines", "old 0\n" + strings.Repeat(hashA+"\n", MaxProofHashes+1) + "\ncp\n"},
		{"no empty line", "old 1\n" + hashA + "\n"},
		{"no checkpoint", "old 1\n\n"},
		{"checkpoint without final newline", "old 1\n\ncp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRequest([]byte(tt.body))
			if !errors.Is(err, ErrMalformedRequest) {
				t.Fatalf("ParseRequest(%q) = %+v, %v; want ErrMalformedRequest", tt.body, r, err)
			}
		})
	}
}

func TestMarshalRequestRefusesWhatParseRequestRejects(t *testing.T) {
	tests := []struct {
		name string
		r    Request
	}{
		{"64 proof hashes", Request{Proof: make([][32]byte, MaxProofHashes+1), Checkpoint: []byte("cp\n")}},
		{"no checkpoint", Request{OldSize: 1}},
		{"checkpoint without final newline", Request{Checkpoint: []byte("cp")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := MarshalRequest(tt.r); !errors.Is(err, ErrMalformedRequest) {
				t.Fatalf("MarshalRequest = %q, %v; want ErrMalformedRequest", b, err)
			}
		})
	}
}

func TestRequestRoundTrips(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := Request{OldSize: rapid.Uint64().Draw(t, "old")}
		for _, h := range rapid.SliceOfN(rapid.SliceOfN(rapid.Byte(), 32, 32), 0, MaxProofHashes).Draw(t, "proof") {
			r.Proof = append(r.Proof, [32]byte(h))
		}
		r.Checkpoint = append(rapid.SliceOf(rapid.Byte()).Draw(t, "checkpoint"), '\n')
		b, err := MarshalRequest(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseRequest(b)
		if err != nil {
			t.Fatalf("ParseRequest(MarshalRequest(%+v)): %v", r, err)
		}
		checkRequest(t, got, r)
	})
}

// FuzzParseRequest checks that ParseRequest never panics and accepts only
// canonical bodies: whatever it accepts, MarshalRequest writes back byte
// for byte.
func FuzzParseRequest(f *testing.F) {
	l := newTestLog(f, "example.com/log", 8)
	f.Add(l.request(f, 0, 8))
	f.Add(l.request(f, 3, 8))
	f.Add([]byte("old 0\n\ncp\n"))
	f.Add([]byte("old 1\n" + hashA + "\n" + hashB + "\n\ncp\n\n— x y\n"))
	f.Add([]byte("old 0\n" + strings.Repeat(hashA+"\n", MaxProofHashes) + "\ncp\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseRequest(body)
		if err != nil {
			if !errors.Is(err, ErrMalformedRequest) {
				t.Fatalf("ParseRequest error %v does not wrap ErrMalformedRequest", err)
			}
			return
		}
		if len(r.Proof) > MaxProofHashes {
			t.Fatalf("accepted %d proof hashes", len(r.Proof))
		}
		b, err := MarshalRequest(r)
		if err != nil {
			t.Fatalf("MarshalRequest(ParseRequest(%q)): %v", body, err)
		}
		if !bytes.Equal(b, body) {
			t.Fatalf("MarshalRequest(ParseRequest(%q)) = %q", body, b)
		}
	})
}

// TestGoldenExchange checks an exchange against testdata: the request that
// moves a witness from size 3 to size 8 of the test log is deterministic,
// so a change to its format shows up here; the answer is checked to be one
// cosignature line over the checkpoint, stamped with the current time.
func TestGoldenExchange(t *testing.T) {
	l := newTestLog(t, "example.com/log", 8)
	w := newTestWitness(t, t.TempDir(), l)
	advance(t, w, l, 3)

	req := l.request(t, 3, 8)
	before := time.Now().Truncate(time.Second)
	rec := post(w.Handler(), req)
	after := time.Now()
	if rec.Code != http.StatusOK {
		t.Fatalf("golden request: %d %s", rec.Code, rec.Body)
	}
	checkGolden(t, "testdata/add-checkpoint-3-to-8.request", req)
	if ts := checkCosignatures(t, l, rec.Body.Bytes(), 8); ts.Before(before) || ts.After(after) {
		t.Fatalf("cosignature time %v, not in [%v, %v]", ts, before, after)
	}

	r, err := ParseRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	checkRequest(t, r, Request{OldSize: 3, Proof: l.proof(t, 3, 8), Checkpoint: l.checkpoint(t, 8)})
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs:\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// checkRequest fails t unless got equals want.
func checkRequest(t interface {
	Helper()
	Fatalf(string, ...any)
}, got, want Request) {
	t.Helper()
	if got.OldSize != want.OldSize || !slices.Equal(got.Proof, want.Proof) || !bytes.Equal(got.Checkpoint, want.Checkpoint) {
		t.Fatalf("request = %+v, want %+v", got, want)
	}
}

func h32(t testing.TB, b64 string) [32]byte {
	t.Helper()
	h, err := parseHash([]byte(b64))
	if err != nil {
		t.Fatal(err)
	}
	return h
}
