package proofs

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// The verifiable chip index (DESIGN.md §3.7) is a sparse Merkle tree over
// 256-bit keys with shortcut leaves. Walking from the root by key bits, most
// significant first, the subtree at depth d holding the keys that share a
// d-bit prefix hashes to
//
//	Empty                                  if it holds no key,
//	LeafNode(k, vhash) = SHA-256(0x02 ‖ k ‖ vhash)  if it holds exactly the key k,
//	Inner(l, r) = SHA-256(0x03 ‖ l ‖ r)    if it holds more, where l and r are
//	                                       the subtrees at depth d+1 whose next
//	                                       key bit is 0 and 1,
//
// and Empty is 32 zero bytes. A key's leaf therefore sits at the shallowest
// depth where no other key shares its prefix, the root depends only on the set
// of (key, value hash) pairs, and no node hashes to Empty (that would need a
// SHA-256 preimage of zero).

var (
	// ErrMapProof reports a map proof that does not prove what it claims
	// about a chip against the given index root. Every error of
	// VerifyMapProof wraps it.
	ErrMapProof = errors.New("proofs: invalid chip index proof")

	// ErrMalformedMapProof reports a map proof or index value encoding that
	// ParseMapProof or ParseIndexValue rejects, or a MapProof or IndexValue
	// that MarshalBinary cannot encode.
	ErrMalformedMapProof = errors.New("proofs: malformed chip index proof")
)

const (
	// MaxMapDepth is the deepest level of the chip index tree: a key has 256
	// bits, so a leaf sits at most 256 levels below the root (two keys that
	// differ only in their last bit).
	MaxMapDepth = 256

	// IndexValueSize is the length of an encoded IndexValue.
	IndexValueSize = 4 + 8 + 32 + 32

	// Chip ID lengths of DESIGN.md §3.1, which key derivation is defined for.
	minChipIDLen = 8
	maxChipIDLen = 32

	mapKeyContext   = "chipledger/index/v1/key"
	mapValueContext = "chipledger/index/v1/value"
	mapLeafPrefix   = 0x02
	mapInnerPrefix  = 0x03
	mapProofMagic   = "CLM1"
)

// IndexValue is what the chip index maps a chip ID to: its latest escrow
// entry among the leaves the index covers. Its encoding is exactly
// IndexValueSize bytes:
//
//	uint32 epoch                  (1, 2, ...)
//	uint64 leaf_index             (the latest escrow leaf's index in the log)
//	opaque leaf_hash[32]          (that leaf's RFC 6962 leaf hash)
//	opaque history_root[32]       (HistoryRoot of all the chip's escrow leaves)
type IndexValue struct {
	Epoch       uint32
	LeafIndex   uint64
	LeafHash    [32]byte
	HistoryRoot [32]byte
}

// MarshalBinary returns the IndexValueSize-byte encoding of v. It fails,
// wrapping ErrMalformedMapProof, for epoch 0: epochs start at 1.
func (v IndexValue) MarshalBinary() ([]byte, error) {
	if v.Epoch == 0 {
		return nil, fmt.Errorf("%w: index value with epoch 0; epochs start at 1", ErrMalformedMapProof)
	}
	return v.appendTo(make([]byte, 0, IndexValueSize)), nil
}

func (v IndexValue) appendTo(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, v.Epoch)
	b = binary.BigEndian.AppendUint64(b, v.LeafIndex)
	b = append(b, v.LeafHash[:]...)
	return append(b, v.HistoryRoot[:]...)
}

// ParseIndexValue parses the encoding documented on IndexValue. It must be
// exactly IndexValueSize bytes with a non-zero epoch; the error wraps
// ErrMalformedMapProof.
func ParseIndexValue(b []byte) (IndexValue, error) {
	if len(b) != IndexValueSize {
		return IndexValue{}, fmt.Errorf("%w: index value is %d bytes, want %d", ErrMalformedMapProof, len(b), IndexValueSize)
	}
	v := IndexValue{
		Epoch:       binary.BigEndian.Uint32(b),
		LeafIndex:   binary.BigEndian.Uint64(b[4:]),
		LeafHash:    [32]byte(b[12:44]),
		HistoryRoot: [32]byte(b[44:76]),
	}
	if v.Epoch == 0 {
		return IndexValue{}, fmt.Errorf("%w: index value with epoch 0; epochs start at 1", ErrMalformedMapProof)
	}
	return v, nil
}

