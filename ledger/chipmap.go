package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"sort"
	"sync"

	"github.com/chipledger/chipledger/proofs"
)

// ErrIndexValueMismatch reports an IndexValue handed to ChipMap.Prove that
// the map does not hold for the key: a value for an absent key, none for a
// present one, or one whose hash differs from the stored value hash. It means
// the caller's chip index and the map disagree.
var ErrIndexValueMismatch = errors.New("index value does not match the chip map")

// MapPair is one entry of the chip index map: a chip's key (proofs.MapKey)
// and the hash of its IndexValue (proofs.ValueHash).
type MapPair struct {
	Key       [32]byte
	ValueHash [32]byte
}

// ChipMap is the verifiable chip index of DESIGN.md §3.7 in memory: the
// sparse Merkle tree with shortcut leaves whose hashing package proofs
// defines, over (key, value hash) pairs. It supports inserts and updates, not
// deletion: the index only ever adds chips or moves them to a newer entry.
// Its root depends only on the set of pairs, never on the order they came in.
//
// It is stored as a crit-bit (PATRICIA) trie: an internal node sits at the
// first bit where the keys below it differ and caches the §3.7 hash of the
// subtree at that depth; the levels between a node and its parent, where all
// keys below go the same way, are Inner(h, Empty) or Inner(Empty, h) and are
// recomputed when needed. So a map of n keys has n leaves and n-1 internal
// nodes however long the keys' shared prefixes are. Nodes live in arenas of
// pointer-free structs addressed by int32, so the garbage collector never
// scans them, and the arenas grow in fixed-size chunks, so growing never
// copies the whole map. About 108 bytes per key.
//
// A ChipMap is safe for concurrent use: Set and Update are exclusive, the
// other methods run in parallel. The zero ChipMap is an empty map.
type ChipMap struct {
	mu       sync.RWMutex
	leaves   mapArena[mapLeaf]
	inners   mapArena[mapInner]
	hashes   mapArena[[32]byte] // hashes[i] is the hash of inners[i]
	root     mapRef             // meaningless while leaves.n == 0
	rootHash [32]byte
}

// A mapRef names a node: an internal node i as i >= 0, leaf i as ^i < 0.
type mapRef int32

func mapLeafRef(i int32) mapRef { return mapRef(^i) }

type mapLeaf struct {
	key   [32]byte
	vhash [32]byte
}

// mapInner is an internal node. Its hash, the §3.7 hash of its subtree at
// depth bit, is kept apart in ChipMap.hashes, so that walks, which need only
// these 12 bytes per node, touch fewer cache lines; and it holds its
// children's bits, so that hashing it reads only their hashes.
type mapInner struct {
	child    [2]mapRef // the keys with bit `bit` 0, and 1
	bit      uint8     // the first bit where the keys below differ
	childBit [2]uint8  // the bit of each child that is an internal node
	dirty    bool      // the hash is stale; then every ancestor is dirty too
}

// NewChipMap returns an empty map.
func NewChipMap() *ChipMap { return new(ChipMap) }

// Len returns the number of keys in the map.
func (m *ChipMap) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int(m.leaves.n)
}

// Root returns the root hash of the map, proofs.EmptyMapRoot() if it is
// empty.
func (m *ChipMap) Root() [32]byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.rootHash
}

// Get returns the value hash stored for key.
func (m *ChipMap) Get(key [32]byte) (vhash [32]byte, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.leaves.n == 0 {
		return [32]byte{}, false
	}
	ref := m.root
	for ref >= 0 {
		n := m.inners.at(int32(ref))
		ref = n.child[mapKeyBit(&key, int(n.bit))]
	}
	l := m.leaves.at(int32(^ref))
	if l.key != key {
		return [32]byte{}, false
	}
	return l.vhash, true
}

// Set maps key to vhash, inserting the key or replacing its value hash.
func (m *ChipMap) Set(key, vhash [32]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.insert(&key, &vhash)
	m.refresh(0)
}

