package ledger

import (
	"crypto/sha256"
	"hash"
	"math/bits"
)

// Hash is a SHA-256 hash of a leaf or of a node of the RFC 6962 Merkle tree.
type Hash = [32]byte

// leafHasher computes RFC 6962 leaf hashes, SHA-256(0x00 ‖ leaf), reusing one
// SHA-256 state so that hashing a batch does not allocate.
type leafHasher struct {
	h   hash.Hash
	sum []byte // Sum's buffer, reused: a fresh one would escape to the heap
}

func newLeafHasher() *leafHasher {
	return &leafHasher{h: sha256.New(), sum: make([]byte, 0, sha256.Size)}
}

var leafPrefix = []byte{0}

func (lh *leafHasher) hash(leaf []byte) Hash {
	lh.h.Reset()
	lh.h.Write(leafPrefix)
	lh.h.Write(leaf)
	return Hash(lh.h.Sum(lh.sum[:0]))
}

// nodeHash is the RFC 6962 interior node hash, SHA-256(0x01 ‖ left ‖ right).
func nodeHash(left, right *Hash) Hash {
	var buf [1 + 2*sha256.Size]byte
	buf[0] = 1
	copy(buf[1:], left[:])
	copy(buf[1+sha256.Size:], right[:])
	return sha256.Sum256(buf[:])
}

// emptyRoot is the root of the tree with no leaves, SHA-256 of nothing.
var emptyRoot = sha256.Sum256(nil)

// edge is the right edge of a Merkle tree of a given size: the roots of the
// maximal perfect subtrees that cover [0, size), left to right (the tree's
// compact range). Appending a leaf merges the subtrees it completes; every
// hash an append creates is permanent (a perfect subtree never changes), so
// it is what the store persists.
type edge struct {
	size   uint64
	hashes []Hash
}

// push appends the leaf with hash lh and calls emit, in order, with the leaf
// hash and then each interior node the leaf completes, bottom up, with their
// levels. That order is exactly increasing stored-hash index (see
// storedIndex), so the store can write the emitted hashes contiguously.
func (e *edge) push(lh Hash, emit func(level uint8, h Hash)) {
	emit(0, lh)
	h := lh
	level := uint8(0)
	for n := e.size; n&1 == 1; n >>= 1 {
		last := len(e.hashes) - 1
		h = nodeHash(&e.hashes[last], &h)
		e.hashes = e.hashes[:last]
		level++
		emit(level, h)
	}
	e.hashes = append(e.hashes, h)
	e.size++
}

// root folds the edge into the tree root, right to left.
func (e *edge) root() Hash {
	return foldRoot(e.hashes)
}

// foldRoot returns the root of a tree given the roots of the perfect subtrees
// of its compact range [0, size), left to right.
func foldRoot(hashes []Hash) Hash {
	if len(hashes) == 0 {
		return emptyRoot
	}
	h := hashes[len(hashes)-1]
	for i := len(hashes) - 2; i >= 0; i-- {
		h = nodeHash(&hashes[i], &h)
	}
	return h
}

func (e *edge) clone() edge {
	return edge{size: e.size, hashes: append([]Hash(nil), e.hashes...)}
}

// edgeNodes lists the (level, index) of the perfect subtrees covering
// [0, size), left to right: one per set bit of size, highest first.
func edgeNodes(size uint64) []nodeID {
	ids := make([]nodeID, 0, bits.OnesCount64(size))
	var begin uint64
	for level := 63; level >= 0; level-- {
		if size&(1<<uint(level)) == 0 {
			continue
		}
		ids = append(ids, nodeID{level: uint8(level), index: begin >> uint(level)})
		begin += 1 << uint(level)
	}
	return ids
}

// nodeID names the root of the perfect subtree covering leaves
// [index·2^level, (index+1)·2^level).
type nodeID struct {
	level uint8
	index uint64
}

// storedIndex maps a node to its position in the sequence of permanent hashes
// in append order, the layout of golang.org/x/mod/sumdb/tlog: leaf n's hash is
// followed by the hashes of the subtrees leaf n completes. It is a bijection
// between perfect-subtree nodes and 0, 1, 2, …, and a log of n leaves stores
// exactly storedCount(n) hashes.
func storedIndex(level uint8, index uint64) uint64 {
	// Same as tlog.StoredHashIndex: skip the stored hashes of the whole
	// subtrees left of this node, then the left subtree of each level below.
	for l := level; l > 0; l-- {
		index = 2*index + 1
	}
	// Now index is the last leaf of the subtree; count stored hashes before it.
	i := uint64(0)
	for n := index; n > 0; n >>= 1 {
		i += n
	}
	return i + uint64(level)
}

// storedCount is the number of permanent hashes of a tree with n leaves:
// each leaf n completes as many subtrees as n+1 has trailing zero bits.
func storedCount(n uint64) uint64 {
	c := uint64(0)
	for m := n; m > 0; m >>= 1 {
		c += m
	}
	return c
}