// MapKey returns the chip index key of a chip,
// SHA-256("chipledger/index/v1/key" ‖ 0x00 ‖ u8 len(chipID) ‖ chipID).
// It panics if chipID is longer than 255 bytes, which no chip ID is (they are
// 8 to 32 bytes); VerifyMapProof checks the length before calling it.
func MapKey(chipID []byte) [32]byte {
	if len(chipID) > 255 {
		panic(fmt.Sprintf("proofs: MapKey of a %d-byte chip ID", len(chipID)))
	}
	var buf [len(mapKeyContext) + 2 + 255]byte
	b := append(buf[:0], mapKeyContext...)
	b = append(b, 0, byte(len(chipID)))
	return sha256.Sum256(append(b, chipID...))
}

// ValueHash returns SHA-256("chipledger/index/v1/value" ‖ 0x00 ‖ v's
// encoding), the value hash the chip index stores for a chip. It hashes any
// v, including epoch 0, which MarshalBinary refuses.
func ValueHash(v IndexValue) [32]byte {
	var buf [len(mapValueContext) + 1 + IndexValueSize]byte
	b := append(buf[:0], mapValueContext...)
	b = append(b, 0)
	return sha256.Sum256(v.appendTo(b))
}

// MapLeafHash returns LeafNode(key, vhash) = SHA-256(0x02 ‖ key ‖ vhash), the
// hash of a chip index subtree that holds only key.
func MapLeafHash(key, vhash [32]byte) [32]byte {
	return hash65(mapLeafPrefix, &key, &vhash)
}

// MapInnerHash returns Inner(l, r) = SHA-256(0x03 ‖ l ‖ r), the hash of a chip
// index subtree that holds more than one key, from the hashes of its halves.
func MapInnerHash(l, r [32]byte) [32]byte {
	return hash65(mapInnerPrefix, &l, &r)
}

func hash65(prefix byte, a, b *[32]byte) [32]byte {
	var buf [65]byte
	buf[0] = prefix
	copy(buf[1:33], a[:])
	copy(buf[33:], b[:])
	return sha256.Sum256(buf[:])
}

// EmptyMapRoot returns Empty, 32 zero bytes: the hash of a chip index subtree
// without keys, and the root of the empty index.
func EmptyMapRoot() [32]byte { return [32]byte{} }

// HistoryRoot returns the RFC 6962 Merkle tree hash of the tree whose leaf
// hashes are leafHashes, in order: a chip's escrow leaf hashes in log order
// give the history_root of its IndexValue. An empty list gives EmptyRoot().
func HistoryRoot(leafHashes [][32]byte) [32]byte {
	if len(leafHashes) == 0 {
		return EmptyRoot()
	}
	return subtreeHash(leafHashes)
}

// subtreeHash is RFC 6962's MTH over leaf hashes: split at the largest power
// of two below n.
func subtreeHash(hs [][32]byte) [32]byte {
	if len(hs) == 1 {
		return hs[0]
	}
	k := 1 << (bits.Len(uint(len(hs)-1)) - 1)
	l, r := subtreeHash(hs[:k]), subtreeHash(hs[k:])
	return hash65(0x01, &l, &r)
}

// MapTerminal says where the walk of a map proof stops.
type MapTerminal uint8

const (
	// MapMember: the walk reaches the lookup key's own leaf. The chip is in
	// the index with MapProof.Value.
	MapMember MapTerminal = 1
	// MapOtherLeaf: the walk reaches a subtree holding exactly one other key,
	// MapProof.OtherKey. The chip is not in the index.
	MapOtherLeaf MapTerminal = 2
	// MapEmpty: the walk reaches an empty subtree. The chip is not in the
	// index.
	MapEmpty MapTerminal = 3
)

