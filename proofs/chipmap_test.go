package proofs_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/chipledger/chipledger/proofs"
	"pgregory.net/rapid"
)

// The chip index hashes of DESIGN.md §3.7, spelled out with crypto/sha256
// independently of the package.

func specKey(chipID []byte) [32]byte {
	return sha256.Sum256(slices.Concat([]byte("chipledger/index/v1/key\x00"), []byte{byte(len(chipID))}, chipID))
}

func specValueHash(v proofs.IndexValue) [32]byte {
	enc := binary.BigEndian.AppendUint32(nil, v.Epoch)
	enc = binary.BigEndian.AppendUint64(enc, v.LeafIndex)
	enc = slices.Concat(enc, v.LeafHash[:], v.HistoryRoot[:])
	return sha256.Sum256(slices.Concat([]byte("chipledger/index/v1/value\x00"), enc))
}

func specLeaf(key, vhash [32]byte) [32]byte {
	return sha256.Sum256(slices.Concat([]byte{2}, key[:], vhash[:]))
}

func specInner(l, r [32]byte) [32]byte {
	return sha256.Sum256(slices.Concat([]byte{3}, l[:], r[:]))
}

var empty [32]byte

// A refMap is the reference chip index: a plain recursion over the sorted
// pairs following §3.7 literally, one level per key bit.
type refMap []refPair

type refPair struct{ key, vhash [32]byte }

func newRefMap(pairs map[[32]byte][32]byte) refMap {
	var m refMap
	for k, v := range pairs {
		m = append(m, refPair{k, v})
	}
	slices.SortFunc(m, func(a, b refPair) int { return bytes.Compare(a.key[:], b.key[:]) })
	return m
}

func bitOf(k [32]byte, d int) int { return int(k[d/8]>>(7-d%8)) & 1 }

// split returns the index of the first pair whose bit d is 1.
func (m refMap) split(d int) int {
	return sort.Search(len(m), func(i int) bool { return bitOf(m[i].key, d) == 1 })
}

// hash returns the hash of m as the subtree at depth d.
func (m refMap) hash(d int) [32]byte {
	switch len(m) {
	case 0:
		return empty
	case 1:
		return specLeaf(m[0].key, m[0].vhash)
	}
	i := m.split(d)
	return specInner(m[:i].hash(d+1), m[i:].hash(d+1))
}

func (m refMap) root() [32]byte { return m.hash(0) }

// prove returns the proof for key: the siblings down to the first subtree
// on key's path with at most one key, and that subtree. value is the member
// value to attach if key is in m.
func (m refMap) prove(key [32]byte, value proofs.IndexValue) *proofs.MapProof {
	p := new(proofs.MapProof)
	sub := m
	for d := 0; len(sub) > 1; d++ {
		i := sub.split(d)
		if bitOf(key, d) == 0 {
			p.Siblings = append(p.Siblings, sub[i:].hash(d+1))
			sub = sub[:i]
		} else {
			p.Siblings = append(p.Siblings, sub[:i].hash(d+1))
			sub = sub[i:]
		}
	}
	switch {
	case len(sub) == 0:
		p.Terminal = proofs.MapEmpty
	case sub[0].key == key:
		p.Terminal, p.Value = proofs.MapMember, value
	default:
		p.Terminal, p.OtherKey, p.OtherValueHash = proofs.MapOtherLeaf, sub[0].key, sub[0].vhash
	}
	return p
}

func TestMapHashesAreTheDesignFormulas(t *testing.T) {
	chip := []byte("golden-chip-0001")
	if got, want := proofs.MapKey(chip), specKey(chip); got != want {
		t.Errorf("MapKey = %x, want %x", got, want)
	}
	v := goldenValue(1)
	if got, want := proofs.ValueHash(v), specValueHash(v); got != want {
		t.Errorf("ValueHash = %x, want %x", got, want)
	}
	a, b := sha256.Sum256([]byte("a")), sha256.Sum256([]byte("b"))
	if got, want := proofs.MapLeafHash(a, b), specLeaf(a, b); got != want {
		t.Errorf("MapLeafHash = %x, want %x", got, want)
	}
	if got, want := proofs.MapInnerHash(a, b), specInner(a, b); got != want {
		t.Errorf("MapInnerHash = %x, want %x", got, want)
	}
	if proofs.EmptyMapRoot() != empty {
		t.Errorf("EmptyMapRoot = %x, want 32 zero bytes", proofs.EmptyMapRoot())
	}
}

