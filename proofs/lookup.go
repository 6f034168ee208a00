package proofs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrLookup reports a chip lookup proof that does not verify; the message
// says which part failed.
var ErrLookup = errors.New("proofs: chip lookup proof does not verify")

// ErrMalformedLookup reports a lookup proof encoding that ParseLookupProof
// rejects.
var ErrMalformedLookup = errors.New("proofs: malformed chip lookup proof")

// IndexRootLeafSize is the size of a kind-3 index-root leaf:
// u16 kind (3) ‖ u64 covered_size ‖ u64 chip_count ‖ root[32].
const IndexRootLeafSize = 2 + 8 + 8 + 32

// IndexRootKind is the leaf kind of index-root leaves.
const IndexRootKind = 3

// ParseIndexRootLeaf parses a kind-3 leaf (DESIGN.md §3.2): the log appends
// one as the last leaf of every batch, carrying the chip index root over
// the leaves before it.
func ParseIndexRootLeaf(leaf []byte) (coveredSize, chipCount uint64, root [32]byte, err error) {
	if len(leaf) != IndexRootLeafSize || binary.BigEndian.Uint16(leaf) != IndexRootKind {
		return 0, 0, root, fmt.Errorf("%w: not an index-root leaf (%d bytes)", ErrLookup, len(leaf))
	}
	return binary.BigEndian.Uint64(leaf[2:]), binary.BigEndian.Uint64(leaf[10:]), [32]byte(leaf[18:]), nil
}

// HistoryEntry is one escrow entry of a chip: its leaf index and leaf hash.
type HistoryEntry struct {
	Index    uint64
	LeafHash [32]byte
}

// A LookupProof proves what the log's verifiable chip index (DESIGN.md §3.7)
// says about one chip at one checkpoint: its latest escrow entry, or that it
// has none. It holds
//
//   - the signed checkpoint, of size N;
//   - the index-root leaf at N−1 (its covered_size must be N−1) and its
//     inclusion proof in the tree of size N;
//   - the map proof of the chip's key under that leaf's root;
//   - for a chip in the index: its latest escrow leaf with its inclusion
//     proof, and its whole history (leaf index and hash of every epoch, in
//     order), whose RFC 6962 root is the history_root of its index value.
//
// Its binary encoding (big-endian) is
//
//	"CLL1"
//	opaque checkpoint<1..2^16-1>
//	opaque index_leaf<50>                 u16 length (50) ‖ the leaf
//	u8 n ‖ n × 32                         inclusion proof of the index leaf
//	opaque map_proof<1..2^16-1>           MapProof encoding
//	u8 present (0 or 1), and if 1:
//	  opaque entry<1..2^16-1>
//	  u8 m ‖ m × 32                       inclusion proof of the entry
//	  u32 k ‖ k × (u64 index ‖ leaf_hash[32])   the history, k ≥ 1
//
// and nothing may follow.
type LookupProof struct {
	Checkpoint []byte
	IndexLeaf  []byte
	IndexProof [][32]byte
	Map        *MapProof
	// Entry, EntryProof and History are set when the chip is in the index.
	Entry      []byte
	EntryProof [][32]byte
	History    []HistoryEntry
}

// LookupResult is what a verified lookup proof establishes.
type LookupResult struct {
	// Checkpoint is the verified checkpoint the proof is for.
	Checkpoint Checkpoint
	// Present reports whether the chip has an escrow entry in the log.
	Present bool
	// Value is the chip's index value: its latest epoch, that entry's leaf
	// index and hash, and its history root.
	Value IndexValue
	// Entry is the latest escrow leaf (its hash is Value.LeafHash).
	Entry []byte
	// History lists the chip's escrow entries, epoch 1 first.
	History []HistoryEntry
}

const lookupMagic = "CLL1"