// String returns "member", "other-leaf", "empty" or MapTerminal(n).
func (t MapTerminal) String() string {
	switch t {
	case MapMember:
		return "member"
	case MapOtherLeaf:
		return "other-leaf"
	case MapEmpty:
		return "empty"
	default:
		return fmt.Sprintf("MapTerminal(%d)", uint8(t))
	}
}

// A MapProof is the path of a chip's key through the chip index: what the
// chip maps to, or that it is absent, against an index root.
//
// Siblings[d] is the hash of the subtree at depth d+1 beside the path, on the
// other side of key bit d; EmptyMapRoot for an empty one. len(Siblings) is the
// depth where the walk stops, 0 to MaxMapDepth, and the terminal is the
// subtree there: the chip's own leaf (MapMember, with its Value), the leaf of
// the one other key in it (MapOtherLeaf, with OtherKey and OtherValueHash), or
// nothing (MapEmpty). Fields the terminal does not use are zero.
//
// Its binary encoding (all integers big-endian) is
//
//	"CLM1"                              4-byte magic and version
//	uint16 depth                        0..256, the length of Siblings
//	opaque empty_bitmap[(depth+7)/8]    bit d (most significant bit of byte d/8
//	                                    first) is set when Siblings[d] is Empty;
//	                                    the bits past depth are zero
//	opaque siblings[n][32]              the n non-empty siblings, root side
//	                                    first, n = depth minus the set bits;
//	                                    none is 32 zero bytes
//	uint8  terminal                     1 member, 2 other leaf, 3 empty
//	member:     IndexValue              (76 bytes, epoch at least 1)
//	other leaf: opaque key[32] ‖ opaque value_hash[32]
//	empty:      nothing
//
// and nothing may follow. Each MapProof has exactly one encoding.
type MapProof struct {
	Siblings       [][32]byte
	Terminal       MapTerminal
	Value          IndexValue // MapMember only
	OtherKey       [32]byte   // MapOtherLeaf only
	OtherValueHash [32]byte   // MapOtherLeaf only
}

// check reports a MapProof that has no encoding.
func (p *MapProof) check() error {
	if len(p.Siblings) > MaxMapDepth {
		return fmt.Errorf("%d siblings, at most %d", len(p.Siblings), MaxMapDepth)
	}
	var zeroValue IndexValue
	otherUnused := p.OtherKey == [32]byte{} && p.OtherValueHash == [32]byte{}
	switch p.Terminal {
	case MapMember:
		if p.Value.Epoch == 0 {
			return errors.New("member value with epoch 0; epochs start at 1")
		}
		if !otherUnused {
			return errors.New("member terminal with another key's fields set")
		}
	case MapOtherLeaf:
		if p.Value != zeroValue {
			return errors.New("other-leaf terminal with a member value set")
		}
	case MapEmpty:
		if p.Value != zeroValue || !otherUnused {
			return errors.New("empty terminal with leaf fields set")
		}
	default:
		return fmt.Errorf("unknown terminal %d", uint8(p.Terminal))
	}
	return nil
}

// MarshalBinary returns the encoding of p documented on MapProof. It fails,
// wrapping ErrMalformedMapProof, if p has more than MaxMapDepth siblings, an
// unknown terminal, a member value with epoch 0, or a field set that its
// terminal does not use.
func (p *MapProof) MarshalBinary() ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedMapProof, err)
	}
	depth := len(p.Siblings)
	b := make([]byte, 0, len(mapProofMagic)+2+(depth+7)/8+32*depth+1+IndexValueSize)
	b = append(b, mapProofMagic...)
	b = binary.BigEndian.AppendUint16(b, uint16(depth))
	bitmap := len(b)
	b = append(b, make([]byte, (depth+7)/8)...)
	for d, s := range p.Siblings {
		if s == [32]byte{} {
			b[bitmap+d/8] |= 0x80 >> (d % 8)
			continue
		}
		b = append(b, s[:]...)
	}
	b = append(b, byte(p.Terminal))
	switch p.Terminal {
	case MapMember:
		b = p.Value.appendTo(b)
	case MapOtherLeaf:
		b = append(b, p.OtherKey[:]...)
		b = append(b, p.OtherValueHash[:]...)
	}
	return b, nil
}

