package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/proof"
	bolt "go.etcd.io/bbolt"
)

// ErrBeyondSize is returned for a leaf, node, proof or tile that the
// committed tree (or the requested tree size) does not contain yet.
var ErrBeyondSize = errors.New("beyond the tree size")

// reader reads hashes and offsets inside one bbolt read transaction.
type reader struct {
	tx     *bolt.Tx
	hashes blockCursor
	ends   blockCursor
	upper  *upperLevels // nil: read every level from bbolt
	pend   *pending     // nil: everything is in bbolt
}

// blockCursor reads the blocks of one bucket: with one cursor, which
// bbolt would otherwise allocate for every Get, and keeping the last block
// read, since the nodes of a proof and neighbouring offsets often share one.
type blockCursor struct {
	c     *bolt.Cursor
	block uint64 // the block number of val
	val   []byte // valid for the transaction's life; nil: none
}

func (r *reader) block(bc *blockCursor, name []byte, index uint64, size int) ([]byte, error) {
	if block := index >> blockBits; bc.val == nil || bc.block != block {
		if bc.c == nil {
			bc.c = r.tx.Bucket(name).Cursor()
		}
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], block)
		k, v := bc.c.Seek(key[:])
		if !bytes.Equal(k, key[:]) {
			v = nil
		}
		bc.block, bc.val = block, v
	}
	v := bc.val
	off := int(index&(blockLen-1)) * size
	if len(v) < off+size {
		return nil, fmt.Errorf("%w: %s record %d missing", ErrCorrupt, name, index)
	}
	return v[off : off+size], nil
}

// node returns the hash of the perfect subtree (level, index).
func (r *reader) node(level uint8, index uint64) (Hash, error) {
	if level >= upperLevel && r.upper != nil {
		if l := r.upper[level]; index < uint64(len(l)) {
			return l[index], nil
		}
	}
	si := storedIndex(level, index)
	if p := r.pend; p != nil && si >= p.hashStart {
		if i := si - p.hashStart; i < uint64(len(p.hashes)) {
			return p.hashes[i], nil
		}
		return Hash{}, fmt.Errorf("node (%d, %d): %w", level, index, ErrBeyondSize)
	}
	v, err := r.block(&r.hashes, bucketHashes, si, 32)
	if err != nil {
		return Hash{}, err
	}
	return Hash(v), nil
}

// end returns the offset in entries.dat just past leaf i's record.
func (r *reader) end(i uint64) (uint64, error) {
	if p := r.pend; p != nil && i >= p.endStart {
		if j := i - p.endStart; j < uint64(len(p.ends)) {
			return p.ends[j], nil
		}
		return 0, fmt.Errorf("leaf %d: %w", i, ErrBeyondSize)
	}
	v, err := r.block(&r.ends, bucketEnds, i, 8)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(v), nil
}

