package ledger

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/chipledger/chipledger/proofs"
)

// indexedLog is a store kept with AppendIndexed and a model of its chips.
type indexedLog struct {
	t      *testing.T
	s      *Store
	signer *LogSigner
	v      *proofs.LogVerifier
	model  map[string][]ChipEntry
}

func newIndexedLog(t *testing.T, dir string) *indexedLog {
	t.Helper()
	skey, vkey, _ := GenerateLogKey("test.chipledger.example/log")
	signer, _ := NewLogSigner(skey)
	v, _ := proofs.NewLogVerifier(vkey)
	return &indexedLog{t: t, s: openTestStore(t, dir, Options{NoSync: true}), signer: signer, v: v, model: map[string][]ChipEntry{}}
}

// appendBatch appends escrow entries for the given chips (each the chip's
// next epoch) and checks the closing index-root leaf.
func (l *indexedLog) appendBatch(chips []ChipID) {
	l.t.Helper()
	var leaves [][]byte
	next := l.s.Size()
	if next == 0 {
		next = 1 // the genesis index root comes first
	}
	for i, chip := range chips {
		epoch := uint32(len(l.model[string(chip)]) + 1)
		leaf := fakeEscrowLeaf(l.t, chip, epoch, 80)
		leaves = append(leaves, leaf)
		l.model[string(chip)] = append(l.model[string(chip)], ChipEntry{Epoch: epoch, Index: next + uint64(i), LeafHash: proofs.LeafHash(leaf)})
	}
	res, err := l.s.AppendIndexed(leaves, nil)
	if err != nil {
		l.t.Fatal(err)
	}
	ir, ok, err := l.s.IndexRootAt(res.State.Size)
	if err != nil || !ok {
		l.t.Fatalf("size %d does not end with an index root (%v)", res.State.Size, err)
	}
	if ir.ChipCount != uint64(len(l.model)) {
		l.t.Fatalf("index root counts %d chips, want %d", ir.ChipCount, len(l.model))
	}
	if want := l.referenceRoot(); ir.Root != want {
		l.t.Fatalf("incremental index root %x differs from a from-scratch build %x", ir.Root, want)
	}
}

// referenceRoot builds the map of the model from scratch.
func (l *indexedLog) referenceRoot() Hash {
	var pairs []MapPair
	for chip, entries := range l.model {
		var hashes [][32]byte
		for _, e := range entries {
			hashes = append(hashes, e.LeafHash)
		}
		last := entries[len(entries)-1]
		v := proofs.IndexValue{Epoch: last.Epoch, LeafIndex: last.Index, LeafHash: last.LeafHash, HistoryRoot: proofs.HistoryRoot(hashes)}
		pairs = append(pairs, MapPair{Key: proofs.MapKey([]byte(chip)), ValueHash: proofs.ValueHash(v)})
	}
	return BuildChipMap(pairs).Root()
}

// lookup returns a signed, encoded lookup proof for chip.
func (l *indexedLog) lookup(chip ChipID) []byte {
	l.t.Helper()
	cl, err := l.s.LookupChip(chip)
	if err != nil {
		l.t.Fatal(err)
	}
	root, err := l.s.RootAt(cl.Size)
	if err != nil {
		l.t.Fatal(err)
	}
	if cl.Proof.Checkpoint, err = l.signer.Sign(cl.Size, root); err != nil {
		l.t.Fatal(err)
	}
	b, err := cl.Proof.MarshalBinary()
	if err != nil {
		l.t.Fatal(err)
	}
	return b
}

// check verifies chip's lookup proof and compares it with the model.
func (l *indexedLog) check(chip ChipID) []byte {
	l.t.Helper()
	b := l.lookup(chip)
	p, err := proofs.ParseLookupProof(b)
	if err != nil {
		l.t.Fatal(err)
	}
	res, err := p.Verify(l.v, chip)
	if err != nil {
		l.t.Fatalf("lookup proof of chip %s: %v", chip, err)
	}
	want := l.model[string(chip)]
	if res.Present != (len(want) > 0) {
		l.t.Fatalf("chip %s: present %v, model has %d entries", chip, res.Present, len(want))
	}
	if len(want) > 0 {
		last := want[len(want)-1]
		if res.Value.Epoch != last.Epoch || res.Value.LeafIndex != last.Index || len(res.History) != len(want) {
			l.t.Fatalf("chip %s: proof says epoch %d at %d, model %+v", chip, res.Value.Epoch, res.Value.LeafIndex, last)
		}
		e, err := ParseEscrowEntry(res.Entry)
		if err != nil || !e.ChipID.Equal(chip) || e.Epoch != last.Epoch {
			l.t.Fatalf("chip %s: the proven entry is not its latest (%v)", chip, err)
		}
	}
	return b
}