// Update applies pairs in order, as Set would one by one (the last pair of a
// key wins), but recomputes each hash the batch changes once, after all the
// inserts, spreading a large batch's hashing over the machine's cores.
func (m *ChipMap) Update(pairs []MapPair) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range pairs {
		m.insert(&pairs[i].Key, &pairs[i].ValueHash)
	}
	spawn := 0
	if len(pairs) >= minParallelMapUpdate {
		spawn = mapParallelDepth()
	}
	m.refresh(spawn)
}

// minParallelMapUpdate is the smallest batch whose hashes Update computes on
// more than one goroutine: below it, starting goroutines costs more than it
// saves.
const minParallelMapUpdate = 64

// mapParallelDepth is how many levels of the trie to split between goroutines
// to keep every core busy.
func mapParallelDepth() int { return bits.Len(uint(runtime.GOMAXPROCS(0) - 1)) }

// insert changes the trie's shape and marks the internal nodes whose hash
// changes dirty, bottom up; refresh recomputes them.
func (m *ChipMap) insert(key, vhash *[32]byte) {
	if m.leaves.n == 0 {
		m.root = mapLeafRef(m.leaves.add(mapLeaf{*key, *vhash}))
		return
	}
	var path [proofs.MaxMapDepth]mapRef
	np := 0
	ref := m.root
	for ref >= 0 {
		path[np] = ref
		np++
		n := m.inners.at(int32(ref))
		ref = n.child[mapKeyBit(key, int(n.bit))]
	}
	l := m.leaves.at(int32(^ref))
	if l.key == *key {
		if l.vhash != *vhash {
			l.vhash = *vhash
			m.markDirty(path[:np])
		}
		return
	}
	// The new internal node goes above the first node of the path that
	// splits below crit: the nodes above agree with key on their bit, and no
	// node of the path can split at crit itself, since key and the leaf
	// both went its way.
	crit := mapFirstDiffBit(key, &l.key)
	j, belowBit := 0, uint8(0)
	for ; j < np; j++ {
		if b := m.inners.at(int32(path[j])).bit; int(b) > crit {
			belowBit = b
			break
		}
	}
	below := ref
	if j < np {
		below = path[j]
	}
	n := mapInner{bit: uint8(crit), dirty: true}
	side := mapKeyBit(key, crit)
	n.child[side] = mapLeafRef(m.leaves.add(mapLeaf{*key, *vhash}))
	n.child[1-side], n.childBit[1-side] = below, belowBit
	added := mapRef(m.inners.add(n))
	m.hashes.add([32]byte{})
	if j == 0 {
		m.root = added
	} else {
		parent := m.inners.at(int32(path[j-1]))
		side := mapKeyBit(key, int(parent.bit))
		parent.child[side], parent.childBit[side] = added, uint8(crit)
	}
	m.markDirty(path[:j])
}

// markDirty marks the nodes of a root-first path dirty, stopping at the
// first that already is: its ancestors are too.
func (m *ChipMap) markDirty(path []mapRef) {
	for i := len(path) - 1; i >= 0; i-- {
		n := m.inners.at(int32(path[i]))
		if n.dirty {
			return
		}
		n.dirty = true
	}
}

// refresh recomputes the dirty hashes and the root hash, splitting the work
// between goroutines for the top spawn levels.
func (m *ChipMap) refresh(spawn int) {
	switch {
	case m.leaves.n == 0:
		m.rootHash = proofs.EmptyMapRoot()
	case m.root < 0:
		m.rootHash = m.up(m.root, 0, 0)
	default:
		n := m.inners.at(int32(m.root))
		if n.dirty {
			m.rehash(m.root, spawn)
		}
		m.rootHash = m.up(m.root, int(n.bit), 0)
	}
}