func TestMapKeyPanicsOnOverlongChipID(t *testing.T) {
	_ = proofs.MapKey(make([]byte, 255))
	defer func() {
		if recover() == nil {
			t.Error("MapKey of 256 bytes did not panic")
		}
	}()
	proofs.MapKey(make([]byte, 256))
}

func TestHistoryRootIsTheRFC6962Root(t *testing.T) {
	for size := range 9 {
		var hs [][32]byte
		for i := range size {
			hs = append(hs, n32(0, i))
		}
		if got := proofs.HistoryRoot(hs); got != root(size) {
			t.Errorf("HistoryRoot of %d leaves = %x, want %x", size, got, root(size))
		}
	}
}

func TestHistoryRootAgreesWithTlog(t *testing.T) {
	tr := newTlogTree(t, 70, []byte("history"))
	for size := 1; size <= 70; size++ {
		var hs [][32]byte
		for i := range size {
			hs = append(hs, tr.leafHash(i))
		}
		if got, want := proofs.HistoryRoot(hs), tr.root(t, size); got != want {
			t.Fatalf("HistoryRoot of %d leaves = %x, want %x", size, got, want)
		}
	}
}

func TestIndexValueEncoding(t *testing.T) {
	v := goldenValue(1)
	want := mustHex(t, "00000001"+"00000000000003e9"+strings.Repeat("a1", 32)+strings.Repeat("b1", 32))
	got, err := v.MarshalBinary()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("MarshalBinary = %x, %v; want %x", got, err, want)
	}
	back, err := proofs.ParseIndexValue(got)
	if err != nil || back != v {
		t.Fatalf("ParseIndexValue = %+v, %v; want %+v", back, err, v)
	}
	for _, bad := range [][]byte{nil, want[:75], append(slices.Clone(want), 0), slices.Concat([]byte{0, 0, 0, 0}, want[4:])} {
		if _, err := proofs.ParseIndexValue(bad); !errors.Is(err, proofs.ErrMalformedMapProof) {
			t.Errorf("ParseIndexValue(%x) = %v, want ErrMalformedMapProof", bad, err)
		}
	}
	if _, err := (proofs.IndexValue{LeafIndex: 1}).MarshalBinary(); !errors.Is(err, proofs.ErrMalformedMapProof) {
		t.Errorf("MarshalBinary of epoch 0 = %v, want ErrMalformedMapProof", err)
	}
}

// The golden chip index: golden-chip-0001 … golden-chip-0005 (16 ASCII
// bytes each), chip i mapped to goldenValue(i). Their keys begin
//
//	chip 1  dd d7 …  1101 1101
//	chip 2  b2 37 …  1011 0010
//	chip 3  0e f5 …  0000 1110
//	chip 4  d2 9e …  1101 0010
//	chip 5  ec a4 …  1110 1100
//
// so the tree of all five is (Leaf i = LeafNode(key i, vhash i)):
//
//	root = Inner(Leaf 3, n1)          bit 0 splits chip 3 from the rest
//	n1   = Inner(Leaf 2, n2)          bit 1 splits chip 2 (10…) from 11…
//	n2   = Inner(n3, Leaf 5)          bit 2 splits 110… from chip 5 (111…)
//	n3   = Inner(Empty, n4)           bit 3: chips 1 and 4 both have 1101…
//	n4   = Inner(Leaf 4, Leaf 1)      bit 4 splits 11010… from 11011…
//
// Chips 1 and 2 alone split at bit 1 under a common first bit 1:
// root = Inner(Empty, Inner(Leaf 2, Leaf 1)).
//
// The absent chips: absent-chip-0005 (key d5 b7 …, 1101 0101) ends at
// chip 4's leaf at depth 5; absent-chip-0007 (c6 82 …, 1100 0110) ends at
// the empty left half of n3 at depth 4.
func goldenChip(i int) []byte { return fmt.Appendf(nil, "golden-chip-%04d", i) }

// goldenValue(i) is epoch i, leaf index 1000+i, leaf hash 32 bytes a0+i,
// history root 32 bytes b0+i.
func goldenValue(i int) proofs.IndexValue {
	v := proofs.IndexValue{Epoch: uint32(i), LeafIndex: uint64(1000 + i)}
	for j := range 32 {
		v.LeafHash[j], v.HistoryRoot[j] = byte(0xa0+i), byte(0xb0+i)
	}
	return v
}

