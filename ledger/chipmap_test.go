package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/chipledger/chipledger/proofs"
	"pgregory.net/rapid"
)

// naiveMap is an independent reference for the chip index of DESIGN.md §3.7:
// a plain recursion over the sorted pairs, one level per key bit, with the
// hashes spelled out with crypto/sha256.
type naiveMap []naivePair

type naivePair struct {
	key   [32]byte
	value proofs.IndexValue
}

func newNaiveMap(model map[[32]byte]proofs.IndexValue) naiveMap {
	var m naiveMap
	for k, v := range model {
		m = append(m, naivePair{k, v})
	}
	slices.SortFunc(m, func(a, b naivePair) int { return bytes.Compare(a.key[:], b.key[:]) })
	return m
}

func naiveValueHash(v proofs.IndexValue) [32]byte {
	b := []byte("chipledger/index/v1/value\x00")
	b = append(b, byte(v.Epoch>>24), byte(v.Epoch>>16), byte(v.Epoch>>8), byte(v.Epoch))
	for s := 56; s >= 0; s -= 8 {
		b = append(b, byte(v.LeafIndex>>s))
	}
	b = append(b, v.LeafHash[:]...)
	return sha256.Sum256(append(b, v.HistoryRoot[:]...))
}

func naiveNode(prefix byte, a, b [32]byte) [32]byte {
	return sha256.Sum256(slices.Concat([]byte{prefix}, a[:], b[:]))
}

func naiveBit(k [32]byte, d int) int { return int(k[d/8]>>(7-d%8)) & 1 }

func (m naiveMap) split(d int) int {
	return sort.Search(len(m), func(i int) bool { return naiveBit(m[i].key, d) == 1 })
}

// hash returns the hash of m as the subtree at depth d: Empty, one key's
// LeafNode, or Inner of its halves by bit d.
func (m naiveMap) hash(d int) [32]byte {
	switch len(m) {
	case 0:
		return [32]byte{}
	case 1:
		return naiveNode(0x02, m[0].key, naiveValueHash(m[0].value))
	}
	i := m.split(d)
	return naiveNode(0x03, m[:i].hash(d+1), m[i:].hash(d+1))
}

// prove walks key's bits down to the first subtree with at most one key.
func (m naiveMap) prove(key [32]byte) *proofs.MapProof {
	p := new(proofs.MapProof)
	sub := m
	for d := 0; len(sub) > 1; d++ {
		i := sub.split(d)
		if naiveBit(key, d) == 0 {
			p.Siblings, sub = append(p.Siblings, sub[i:].hash(d+1)), sub[:i]
		} else {
			p.Siblings, sub = append(p.Siblings, sub[:i].hash(d+1)), sub[i:]
		}
	}
	switch {
	case len(sub) == 0:
		p.Terminal = proofs.MapEmpty
	case sub[0].key == key:
		p.Terminal, p.Value = proofs.MapMember, sub[0].value
	default:
		p.Terminal, p.OtherKey, p.OtherValueHash = proofs.MapOtherLeaf, sub[0].key, naiveValueHash(sub[0].value)
	}
	return p
}

func sameMapProof(a, b *proofs.MapProof) bool {
	return slices.Equal(a.Siblings, b.Siblings) && a.Terminal == b.Terminal && a.Value == b.Value &&
		a.OtherKey == b.OtherKey && a.OtherValueHash == b.OtherValueHash
}

// chipMapModel is what a ChipMap should hold: its pairs, the chip IDs whose
// keys are in it and some whose keys are not.
type chipMapModel struct {
	values map[[32]byte]proofs.IndexValue
	keys   [][32]byte // in insertion order, for picking neighbours
	chips  [][]byte
	absent [][]byte
}

func drawMapHash(t *rapid.T, label string) [32]byte {
	return [32]byte(rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, label))
}

func drawIndexValue(t *rapid.T) proofs.IndexValue {
	return proofs.IndexValue{
		Epoch:       rapid.Uint32Range(1, 5).Draw(t, "epoch"),
		LeafIndex:   rapid.Uint64().Draw(t, "leaf index"),
		LeafHash:    drawMapHash(t, "leaf hash"),
		HistoryRoot: drawMapHash(t, "history root"),
	}
}

// flipKeyBit returns k with bit b flipped: a key that shares k's first b bits.
func flipKeyBit(k [32]byte, b int) [32]byte {
	k[b/8] ^= 0x80 >> (b % 8)
	return k
}

