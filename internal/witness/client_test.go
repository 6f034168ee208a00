package witness

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// TestAddCheckpointAgainstTheWitness runs the client against the handler
// the way a log does: learn the witness's size from a 409, retry with a
// proof from it, and get a cosignature.
func TestAddCheckpointAgainstTheWitness(t *testing.T) {
	l := newTestLog(t, "example.com/log", 16)
	w := newTestWitness(t, t.TempDir(), l)
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	url := srv.URL + "/add-checkpoint"
	ctx := context.Background()
	advance(t, w, l, 5)

	_, err := AddCheckpoint(ctx, srv.Client(), url, 0, nil, l.checkpoint(t, 9))
	c, ok := errors.AsType[*ConflictError](err)
	if !ok || c.Size != 5 {
		t.Fatalf("old size 0 against a witness at 5: %v, want *ConflictError{5}", err)
	}

	lines, err := AddCheckpoint(ctx, srv.Client(), url, c.Size, l.proof(t, c.Size, 9), l.checkpoint(t, 9))
	if err != nil {
		t.Fatal(err)
	}
	checkCosignatures(t, l, lines, 9)
	checkLatest(t, w, l, 9)

	bad := l.proof(t, 9, 12)
	bad[0][0] ^= 1
	_, err = AddCheckpoint(ctx, srv.Client(), url, 9, bad, l.checkpoint(t, 12))
	s, ok := errors.AsType[*StatusError](err)
	if !ok || s.Code != http.StatusUnprocessableEntity || !strings.Contains(s.Body, "consistency proof") {
		t.Fatalf("bad proof: %v, want *StatusError{422, ...consistency proof...}", err)
	}

	other := newTestLog(t, "example.com/other", 4)
	_, err = AddCheckpoint(ctx, nil, url, 0, nil, other.checkpoint(t, 4))
	if s, ok := errors.AsType[*StatusError](err); !ok || s.Code != http.StatusNotFound {
		t.Fatalf("unknown log with the default client: %v, want *StatusError{404}", err)
	}
}

func TestAddCheckpointSendsOneSpecRequest(t *testing.T) {
	l := newTestLog(t, "example.com/log", 8)
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/w/add-checkpoint" {
			http.Error(rw, "wrong method or path", http.StatusBadRequest)
			return
		}
		got, _ = io.ReadAll(r.Body)
		io.WriteString(rw, "— w AAAA\n")
	}))
	defer srv.Close()
	if _, err := AddCheckpoint(context.Background(), srv.Client(), srv.URL+"/w/add-checkpoint", 3, l.proof(t, 3, 8), l.checkpoint(t, 8)); err != nil {
		t.Fatal(err)
	}
	if want := l.request(t, 3, 8); !bytes.Equal(got, want) {
		t.Fatalf("request body %q, want %q", got, want)
	}
}

// TestAddCheckpointResponses checks how the client reads each kind of
// answer, from canned responses.
func TestAddCheckpointResponses(t *testing.T) {
	long := strings.Repeat("é", 1000) // 2000 bytes
	tests := []struct {
		name        string
		code        int
		contentType string
		body        string
		want        func(*testing.T, []byte, error)
	}{
		{"one cosignature", 200, "text/plain", "— w AAAA\n", lines("— w AAAA\n")},
		{"two cosignatures", 200, "", "— w AAAA\n— v BBBB\n", lines("— w AAAA\n— v BBBB\n")},
		{"empty 200", 200, "", "", malformed},
		{"200 without final newline", 200, "", "— w AAAA", malformed},
		{"200 with a blank line", 200, "", "— w AAAA\n\n— v BBBB\n", malformed},
		{"200 with text", 200, "", "hello\n", malformed},
		{"200 over the limit", 200, "", strings.Repeat("— w AAAA\n", maxResponseSize/11+1), malformed},
		{"size conflict", 409, "text/x.tlog.size", "12\n", conflictAt(12)},
		{"size conflict with a parameter", 409, "text/x.tlog.size; charset=utf-8", "0\n", conflictAt(0)},
		{"size with a leading zero", 409, "text/x.tlog.size", "012\n", malformed},
		{"size without a newline", 409, "text/x.tlog.size", "12", malformed},
		{"size with two newlines", 409, "text/x.tlog.size", "12\n\n", malformed},
		{"409 of another type", 409, "text/plain; charset=utf-8", "root conflict\n", status(409, "root conflict")},
		{"422", 422, "text/plain", "  bad proof \n", status(422, "bad proof")},
		{"500 with a long body", 500, "text/plain", long, status(500, long[:maxErrorBody])},
		{"500 cut inside a character", 500, "text/plain", "x" + long, status(500, "x"+long[:maxErrorBody-2])},
		{"size type on a 400", 400, "text/x.tlog.size", "12\n", status(400, "12")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				if tt.contentType != "" {
					rw.Header().Set("Content-Type", tt.contentType)
				}
				rw.WriteHeader(tt.code)
				io.WriteString(rw, tt.body)
			}))
			defer srv.Close()
			got, err := AddCheckpoint(context.Background(), srv.Client(), srv.URL, 0, nil, []byte("cp\n"))
			tt.want(t, got, err)
		})
	}
}

