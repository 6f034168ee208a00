package proofs_test

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/chipledger/chipledger/proofs"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/tlog"
	"pgregory.net/rapid"
)

func TestLeafHashMatchesRFC6962Vectors(t *testing.T) {
	for i, leaf := range testonly.LeafInputs() {
		if got, want := proofs.LeafHash(leaf), [32]byte(testonly.NodeHashes()[0][i]); got != want {
			t.Errorf("LeafHash(leaf %d) = %x, want %x", i, got, want)
		}
	}
	// transparency-dev/merkle rfc6962_test.go.
	if got, want := proofs.LeafHash([]byte("L123456")), h32("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"); got != want {
		t.Errorf("LeafHash(L123456) = %x, want %x", got, want)
	}
}

func TestEmptyRootIsSHA256OfNothing(t *testing.T) {
	want := h32("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
	if got := proofs.EmptyRoot(); got != want || got != [32]byte(testonly.EmptyRootHash()) {
		t.Errorf("EmptyRoot() = %x, want %x", got, want)
	}
}

// Node hashes of the 8-leaf RFC 6962 test tree, named as in
// reference/transparency-specs.md §1.4 (c2sp.org/merkle-tree §Example):
// a to g and leaf7 are the leaves, h = H(a, b), i = H(c, d), j = H(e, f),
// m = H(g, leaf7), k = H(h, i), n = H(j, m), and l = H(j, g) exists in the
// tree of size 7 only.
var (
	nh                  = testonly.NodeHashes()
	a, b, c, d, e, f, g = n32(0, 0), n32(0, 1), n32(0, 2), n32(0, 3), n32(0, 4), n32(0, 5), n32(0, 6)
	leaf7               = n32(0, 7)
	h, i, j, m          = n32(1, 0), n32(1, 1), n32(1, 2), n32(1, 3)
	k, n                = n32(2, 0), n32(2, 1)
	l                   = h32("837dbb152e9b079010717e84e865da4ebc0fa198a806d59d31bf15accef22d0e")
)

func n32(level, index int) [32]byte { return [32]byte(nh[level][index]) }

func root(size int) [32]byte { return [32]byte(testonly.RootHashes()[size]) }

func TestVerifyInclusionAcceptsPublishedVectors(t *testing.T) {
	// transparency-specs.md §1.4 and transparency-dev/merkle proof/verify_test.go
	// (whose leaf numbers are 1-based; these indexes are 0-based).
	tests := []struct {
		index, size int
		proof       [][32]byte
	}{
		{0, 1, nil},
		{0, 7, [][32]byte{b, i, l}},
		{3, 7, [][32]byte{c, h, l}},
		{4, 7, [][32]byte{f, g, k}},
		{6, 7, [][32]byte{j, k}},
		{7, 8, [][32]byte{g, j, k}},
		{0, 8, [][32]byte{b, i, n}},
		{5, 8, [][32]byte{e, m, k}},
		{2, 3, [][32]byte{h}},
		{1, 5, [][32]byte{a, i, e}},
	}
	for _, tt := range tests {
		leafHash := n32(0, tt.index)
		if err := proofs.VerifyInclusion(uint64(tt.index), uint64(tt.size), leafHash, tt.proof, root(tt.size)); err != nil {
			t.Errorf("VerifyInclusion(%d, %d): %v", tt.index, tt.size, err)
		}
		if err := proofs.VerifyInclusion(uint64(tt.index), uint64(tt.size), leafHash, tt.proof, root(tt.size-1)); !errors.Is(err, proofs.ErrInclusion) {
			t.Errorf("VerifyInclusion(%d, %d) against the root of size %d = %v, want ErrInclusion", tt.index, tt.size, tt.size-1, err)
		}
	}
}

func TestVerifyConsistencyAcceptsPublishedVectors(t *testing.T) {
	tests := []struct {
		size1, size2 int
		proof        [][32]byte
	}{
		{3, 7, [][32]byte{c, d, h, l}},
		{4, 7, [][32]byte{l}},
		{6, 7, [][32]byte{j, g, k}},
		{7, 8, [][32]byte{g, leaf7, j, k}},
		{1, 8, [][32]byte{b, i, n}},
		{6, 8, [][32]byte{j, m, k}},
		{2, 5, [][32]byte{i, e}},
		{0, 8, nil},
		{8, 8, nil},
	}
	for _, tt := range tests {
		if err := proofs.VerifyConsistency(uint64(tt.size1), uint64(tt.size2), tt.proof, root(tt.size1), root(tt.size2)); err != nil {
			t.Errorf("VerifyConsistency(%d, %d): %v", tt.size1, tt.size2, err)
		}
		if tt.size1 > 0 {
			if err := proofs.VerifyConsistency(uint64(tt.size1), uint64(tt.size2), tt.proof, root(tt.size1-1), root(tt.size2)); !errors.Is(err, proofs.ErrConsistency) {
				t.Errorf("VerifyConsistency(%d, %d) with the root of size %d = %v, want ErrConsistency", tt.size1, tt.size2, tt.size1-1, err)
			}
		}
	}
}

func TestVerifyInclusionRejectsIndexNotBelowSize(t *testing.T) {
	for _, tt := range []struct{ index, size uint64 }{{0, 0}, {8, 8}, {9, 8}, {math.MaxUint64, math.MaxUint64}} {
		err := proofs.VerifyInclusion(tt.index, tt.size, a, nil, root(1))
		if !errors.Is(err, proofs.ErrInclusion) {
			t.Errorf("VerifyInclusion(%d, %d) = %v, want ErrInclusion", tt.index, tt.size, err)
		}
	}
}

func TestVerifyConsistencyEdgeCases(t *testing.T) {
	empty := proofs.EmptyRoot()
	tests := []struct {
		name         string
		size1, size2 uint64
		proof        [][32]byte
		root1, root2 [32]byte
		ok           bool
	}{
		{"empty to empty", 0, 0, nil, empty, empty, true},
		{"empty to empty, both roots the same non-empty root", 0, 0, nil, root(1), root(1), false},
		{"empty to any size, no proof", 0, 8, nil, empty, root(8), true},
		{"empty to any size, with proof", 0, 8, [][32]byte{root(8)}, empty, root(8), false},
		{"empty tree with a non-empty root", 0, 8, nil, root(1), root(8), false},
		{"equal sizes, equal roots", 8, 8, nil, root(8), root(8), true},
		{"equal sizes, different roots", 7, 7, nil, root(7), root(8), false},
		{"equal sizes, non-empty proof", 8, 8, [][32]byte{root(8)}, root(8), root(8), false},
		{"first larger than second", 8, 7, nil, root(8), root(7), false},
		{"missing proof", 3, 7, nil, root(3), root(7), false},
		{"power of two with its own root prepended", 4, 7, [][32]byte{k, l}, root(4), root(7), false},
	}
	for _, tt := range tests {
		err := proofs.VerifyConsistency(tt.size1, tt.size2, tt.proof, tt.root1, tt.root2)
		if tt.ok && err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
		if !tt.ok && !errors.Is(err, proofs.ErrConsistency) {
			t.Errorf("%s: err = %v, want ErrConsistency", tt.name, err)
		}
	}
}

// tlogTree is an independent reference: a tree built with x/mod's sumdb/tlog.
// Leaf i starts with i, so no two leaves or subtrees hash alike.
type tlogTree struct{ stored []tlog.Hash }

func newTlogTree(t fataler, size int, salt []byte) *tlogTree {
	tr := &tlogTree{}
	for x := range size {
		hs, err := tlog.StoredHashes(int64(x), tlogLeaf(x, salt), tr)
		if err != nil {
			t.Fatal(err)
		}
		tr.stored = append(tr.stored, hs...)
	}
	return tr
}

// fataler is what both *testing.T and *rapid.T offer.
type fataler interface{ Fatal(args ...any) }

func tlogLeaf(index int, salt []byte) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(index)), salt...)
}