// TestIndexedLogProvesEveryLookup appends random batches over random chips
// and checks after every batch the index root against a from-scratch build,
// and member, neighbour and empty lookup proofs.
func TestIndexedLogProvesEveryLookup(t *testing.T) {
	dir := t.TempDir()
	l := newIndexedLog(t, dir)
	rng := rand.New(rand.NewPCG(11, 12))
	absent := chipN(1 << 50)
	for range 40 {
		var chips []ChipID
		for range 1 + rng.IntN(30) {
			chips = append(chips, chipN(rng.Uint64N(200)))
		}
		l.appendBatch(chips)
		l.check(chips[0])
		l.check(absent)
		l.check(chipN(rng.Uint64N(400)))
	}
	// The genesis index root covers nothing and holds the empty map.
	first, _ := l.s.Leaf(0)
	if g, err := ParseIndexRoot(first); err != nil || g.CoveredSize != 0 || g.ChipCount != 0 || g.Root != proofs.EmptyMapRoot() {
		t.Fatalf("leaf 0 is not the genesis index root: %+v, %v", g, err)
	}
	// Reopening rebuilds the same map.
	before := l.s.State()
	root := l.referenceRoot()
	l.s.Close()
	l.s = openTestStore(t, dir, Options{NoSync: true})
	if l.s.State() != before {
		t.Fatal("state changed across reopen")
	}
	if got := l.s.chips.cmap.Root(); got != root {
		t.Fatalf("rebuilt map root %x, want %x", got, root)
	}
	for chip := range l.model {
		l.check(ChipID(chip))
	}
}

// TestLookupProofTamperingFails flips every byte of a member's and an
// absent chip's proof, and pairs a proof with another chip or checkpoint.
func TestLookupProofTamperingFails(t *testing.T) {
	l := newIndexedLog(t, t.TempDir())
	l.appendBatch([]ChipID{chipN(1), chipN(2), chipN(3)})
	l.appendBatch([]ChipID{chipN(2), chipN(4)})
	for _, chip := range []ChipID{chipN(2), chipN(99)} {
		good := l.check(chip)
		for i := range good {
			bad := append([]byte(nil), good...)
			bad[i] ^= 0x40
			p, err := proofs.ParseLookupProof(bad)
			if err != nil {
				continue
			}
			if _, err := p.Verify(l.v, chip); err == nil {
				t.Fatalf("chip %s: proof with byte %d flipped verifies", chip, i)
			}
		}
		p, _ := proofs.ParseLookupProof(good)
		if _, err := p.Verify(l.v, chipN(3)); err == nil {
			t.Fatalf("the proof of chip %s verifies for chip %s", chip, chipN(3))
		}
	}
	// A proof made at size N does not verify against a checkpoint of N+1.
	p, err := proofs.ParseLookupProof(l.check(chipN(2)))
	if err != nil {
		t.Fatal(err)
	}
	l.appendBatch([]ChipID{chipN(5)})
	st := l.s.State()
	if p.Checkpoint, err = l.signer.Sign(st.Size, st.Root); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Verify(l.v, chipN(2)); !errors.Is(err, proofs.ErrLookup) {
		t.Fatalf("a proof paired with another checkpoint: %v, want ErrLookup", err)
	}
}

func TestLookupOnAnUnindexedLogFails(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Options{NoSync: true})
	if _, err := s.Append([][]byte{fakeEscrowLeaf(t, chipN(1), 1, 80)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupChip(chipN(1)); !errors.Is(err, ErrNotIndexed) {
		t.Fatalf("lookup on a log without index roots: %v", err)
	}
}