func TestAddCheckpointRefusesAnUnsendableRequest(t *testing.T) {
	_, err := AddCheckpoint(context.Background(), nil, "http://127.0.0.1:1/add-checkpoint", 0, make([][32]byte, 64), []byte("cp\n"))
	if !errors.Is(err, ErrMalformedRequest) {
		t.Fatalf("64 proof hashes: %v, want ErrMalformedRequest", err)
	}
}

func lines(want string) func(*testing.T, []byte, error) {
	return func(t *testing.T, got []byte, err error) {
		if err != nil || string(got) != want {
			t.Fatalf("AddCheckpoint = %q, %v; want %q", got, err, want)
		}
	}
}

func malformed(t *testing.T, got []byte, err error) {
	if !errors.Is(err, ErrMalformedResponse) || got != nil {
		t.Fatalf("AddCheckpoint = %q, %v; want ErrMalformedResponse", got, err)
	}
}

func conflictAt(size uint64) func(*testing.T, []byte, error) {
	return func(t *testing.T, got []byte, err error) {
		if c, ok := errors.AsType[*ConflictError](err); !ok || c.Size != size || got != nil {
			t.Fatalf("AddCheckpoint = %q, %v; want *ConflictError{%d}", got, err, size)
		}
	}
}

func status(code int, body string) func(*testing.T, []byte, error) {
	return func(t *testing.T, got []byte, err error) {
		s, ok := errors.AsType[*StatusError](err)
		if !ok || s.Code != code || s.Body != body || got != nil || !utf8.ValidString(s.Body) {
			t.Fatalf("AddCheckpoint = %q, %v; want *StatusError{%d, %q}", got, err, code, body)
		}
	}
}

// FuzzCheckResponse: checkResponse never panics on a witness's answer; a
// 200 body it accepts, appended to a signed note, can only add signatures
// (the note's text and the log's signature stay as they were); and a 409
// size it accepts is the body's one decimal spelling.
func FuzzCheckResponse(f *testing.F) {
	skey, vkey, err := note.GenerateKey(rand.Reader, "example.com/log")
	if err != nil {
		f.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		f.Fatal(err)
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		f.Fatal(err)
	}
	text := "example.com/log\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
	signed, err := note.Sign(&note.Note{Text: text}, signer)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(http.StatusOK, "", []byte("— w1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n"))
	f.Add(http.StatusOK, "", []byte("\n— w1 AAAA\n"))
	f.Add(http.StatusConflict, sizeContentType, []byte("12\n"))
	f.Add(http.StatusConflict, sizeContentType+"; charset=utf-8", []byte("012\n"))
	f.Add(http.StatusNotFound, "text/plain", []byte("unknown log"))
	f.Fuzz(func(t *testing.T, code int, contentType string, body []byte) {
		err := checkResponse(code, contentType, body)
		switch {
		case code == http.StatusOK && err == nil:
			n, err := note.Open(append(bytes.Clone(signed), body...), note.VerifierList(verifier))
			if err == nil && (n.Text != text || len(n.Sigs) != 1) {
				t.Fatalf("the accepted body %q changed the note: text %q, %d verified signatures", body, n.Text, len(n.Sigs))
			}
		case code == http.StatusConflict:
			var ce *ConflictError
			if errors.As(err, &ce) && fmt.Sprintf("%d\n", ce.Size) != string(body) {
				t.Fatalf("409 body %q read as size %d", body, ce.Size)
			}
		}
	})
}