func goldenLeaf(i int) [32]byte {
	return specLeaf(specKey(goldenChip(i)), specValueHash(goldenValue(i)))
}

func goldenRefMap(n int) refMap {
	pairs := make(map[[32]byte][32]byte)
	for i := 1; i <= n; i++ {
		pairs[specKey(goldenChip(i))] = specValueHash(goldenValue(i))
	}
	return newRefMap(pairs)
}

var (
	absentOther = []byte("absent-chip-0005")
	absentEmpty = []byte("absent-chip-0007")
)

// goldenRoots spells out the roots of the golden maps of 0, 1, 2 and 5 chips.
func goldenRoots() map[int][32]byte {
	n4 := specInner(goldenLeaf(4), goldenLeaf(1))
	n3 := specInner(empty, n4)
	n2 := specInner(n3, goldenLeaf(5))
	n1 := specInner(goldenLeaf(2), n2)
	return map[int][32]byte{
		0: empty,
		1: goldenLeaf(1),
		2: specInner(empty, specInner(goldenLeaf(2), goldenLeaf(1))),
		5: specInner(goldenLeaf(3), n1),
	}
}

// goldenProofs spells out, field by field, the proofs in the golden map of
// five chips for chip 1, absent-chip-0005 and absent-chip-0007.
func goldenProofs(t testing.TB) map[string][]byte {
	value1, err := goldenValue(1).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	l1, l2, l3, l4, l5 := goldenLeaf(1), goldenLeaf(2), goldenLeaf(3), goldenLeaf(4), goldenLeaf(5)
	n4 := specInner(l4, l1)
	key4, vhash4 := specKey(goldenChip(4)), specValueHash(goldenValue(4))
	return map[string][]byte{
		// Depth 5; sibling 3 is Empty (bitmap 0001 0000); chip 1's value.
		"chipmap-member.proof": slices.Concat([]byte("CLM1"), []byte{0, 5, 0x10}, l3[:], l2[:], l5[:], l4[:], []byte{1}, value1),
		// Depth 5 beside chip 1's leaf, ending at chip 4's.
		"chipmap-other-leaf.proof": slices.Concat([]byte("CLM1"), []byte{0, 5, 0x10}, l3[:], l2[:], l5[:], l1[:], []byte{2}, key4[:], vhash4[:]),
		// Depth 4 beside n4, no Empty sibling, empty terminal.
		"chipmap-empty.proof": slices.Concat([]byte("CLM1"), []byte{0, 4, 0x00}, l3[:], l2[:], l5[:], n4[:], []byte{3}),
	}
}

const goldenRootsFile = "chipmap-roots.txt"

func formatRoots(roots map[int][32]byte) []byte {
	var b bytes.Buffer
	for _, n := range []int{0, 1, 2, 5} {
		fmt.Fprintf(&b, "%d %x\n", n, roots[n])
	}
	return b.Bytes()
}

