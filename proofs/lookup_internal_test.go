package proofs

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// TestParseLookupProofSaysWhyAProofCountIsRefused: a lookup proof whose
// index-proof count is above MaxProofHashes is refused for that, not as
// truncated, though all 65 hashes are there.
func TestParseLookupProofSaysWhyAProofCountIsRefused(t *testing.T) {
	b := []byte(lookupMagic)
	b = appendOpaque16(b, []byte("checkpoint\n"))
	leaf := make([]byte, IndexRootLeafSize)
	binary.BigEndian.PutUint16(leaf, IndexRootKind)
	b = appendOpaque16(b, leaf)
	b = append(b, MaxProofHashes+1)
	b = append(b, bytes.Repeat([]byte{7}, 32*(MaxProofHashes+1))...)
	_, err := ParseLookupProof(b)
	if err == nil {
		t.Fatal("accepted a proof of 65 hashes")
	}
	if strings.Contains(err.Error(), "truncated") || !strings.Contains(err.Error(), "65 hashes, above 64") {
		t.Errorf("65 complete proof hashes refused as %q", err)
	}
}