// Verify checks p for chipID against the log verifier v: the checkpoint
// signature, the index-root leaf's place (at N−1, covering N−1) and its
// inclusion, the map proof under its root, and for a present chip the
// latest entry's hash, index and inclusion and the history's root and last
// element. It uses only hashes and one signature. The caller still checks
// that Entry is an escrow entry for chipID at epoch Value.Epoch, which
// needs the entry format.
func (p *LookupProof) Verify(v *LogVerifier, chipID []byte) (*LookupResult, error) {
	cp, err := v.VerifyCheckpoint(p.Checkpoint)
	if err != nil {
		return nil, err
	}
	if cp.Size == 0 {
		return nil, fmt.Errorf("%w: empty tree", ErrLookup)
	}
	covered, _, root, err := ParseIndexRootLeaf(p.IndexLeaf)
	if err != nil {
		return nil, err
	}
	if covered != cp.Size-1 {
		return nil, fmt.Errorf("%w: index-root leaf covers %d leaves, want %d (the leaf before it)", ErrLookup, covered, cp.Size-1)
	}
	if err := VerifyInclusion(cp.Size-1, cp.Size, LeafHash(p.IndexLeaf), p.IndexProof, cp.Hash); err != nil {
		return nil, fmt.Errorf("%w: index-root leaf: %w", ErrLookup, err)
	}
	if p.Map == nil {
		return nil, fmt.Errorf("%w: no map proof", ErrLookup)
	}
	value, present, err := VerifyMapProof(root, chipID, p.Map)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLookup, err)
	}
	res := &LookupResult{Checkpoint: cp, Present: present}
	if !present {
		if p.Entry != nil || p.EntryProof != nil || p.History != nil {
			return nil, fmt.Errorf("%w: an absent chip with an entry or history", ErrLookup)
		}
		return res, nil
	}
	res.Value = *value
	if LeafHash(p.Entry) != value.LeafHash {
		return nil, fmt.Errorf("%w: the entry does not hash to the index value's leaf hash", ErrLookup)
	}
	if value.LeafIndex >= covered {
		return nil, fmt.Errorf("%w: the entry's index %d is not covered by the index (%d leaves)", ErrLookup, value.LeafIndex, covered)
	}
	if err := VerifyInclusion(value.LeafIndex, cp.Size, value.LeafHash, p.EntryProof, cp.Hash); err != nil {
		return nil, fmt.Errorf("%w: entry: %w", ErrLookup, err)
	}
	if uint64(len(p.History)) != uint64(value.Epoch) {
		return nil, fmt.Errorf("%w: history of %d entries for epoch %d", ErrLookup, len(p.History), value.Epoch)
	}
	hashes := make([][32]byte, len(p.History))
	for i, h := range p.History {
		if i > 0 && h.Index <= p.History[i-1].Index {
			return nil, fmt.Errorf("%w: history not in log order", ErrLookup)
		}
		hashes[i] = h.LeafHash
	}
	if last := p.History[len(p.History)-1]; last.Index != value.LeafIndex || last.LeafHash != value.LeafHash {
		return nil, fmt.Errorf("%w: the history does not end with the latest entry", ErrLookup)
	}
	if HistoryRoot(hashes) != value.HistoryRoot {
		return nil, fmt.Errorf("%w: the history does not hash to the index value's history root", ErrLookup)
	}
	res.Entry, res.History = p.Entry, p.History
	return res, nil
}