func TestChipMapGoldenRoots(t *testing.T) {
	roots := goldenRoots()
	if *update {
		if err := os.WriteFile("testdata/"+goldenRootsFile, formatRoots(roots), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := readTestdata(t, goldenRootsFile); !bytes.Equal(got, formatRoots(roots)) {
		t.Fatalf("testdata/%s differs from the spelled-out roots:\n%s", goldenRootsFile, formatRoots(roots))
	}
	for n, want := range roots {
		if got := goldenRefMap(n).root(); got != want {
			t.Errorf("reference root of %d golden chips = %x, want %x", n, got, want)
		}
	}
}

func TestChipMapGoldenProofs(t *testing.T) {
	root := goldenRoots()[5]
	tests := []struct {
		file     string
		chip     []byte
		terminal proofs.MapTerminal
	}{
		{"chipmap-member.proof", goldenChip(1), proofs.MapMember},
		{"chipmap-other-leaf.proof", absentOther, proofs.MapOtherLeaf},
		{"chipmap-empty.proof", absentEmpty, proofs.MapEmpty},
	}
	want := goldenProofs(t)
	for _, tt := range tests {
		if *update {
			if err := os.WriteFile("testdata/"+tt.file, want[tt.file], 0o644); err != nil {
				t.Fatal(err)
			}
		}
		golden := readTestdata(t, tt.file)
		if !bytes.Equal(golden, want[tt.file]) {
			t.Fatalf("testdata/%s differs from the spelled-out encoding; run go test -update", tt.file)
		}
		ref, err := goldenRefMap(5).prove(specKey(tt.chip), goldenValue(1)).MarshalBinary()
		if err != nil || !bytes.Equal(ref, golden) {
			t.Errorf("%s: reference proof = %x, %v; want the golden bytes", tt.file, ref, err)
		}
		p, err := proofs.ParseMapProof(golden)
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		if again, err := p.MarshalBinary(); err != nil || !bytes.Equal(again, golden) {
			t.Errorf("%s: MarshalBinary(ParseMapProof) = %x, %v", tt.file, again, err)
		}
		if p.Terminal != tt.terminal {
			t.Errorf("%s: terminal %s, want %s", tt.file, p.Terminal, tt.terminal)
		}
		v, present, err := proofs.VerifyMapProof(root, tt.chip, p)
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		if present != (tt.terminal == proofs.MapMember) || (present && *v != goldenValue(1)) || (!present && v != nil) {
			t.Errorf("%s: VerifyMapProof = %+v, %v", tt.file, v, present)
		}
	}
}

func TestVerifyMapProofOfSmallMaps(t *testing.T) {
	roots := goldenRoots()
	value1, _ := goldenValue(1).MarshalBinary()
	// The empty map: every chip is absent, with the same proof.
	emptyProof := []byte("CLM1\x00\x00\x03")
	// One chip: its leaf is the root, at depth 0.
	member := slices.Concat([]byte("CLM1\x00\x00\x01"), value1)
	key1, vhash1 := specKey(goldenChip(1)), specValueHash(goldenValue(1))
	other := slices.Concat([]byte("CLM1\x00\x00\x02"), key1[:], vhash1[:])
	tests := []struct {
		size    int
		chip    []byte
		proof   []byte
		present bool
	}{
		{0, goldenChip(1), emptyProof, false},
		{0, absentEmpty, emptyProof, false},
		{1, goldenChip(1), member, true},
		{1, goldenChip(2), other, false},
	}
	for _, tt := range tests {
		p, err := proofs.ParseMapProof(tt.proof)
		if err != nil {
			t.Fatal(err)
		}
		if _, present, err := proofs.VerifyMapProof(roots[tt.size], tt.chip, p); err != nil || present != tt.present {
			t.Errorf("size %d, chip %s: VerifyMapProof = %v, %v; want %v", tt.size, tt.chip, present, err, tt.present)
		}
		ref, _ := goldenRefMap(tt.size).prove(specKey(tt.chip), goldenValue(1)).MarshalBinary()
		if !bytes.Equal(ref, tt.proof) {
			t.Errorf("size %d, chip %s: reference proof %x, want %x", tt.size, tt.chip, ref, tt.proof)
		}
	}
}

// A proof that puts a leaf deeper than the tree holds it, with Empty
// siblings, or shallower, hashes to another root, so the root check rejects
// it even where the shape checks let it through.
func TestVerifyMapProofRejectsMisplacedLeaves(t *testing.T) {
	root := goldenRoots()[5]
	honest := goldenRefMap(5).prove(specKey(goldenChip(1)), goldenValue(1))
	l3, l2, l5, l4 := honest.Siblings[0], honest.Siblings[1], honest.Siblings[2], honest.Siblings[4]
	tests := []struct {
		name     string
		siblings [][32]byte
		wantMsg  string
	}{
		{"one level deeper beside Empty", [][32]byte{l3, l2, l5, empty, l4, empty}, "beside an Empty sibling"},
		{"one level deeper, Empty above the real sibling", [][32]byte{l3, l2, l5, empty, empty, l4}, "leads to root"},
		{"at the bottom of a run of Empty siblings", append(append([][32]byte{l3, l2, l5, empty}, make([][32]byte, 200)...), l4), "leads to root"},
		{"the gap's Empty level dropped", [][32]byte{l3, l2, l5, l4}, "leads to root"},
		{"one level shallower", [][32]byte{l3, l2, l5, empty}, "beside an Empty sibling"},
		{"as the root", nil, "leads to root"},
	}
	for _, tt := range tests {
		p := *honest
		p.Siblings = tt.siblings
		_, _, err := proofs.VerifyMapProof(root, goldenChip(1), &p)
		if !errors.Is(err, proofs.ErrMapProof) || !strings.Contains(err.Error(), tt.wantMsg) {
			t.Errorf("%s: err = %v, want ErrMapProof mentioning %q", tt.name, err, tt.wantMsg)
		}
	}
}

func TestVerifyMapProofRejectsBadTerminals(t *testing.T) {
	root := goldenRoots()[5]
	member := goldenRefMap(5).prove(specKey(goldenChip(1)), goldenValue(1))
	other := goldenRefMap(5).prove(specKey(absentOther), proofs.IndexValue{})
	emptyP := goldenRefMap(5).prove(specKey(absentEmpty), proofs.IndexValue{})
	key1 := specKey(goldenChip(1))
	tests := []struct {
		name    string
		chip    []byte
		p       proofs.MapProof
		wantMsg string
	}{
		{"member with another value", goldenChip(1), with(member, func(p *proofs.MapProof) { p.Value.LeafIndex++ }), "leads to root"},
		{"member claimed absent via its own key", goldenChip(1), with(member, func(p *proofs.MapProof) {
			p.Terminal, p.Value, p.OtherKey, p.OtherValueHash = proofs.MapOtherLeaf, proofs.IndexValue{}, key1, specValueHash(goldenValue(1))
		}), "own key"},
		{"member claimed absent via Empty", goldenChip(1), with(member, func(p *proofs.MapProof) { p.Terminal, p.Value = proofs.MapEmpty, proofs.IndexValue{} }), "leads to root"},
		{"other leaf off the path", absentEmpty, with(other, func(p *proofs.MapProof) {}), "differs from the chip's key at bit 3"},
		{"other leaf with another value hash", absentOther, with(other, func(p *proofs.MapProof) { p.OtherValueHash[0] ^= 1 }), "leads to root"},
		{"empty proof for another chip", absentOther, *emptyP, "leads to root"},
		{"empty at depth 256", absentEmpty, proofs.MapProof{Siblings: slices.Repeat([][32]byte{goldenLeaf(1)}, 256), Terminal: proofs.MapEmpty}, "depth 256"},
		{"member with epoch 0", goldenChip(1), with(member, func(p *proofs.MapProof) { p.Value.Epoch = 0 }), "epoch 0"},
		{"unknown terminal", goldenChip(1), with(member, func(p *proofs.MapProof) { p.Terminal = 4 }), "unknown terminal"},
		{"257 siblings", goldenChip(1), with(member, func(p *proofs.MapProof) { p.Siblings = make([][32]byte, 257) }), "257 siblings"},
		{"unused fields set", absentEmpty, with(emptyP, func(p *proofs.MapProof) { p.OtherKey[0] = 1 }), "leaf fields set"},
		{"short chip ID", []byte("1234567"), *emptyP, "7 bytes"},
		{"long chip ID", make([]byte, 33), *emptyP, "33 bytes"},
	}
	for _, tt := range tests {
		_, _, err := proofs.VerifyMapProof(root, tt.chip, &tt.p)
		if !errors.Is(err, proofs.ErrMapProof) || !strings.Contains(err.Error(), tt.wantMsg) {
			t.Errorf("%s: err = %v, want ErrMapProof mentioning %q", tt.name, err, tt.wantMsg)
		}
	}
	if _, _, err := proofs.VerifyMapProof(root, goldenChip(1), nil); !errors.Is(err, proofs.ErrMapProof) {
		t.Errorf("nil proof: err = %v, want ErrMapProof", err)
	}
}

func with(p *proofs.MapProof, change func(*proofs.MapProof)) proofs.MapProof {
	c := *p
	c.Siblings = slices.Clone(p.Siblings)
	change(&c)
	return c
}

func TestParseMapProofRejectsMalformed(t *testing.T) {
	good := goldenProofs(t)["chipmap-member.proof"]
	emptyGood := goldenProofs(t)["chipmap-empty.proof"]
	tests := []struct {
		name string
		b    []byte
		msg  string
	}{
		{"no magic", good[4:], "does not start"},
		{"other version", slices.Concat([]byte("CLM2"), good[4:]), "does not start"},
		{"truncated depth", []byte("CLM1\x00"), "truncated depth"},
		{"depth 257", []byte("CLM1\x01\x01"), "depth 257"},
		{"truncated bitmap", []byte("CLM1\x00\x05"), "truncated empty bitmap"},
		{"bitmap bit past depth", slices.Concat(good[:6], []byte{0x14}, good[7:]), "past depth"},
		{"truncated sibling", good[:7+3*32+5], "truncated sibling at depth 4"},
		{"explicit Empty sibling", slices.Concat(good[:6], []byte{0x00}, good[7:7+3*32], empty[:], good[7+3*32:]), "not marked"},
		{"truncated terminal", emptyGood[:len(emptyGood)-1], "truncated terminal"},
		{"unknown terminal", slices.Concat(emptyGood[:len(emptyGood)-1], []byte{4}), "unknown terminal 4"},
		{"terminal 0", slices.Concat(emptyGood[:len(emptyGood)-1], []byte{0}), "unknown terminal 0"},
		{"truncated value", good[:len(good)-1], "truncated member value"},
		{"epoch 0", slices.Concat(good[:len(good)-76], []byte{0, 0, 0, 0}, good[len(good)-72:]), "epoch 0"},
		{"trailing byte", append(slices.Clone(good), 0), "1 trailing bytes"},
		{"empty with a value after", append(slices.Clone(emptyGood), good[len(good)-76:]...), "76 trailing bytes"},
		{"truncated other leaf", goldenProofs(t)["chipmap-other-leaf.proof"][:7+4*32+1+63], "truncated other leaf"},
	}
	for _, tt := range tests {
		if p, err := proofs.ParseMapProof(tt.b); !errors.Is(err, proofs.ErrMalformedMapProof) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: ParseMapProof = %+v, %v; want ErrMalformedMapProof mentioning %q", tt.name, p, err, tt.msg)
		}
	}
}

func TestMarshalMapProofChecksFields(t *testing.T) {
	for _, p := range []proofs.MapProof{
		{},
		{Terminal: 4},
		{Terminal: proofs.MapMember},
		{Terminal: proofs.MapMember, Value: goldenValue(1), OtherKey: goldenLeaf(1)},
		{Terminal: proofs.MapOtherLeaf, Value: goldenValue(1)},
		{Terminal: proofs.MapEmpty, OtherValueHash: goldenLeaf(1)},
		{Terminal: proofs.MapEmpty, Siblings: make([][32]byte, 257)},
	} {
		if b, err := p.MarshalBinary(); !errors.Is(err, proofs.ErrMalformedMapProof) {
			t.Errorf("MarshalBinary(%+v) = %x, %v; want ErrMalformedMapProof", p, b, err)
		}
	}
	// The deepest possible proof: a leaf at depth 256, whose 256 siblings
	// need a two-byte depth and a 32-byte bitmap.
	p := proofs.MapProof{Siblings: make([][32]byte, 256), Terminal: proofs.MapOtherLeaf, OtherKey: goldenLeaf(1)}
	p.Siblings[255] = goldenLeaf(2)
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if want := slices.Concat([]byte("CLM1\x01\x00"), bytes.Repeat([]byte{0xff}, 31), []byte{0xfe}, p.Siblings[255][:], []byte{2}, p.OtherKey[:], empty[:]); !bytes.Equal(b, want) {
		t.Errorf("MarshalBinary of depth 256 = %x, want %x", b, want)
	}
	back, err := proofs.ParseMapProof(b)
	if err != nil || !equalMapProofs(back, &p) {
		t.Errorf("ParseMapProof = %+v, %v", back, err)
	}
}

func equalMapProofs(a, b *proofs.MapProof) bool {
	return slices.Equal(a.Siblings, b.Siblings) && a.Terminal == b.Terminal && a.Value == b.Value &&
		a.OtherKey == b.OtherKey && a.OtherValueHash == b.OtherValueHash
}

// mapScenario draws a chip index where some keys share long prefixes with
// chip keys: the keys of member chips, the keys of absent chips with a late
// bit flipped (so the absent chip has a near neighbour), and random keys.
type mapScenario struct {
	members map[string]proofs.IndexValue // chip ID → value
	absent  [][]byte
	ref     refMap
}

func drawMapScenario(t *rapid.T) mapScenario {
	s := mapScenario{members: make(map[string]proofs.IndexValue)}
	pairs := make(map[[32]byte][32]byte)
	chipGen := rapid.SliceOfN(rapid.Byte(), 8, 32)
	for range rapid.IntRange(0, 12).Draw(t, "members") {
		chip := chipGen.Draw(t, "member")
		v := proofs.IndexValue{
			Epoch:       rapid.Uint32Min(1).Draw(t, "epoch"),
			LeafIndex:   rapid.Uint64().Draw(t, "leaf index"),
			LeafHash:    [32]byte(rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, "leaf hash")),
			HistoryRoot: [32]byte(rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, "history root")),
		}
		s.members[string(chip)] = v
		pairs[specKey(chip)] = specValueHash(v)
	}
	for range rapid.IntRange(0, 6).Draw(t, "absent") {
		chip := chipGen.Draw(t, "absent chip")
		if _, ok := s.members[string(chip)]; ok {
			continue
		}
		s.absent = append(s.absent, chip)
		if rapid.Bool().Draw(t, "neighbour") {
			k := specKey(chip)
			bit := rapid.IntRange(0, 255).Draw(t, "neighbour bit")
			k[bit/8] ^= 0x80 >> (bit % 8)
			pairs[k] = [32]byte(rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, "neighbour vhash"))
		}
	}
	for range rapid.IntRange(0, 20).Draw(t, "random keys") {
		pairs[[32]byte(rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, "key"))] = [32]byte(rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, "vhash"))
	}
	s.ref = newRefMap(pairs)
	return s
}

