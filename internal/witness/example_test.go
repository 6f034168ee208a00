package witness_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/chipledger/chipledger/internal/witness"
	"github.com/chipledger/chipledger/proofs"
)

// A log submits its checkpoint to a witness whose state it does not know:
// it sends old size 0, learns the witness's size from the 409, retries
// from there, and appends the cosignature to its checkpoint.
func Example() {
	logSkey, logVkey, _ := note.GenerateKey(rand.Reader, "example.com/log")
	witnessSkey, witnessVkey, _ := note.GenerateKey(rand.Reader, "witness.example/w1")
	cosigner, _ := fnote.NewSignerForCosignatureV1(witnessSkey)
	dir, _ := os.MkdirTemp("", "witness-example")
	defer os.RemoveAll(dir)
	w, err := witness.New(witness.Config{Signer: cosigner, Logs: []string{logVkey}, StateDir: dir})
	if err != nil {
		panic(err)
	}
	defer w.Close()
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	url := srv.URL + "/add-checkpoint"

	// The log's checkpoint of its one-leaf tree.
	logSigner, _ := note.NewSigner(logSkey)
	body := proofs.Checkpoint{Origin: "example.com/log", Size: 1, Hash: proofs.LeafHash([]byte("hello"))}.Marshal()
	cp, _ := note.Sign(&note.Note{Text: string(body)}, logSigner)

	// Another replica of the log had it cosigned already.
	if _, err := witness.AddCheckpoint(context.Background(), nil, url, 0, nil, cp); err != nil {
		panic(err)
	}

	ctx := context.Background()
	lines, err := witness.AddCheckpoint(ctx, nil, url, 0, nil, cp)
	if c, ok := errors.AsType[*witness.ConflictError](err); ok {
		fmt.Println("witness is at size", c.Size)
		// From size 1 to size 1 the consistency proof is empty.
		lines, err = witness.AddCheckpoint(ctx, nil, url, c.Size, nil, cp)
	}
	if err != nil {
		panic(err)
	}

	logVerifier, _ := note.NewVerifier(logVkey)
	cosigVerifier, _ := fnote.NewVerifierForCosignatureV1(witnessVkey)
	n, err := note.Open(append(cp, lines...), note.VerifierList(logVerifier, cosigVerifier))
	if err != nil {
		panic(err)
	}
	for _, s := range n.Sigs {
		fmt.Println("signed by", s.Name)
	}
	// Output:
	// witness is at size 1
	// signed by example.com/log
	// signed by witness.example/w1
}