// edge returns the roots of the perfect subtrees covering [0, size), left
// to right: the tree's right edge.
func (r *reader) edge(size uint64) ([]Hash, error) {
	ids := edgeNodes(size)
	hashes := make([]Hash, len(ids))
	for i, id := range ids {
		h, err := r.node(id.level, id.index)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	return hashes, nil
}

// span returns the byte range of leaves [start, end) in entries.dat,
// u16 length prefixes included.
func (r *reader) span(start, end uint64) (from, to uint64, err error) {
	if start > 0 {
		if from, err = r.end(start - 1); err != nil {
			return 0, 0, err
		}
	}
	if to, err = r.end(end - 1); err != nil {
		return 0, 0, err
	}
	return from, to, nil
}

// view runs fn in a read transaction after checking that the committed tree
// has at least size leaves.
func (s *Store) view(size uint64, fn func(r *reader) error) error {
	if cur := s.Size(); size > cur {
		return fmt.Errorf("tree size %d: %w (committed size %d)", size, ErrBeyondSize, cur)
	}
	// The tail before the transaction: a flush commits, then publishes an
	// empty tail, so whatever the tail misses, the transaction has.
	upper, pend := s.upper.Load(), s.pend.Load()
	return s.db.View(func(tx *bolt.Tx) error {
		return fn(&reader{tx: tx, upper: upper, pend: pend})
	})
}

// LeafHash returns the RFC 6962 hash of leaf i.
func (s *Store) LeafHash(i uint64) (Hash, error) {
	var h Hash
	err := s.view(i+1, func(r *reader) (err error) {
		h, err = r.node(0, i)
		return err
	})
	return h, err
}

// Leaf returns a copy of leaf i.
func (s *Store) Leaf(i uint64) ([]byte, error) {
	leaves, err := s.Leaves(i, i+1)
	if err != nil {
		return nil, err
	}
	return leaves[0], nil
}

// Leaves returns copies of the leaves [start, end), read with one disk read.
func (s *Store) Leaves(start, end uint64) ([][]byte, error) {
	if start >= end {
		return nil, fmt.Errorf("empty leaf range [%d, %d)", start, end)
	}
	raw, err := s.records(start, end)
	if err != nil {
		return nil, err
	}
	return splitRecords(raw, start, end)
}

// splitRecords splits the raw records of leaves [start, end) into the
// leaves, slices of raw.
func splitRecords(raw []byte, start, end uint64) ([][]byte, error) {
	leaves := make([][]byte, 0, end-start)
	for len(raw) > 0 {
		leaf, rest, err := nextRecord(raw, start+uint64(len(leaves)))
		if err != nil {
			return nil, err
		}
		leaves = append(leaves, leaf)
		raw = rest
	}
	if uint64(len(leaves)) != end-start {
		return nil, fmt.Errorf("%w: leaves [%d, %d): found %d records", ErrCorrupt, start, end, len(leaves))
	}
	return leaves, nil
}

// nextRecord splits the first u16-framed record, leaf i's, off raw.
func nextRecord(raw []byte, i uint64) (leaf, rest []byte, err error) {
	if len(raw) < 2 || len(raw) < 2+int(binary.BigEndian.Uint16(raw)) {
		return nil, nil, fmt.Errorf("%w: leaf %d: truncated record in the entries file", ErrCorrupt, i)
	}
	n := 2 + int(binary.BigEndian.Uint16(raw))
	return raw[2:n:n], raw[n:], nil
}

// checkRecords checks that the raw records of leaves [start, start+len(want))
// are those leaves: each hashes to its stored leaf hash. The entries file
// is not covered by the tree hashes bbolt keeps, so a bit flipped in it on
// disk would otherwise be served (and snapshotted) as the log's entry.
func checkRecords(raw []byte, start uint64, want []Hash) error {
	lh := newLeafHasher()
	for k, h := range want {
		i := start + uint64(k)
		leaf, rest, err := nextRecord(raw, i)
		if err != nil {
			return err
		}
		if lh.hash(leaf) != h {
			return fmt.Errorf("%w: leaf %d in the entries file does not hash to its stored leaf hash", ErrCorrupt, i)
		}
		raw = rest
	}
	if len(raw) != 0 {
		return fmt.Errorf("%w: leaves [%d, %d): %d bytes past the last record", ErrCorrupt, start, start+uint64(len(want)), len(raw))
	}
	return nil
}

// records returns the raw u16-framed records of leaves [start, end),
// checked against their stored leaf hashes.
func (s *Store) records(start, end uint64) ([]byte, error) {
	var from, to uint64
	hashes := make([]Hash, 0, end-start)
	err := s.view(end, func(r *reader) (err error) {
		if from, to, err = r.span(start, end); err != nil {
			return err
		}
		for i := start; i < end; i++ {
			h, err := r.node(0, i)
			if err != nil {
				return err
			}
			hashes = append(hashes, h)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("leaves [%d, %d): %w", start, end, err)
	}
	raw, err := s.readSpan(start, end, from, to)
	if err != nil {
		return nil, err
	}
	if err := checkRecords(raw, start, hashes); err != nil {
		return nil, err
	}
	return raw, nil
}

// readSpan reads the raw records of leaves [start, end), the bytes
// [from, to) of the entries file.
func (s *Store) readSpan(start, end, from, to uint64) ([]byte, error) {
	buf := make([]byte, to-from)
	if _, err := s.entries.ReadAt(buf, int64(from)); err != nil {
		return nil, fmt.Errorf("read leaves [%d, %d) at offset %d: %w", start, end, from, err)
	}
	return buf, nil
}

// leaf is Leaf inside a read transaction, with the same errors and check.
func (s *Store) leaf(r *reader, i uint64) ([]byte, error) {
	from, to, err := r.span(i, i+1)
	if err != nil {
		return nil, fmt.Errorf("leaves [%d, %d): %w", i, i+1, err)
	}
	h, err := r.node(0, i)
	if err != nil {
		return nil, fmt.Errorf("leaf %d: %w", i, err)
	}
	raw, err := s.readSpan(i, i+1, from, to)
	if err != nil {
		return nil, err
	}
	if err := checkRecords(raw, i, []Hash{h}); err != nil {
		return nil, err
	}
	return raw[2:], nil
}

// RootAt returns the root of the tree made of the first size leaves, for any
// size up to the committed one, from O(log size) stored hashes.
func (s *Store) RootAt(size uint64) (Hash, error) {
	if st := s.State(); st.Size == size {
		return st.Root, nil
	}
	var root Hash
	err := s.view(size, func(r *reader) error {
		hashes, err := r.edge(size)
		root = foldRoot(hashes)
		return err
	})
	return root, err
}

// InclusionProof returns the RFC 6962 inclusion proof of leaf index in the
// tree of the given size, for any size up to the committed one.
func (s *Store) InclusionProof(index, size uint64) ([]Hash, error) {
	nodes, err := inclusionNodes(index, size)
	if err != nil {
		return nil, err
	}
	return s.proof(nodes, size)
}

// inclusionProof is InclusionProof inside a read transaction of a tree of
// at least size leaves.
func (r *reader) inclusionProof(index, size uint64) ([]Hash, error) {
	nodes, err := inclusionNodes(index, size)
	if err != nil {
		return nil, err
	}
	return r.proof(nodes)
}

// inclusionNodes returns the nodes of the inclusion proof of leaf index in
// the tree of the given size.
func inclusionNodes(index, size uint64) (proof.Nodes, error) {
	if index >= size {
		return proof.Nodes{}, fmt.Errorf("inclusion proof of leaf %d in tree of size %d: %w", index, size, ErrBeyondSize)
	}
	return proof.Inclusion(index, size)
}

// ConsistencyProof returns the RFC 6962 consistency proof between the trees
// of size1 and size2 (size1 ≤ size2 ≤ committed size). It is empty when
// size1 is 0 or equals size2.
func (s *Store) ConsistencyProof(size1, size2 uint64) ([]Hash, error) {
	if size1 > size2 {
		return nil, fmt.Errorf("consistency proof from size %d to smaller size %d", size1, size2)
	}
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, err
	}
	return s.proof(nodes, size2)
}

// proof reads the proof of nodes in a read transaction of a tree of size
// leaves.
func (s *Store) proof(nodes proof.Nodes, size uint64) ([]Hash, error) {
	var hashes []Hash
	err := s.view(size, func(r *reader) (err error) {
		hashes, err = r.proof(nodes)
		return err
	})
	if err != nil {
		return nil, err
	}
	return hashes, nil
}

// proof reads the stored hashes the proof needs and folds the right-border
// group into the one ephemeral node, as merkle's Nodes.Rehash does.
func (r *reader) proof(nodes proof.Nodes) ([]Hash, error) {
	hashes := make([]Hash, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := r.node(uint8(id.Level), id.Index)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	_, begin, end := nodes.Ephem()
	if end-begin <= 1 {
		return hashes, nil
	}
	h := hashes[begin]
	for i := begin + 1; i < end; i++ {
		h = nodeHash(&hashes[i], &h)
	}
	hashes[begin] = h
	return append(hashes[:begin+1], hashes[end:]...), nil
}

// upperLevel is the lowest tree level whose hashes the store keeps in
// memory: 2/256 of the leaf count in hashes, 2.5 MB for 10 million leaves.
const upperLevel = 8

// upperLevels holds, for each level ≥ upperLevel, the hashes of the complete
// nodes of that level in index order. A published value is never modified:
// with appends only new hashes past the length readers see, and with grows
// a new array.
type upperLevels [64][]Hash

type upperHash struct {
	level uint8
	hash  Hash
}

// with returns the levels extended by hashes, which come in append order.
func (u *upperLevels) with(hashes []upperHash) *upperLevels {
	if len(hashes) == 0 {
		return u
	}
	next := *u
	for _, h := range hashes {
		next[h.level] = append(next[h.level], h.hash)
	}
	return &next
}

// loadUpperLevels reads the upper levels of a tree of the given size.
func loadUpperLevels(r *reader, size uint64) (*upperLevels, error) {
	u := new(upperLevels)
	for level := uint8(upperLevel); level < 64 && size>>level > 0; level++ {
		n := size >> level
		u[level] = make([]Hash, n)
		for i := range n {
			h, err := r.node(level, i)
			if err != nil {
				return nil, err
			}
			u[level][i] = h
		}
	}
	return u, nil
}