func TestVerifyMapProofAcceptsReferenceProofsAndRejectsTampering(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := drawMapScenario(t)
		root := s.ref.root()
		var chips [][]byte
		for c := range s.members {
			chips = append(chips, []byte(c))
		}
		chips = append(chips, s.absent...)
		if len(chips) == 0 {
			return
		}
		slices.SortFunc(chips, bytes.Compare)
		encoded := make([][]byte, len(chips))
		for i, chip := range chips {
			want, present := s.members[string(chip)]
			p := s.ref.prove(specKey(chip), want)
			v, gotPresent, err := proofs.VerifyMapProof(root, chip, p)
			if err != nil {
				t.Fatalf("chip %x: %v", chip, err)
			}
			if gotPresent != present || (present && *v != want) {
				t.Fatalf("chip %x: VerifyMapProof = %+v, %v; want %+v, %v", chip, v, gotPresent, want, present)
			}
			if encoded[i], err = p.MarshalBinary(); err != nil {
				t.Fatal(err)
			}
		}

		i := rapid.IntRange(0, len(chips)-1).Draw(t, "chip")
		b := encoded[i]
		verifies := func(b []byte, root [32]byte, chip []byte) bool {
			p, err := proofs.ParseMapProof(b)
			if err != nil {
				return false
			}
			_, _, err = proofs.VerifyMapProof(root, chip, p)
			if err != nil && !errors.Is(err, proofs.ErrMapProof) {
				t.Fatalf("error %v does not wrap ErrMapProof", err)
			}
			return err == nil
		}
		flipped := slices.Clone(b)
		at := rapid.IntRange(0, len(b)-1).Draw(t, "flipped byte")
		flipped[at] ^= rapid.ByteMin(1).Draw(t, "xor")
		if verifies(flipped, root, chips[i]) {
			t.Fatalf("proof for chip %x with byte %d flipped verifies", chips[i], at)
		}
		other := root
		other[rapid.IntRange(0, 31).Draw(t, "root byte")] ^= rapid.ByteMin(1).Draw(t, "root xor")
		if verifies(b, other, chips[i]) {
			t.Fatalf("proof for chip %x verifies against another root", chips[i])
		}
		// A proof verifies for another chip exactly when it is that chip's
		// proof too: two absent chips can share the walk to one subtree.
		for j, chip := range chips {
			if got, want := verifies(b, root, chip), bytes.Equal(encoded[j], b); got != want {
				t.Fatalf("proof for chip %x verifies for chip %x: %v, want %v", chips[i], chip, got, want)
			}
		}
	})
}