// drawBatch draws a batch of pairs: random keys, chip keys, near neighbours
// of keys already drawn (sharing up to 255 leading bits), neighbours of
// absent chips, and new values for keys already in the map.
func (mm *chipMapModel) drawBatch(t *rapid.T) []MapPair {
	var batch []MapPair
	nearBit := rapid.OneOf(rapid.IntRange(0, 255), rapid.IntRange(240, 255))
	for range rapid.IntRange(0, 40).Draw(t, "batch size") {
		var k [32]byte
		switch rapid.IntRange(0, 4).Draw(t, "kind") {
		case 0:
			k = drawMapHash(t, "random key")
		case 1:
			chip := rapid.SliceOfN(rapid.Byte(), MinChipIDLen, MaxChipIDLen).Draw(t, "chip")
			mm.chips = append(mm.chips, chip)
			k = proofs.MapKey(chip)
		case 2:
			if len(mm.keys) == 0 {
				continue
			}
			k = flipKeyBit(rapid.SampledFrom(mm.keys).Draw(t, "near"), nearBit.Draw(t, "near bit"))
		case 3:
			chip := rapid.SliceOfN(rapid.Byte(), MinChipIDLen, MaxChipIDLen).Draw(t, "absent chip")
			mm.absent = append(mm.absent, chip)
			k = flipKeyBit(proofs.MapKey(chip), nearBit.Draw(t, "absent near bit"))
		case 4:
			if len(mm.keys) == 0 {
				continue
			}
			k = rapid.SampledFrom(mm.keys).Draw(t, "update")
		}
		v := drawIndexValue(t)
		if _, ok := mm.values[k]; !ok {
			mm.keys = append(mm.keys, k)
		}
		mm.values[k] = v
		batch = append(batch, MapPair{k, proofs.ValueHash(v)})
	}
	return batch
}

func (mm *chipMapModel) pairs() []MapPair {
	var ps []MapPair
	for k, v := range mm.values {
		ps = append(ps, MapPair{k, proofs.ValueHash(v)})
	}
	slices.SortFunc(ps, func(a, b MapPair) int { return bytes.Compare(a.Key[:], b.Key[:]) })
	return ps
}

// prove returns m's proof for key with the model's value attached.
func (mm *chipMapModel) prove(t interface{ Fatalf(string, ...any) }, m *ChipMap, key [32]byte) (*proofs.MapProof, [32]byte) {
	var value *proofs.IndexValue
	if v, ok := mm.values[key]; ok {
		value = &v
	}
	p, root, err := m.Prove(key, value)
	if err != nil {
		t.Fatalf("Prove(%x): %v", key, err)
	}
	return p, root
}

func TestChipMapMatchesNaiveReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := NewChipMap()
		mm := &chipMapModel{values: make(map[[32]byte]proofs.IndexValue)}
		for range rapid.IntRange(1, 6).Draw(t, "batches") {
			batch := mm.drawBatch(t)
			if rapid.Bool().Draw(t, "one by one") {
				for _, p := range batch {
					m.Set(p.Key, p.ValueHash)
				}
			} else {
				m.Update(batch)
			}
			want := newNaiveMap(mm.values).hash(0)
			if got := m.Root(); got != want {
				t.Fatalf("incremental root %x, naive root %x", got, want)
			}
			ps := rapid.Permutation(mm.pairs()).Draw(t, "build order")
			if got := BuildChipMap(ps).Root(); got != want {
				t.Fatalf("BuildChipMap root %x, naive root %x", got, want)
			}
			if m.Len() != len(mm.values) {
				t.Fatalf("Len = %d, want %d", m.Len(), len(mm.values))
			}
		}
		naive := newNaiveMap(mm.values)
		probe := slices.Clone(mm.keys)
		probe = append(probe, drawMapHash(t, "absent key"))
		if len(mm.keys) > 0 {
			probe = append(probe, flipKeyBit(rapid.SampledFrom(mm.keys).Draw(t, "probe near"), rapid.IntRange(0, 255).Draw(t, "probe bit")))
		}
		for _, k := range probe {
			vhash, ok := m.Get(k)
			if v, want := mm.values[k]; ok != want || (ok && vhash != proofs.ValueHash(v)) {
				t.Fatalf("Get(%x) = %x, %v", k, vhash, ok)
			}
			p, root := mm.prove(t, m, k)
			if want := naive.prove(k); !sameMapProof(p, want) {
				t.Fatalf("Prove(%x) = %+v, naive proof %+v", k, p, want)
			}
			if root != m.Root() {
				t.Fatalf("Prove returned root %x, Root() is %x", root, m.Root())
			}
		}
		checkChipProofs(t, m, mm)
	})
}

