package client

import (
	"fmt"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
)

// TestRangeRootFromInclusionProofMatchesTreeHash checks, for every range of
// every tree up to 40 leaves, that the left siblings of an inclusion proof
// of the range's first leaf, with the range's leaves, give the root of the
// tree up to the range's end.
func TestRangeRootFromInclusionProofMatchesTreeHash(t *testing.T) {
	tree := testonly.New(rfc6962.DefaultHasher)
	var leaves [][]byte
	for i := range 40 {
		leaves = append(leaves, fmt.Appendf(nil, "leaf %d", i))
		tree.AppendData(leaves[i])
	}
	for end := uint64(1); end <= 40; end++ {
		for start := uint64(0); start < end; start++ {
			var left [][]byte
			if start > 0 {
				p, err := tree.InclusionProof(start, end)
				if err != nil {
					t.Fatal(err)
				}
				proof := make([][32]byte, len(p))
				for i := range p {
					proof[i] = [32]byte(p[i])
				}
				if left, err = leftSiblings(start, end, proof); err != nil {
					t.Fatalf("[%d, %d): %v", start, end, err)
				}
			}
			root, err := rangeRoot(start, left, leaves[start:end])
			if err != nil {
				t.Fatalf("[%d, %d): %v", start, end, err)
			}
			if want := [32]byte(tree.HashAt(end)); root != want {
				t.Fatalf("[%d, %d): root %x, want %x", start, end, root, want)
			}
		}
	}
}

func TestLeftSiblingsRejectsAProofOfTheWrongLength(t *testing.T) {
	if _, err := leftSiblings(5, 8, make([][32]byte, 2)); err == nil {
		t.Fatal("a 2-hash proof for leaf 5 of 8 was accepted")
	}
	if _, err := leftSiblings(8, 8, nil); err == nil {
		t.Fatal("a leaf beyond the tree was accepted")
	}
}