func FuzzParseMapProof(f *testing.F) {
	for _, b := range goldenProofs(f) {
		f.Add(b)
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte("CLM1\x00\x00\x03"))
	f.Add([]byte("CLM1\x00\x09\xff\x80\x03"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := proofs.ParseMapProof(b)
		if err != nil {
			if !errors.Is(err, proofs.ErrMalformedMapProof) {
				t.Fatalf("error %v does not wrap ErrMalformedMapProof", err)
			}
			return
		}
		again, err := p.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("MarshalBinary(ParseMapProof(%x)) = %x, %v", b, again, err)
		}
	})
}

// Against the golden map of five chips, no bytes verify for a chip but that
// chip's own proof: proofs are unique.
func FuzzVerifyMapProof(f *testing.F) {
	ref := goldenRefMap(5)
	root := ref.root()
	var chips [][]byte
	for i := 1; i <= 6; i++ {
		chips = append(chips, goldenChip(i))
	}
	chips = append(chips, absentOther, absentEmpty, []byte("absent-chip-0001"))
	honest := make(map[string][]byte)
	for _, chip := range chips {
		p := ref.prove(specKey(chip), goldenValue(1))
		for i := 1; i <= 5; i++ {
			if bytes.Equal(chip, goldenChip(i)) {
				p.Value = goldenValue(i)
			}
		}
		b, err := p.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		honest[string(chip)] = b
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := proofs.ParseMapProof(b)
		if err != nil {
			return
		}
		for _, chip := range chips {
			_, _, err := proofs.VerifyMapProof(root, chip, p)
			if err == nil && !bytes.Equal(b, honest[string(chip)]) {
				t.Fatalf("%x verifies for chip %q but is not its proof %x", b, chip, honest[string(chip)])
			}
			if err != nil && !errors.Is(err, proofs.ErrMapProof) {
				t.Fatalf("error %v does not wrap ErrMapProof", err)
			}
		}
	})
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A device checks that the index root it trusts maps its chip to a value,
// or proves the chip absent. (The root comes from the kind-3 leaf whose
// inclusion in a verified checkpoint the device has checked.)
func ExampleVerifyMapProof() {
	root, _ := hex.DecodeString("7f2512c4a67e3bd2a371bad485dd271002f47b3e2c6d28bc3d6b8dec40f4c066")
	b, err := os.ReadFile("testdata/chipmap-member.proof")
	if err != nil {
		panic(err)
	}
	p, err := proofs.ParseMapProof(b)
	if err != nil {
		fmt.Println("not a map proof:", err)
		return
	}
	v, present, err := proofs.VerifyMapProof([32]byte(root), []byte("golden-chip-0001"), p)
	if err != nil {
		fmt.Println("proof rejected:", err)
		return
	}
	fmt.Printf("present: %v, epoch %d at leaf %d\n", present, v.Epoch, v.LeafIndex)

	// The same proof says nothing about another chip.
	_, _, err = proofs.VerifyMapProof([32]byte(root), []byte("golden-chip-0002"), p)
	fmt.Println(errors.Is(err, proofs.ErrMapProof))
	// Output:
	// present: true, epoch 1 at leaf 1001
	// true
}