// rehash recomputes the hash of the dirty internal node ref and of its dirty
// descendants, rehashing its left child on another goroutine while spawn > 0
// and both children are dirty. The two subtrees share no node.
func (m *ChipMap) rehash(ref mapRef, spawn int) {
	n := m.inners.at(int32(ref))
	var dirty [2]bool
	for i, c := range n.child {
		dirty[i] = c >= 0 && m.inners.at(int32(c)).dirty
	}
	switch {
	case spawn > 0 && dirty[0] && dirty[1]:
		var wg sync.WaitGroup
		wg.Go(func() { m.rehash(n.child[0], spawn-1) })
		m.rehash(n.child[1], spawn-1)
		wg.Wait()
	case dirty[0]:
		m.rehash(n.child[0], spawn)
		if dirty[1] {
			m.rehash(n.child[1], spawn)
		}
	case dirty[1]:
		m.rehash(n.child[1], spawn)
	}
	m.hashInner(int32(ref), n)
	n.dirty = false
}

// hashInner recomputes the hash of internal node i, n, from its children.
func (m *ChipMap) hashInner(i int32, n *mapInner) {
	d := int(n.bit) + 1
	*m.hashes.at(i) = proofs.MapInnerHash(m.up(n.child[0], int(n.childBit[0]), d), m.up(n.child[1], int(n.childBit[1]), d))
}

// up returns the §3.7 hash of the subtree below ref seen at depth d, which is
// at most ref's own split bit: a leaf hashes the same at every depth, and an
// internal node at bit climbs from bit to d past the levels where all its
// keys go one way.
func (m *ChipMap) up(ref mapRef, bit, d int) [32]byte {
	if ref < 0 {
		l := m.leaves.at(int32(^ref))
		return proofs.MapLeafHash(l.key, l.vhash)
	}
	h := *m.hashes.at(int32(ref))
	if bit == d {
		return h
	}
	k := m.anyKey(ref)
	for level := bit - 1; level >= d; level-- {
		if mapKeyBit(k, level) == 0 {
			h = proofs.MapInnerHash(h, [32]byte{})
		} else {
			h = proofs.MapInnerHash([32]byte{}, h)
		}
	}
	return h
}

// anyKey returns the key of a leaf below ref; all of them share the bits
// above ref's split bit.
func (m *ChipMap) anyKey(ref mapRef) *[32]byte {
	for ref >= 0 {
		ref = m.inners.at(int32(ref)).child[0]
	}
	return &m.leaves.at(int32(^ref)).key
}

// Prove returns the map proof for key against the map's current root, which
// it returns too. If key is in the map, value must be the IndexValue whose
// hash the map holds for it, and the proof carries it; if key is not, value
// must be nil. Otherwise the error wraps ErrIndexValueMismatch.
func (m *ChipMap) Prove(key [32]byte, value *proofs.IndexValue) (*proofs.MapProof, [32]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	p, leaf := m.path(&key)
	switch {
	case p.Terminal == proofs.MapMember && value == nil:
		return nil, [32]byte{}, fmt.Errorf("%w: key %x is in the map, but no value was given", ErrIndexValueMismatch, key)
	case p.Terminal == proofs.MapMember:
		if vh := proofs.ValueHash(*value); vh != leaf.vhash {
			return nil, [32]byte{}, fmt.Errorf("%w: key %x: value hash %x, the map holds %x", ErrIndexValueMismatch, key, vh, leaf.vhash)
		}
		p.Value = *value
	case value != nil:
		return nil, [32]byte{}, fmt.Errorf("%w: key %x is not in the map, but a value was given", ErrIndexValueMismatch, key)
	case p.Terminal == proofs.MapOtherLeaf:
		p.OtherKey, p.OtherValueHash = leaf.key, leaf.vhash
	}
	return p, m.rootHash, nil
}