// ParseMapProof parses the encoding documented on MapProof. It is strict: a
// wrong magic, a depth above MaxMapDepth, a set bitmap bit past the depth, an
// explicit all-zero sibling, an unknown terminal, a member value with epoch 0,
// a truncated field or any trailing byte is an error wrapping
// ErrMalformedMapProof. On success MarshalBinary returns b exactly, and the
// proof does not alias b.
//
// ParseMapProof verifies nothing; call VerifyMapProof.
func ParseMapProof(b []byte) (*MapProof, error) {
	s := reader{b}
	if magic, ok := s.bytes(len(mapProofMagic)); !ok || string(magic) != mapProofMagic {
		return nil, fmt.Errorf("%w: does not start with %q", ErrMalformedMapProof, mapProofMagic)
	}
	depth, ok := s.uint16()
	if !ok {
		return nil, fmt.Errorf("%w: truncated depth", ErrMalformedMapProof)
	}
	if depth > MaxMapDepth {
		return nil, fmt.Errorf("%w: depth %d above %d", ErrMalformedMapProof, depth, MaxMapDepth)
	}
	bitmap, ok := s.bytes((int(depth) + 7) / 8)
	if !ok {
		return nil, fmt.Errorf("%w: truncated empty bitmap", ErrMalformedMapProof)
	}
	if depth%8 != 0 && bitmap[len(bitmap)-1]&(0xff>>(depth%8)) != 0 {
		return nil, fmt.Errorf("%w: empty bitmap has bits set past depth %d", ErrMalformedMapProof, depth)
	}
	p := &MapProof{Siblings: make([][32]byte, depth)}
	for d := range p.Siblings {
		if bitmap[d/8]&(0x80>>(d%8)) != 0 {
			continue
		}
		h, ok := s.bytes(32)
		if !ok {
			return nil, fmt.Errorf("%w: truncated sibling at depth %d", ErrMalformedMapProof, d)
		}
		if [32]byte(h) == [32]byte{} {
			return nil, fmt.Errorf("%w: sibling at depth %d is Empty but not marked in the bitmap", ErrMalformedMapProof, d)
		}
		p.Siblings[d] = [32]byte(h)
	}
	if depth == 0 {
		p.Siblings = nil
	}
	t, ok := s.uint8()
	if !ok {
		return nil, fmt.Errorf("%w: truncated terminal", ErrMalformedMapProof)
	}
	p.Terminal = MapTerminal(t)
	switch p.Terminal {
	case MapMember:
		v, ok := s.bytes(IndexValueSize)
		if !ok {
			return nil, fmt.Errorf("%w: truncated member value", ErrMalformedMapProof)
		}
		var err error
		if p.Value, err = ParseIndexValue(v); err != nil {
			return nil, err
		}
	case MapOtherLeaf:
		kv, ok := s.bytes(64)
		if !ok {
			return nil, fmt.Errorf("%w: truncated other leaf", ErrMalformedMapProof)
		}
		p.OtherKey, p.OtherValueHash = [32]byte(kv[:32]), [32]byte(kv[32:])
	case MapEmpty:
	default:
		return nil, fmt.Errorf("%w: unknown terminal %d", ErrMalformedMapProof, t)
	}
	if len(s.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformedMapProof, len(s.b))
	}
	return p, nil
}