// FuzzParseLookupProof checks that anything ParseLookupProof accepts
// re-encodes to the same bytes.
func FuzzParseLookupProof(f *testing.F) {
	f.Add([]byte("CLL1"))
	f.Add([]byte("CLL1\x00\x01x\x00\x32" + string(make([]byte, 50)) + "\x00\x00\x01x\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := proofs.ParseLookupProof(b)
		if err != nil {
			return
		}
		again, err := p.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed proof does not marshal: %v", err)
		}
		if string(again) != string(b) {
			t.Fatalf("round trip changed the encoding")
		}
	})
}

// TestLookupProofMarshalsOnlyWhatParses: an entry that is present must not
// be empty, since ParseLookupProof refuses an empty one; MarshalBinary
// refuses it too rather than write a proof nobody can read.
func TestLookupProofMarshalsOnlyWhatParses(t *testing.T) {
	leaf := make([]byte, proofs.IndexRootLeafSize)
	leaf[1] = proofs.IndexRootKind
	p := &proofs.LookupProof{
		Checkpoint: []byte("checkpoint"),
		IndexLeaf:  leaf,
		Map:        &proofs.MapProof{Terminal: proofs.MapMember, Value: proofs.IndexValue{Epoch: 1}},
		Entry:      []byte{},
		History:    []proofs.HistoryEntry{{Index: 0}},
	}
	b, err := p.MarshalBinary()
	if err == nil {
		_, perr := proofs.ParseLookupProof(b)
		t.Fatalf("MarshalBinary wrote a proof with an empty entry (ParseLookupProof: %v)", perr)
	}
	if !errors.Is(err, proofs.ErrMalformedLookup) {
		t.Errorf("err = %v, want ErrMalformedLookup", err)
	}
}