// checkChipProofs checks that the proof of every chip, present or absent,
// verifies with package proofs, and that no tampered proof does.
func checkChipProofs(t *rapid.T, m *ChipMap, mm *chipMapModel) {
	chips := slices.Concat(mm.chips, mm.absent)
	if len(chips) == 0 {
		return
	}
	encoded := make([][]byte, len(chips))
	for i, chip := range chips {
		p, root := mm.prove(t, m, proofs.MapKey(chip))
		v, present, err := proofs.VerifyMapProof(root, chip, p)
		if err != nil {
			t.Fatalf("chip %x: %v", chip, err)
		}
		want, member := mm.values[proofs.MapKey(chip)]
		if present != member || (present && *v != want) {
			t.Fatalf("chip %x: VerifyMapProof = %+v, %v; want %+v, %v", chip, v, present, want, member)
		}
		if encoded[i], err = p.MarshalBinary(); err != nil {
			t.Fatal(err)
		}
	}
	root := m.Root()
	verifies := func(b []byte, root [32]byte, chip []byte) bool {
		p, err := proofs.ParseMapProof(b)
		if err != nil {
			return false
		}
		_, _, err = proofs.VerifyMapProof(root, chip, p)
		return err == nil
	}
	i := rapid.IntRange(0, len(chips)-1).Draw(t, "tampered chip")
	xor := rapid.ByteMin(1).Draw(t, "xor")
	for at := range encoded[i] {
		b := slices.Clone(encoded[i])
		b[at] ^= xor
		if verifies(b, root, chips[i]) {
			t.Fatalf("proof for chip %x with byte %d changed verifies", chips[i], at)
		}
	}
	if verifies(encoded[i], flipKeyBit(root, rapid.IntRange(0, 255).Draw(t, "root bit")), chips[i]) {
		t.Fatalf("proof for chip %x verifies against another root", chips[i])
	}
	for j, chip := range chips {
		// Two absent chips whose walks end in the same subtree share a proof.
		if got, want := verifies(encoded[i], root, chip), bytes.Equal(encoded[i], encoded[j]); got != want {
			t.Fatalf("proof for chip %x verifies for chip %x: %v, want %v", chips[i], chip, got, want)
		}
	}
}

// randomChipMapModel returns a model of n chips with random values, from a fixed
// seed, and the map built from it incrementally in batches of 256.
func randomChipMapModel(n int, seed uint64) (*chipMapModel, *ChipMap) {
	r := rand.New(rand.NewPCG(seed, 1))
	mm := &chipMapModel{values: make(map[[32]byte]proofs.IndexValue)}
	m := NewChipMap()
	var batch []MapPair
	for i := range n {
		chip := fmt.Appendf(nil, "chip-%011d", i)
		v := proofs.IndexValue{Epoch: 1 + r.Uint32N(3), LeafIndex: r.Uint64()}
		for j := range v.LeafHash {
			v.LeafHash[j], v.HistoryRoot[j] = byte(r.Uint32()), byte(r.Uint32())
		}
		k := proofs.MapKey(chip)
		mm.chips = append(mm.chips, chip)
		mm.keys = append(mm.keys, k)
		mm.values[k] = v
		batch = append(batch, MapPair{k, proofs.ValueHash(v)})
		if len(batch) == 256 || i == n-1 {
			m.Update(batch)
			batch = batch[:0]
		}
	}
	return mm, m
}

