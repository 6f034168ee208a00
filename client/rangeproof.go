package client

import (
	"fmt"
	"math/bits"
	"slices"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/chipledger/chipledger/proofs"
)

var rangeFactory = compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// leftSiblings returns the compact range of leaves [0, index), the roots of
// the perfect subtrees covering them, largest first, as found in an
// RFC 6962 inclusion proof of leaf index in a tree of size leaves. On the
// proof's inner levels (below bits.Len64(index ^ (size-1))) the sibling is
// on the left where index has a 1 bit; every hash above them, the border,
// is a left sibling. These are all the left siblings, and together they
// cover [0, index).
func leftSiblings(index, size uint64, proof [][32]byte) ([][]byte, error) {
	if index >= size {
		return nil, fmt.Errorf("%w: index %d is not below tree size %d", proofs.ErrInclusion, index, size)
	}
	inner := bits.Len64(index ^ (size - 1))
	border := bits.OnesCount64(index >> inner)
	if len(proof) != inner+border {
		return nil, fmt.Errorf("%w: %d hashes for leaf %d of %d, want %d", proofs.ErrInclusion, len(proof), index, size, inner+border)
	}
	var left [][]byte
	for level := range inner {
		if index>>level&1 == 1 {
			left = append(left, proof[level][:])
		}
	}
	for i := inner; i < len(proof); i++ {
		left = append(left, proof[i][:])
	}
	slices.Reverse(left)
	return left, nil
}

// rangeRoot returns the root of the tree of the first start+len(leaves)
// leaves, from the compact range of [0, start) and the leaves that follow.
func rangeRoot(start uint64, left [][]byte, leaves [][]byte) ([32]byte, error) {
	r, err := rangeFactory.NewRange(0, start, left)
	if err != nil {
		return [32]byte{}, fmt.Errorf("%w: %v", proofs.ErrInclusion, err)
	}
	for _, leaf := range leaves {
		h := proofs.LeafHash(leaf)
		if err := r.Append(h[:], nil); err != nil {
			return [32]byte{}, err
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		return [32]byte{}, err
	}
	return [32]byte(root), nil
}