// path walks the trie to the leaf that best matches key and turns the walk
// into the §3.7 path of key: between two trie nodes the levels where all keys
// go one way have Empty siblings; at a trie node the sibling is its other
// child seen one level down. The walk of key leaves the trie where key first
// differs from the leaf found, at bit t: if t is inside a node's run of
// one-way levels, key's side there is an empty subtree; otherwise key ends at
// the leaf, as its own or as another key's. It returns that leaf, if any.
func (m *ChipMap) path(key *[32]byte) (*proofs.MapProof, *mapLeaf) {
	if m.leaves.n == 0 {
		return &proofs.MapProof{Terminal: proofs.MapEmpty}, nil
	}
	var path [proofs.MaxMapDepth]mapRef
	np := 0
	ref := m.root
	for ref >= 0 {
		path[np] = ref
		np++
		n := m.inners.at(int32(ref))
		ref = n.child[mapKeyBit(key, int(n.bit))]
	}
	leaf := m.leaves.at(int32(^ref))
	t := mapFirstDiffBit(key, &leaf.key)
	sibs := make([][32]byte, 0, 2*np+2)
	d := 0
	for _, r := range path[:np] {
		n := m.inners.at(int32(r))
		b := int(n.bit)
		if b > t {
			sibs = append(sibs, make([][32]byte, t-d)...)
			sibs = append(sibs, m.up(r, b, t+1))
			return &proofs.MapProof{Siblings: sibs, Terminal: proofs.MapEmpty}, nil
		}
		sibs = append(sibs, make([][32]byte, b-d)...)
		other := 1 - mapKeyBit(key, b)
		sibs = append(sibs, m.up(n.child[other], int(n.childBit[other]), b+1))
		d = b + 1
	}
	if len(sibs) == 0 {
		sibs = nil
	}
	if t == proofs.MaxMapDepth {
		return &proofs.MapProof{Siblings: sibs, Terminal: proofs.MapMember}, leaf
	}
	return &proofs.MapProof{Siblings: sibs, Terminal: proofs.MapOtherLeaf}, leaf
}

// BuildChipMap returns the map of pairs, which need not be sorted; a key
// that appears more than once gets its last value hash, as with Update. It
// sorts a copy of pairs and builds the trie bottom up, using the machine's
// cores for the hashes; pairs is not modified.
func BuildChipMap(pairs []MapPair) *ChipMap {
	sorted := sortMapPairs(pairs)

	m := new(ChipMap)
	n := len(sorted)
	m.leaves.extend(n)
	for i := range sorted {
		*m.leaves.at(int32(i)) = mapLeaf{sorted[i].Key, sorted[i].ValueHash}
	}
	switch n {
	case 0:
	case 1:
		m.root = mapLeafRef(0)
	default:
		// Over sorted keys, each internal node of the trie splits the range
		// below it between two adjacent keys; number it by that gap, so the
		// nodes can be built in parallel into preallocated slots.
		m.inners.extend(n - 1)
		m.hashes.extend(n - 1)
		m.root = m.build(0, int32(n), mapParallelDepth())
	}
	m.refresh(0)
	return m
}

// sortMapPairs returns a copy of pairs sorted by key, keeping only the last
// pair of each key. Keys are rarely repeated, so it sorts with the faster
// unstable sort and sorts again stably only if it finds a repeated key.
func sortMapPairs(pairs []MapPair) []MapPair {
	cmp := func(a, b MapPair) int { return compareMapKeys(&a.Key, &b.Key) }
	sorted := slices.Clone(pairs)
	slices.SortFunc(sorted, cmp)
	for i := 1; i < len(sorted); i++ {
		if sorted[i].Key == sorted[i-1].Key {
			copy(sorted, pairs)
			slices.SortStableFunc(sorted, cmp)
			return lastOfEachMapKey(sorted)
		}
	}
	return sorted
}

// lastOfEachMapKey removes from a stably sorted slice all but the last pair of
// each key, in place.
func lastOfEachMapKey(sorted []MapPair) []MapPair {
	out := 0
	for i := range sorted {
		if i+1 < len(sorted) && sorted[i+1].Key == sorted[i].Key {
			continue
		}
		sorted[out] = sorted[i]
		out++
	}
	return sorted[:out]
}

// minParallelMapBuild is the smallest range BuildChipMap splits between
// goroutines.
const minParallelMapBuild = 1 << 15