// Across several arena chunks, and with BuildChipMap splitting the work
// between goroutines, the incremental map, the bulk-built one and the naive
// reference agree, and proofs of all three terminal kinds verify.
func TestChipMapLargeAgreesWithBuildAndReference(t *testing.T) {
	n := 3*mapArenaChunk + 123
	mm, m := randomChipMapModel(n, 7)
	want := newNaiveMap(mm.values).hash(0)
	if got := m.Root(); got != want {
		t.Fatalf("incremental root %x, naive root %x", got, want)
	}
	built := BuildChipMap(mm.pairs())
	if got := built.Root(); got != want {
		t.Fatalf("BuildChipMap root %x, naive root %x", got, want)
	}
	kinds := make(map[proofs.MapTerminal]int)
	for i := range 3000 {
		chip := fmt.Appendf(nil, "chip-%011d", i*(n/1000)) // two thirds of them absent
		for _, mp := range []*ChipMap{m, built} {
			p, root := mm.prove(t, mp, proofs.MapKey(chip))
			v, present, err := proofs.VerifyMapProof(root, chip, p)
			if err != nil {
				t.Fatalf("chip %s: %v", chip, err)
			}
			if want, ok := mm.values[proofs.MapKey(chip)]; present != ok || (ok && *v != want) {
				t.Fatalf("chip %s: VerifyMapProof = %+v, %v", chip, v, present)
			}
			kinds[p.Terminal]++
		}
	}
	for _, k := range []proofs.MapTerminal{proofs.MapMember, proofs.MapOtherLeaf, proofs.MapEmpty} {
		if kinds[k] == 0 {
			t.Errorf("no %s proof among %v", k, kinds)
		}
	}
}

func TestChipMapKeysDifferingInTheLastBit(t *testing.T) {
	var a [32]byte
	a[0] = 0x80
	b := flipKeyBit(a, 255)
	c := flipKeyBit(a, 0)
	mm := &chipMapModel{values: map[[32]byte]proofs.IndexValue{
		a: {Epoch: 1}, b: {Epoch: 2}, c: {Epoch: 3},
	}}
	m := BuildChipMap(mm.pairs())
	naive := newNaiveMap(mm.values)
	if m.Root() != naive.hash(0) {
		t.Fatalf("root %x, naive %x", m.Root(), naive.hash(0))
	}
	for _, k := range [][32]byte{a, b, c, flipKeyBit(a, 254), flipKeyBit(a, 100), {}} {
		p, _ := mm.prove(t, m, k)
		if want := naive.prove(k); !sameMapProof(p, want) {
			t.Errorf("Prove(%x) = %+v, naive %+v", k, p, want)
		}
	}
	p, _ := mm.prove(t, m, b)
	if len(p.Siblings) != 256 || p.Terminal != proofs.MapMember {
		t.Errorf("proof of a key one bit from another has depth %d and terminal %s, want 256 and member", len(p.Siblings), p.Terminal)
	}
	if enc, err := p.MarshalBinary(); err != nil {
		t.Error(err)
	} else if _, err := proofs.ParseMapProof(enc); err != nil {
		t.Error(err)
	}
}

func TestChipMapRootIsIndependentOfOrderAndBatching(t *testing.T) {
	mm, m := randomChipMapModel(2000, 3)
	ps := mm.pairs()
	r := rand.New(rand.NewPCG(9, 9))
	for range 3 {
		r.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
		other := NewChipMap()
		for len(ps) > 0 {
			n := min(len(ps), r.IntN(300))
			other.Update(ps[:n])
			ps = ps[n:]
		}
		ps = mm.pairs()
		if other.Root() != m.Root() {
			t.Fatalf("root after shuffled batches %x, want %x", other.Root(), m.Root())
		}
	}
}

func TestChipMapLastValueOfAKeyWins(t *testing.T) {
	k := proofs.MapKey([]byte("golden-chip-0001"))
	old, cur := proofs.IndexValue{Epoch: 1}, proofs.IndexValue{Epoch: 2}
	batch := []MapPair{{k, proofs.ValueHash(old)}, {k, proofs.ValueHash(cur)}}
	m := NewChipMap()
	m.Update(batch)
	built := BuildChipMap(batch)
	for _, mp := range []*ChipMap{m, built} {
		if vh, ok := mp.Get(k); !ok || vh != proofs.ValueHash(cur) || mp.Len() != 1 {
			t.Errorf("Get = %x, %v, Len = %d; want the second value hash", vh, ok, mp.Len())
		}
		if _, _, err := mp.Prove(k, &old); !errors.Is(err, ErrIndexValueMismatch) {
			t.Errorf("Prove with the replaced value: %v, want ErrIndexValueMismatch", err)
		}
	}
	// Setting a key to the value it has changes nothing.
	root := m.Root()
	m.Set(k, proofs.ValueHash(cur))
	if m.Root() != root {
		t.Error("setting the same value changed the root")
	}
}