// VerifyMapProof checks that p proves what the chip index with root maps
// chipID to. It returns the chip's value and true if the chip is in the
// index, or nil and false if p proves it absent.
//
// It recomputes the root from the terminal up through the siblings, along
// the bits of MapKey(chipID), and compares. Before that it checks what a
// canonical tree implies: chipID is 8 to 32 bytes; the deepest sibling is not
// Empty (a subtree with one key is a leaf one level up, and one with none is
// Empty); an empty terminal is not at depth 256 (its parent would hold one
// key); and an other-leaf terminal's key is not the chip's key and shares its
// first len(p.Siblings) bits. The root comparison alone already rejects every
// proof whose terminal is not where the tree really has it: a leaf placed
// deeper than the tree holds it, or an Inner where the tree has a leaf, hashes
// to a different root unless SHA-256 collides.
//
// Every error wraps ErrMapProof, and also ErrMalformedMapProof when p could
// not be encoded (see MapProof.MarshalBinary). A present value is only as
// recent as root: take root from an IndexRoot leaf whose inclusion in a
// verified checkpoint was checked.
func VerifyMapProof(root [32]byte, chipID []byte, p *MapProof) (value *IndexValue, present bool, err error) {
	if p == nil {
		return nil, false, fmt.Errorf("%w: no proof", ErrMapProof)
	}
	if len(chipID) < minChipIDLen || len(chipID) > maxChipIDLen {
		return nil, false, fmt.Errorf("%w: chip ID of %d bytes, want %d to %d", ErrMapProof, len(chipID), minChipIDLen, maxChipIDLen)
	}
	if err := p.check(); err != nil {
		return nil, false, fmt.Errorf("%w: %w: %v", ErrMapProof, ErrMalformedMapProof, err)
	}
	key := MapKey(chipID)
	if err := p.checkShape(key); err != nil {
		return nil, false, fmt.Errorf("%w: chip %x: %v", ErrMapProof, chipID, err)
	}
	var h [32]byte
	switch p.Terminal {
	case MapMember:
		h = MapLeafHash(key, ValueHash(p.Value))
	case MapOtherLeaf:
		h = MapLeafHash(p.OtherKey, p.OtherValueHash)
	case MapEmpty:
		h = EmptyMapRoot()
	}
	for d := len(p.Siblings) - 1; d >= 0; d-- {
		if keyBit(&key, d) == 0 {
			h = MapInnerHash(h, p.Siblings[d])
		} else {
			h = MapInnerHash(p.Siblings[d], h)
		}
	}
	if h != root {
		return nil, false, fmt.Errorf("%w: chip %x: %s proof at depth %d leads to root %x, want %x", ErrMapProof, chipID, p.Terminal, len(p.Siblings), h, root)
	}
	if p.Terminal != MapMember {
		return nil, false, nil
	}
	v := p.Value
	return &v, true, nil
}

// checkShape checks the invariants of a canonical tree that the path of key
// in p must satisfy.
func (p *MapProof) checkShape(key [32]byte) error {
	depth := len(p.Siblings)
	if depth > 0 && p.Siblings[depth-1] == EmptyMapRoot() {
		return fmt.Errorf("%s terminal at depth %d beside an Empty sibling: its parent would hold at most one key", p.Terminal, depth)
	}
	switch p.Terminal {
	case MapEmpty:
		if depth == MaxMapDepth {
			return fmt.Errorf("empty terminal at depth %d: its parent would hold exactly one key", depth)
		}
	case MapOtherLeaf:
		if p.OtherKey == key {
			return errors.New("other-leaf terminal holds the chip's own key")
		}
		if diff := firstDiffBit(&key, &p.OtherKey); diff < depth {
			return fmt.Errorf("other key %x differs from the chip's key at bit %d, above its depth %d", p.OtherKey, diff, depth)
		}
	}
	return nil
}

// keyBit returns bit d of k, most significant first.
func keyBit(k *[32]byte, d int) byte {
	return k[d/8] >> (7 - d%8) & 1
}

// firstDiffBit returns the first bit where a and b differ, most significant
// first, or 256 if they are equal.
func firstDiffBit(a, b *[32]byte) int {
	for i := 0; i < 32; i += 8 {
		x := binary.BigEndian.Uint64(a[i:]) ^ binary.BigEndian.Uint64(b[i:])
		if x != 0 {
			return i*8 + bits.LeadingZeros64(x)
		}
	}
	return 256
}
