package proofs

import (
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

var (
	// ErrInclusion reports an inclusion proof that does not prove the leaf
	// is in the tree.
	ErrInclusion = errors.New("proofs: invalid inclusion proof")

	// ErrConsistency reports a consistency proof that does not prove the
	// first tree is a prefix of the second.
	ErrConsistency = errors.New("proofs: invalid consistency proof")
)

var hasher = rfc6962.DefaultHasher

// LeafHash returns the RFC 6962 hash of a log leaf, SHA-256(0x00 ‖ leaf).
func LeafHash(leaf []byte) [32]byte {
	return [32]byte(hasher.HashLeaf(leaf))
}

// EmptyRoot returns the root hash of the empty tree, SHA-256 of no bytes.
func EmptyRoot() [32]byte {
	return [32]byte(hasher.EmptyRoot())
}

// VerifyInclusion checks that proof is an RFC 6962 inclusion proof (audit
// path, RFC 9162 §2.1.3) showing that the leaf with hash leafHash is leaf
// number index of the tree of the given size whose root hash is root.
// The proof must have exactly the length the index and size imply.
// An error, including index >= size, wraps ErrInclusion.
//
// The proof does not authenticate size on its own: a proof for a smaller
// tree can be valid for a larger one too. Take size and root from a verified
// Checkpoint.
func VerifyInclusion(index, size uint64, leafHash [32]byte, proof [][32]byte, root [32]byte) error {
	if index >= size {
		return fmt.Errorf("%w: index %d is not below tree size %d", ErrInclusion, index, size)
	}
	got, err := rootFromInclusion(index, size, leafHash, proof)
	if err != nil {
		return fmt.Errorf("%w: leaf %d of %d: %v", ErrInclusion, index, size, err)
	}
	if got != root {
		return fmt.Errorf("%w: leaf %d of %d: proof leads to root %x, want %x", ErrInclusion, index, size, got, root)
	}
	return nil
}

func rootFromInclusion(index, size uint64, leafHash [32]byte, p [][32]byte) ([32]byte, error) {
	r, err := proof.RootFromInclusionProof(hasher, index, size, leafHash[:], slices32(p))
	if err != nil {
		return [32]byte{}, err
	}
	return [32]byte(r), nil
}

// VerifyConsistency checks that proof is an RFC 6962 consistency proof
// (RFC 9162 §2.1.4) showing that the tree of size1 leaves with root hash
// root1 is a prefix of the tree of size2 leaves with root hash root2.
//
// Edge cases follow c2sp.org/merkle-tree: size1 > size2 is an error;
// size1 == size2 requires an empty proof and root1 == root2; size1 == 0
// requires an empty proof and root1 == EmptyRoot(). Otherwise the proof must
// have exactly the length the sizes imply. An error wraps ErrConsistency.
func VerifyConsistency(size1, size2 uint64, proof [][32]byte, root1, root2 [32]byte) error {
	err := verifyConsistency(size1, size2, proof, root1, root2)
	if err != nil {
		return fmt.Errorf("%w: sizes %d to %d: %v", ErrConsistency, size1, size2, err)
	}
	return nil
}

func verifyConsistency(size1, size2 uint64, p [][32]byte, root1, root2 [32]byte) error {
	switch {
	case size1 > size2:
		return errors.New("first tree is larger than the second")
	case size1 == size2:
		if len(p) != 0 {
			return fmt.Errorf("proof has %d hashes, want none for equal sizes", len(p))
		}
		if root1 != root2 {
			return fmt.Errorf("roots %x and %x differ", root1, root2)
		}
		if size1 == 0 && root1 != EmptyRoot() {
			return fmt.Errorf("root %x of the empty tree is not the empty root", root1)
		}
		return nil
	case size1 == 0:
		// Handled here, not by merkle/proof, whose versions disagree on it.
		if len(p) != 0 {
			return fmt.Errorf("proof has %d hashes, want none from the empty tree", len(p))
		}
		if root1 != EmptyRoot() {
			return fmt.Errorf("root %x of the empty tree is not the empty root", root1)
		}
		return nil
	}
	err := proof.VerifyConsistency(hasher, size1, size2, slices32(p), root1[:], root2[:])
	var mismatch proof.RootMismatchError
	if errors.As(err, &mismatch) {
		return fmt.Errorf("proof leads to root %x, want %x", mismatch.CalculatedRoot, mismatch.ExpectedRoot)
	}
	return err
}

// slices32 returns hs as slices that alias hs; merkle/proof only reads them.
func slices32(hs [][32]byte) [][]byte {
	s := make([][]byte, len(hs))
	for i := range hs {
		s[i] = hs[i][:]
	}
	return s
}