func (tr *tlogTree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	hs := make([]tlog.Hash, len(indexes))
	for x, idx := range indexes {
		hs[x] = tr.stored[idx]
	}
	return hs, nil
}

func (tr *tlogTree) leafHash(index int) [32]byte {
	return tr.stored[tlog.StoredHashIndex(0, int64(index))]
}

func (tr *tlogTree) root(t fataler, size int) [32]byte {
	r, err := tlog.TreeHash(int64(size), tr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (tr *tlogTree) inclusion(t fataler, index, size int) [][32]byte {
	p, err := tlog.ProveRecord(int64(size), int64(index), tr)
	if err != nil {
		t.Fatal(err)
	}
	return hashes32(p)
}

func (tr *tlogTree) consistency(t fataler, size1, size2 int) [][32]byte {
	if size1 == 0 {
		return nil
	}
	p, err := tlog.ProveTree(int64(size2), int64(size1), tr)
	if err != nil {
		t.Fatal(err)
	}
	return hashes32(p)
}

func hashes32(hs []tlog.Hash) [][32]byte {
	out := make([][32]byte, len(hs))
	for x, h := range hs {
		out[x] = h
	}
	return out
}

func TestTlogProofsVerifyForAllSmallTrees(t *testing.T) {
	const max = 33
	tr := newTlogTree(t, max, []byte("small"))
	for size := 0; size <= max; size++ {
		for index := range size {
			if err := proofs.VerifyInclusion(uint64(index), uint64(size), tr.leafHash(index), tr.inclusion(t, index, size), tr.root(t, size)); err != nil {
				t.Errorf("inclusion %d/%d: %v", index, size, err)
			}
		}
		for size1 := 0; size1 <= size; size1++ {
			if err := proofs.VerifyConsistency(uint64(size1), uint64(size), tr.consistency(t, size1, size), tr.root(t, size1), tr.root(t, size)); err != nil {
				t.Errorf("consistency %d to %d: %v", size1, size, err)
			}
		}
	}
}

// proofMutation breaks a valid proof in one way chosen by t: one flipped
// byte, one hash too many or one hash too few.
func proofMutation(t *rapid.T, p [][32]byte) (string, [][32]byte) {
	p = slices.Clone(p)
	kinds := []string{"extra hash"}
	if len(p) > 0 {
		kinds = append(kinds, "flipped byte", "missing hash")
	}
	switch kind := rapid.SampledFrom(kinds).Draw(t, "mutation"); kind {
	case "flipped byte":
		x := rapid.IntRange(0, len(p)-1).Draw(t, "hash")
		p[x][rapid.IntRange(0, 31).Draw(t, "byte")] ^= rapid.ByteMin(1).Draw(t, "xor")
		return fmt.Sprintf("%s in hash %d", kind, x), p
	case "missing hash":
		x := rapid.IntRange(0, len(p)-1).Draw(t, "hash")
		return fmt.Sprintf("%s %d", kind, x), slices.Delete(p, x, x+1)
	default:
		x := rapid.IntRange(0, len(p)).Draw(t, "position")
		extra := [32]byte(rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, "extra"))
		return fmt.Sprintf("%s at %d", kind, x), slices.Insert(p, x, extra)
	}
}

func flipByte(t *rapid.T, h [32]byte, label string) [32]byte {
	h[rapid.IntRange(0, 31).Draw(t, label+" byte")] ^= rapid.ByteMin(1).Draw(t, label+" xor")
	return h
}

func TestVerifyInclusionAcceptsTlogProofsAndRejectsTampering(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		treeSize := rapid.IntRange(1, 300).Draw(rt, "tree size")
		tr := newTlogTree(rt, treeSize, rapid.SliceOfN(rapid.Byte(), 0, 8).Draw(rt, "salt"))
		size := rapid.IntRange(1, treeSize).Draw(rt, "size")
		index := rapid.IntRange(0, size-1).Draw(rt, "index")
		leafHash, p, r := tr.leafHash(index), tr.inclusion(rt, index, size), tr.root(rt, size)
		verify := func(index, size int, leafHash [32]byte, p [][32]byte, r [32]byte) error {
			return proofs.VerifyInclusion(uint64(index), uint64(size), leafHash, p, r)
		}
		if err := verify(index, size, leafHash, p, r); err != nil {
			rt.Fatalf("valid proof rejected: %v", err)
		}

		what, bad := proofMutation(rt, p)
		if err := verify(index, size, leafHash, bad, r); !errors.Is(err, proofs.ErrInclusion) {
			rt.Fatalf("proof with %s: err = %v, want ErrInclusion", what, err)
		}
		if err := verify(index, size, flipByte(rt, leafHash, "leaf"), p, r); !errors.Is(err, proofs.ErrInclusion) {
			rt.Fatalf("flipped leaf hash: err = %v, want ErrInclusion", err)
		}
		if err := verify(index, size, leafHash, p, flipByte(rt, r, "root")); !errors.Is(err, proofs.ErrInclusion) {
			rt.Fatalf("flipped root: err = %v, want ErrInclusion", err)
		}
		if size > 1 {
			other := rapid.IntRange(0, size-2).Draw(rt, "other index")
			if other >= index {
				other++
			}
			if err := verify(other, size, leafHash, p, r); !errors.Is(err, proofs.ErrInclusion) {
				rt.Fatalf("leaf %d claimed at index %d: err = %v, want ErrInclusion", index, other, err)
			}
		}
		// A proof is also valid for another size exactly when that size's
		// proof is the same list of hashes: RFC 6962 proofs do not bind the
		// size, the checkpoint does.
		otherSize := rapid.IntRange(index+1, treeSize).Draw(rt, "other size")
		if otherSize != size {
			err := verify(index, otherSize, leafHash, p, tr.root(rt, otherSize))
			same := slices.Equal(p, tr.inclusion(rt, index, otherSize))
			if same && err != nil || !same && !errors.Is(err, proofs.ErrInclusion) {
				rt.Fatalf("proof for size %d checked at size %d (same proof: %v): err = %v", size, otherSize, same, err)
			}
		}
	})
}