// build builds the trie of leaves [lo, hi), hi-lo >= 2, and returns its root
// node, spawning a goroutine for the left half while spawn > 0.
func (m *ChipMap) build(lo, hi int32, spawn int) mapRef {
	lk, hk := &m.leaves.at(lo).key, &m.leaves.at(hi-1).key
	b := mapFirstDiffBit(lk, hk)
	mid := lo + int32(sort.Search(int(hi-lo), func(i int) bool {
		return mapKeyBit(&m.leaves.at(lo+int32(i)).key, b) == 1
	}))
	var left, right mapRef
	half := func(lo, hi int32, spawn int) mapRef {
		if hi-lo == 1 {
			return mapLeafRef(lo)
		}
		return m.build(lo, hi, spawn)
	}
	if spawn > 0 && hi-lo >= minParallelMapBuild {
		var wg sync.WaitGroup
		wg.Go(func() { left = half(lo, mid, spawn-1) })
		right = half(mid, hi, spawn-1)
		wg.Wait()
	} else {
		left, right = half(lo, mid, 0), half(mid, hi, 0)
	}
	ref := mapRef(mid - 1)
	n := m.inners.at(mid - 1)
	n.bit, n.child = uint8(b), [2]mapRef{left, right}
	for i, c := range n.child {
		if c >= 0 {
			n.childBit[i] = m.inners.at(int32(c)).bit
		}
	}
	m.hashInner(mid-1, n)
	return ref
}

// mapKeyBit returns bit i of k, most significant first.
func mapKeyBit(k *[32]byte, i int) int {
	return int(k[i>>3]>>(7-i&7)) & 1
}

// mapFirstDiffBit returns the first bit where a and b differ, most significant
// first, or 256 if they are equal.
func mapFirstDiffBit(a, b *[32]byte) int {
	for i := 0; i < 32; i += 8 {
		if x := binary.BigEndian.Uint64(a[i:]) ^ binary.BigEndian.Uint64(b[i:]); x != 0 {
			return i*8 + bits.LeadingZeros64(x)
		}
	}
	return proofs.MaxMapDepth
}

func compareMapKeys(a, b *[32]byte) int {
	for i := 0; i < 32; i += 8 {
		x, y := binary.BigEndian.Uint64(a[i:]), binary.BigEndian.Uint64(b[i:])
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// mapArenaChunk is the number of nodes per arena chunk (1 MiB of leaves).
const mapArenaChunk = 1 << 14

// A mapArena holds nodes addressed by int32 in chunks of mapArenaChunk: every
// chunk but the last is full, so node i is chunks[i/mapArenaChunk][i%mapArenaChunk],
// and only the last chunk ever grows (by append), so growing copies at most
// one chunk. Nodes hold no pointers, so a chunk is one object the garbage
// collector does not scan.
type mapArena[T any] struct {
	chunks [][]T
	n      int32
}

func (a *mapArena[T]) at(i int32) *T {
	return &a.chunks[i/mapArenaChunk][i%mapArenaChunk]
}

// add appends v and returns its index.
func (a *mapArena[T]) add(v T) int32 {
	if a.n == math.MaxInt32 {
		panic("ledger: chip map arena is full")
	}
	if len(a.chunks) == 0 || len(a.chunks[len(a.chunks)-1]) == mapArenaChunk {
		// The first chunk starts small and grows by append, so small maps
		// stay small; later chunks are allocated whole.
		c := 16
		if len(a.chunks) > 0 {
			c = mapArenaChunk
		}
		a.chunks = append(a.chunks, make([]T, 0, c))
	}
	last := &a.chunks[len(a.chunks)-1]
	*last = append(*last, v)
	a.n++
	return a.n - 1
}

// extend appends k zero nodes, allocating each chunk at its final size.
func (a *mapArena[T]) extend(k int) {
	if int64(a.n)+int64(k) > math.MaxInt32 {
		panic("ledger: chip map arena is full")
	}
	for k > 0 {
		if len(a.chunks) == 0 || len(a.chunks[len(a.chunks)-1]) == mapArenaChunk {
			a.chunks = append(a.chunks, make([]T, 0, min(k, mapArenaChunk)))
		}
		last := &a.chunks[len(a.chunks)-1]
		r := min(k, mapArenaChunk-len(*last))
		*last = append(*last, make([]T, r)...)
		a.n += int32(r)
		k -= r
	}
}