func TestChipMapProveChecksTheValue(t *testing.T) {
	mm, m := randomChipMapModel(50, 1)
	member, absent := mm.keys[0], proofs.MapKey([]byte("not-a-chip-in-it"))
	v := mm.values[member]
	if _, _, err := m.Prove(member, nil); !errors.Is(err, ErrIndexValueMismatch) {
		t.Errorf("member without value: %v", err)
	}
	other := v
	other.LeafIndex++
	if _, _, err := m.Prove(member, &other); !errors.Is(err, ErrIndexValueMismatch) {
		t.Errorf("member with another value: %v", err)
	}
	if _, _, err := m.Prove(absent, &v); !errors.Is(err, ErrIndexValueMismatch) {
		t.Errorf("absent key with a value: %v", err)
	}
	if _, _, err := m.Prove(member, &v); err != nil {
		t.Errorf("member with its value: %v", err)
	}
}

func TestChipMapEmptyAndSingle(t *testing.T) {
	for _, m := range []*ChipMap{NewChipMap(), new(ChipMap), BuildChipMap(nil)} {
		if m.Root() != proofs.EmptyMapRoot() || m.Len() != 0 {
			t.Errorf("empty map: root %x, len %d", m.Root(), m.Len())
		}
		p, root, err := m.Prove(proofs.MapKey([]byte("golden-chip-0001")), nil)
		if err != nil || p.Terminal != proofs.MapEmpty || len(p.Siblings) != 0 || root != proofs.EmptyMapRoot() {
			t.Errorf("empty map: Prove = %+v, %x, %v", p, root, err)
		}
		if _, ok := m.Get([32]byte{}); ok {
			t.Error("empty map: Get found a key")
		}
	}
}

// The ledger's map reproduces the golden vectors of package proofs.
func TestChipMapGoldenVectors(t *testing.T) {
	chip := func(i int) []byte { return fmt.Appendf(nil, "golden-chip-%04d", i) }
	value := func(i int) proofs.IndexValue {
		v := proofs.IndexValue{Epoch: uint32(i), LeafIndex: uint64(1000 + i)}
		for j := range 32 {
			v.LeafHash[j], v.HistoryRoot[j] = byte(0xa0+i), byte(0xb0+i)
		}
		return v
	}
	roots, err := os.ReadFile("../proofs/testdata/chipmap-roots.txt")
	if err != nil {
		t.Fatal(err)
	}
	var m *ChipMap
	for _, line := range strings.Split(strings.TrimSpace(string(roots)), "\n") {
		f := strings.Fields(line)
		n, _ := strconv.Atoi(f[0])
		var ps []MapPair
		for i := 1; i <= n; i++ {
			ps = append(ps, MapPair{proofs.MapKey(chip(i)), proofs.ValueHash(value(i))})
		}
		m = BuildChipMap(ps)
		if root := m.Root(); hex.EncodeToString(root[:]) != f[1] {
			t.Errorf("root of %d golden chips = %x, want %s", n, root, f[1])
		}
	}
	// m holds the five chips.
	v1 := value(1)
	for file, c := range map[string]struct {
		chip  []byte
		value *proofs.IndexValue
	}{
		"chipmap-member.proof":     {chip(1), &v1},
		"chipmap-other-leaf.proof": {[]byte("absent-chip-0005"), nil},
		"chipmap-empty.proof":      {[]byte("absent-chip-0007"), nil},
	} {
		want, err := os.ReadFile("../proofs/testdata/" + file)
		if err != nil {
			t.Fatal(err)
		}
		p, _, err := m.Prove(proofs.MapKey(c.chip), c.value)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := p.MarshalBinary(); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: proof %x, %v; want %x", file, got, err, want)
		}
	}
}

func TestChipMapConcurrentReadsDuringUpdates(t *testing.T) {
	mm, m := randomChipMapModel(3000, 5)
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for i := range 2000 {
				k := mm.keys[(i*7+g)%len(mm.keys)]
				v := mm.values[k]
				p, root, err := m.Prove(k, &v)
				if err != nil {
					t.Error(err)
					return
				}
				if _, _, err := proofs.VerifyMapProof(root, mm.chips[(i*7+g)%len(mm.keys)], p); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range 20 {
		var batch []MapPair
		for j := range 50 {
			batch = append(batch, MapPair{proofs.MapKey(fmt.Appendf(nil, "new-chip-%d-%d", i, j)), [32]byte{1}})
		}
		m.Update(batch)
	}
	wg.Wait()
}