func TestVerifyConsistencyAcceptsTlogProofsAndRejectsTampering(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		treeSize := rapid.IntRange(1, 300).Draw(rt, "tree size")
		tr := newTlogTree(rt, treeSize, rapid.SliceOfN(rapid.Byte(), 0, 8).Draw(rt, "salt"))
		size2 := rapid.IntRange(1, treeSize).Draw(rt, "size2")
		size1 := rapid.IntRange(1, size2).Draw(rt, "size1")
		p, r1, r2 := tr.consistency(rt, size1, size2), tr.root(rt, size1), tr.root(rt, size2)
		verify := func(size1, size2 int, p [][32]byte, r1, r2 [32]byte) error {
			return proofs.VerifyConsistency(uint64(size1), uint64(size2), p, r1, r2)
		}
		if err := verify(size1, size2, p, r1, r2); err != nil {
			rt.Fatalf("valid proof rejected: %v", err)
		}

		what, bad := proofMutation(rt, p)
		if err := verify(size1, size2, bad, r1, r2); !errors.Is(err, proofs.ErrConsistency) {
			rt.Fatalf("proof with %s: err = %v, want ErrConsistency", what, err)
		}
		if err := verify(size1, size2, p, flipByte(rt, r1, "root1"), r2); !errors.Is(err, proofs.ErrConsistency) {
			rt.Fatalf("flipped root1: err = %v, want ErrConsistency", err)
		}
		if err := verify(size1, size2, p, r1, flipByte(rt, r2, "root2")); !errors.Is(err, proofs.ErrConsistency) {
			rt.Fatalf("flipped root2: err = %v, want ErrConsistency", err)
		}
		// Other sizes, with their true roots: valid exactly when their own
		// proof is the same list of hashes.
		other1 := rapid.IntRange(1, size2).Draw(rt, "other size1")
		if other1 != size1 {
			err := verify(other1, size2, p, tr.root(rt, other1), r2)
			same := slices.Equal(p, tr.consistency(rt, other1, size2))
			if same && err != nil || !same && !errors.Is(err, proofs.ErrConsistency) {
				rt.Fatalf("proof from %d checked from %d (same proof: %v): err = %v", size1, other1, same, err)
			}
		}
		other2 := rapid.IntRange(size1, treeSize).Draw(rt, "other size2")
		if other2 != size2 {
			err := verify(size1, other2, p, r1, tr.root(rt, other2))
			same := slices.Equal(p, tr.consistency(rt, size1, other2))
			if same && err != nil || !same && !errors.Is(err, proofs.ErrConsistency) {
				rt.Fatalf("proof to %d checked to %d (same proof: %v): err = %v", size2, other2, same, err)
			}
		}
	})
}

func h32(s string) [32]byte {
	v, err := hex.DecodeString(s)
	if err != nil || len(v) != 32 {
		panic("bad hash " + s)
	}
	return [32]byte(v)
}