// MarshalBinary returns the encoding documented on LookupProof.
func (p *LookupProof) MarshalBinary() ([]byte, error) {
	if p.Map == nil {
		return nil, fmt.Errorf("%w: no map proof", ErrMalformedLookup)
	}
	mp, err := p.Map.MarshalBinary()
	if err != nil {
		return nil, err
	}
	present := p.Entry != nil
	switch {
	case len(p.Checkpoint) == 0 || len(p.Checkpoint) > maxOpaque16,
		len(p.IndexLeaf) != IndexRootLeafSize,
		len(p.IndexProof) > MaxProofHashes,
		len(mp) > maxOpaque16,
		present && (len(p.Entry) == 0 || len(p.Entry) > maxOpaque16 || len(p.EntryProof) > MaxProofHashes || len(p.History) == 0),
		!present && (p.EntryProof != nil || p.History != nil):
		return nil, fmt.Errorf("%w: a field is empty or out of range", ErrMalformedLookup)
	}
	b := append([]byte(nil), lookupMagic...)
	b = appendOpaque16(b, p.Checkpoint)
	b = appendOpaque16(b, p.IndexLeaf)
	b = appendHashes8(b, p.IndexProof)
	b = appendOpaque16(b, mp)
	if !present {
		return append(b, 0), nil
	}
	b = append(b, 1)
	b = appendOpaque16(b, p.Entry)
	b = appendHashes8(b, p.EntryProof)
	b = binary.BigEndian.AppendUint32(b, uint32(len(p.History)))
	for _, h := range p.History {
		b = binary.BigEndian.AppendUint64(b, h.Index)
		b = append(b, h.LeafHash[:]...)
	}
	return b, nil
}

func appendHashes8(b []byte, hs [][32]byte) []byte {
	b = append(b, uint8(len(hs)))
	for _, h := range hs {
		b = append(b, h[:]...)
	}
	return b
}

// ParseLookupProof parses the encoding documented on LookupProof, strictly.
func ParseLookupProof(data []byte) (*LookupProof, error) {
	bad := func(why string) (*LookupProof, error) {
		return nil, fmt.Errorf("%w: %s", ErrMalformedLookup, why)
	}
	r := &reader{b: bytes.Clone(data)} // the proof does not alias data
	magic, ok := r.bytes(len(lookupMagic))
	if !ok || string(magic) != lookupMagic {
		return bad("bad magic")
	}
	p := &LookupProof{}
	var err error
	if p.Checkpoint, err = r.opaque16("checkpoint"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedLookup, err)
	}
	if p.IndexLeaf, err = r.opaque16("index leaf"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedLookup, err)
	}
	if len(p.IndexLeaf) != IndexRootLeafSize {
		return bad("index leaf is not 50 bytes")
	}
	if p.IndexProof, err = readHashes8(r, "index proof"); err != nil {
		return bad(err.Error())
	}
	mp, err := r.opaque16("map proof")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedLookup, err)
	}
	if p.Map, err = ParseMapProof(mp); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedLookup, err)
	}
	present, ok := r.uint8()
	switch {
	case !ok || present > 1:
		return bad("bad presence byte")
	case present == 1:
		if p.Entry, err = r.opaque16("entry"); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformedLookup, err)
		}
		if p.EntryProof, err = readHashes8(r, "entry proof"); err != nil {
			return bad(err.Error())
		}
		nb, ok := r.bytes(4)
		if !ok {
			return bad("truncated history")
		}
		n := binary.BigEndian.Uint32(nb)
		if n == 0 || uint64(n)*40 > uint64(len(r.b)) {
			return bad("bad history length")
		}
		p.History = make([]HistoryEntry, n)
		for i := range p.History {
			idx, _ := r.uint64()
			h, _ := r.bytes(32)
			p.History[i] = HistoryEntry{Index: idx, LeafHash: [32]byte(h)}
		}
	}
	if len(r.b) != 0 {
		return bad(fmt.Sprintf("%d trailing bytes", len(r.b)))
	}
	return p, nil
}

// readHashes8 reads a proof: a u8 count of at most MaxProofHashes, then
// that many hashes. The error says which (what names the proof).
func readHashes8(r *reader, what string) ([][32]byte, error) {
	n, ok := r.uint8()
	switch {
	case !ok:
		return nil, fmt.Errorf("truncated %s", what)
	case n > MaxProofHashes:
		return nil, fmt.Errorf("%s of %d hashes, above %d", what, n, MaxProofHashes)
	case n == 0:
		return nil, nil
	}
	hs := make([][32]byte, n)
	for i := range hs {
		b, ok := r.bytes(32)
		if !ok {
			return nil, fmt.Errorf("truncated %s", what)
		}
		hs[i] = [32]byte(b)
	}
	return hs, nil
}
