package client_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/chipledger/chipledger/client"
)

// FuzzParseAuditState feeds the audit state decoder bodies under a valid
// checksum (a random body would only ever fail the checksum). A state it
// accepts must be the one canonical encoding of that state, and encode and
// decode again to the same bytes; anything else must be refused with
// ErrBadAuditState, never a panic.
func FuzzParseAuditState(f *testing.F) {
	m := newLeafMaker(f)
	signer := newSigner(f)
	vkey, trust := signer.VerifierKey(), m.pki.Trust
	leaves := largeLog(f, m, 64).leaves
	fake, _ := startFakeNode(f, signer, leaves)
	for _, state := range []*client.AuditState{
		newState(f, vkey, trust),
		auditedState(f, vkey, trust, signedNote(f, fake), leaves),
	} {
		enc, err := state.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc[:len(enc)-sha256.Size])
		f.Logf("seed: a state of %d chips, %d bytes", state.Chips(), len(enc))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		sum := sha256.Sum256(body)
		s, err := client.ParseAuditState(append(body[:len(body):len(body)], sum[:]...), vkey, trust)
		if err != nil {
			if !errors.Is(err, client.ErrBadAuditState) {
				t.Fatalf("refused with %v, which does not wrap ErrBadAuditState", err)
			}
			return
		}
		enc, err := s.MarshalBinary()
		if err != nil {
			t.Fatalf("an accepted state does not encode: %v", err)
		}
		if !bytes.Equal(enc[:len(enc)-sha256.Size], body) {
			t.Fatalf("accepted a non-canonical encoding:\n got %x\nwant %x", body, enc[:len(enc)-sha256.Size])
		}
		if _, err := client.ParseAuditState(enc, vkey, trust); err != nil {
			t.Fatalf("its own encoding does not decode: %v", err)
		}
	})
}
