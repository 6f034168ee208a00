// Package witnesstest runs real tlog-witnesses (internal/witness) on
// loopback for tests, with a policy naming them, and lets a test take one
// down or make it answer with a cosignature over another checkpoint.
package witnesstest

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/chipledger/chipledger/internal/witness"
	"github.com/chipledger/chipledger/proofs"
)

// A Set is n witnesses of one log and a policy that needs quorum of them.
type Set struct {
	Witnesses  []*Witness
	Policy     *proofs.WitnessPolicy
	PolicyText []byte // c2sp.org/tlog-policy
}

// A Witness is one running witness.
type Witness struct {
	*witness.Witness
	URL  string // the submission prefix: URL + "/add-checkpoint"
	VKey string // its cosignature/v1 verifier key

	// Down makes it answer 503; Forge makes it answer a valid
	// cosignature by its key over another checkpoint; Stall makes it hold
	// each request, unanswered, until the request ends.
	Down, Forge, Stall atomic.Bool
	// Claim, if not 0, makes it answer its next request with a 409 that
	// claims it cosigned a tree of that size (once: it then resets Claim).
	Claim atomic.Uint64
}

// Start starts n witnesses following the log whose verifier key is logVKey,
// each named wN.witness.example, until the test ends.
func Start(t testing.TB, logVKey string, n, quorum int) *Set {
	t.Helper()
	s := &Set{}
	var b strings.Builder
	var names []string
	for i := range n {
		name := fmt.Sprintf("w%d", i)
		w := start(t, name+".witness.example", logVKey)
		s.Witnesses = append(s.Witnesses, w)
		names = append(names, name)
		fmt.Fprintf(&b, "witness %s %s %s\n", name, w.VKey, w.URL)
	}
	fmt.Fprintf(&b, "group main %d %s\nquorum main\n", quorum, strings.Join(names, " "))
	s.PolicyText = []byte(b.String())
	p, err := proofs.ParseWitnessPolicy(s.PolicyText)
	if err != nil {
		t.Fatal(err)
	}
	s.Policy = p
	return s
}

func start(t testing.TB, name, logVKey string) *Witness {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	cvkey, err := fnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	ww, err := witness.New(witness.Config{Signer: signer, Logs: []string{logVKey}, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ww.Close() })
	w := &Witness{Witness: ww, VKey: cvkey}
	h := ww.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch claim := w.Claim.Swap(0); {
		case claim != 0:
			rw.Header().Set("Content-Type", "text/x.tlog.size")
			rw.WriteHeader(http.StatusConflict)
			fmt.Fprintf(rw, "%d\n", claim)
		case w.Stall.Load():
			// The server notices that the client went away only once the
			// body is read.
			io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
		case w.Down.Load():
			http.Error(rw, "down for the test", http.StatusServiceUnavailable)
		case w.Forge.Load():
			other, err := note.Sign(&note.Note{Text: "other.example/log\n1\n" + strings.Repeat("A", 43) + "=\n"}, signer)
			if err != nil {
				http.Error(rw, err.Error(), http.StatusInternalServerError)
				return
			}
			rw.Write(other[strings.LastIndex(string(other), "\n\n")+2:])
		default:
			h.ServeHTTP(rw, r)
		}
	}))
	t.Cleanup(srv.Close)
	w.URL = srv.URL
	return w
}

// CosignAt returns a cosignature/v1 line by the Ed25519 key of seed, named
// name, over the note text, stamped t, and the witness's verifier key:
// what a witness whose clock reads t answers. It is built here from the
// spec (c2sp.org/tlog-cosignature), not with transparency-dev/formats, so
// that the verifiers check an encoding they did not make, and so that a
// test can choose the time.
func CosignAt(seed [32]byte, name, text string, t time.Time) (line, vkey string) {
	priv := ed25519.NewKeyFromSeed(seed[:])
	pub := priv.Public().(ed25519.PublicKey)
	h := sha256.Sum256(append([]byte(name+"\n\x04"), pub...))
	msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s", t.Unix(), text)
	sig := binary.BigEndian.AppendUint64(slices.Clone(h[:4]), uint64(t.Unix()))
	sig = append(sig, ed25519.Sign(priv, []byte(msg))...)
	vkey = fmt.Sprintf("%s+%x+%s", name, h[:4], base64.StdEncoding.EncodeToString(append([]byte{0x04}, pub...)))
	return fmt.Sprintf("— %s %s\n", name, base64.StdEncoding.EncodeToString(sig)), vkey
}
