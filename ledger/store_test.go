package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/tlog"
)

// refTree is an independent in-memory reference built with
// golang.org/x/mod/sumdb/tlog.
type refTree struct {
	hashes []tlog.Hash
	leaves [][]byte
}

func (r *refTree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(r.hashes)) {
			return nil, fmt.Errorf("ref: hash %d not stored", x)
		}
		out[i] = r.hashes[x]
	}
	return out, nil
}

func (r *refTree) add(t testing.TB, leaf []byte) {
	t.Helper()
	hs, err := tlog.StoredHashes(int64(len(r.leaves)), leaf, r)
	if err != nil {
		t.Fatal(err)
	}
	r.hashes = append(r.hashes, hs...)
	r.leaves = append(r.leaves, leaf)
}

func (r *refTree) root(t testing.TB, n uint64) tlog.Hash {
	t.Helper()
	h, err := tlog.TreeHash(int64(n), r)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func openTestStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func randomLeaf(rng *rand.Rand) []byte {
	leaf := make([]byte, 1+rng.IntN(300))
	for i := range leaf {
		leaf[i] = byte(rng.Uint32())
	}
	return leaf
}

func toBytes(hs []Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

func toTlog(hs []Hash) []tlog.Hash {
	out := make([]tlog.Hash, len(hs))
	for i := range hs {
		out[i] = tlog.Hash(hs[i])
	}
	return out
}

func TestStoredIndexMatchesTlog(t *testing.T) {
	for level := 0; level < 12; level++ {
		for n := int64(0); n < 300; n++ {
			if got, want := storedIndex(uint8(level), uint64(n)), tlog.StoredHashIndex(level, n); got != uint64(want) {
				t.Fatalf("storedIndex(%d, %d) = %d, tlog says %d", level, n, got, want)
			}
		}
	}
	for n := int64(0); n < 5000; n++ {
		if got, want := storedCount(uint64(n)), tlog.StoredHashCount(n); got != uint64(want) {
			t.Fatalf("storedCount(%d) = %d, tlog says %d", n, got, want)
		}
	}
}

func TestRFC6962Vectors(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Options{NoSync: true})
	if got := s.State().Root; got != Hash(testonly.EmptyRootHash()) {
		t.Fatalf("empty root = %x", got)
	}
	// Build the 8-leaf tree through the hashing core, which the store uses.
	var e edge
	var stored []Hash
	h := newLeafHasher()
	for i, leaf := range testonly.LeafInputs() {
		e.push(h.hash(leaf), func(_ uint8, x Hash) { stored = append(stored, x) })
		if got, want := e.root(), testonly.RootHashes()[i+1]; !bytes.Equal(got[:], want) {
			t.Errorf("root of %d leaves = %x, want %x", i+1, got, want)
		}
	}
	if uint64(len(stored)) != storedCount(8) {
		t.Errorf("stored %d hashes for 8 leaves, want %d", len(stored), storedCount(8))
	}
}

// TestStoreAgainstReferences appends random batches and checks every root,
// and random inclusion and consistency proofs, against x/mod/sumdb/tlog and
// transparency-dev/merkle; a corrupted proof must fail both.
func TestStoreAgainstReferences(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4} {
		deferred := seed%2 == 0
		t.Run(fmt.Sprintf("seed%d/deferred=%v", seed, deferred), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed))
			s := openTestStore(t, t.TempDir(), Options{NoSync: true, DeferSync: deferred})
			ref := &refTree{}
			target := 1 + rng.IntN(3000)
			for s.Size() < uint64(target) {
				n := rng.IntN(300)
				if n == 0 {
					n = 1
				}
				batch := make([][]byte, n)
				for i := range batch {
					batch[i] = randomLeaf(rng)
					ref.add(t, batch[i])
				}
				res, err := s.Append(batch, nil)
				if err != nil {
					t.Fatal(err)
				}
				if res.First != uint64(len(ref.leaves)-n) {
					t.Fatalf("batch first = %d, want %d", res.First, len(ref.leaves)-n)
				}
				if want := ref.root(t, res.State.Size); res.State.Root != Hash(want) {
					t.Fatalf("root at %d = %x, tlog says %x", res.State.Size, res.State.Root, want)
				}
				if deferred && rng.IntN(3) == 0 {
					// Proofs must read the same across the durable/pending
					// boundary wherever it is.
					checkInclusion(t, s, ref, rng.Uint64N(s.Size()), s.Size())
					if err := s.Flush(); err != nil {
						t.Fatal(err)
					}
				}
			}
			size := s.Size()
			for range 300 {
				n := 1 + rng.Uint64N(size)
				checkRootAt(t, s, ref, n)
				checkInclusion(t, s, ref, rng.Uint64N(n), n)
				m := rng.Uint64N(n + 1)
				checkConsistency(t, s, ref, m, n)
			}
			// Edges: first and last leaf, equal sizes, powers of two.
			checkInclusion(t, s, ref, 0, size)
			checkInclusion(t, s, ref, size-1, size)
			checkConsistency(t, s, ref, size, size)
			for p := uint64(1); p < size; p *= 2 {
				checkConsistency(t, s, ref, p, size)
			}
		})
	}
}

func checkRootAt(t *testing.T, s *Store, ref *refTree, n uint64) {
	t.Helper()
	got, err := s.RootAt(n)
	if err != nil {
		t.Fatal(err)
	}
	if want := ref.root(t, n); got != Hash(want) {
		t.Fatalf("RootAt(%d) = %x, tlog says %x", n, got, want)
	}
}

func checkInclusion(t *testing.T, s *Store, ref *refTree, i, n uint64) {
	t.Helper()
	p, err := s.InclusionProof(i, n)
	if err != nil {
		t.Fatalf("InclusionProof(%d, %d): %v", i, n, err)
	}
	root := ref.root(t, n)
	leafHash := tlog.RecordHash(ref.leaves[i])
	if err := tlog.CheckRecord(toTlog(p), int64(n), root, int64(i), leafHash); err != nil {
		t.Fatalf("tlog rejects inclusion proof (%d, %d): %v", i, n, err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, n, leafHash[:], toBytes(p), root[:]); err != nil {
		t.Fatalf("merkle rejects inclusion proof (%d, %d): %v", i, n, err)
	}
	if want, err := tlog.ProveRecord(int64(n), int64(i), ref); err != nil || !equalProofs(p, want) {
		t.Fatalf("inclusion proof (%d, %d) differs from tlog.ProveRecord (err %v)", i, n, err)
	}
	if len(p) == 0 {
		return
	}
	bad := corrupt(p)
	if tlog.CheckRecord(toTlog(bad), int64(n), root, int64(i), leafHash) == nil {
		t.Fatalf("tlog accepts corrupted inclusion proof (%d, %d)", i, n)
	}
	if proof.VerifyInclusion(rfc6962.DefaultHasher, i, n, leafHash[:], toBytes(bad), root[:]) == nil {
		t.Fatalf("merkle accepts corrupted inclusion proof (%d, %d)", i, n)
	}
}

func checkConsistency(t *testing.T, s *Store, ref *refTree, m, n uint64) {
	t.Helper()
	p, err := s.ConsistencyProof(m, n)
	if err != nil {
		t.Fatalf("ConsistencyProof(%d, %d): %v", m, n, err)
	}
	r1, r2 := ref.root(t, m), ref.root(t, n)
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, m, n, toBytes(p), r1[:], r2[:]); err != nil {
		t.Fatalf("merkle rejects consistency proof (%d, %d): %v", m, n, err)
	}
	if m == 0 {
		return // tlog.CheckTree needs m ≥ 1
	}
	if err := tlog.CheckTree(toTlog(p), int64(n), r2, int64(m), r1); err != nil {
		t.Fatalf("tlog rejects consistency proof (%d, %d): %v", m, n, err)
	}
	if want, err := tlog.ProveTree(int64(n), int64(m), ref); err != nil || !equalProofs(p, want) {
		t.Fatalf("consistency proof (%d, %d) differs from tlog.ProveTree (err %v)", m, n, err)
	}
	if len(p) == 0 {
		return
	}
	bad := corrupt(p)
	if tlog.CheckTree(toTlog(bad), int64(n), r2, int64(m), r1) == nil {
		t.Fatalf("tlog accepts corrupted consistency proof (%d, %d)", m, n)
	}
	if proof.VerifyConsistency(rfc6962.DefaultHasher, m, n, toBytes(bad), r1[:], r2[:]) == nil {
		t.Fatalf("merkle accepts corrupted consistency proof (%d, %d)", m, n)
	}
}

func equalProofs[T ~[32]byte](a []Hash, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != Hash(b[i]) {
			return false
		}
	}
	return true
}

// corrupt returns a copy of p with one bit of its middle hash flipped.
func corrupt(p []Hash) []Hash {
	bad := append([]Hash(nil), p...)
	bad[len(bad)/2][7] ^= 0x10
	return bad
}

func TestReadsBeyondSizeFail(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Options{NoSync: true})
	if _, err := s.Append([][]byte{[]byte("a"), []byte("b"), []byte("c")}, nil); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"leaf":        func() error { _, err := s.Leaf(3); return err }(),
		"leaf hash":   func() error { _, err := s.LeafHash(3); return err }(),
		"root":        func() error { _, err := s.RootAt(4); return err }(),
		"inclusion":   func() error { _, err := s.InclusionProof(3, 3); return err }(),
		"inclusion2":  func() error { _, err := s.InclusionProof(1, 4); return err }(),
		"consistency": func() error { _, err := s.ConsistencyProof(2, 4); return err }(),
	} {
		if !errors.Is(err, ErrBeyondSize) {
			t.Errorf("%s beyond the size: got %v, want ErrBeyondSize", name, err)
		}
	}
	if _, err := s.ConsistencyProof(3, 2); err == nil {
		t.Error("consistency proof from a larger to a smaller size succeeded")
	}
}

func TestAppendRejectsBadLeaves(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Options{NoSync: true})
	for _, batch := range [][][]byte{
		{[]byte("ok"), {}},
		{make([]byte, MaxLeafSize+1)},
	} {
		if _, err := s.Append(batch, nil); !errors.Is(err, ErrLeafTooLarge) {
			t.Errorf("Append(%d-leaf batch with a bad leaf) = %v, want ErrLeafTooLarge", len(batch), err)
		}
	}
	if s.Size() != 0 {
		t.Fatalf("size %d after rejected batches", s.Size())
	}
	if _, err := s.Append([][]byte{make([]byte, MaxLeafSize)}, nil); err != nil {
		t.Fatalf("a leaf of exactly MaxLeafSize: %v", err)
	}
}

func TestReopenYieldsCommittedState(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 7))
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var leaves [][]byte
	for b := range 5 {
		batch := make([][]byte, 50)
		for i := range batch {
			batch[i] = randomLeaf(rng)
		}
		leaves = append(leaves, batch...)
		if _, err := s.Append(batch, []byte{byte(b)}); err != nil {
			t.Fatal(err)
		}
	}
	want := s.State()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, Options{})
	if got := s.State(); got != want {
		t.Fatalf("reopened state %+v, want %+v", got, want)
	}
	if m, err := s.Marker(); err != nil || !bytes.Equal(m, []byte{4}) {
		t.Fatalf("marker after reopen = %x, %v; want 04", m, err)
	}
	got, err := s.Leaves(0, s.Size())
	if err != nil {
		t.Fatal(err)
	}
	for i := range leaves {
		if !bytes.Equal(got[i], leaves[i]) {
			t.Fatalf("leaf %d differs after reopen", i)
		}
	}
	// Appending continues the same tree.
	ref := &refTree{}
	for _, l := range leaves {
		ref.add(t, l)
	}
	extra := randomLeaf(rng)
	ref.add(t, extra)
	res, err := s.Append([][]byte{extra}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.State.Root != Hash(ref.root(t, res.State.Size)) {
		t.Fatal("root after reopen and append differs from tlog")
	}
}

// TestCrashDuringAppendLeavesNoPartialBatch fails an append at each stage of
// its commit protocol, abandons the store as a crash would, and checks that
// the reopened store holds exactly the batches committed before.
func TestCrashDuringAppendLeavesNoPartialBatch(t *testing.T) {
	for _, stage := range []string{"write", "sync", "commit"} {
		t.Run(stage, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Append([][]byte{[]byte("one"), []byte("two")}, []byte("m1")); err != nil {
				t.Fatal(err)
			}
			before := s.State()
			crash := errors.New("injected crash")
			s.hook = func(st string) error {
				if st == stage {
					return crash
				}
				return nil
			}
			// Write the records first, then fail, so the file holds an
			// uncommitted tail as after a real crash.
			if stage != "write" {
				if _, err := s.Append([][]byte{[]byte("three"), []byte("four")}, []byte("m2")); !errors.Is(err, crash) {
					t.Fatalf("append: %v, want the injected crash", err)
				}
			} else if _, err := s.Append([][]byte{[]byte("three")}, nil); !errors.Is(err, crash) {
				t.Fatalf("append: %v, want the injected crash", err)
			}
			if got := s.State(); got != before {
				t.Fatalf("state after a failed append = %+v, want %+v", got, before)
			}
			// Crash: drop the store without a clean close.
			s.chips.close()
			s.entries.Close()
			s.db.Close()

			s = openTestStore(t, dir, Options{})
			if got := s.State(); got != before {
				t.Fatalf("reopened state %+v, want %+v", got, before)
			}
			if m, _ := s.Marker(); string(m) != "m1" {
				t.Fatalf("marker %q, want m1", m)
			}
			fi, err := os.Stat(filepath.Join(dir, entriesFile))
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(2 + 3 + 2 + 3); fi.Size() != want {
				t.Fatalf("entries file is %d bytes after recovery, want %d", fi.Size(), want)
			}
			if _, err := s.Append([][]byte{[]byte("five")}, nil); err != nil {
				t.Fatal(err)
			}
			if l, err := s.Leaf(2); err != nil || string(l) != "five" {
				t.Fatalf("leaf 2 = %q, %v; want five", l, err)
			}
		})
	}
}

// TestDeferredAppendsAreDurableOnlyAfterFlush appends with DeferSync,
// abandons the store as a crash would, and checks that it reopens at the
// last flush, with that flush's marker, and that Close flushes.
func TestDeferredAppendsAreDurableOnlyAfterFlush(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{DeferSync: true})
	if err != nil {
		t.Fatal(err)
	}
	reg := chipN(77)
	mustAppend := func(s *Store, leaves [][]byte, marker string) {
		t.Helper()
		if _, err := s.Append(leaves, []byte(marker)); err != nil {
			t.Fatal(err)
		}
	}
	mustAppend(s, [][]byte{fakeEscrowLeaf(t, reg, 1, 100), []byte("b")}, "m1")
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	durable := s.State()
	mustAppend(s, [][]byte{fakeEscrowLeaf(t, reg, 2, 100)}, "m2")
	mustAppend(s, [][]byte{[]byte("d"), []byte("e")}, "m3")
	if s.Pending() != 3 || s.Size() != 5 {
		t.Fatalf("pending %d size %d, want 3 and 5", s.Pending(), s.Size())
	}
	if got := s.ChipEntries(reg); len(got) != 2 {
		t.Fatalf("chip entries before the flush: %v", got)
	}
	if l, err := s.Leaf(4); err != nil || string(l) != "e" {
		t.Fatalf("pending leaf 4 = %q, %v", l, err)
	}
	// Crash.
	s.chips.close()
	s.entries.Close()
	s.db.Close()

	s, err = Open(dir, Options{DeferSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.State(); got != durable {
		t.Fatalf("reopened at %+v, want the last flush %+v", got, durable)
	}
	if m, _ := s.Marker(); string(m) != "m1" {
		t.Fatalf("marker %q, want m1", m)
	}
	if got := s.ChipEntries(reg); len(got) != 1 {
		t.Fatalf("chip entries after the crash: %v", got)
	}
	mustAppend(s, [][]byte{[]byte("x")}, "m4")
	want := s.State()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir, Options{})
	if got := s.State(); got != want {
		t.Fatalf("after Close and reopen: %+v, want %+v", got, want)
	}
	if m, _ := s.Marker(); string(m) != "m4" {
		t.Fatalf("marker %q, want m4", m)
	}
}

func TestEntriesFileShorterThanCommittedIsAnError(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append([][]byte{[]byte("leaf")}, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Truncate(filepath.Join(dir, entriesFile), 3); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir, Options{}); err == nil {
		s.Close()
		t.Fatal("Open accepted an entries file shorter than the committed data")
	}
}

// fakeEscrowLeaf is a well-formed escrow entry with filler certificate,
// backup and signature: the store indexes it without validating it.
func fakeEscrowLeaf(t testing.TB, chip ChipID, epoch uint32, size int) []byte {
	t.Helper()
	imei, err := NewIMEI("49015420323751")
	if err != nil {
		t.Fatal(err)
	}
	e := &EscrowEntry{
		ChipID:          chip,
		Identities:      Identities{imei},
		Epoch:           epoch,
		Certificate:     []byte("certificate"),
		Backup:          []byte("backup"),
		StationID:       sha256.Sum256([]byte("station")),
		ProvisionedAtMs: 1,
		Signature:       []byte("signature"),
	}
	leaf, err := e.MarshalLeaf()
	if err != nil {
		t.Fatal(err)
	}
	if pad := size - len(leaf); pad > 0 {
		e.Backup = make([]byte, len(e.Backup)+pad)
		if leaf, err = e.MarshalLeaf(); err != nil {
			t.Fatal(err)
		}
	}
	return leaf
}

func chipN(n uint64) ChipID {
	c := make(ChipID, 16)
	binary.BigEndian.PutUint64(c[8:], n)
	c[0] = 0xc1
	return c
}

// TestChipIndexSurvivesReopenAndDamagedJournal drives the chip index through
// reopens with an intact, a damaged, a missing and a too-long journal, and
// compares it with a model every time.
func TestChipIndexSurvivesReopenAndDamagedJournal(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	model := map[string][]ChipEntry{}
	rng := rand.New(rand.NewPCG(9, 9))
	check := func(s *Store, model map[string][]ChipEntry) {
		t.Helper()
		if s.ChipCount() != len(model) {
			t.Fatalf("ChipCount = %d, want %d", s.ChipCount(), len(model))
		}
		for chip, want := range model {
			got := s.ChipEntries(ChipID(chip))
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("chip %x: entries %v, want %v", chip, got, want)
			}
		}
		if got := s.ChipEntries(chipN(1 << 40)); got != nil {
			t.Fatalf("unknown chip has entries %v", got)
		}
	}
	journal := filepath.Join(dir, chipJournalFile)
	var saved map[string][]byte
	var savedModel map[string][]ChipEntry
	for round := range 7 {
		for range 10 {
			var batch [][]byte
			for range 1 + rng.IntN(40) {
				idx := s.Size() + uint64(len(batch))
				if rng.IntN(4) == 0 {
					batch = append(batch, []byte("not an escrow entry"))
					continue
				}
				chip := chipN(rng.Uint64N(150))
				epoch := uint32(len(model[string(chip)]) + 1)
				leaf := fakeEscrowLeaf(t, chip, epoch, 100)
				model[string(chip)] = append(model[string(chip)], ChipEntry{Epoch: epoch, Index: idx, LeafHash: newLeafHasher().hash(leaf)})
				batch = append(batch, leaf)
			}
			if _, err := s.Append(batch, nil); err != nil {
				t.Fatal(err)
			}
		}
		check(s, model)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		switch round {
		case 1: // a torn last frame
			fi, err := os.Stat(journal)
			must(err)
			must(os.Truncate(journal, fi.Size()-3))
		case 2: // a flipped bit in the middle
			b, err := os.ReadFile(journal)
			must(err)
			b[len(b)/2] ^= 1
			must(os.WriteFile(journal, b, 0o600))
		case 3: // no journal at all
			must(os.Remove(journal))
		case 4: // garbage after the last frame
			f, err := os.OpenFile(journal, os.O_APPEND|os.O_WRONLY, 0)
			must(err)
			_, err = f.Write([]byte{0, 0, 0, 9, 1, 2, 3})
			must(err)
			must(f.Close())
		case 5: // remember the store, to roll it back after the next round
			saved = map[string][]byte{}
			for _, name := range []string{dbFile, entriesFile} {
				b, err := os.ReadFile(filepath.Join(dir, name))
				must(err)
				saved[name] = b
			}
			savedModel = map[string][]ChipEntry{}
			for k, v := range model {
				savedModel[k] = slices.Clone(v)
			}
		case 6: // the store rolled back: the journal runs past the log
			for name, b := range saved {
				must(os.WriteFile(filepath.Join(dir, name), b, 0o600))
			}
			model = savedModel
		}
		if s, err = Open(dir, Options{NoSync: true}); err != nil {
			t.Fatal(err)
		}
		check(s, model)
	}
	s.Close()
}

// TestJournalCutSurvivesASecondCrash: a crash loses a deferred batch whose
// journal frame was written; the next open cuts that frame, and different
// leaves take the batch's place and are flushed. The journal is never
// synced after a write, so the cut must be made durable at open: the test
// models a file system that forgets an unsynced cut in a second crash (the
// journal then holds its bytes from before the cut), and the reopened
// index must still describe the leaves in the log.
func TestJournalCutSurvivesASecondCrash(t *testing.T) {
	dir := t.TempDir()
	journal := filepath.Join(dir, chipJournalFile)
	cutSynced := false
	opts := Options{DeferSync: true, Faults: func(op string) error {
		if op == "sync journal cut" {
			cutSynced = true
		}
		return nil
	}}
	crash := func(s *Store) {
		s.chips.close()
		s.entries.Close()
		s.db.Close()
	}
	chipA, chipB, chipC := chipN(1), chipN(2), chipN(3)

	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append([][]byte{fakeEscrowLeaf(t, chipA, 1, 100)}, []byte("m1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	// Chip B's batch is journaled but never flushed: the crash loses it.
	if _, err := s.Append([][]byte{fakeEscrowLeaf(t, chipB, 1, 100)}, []byte("m2")); err != nil {
		t.Fatal(err)
	}
	crash(s)
	beforeCut, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}

	if s, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	if got := s.ChipEntries(chipB); got != nil {
		t.Fatalf("after the first crash chip B has entries %v, want none", got)
	}
	// Chip C takes index 1, durably.
	if _, err := s.Append([][]byte{fakeEscrowLeaf(t, chipC, 1, 100)}, []byte("m3")); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	crash(s)
	if !cutSynced {
		// The second crash forgets the unsynced cut and the unsynced
		// frame written after it.
		if err := os.WriteFile(journal, beforeCut, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	if s, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.ChipEntries(chipB); got != nil {
		t.Errorf("chip B has entries %v, but no leaf of chip B is in the log", got)
	}
	if got := s.ChipEntries(chipC); len(got) != 1 || got[0].Index != 1 {
		t.Errorf("chip C has entries %v, want one at index 1", got)
	}
}

// TestReplaceMetadata: the records become exactly the given ones, with the
// marker, and stay so after a reopen; SetMetadata keeps working on top.
func TestReplaceMetadata(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"member/a", "member/b"} {
		if err := s.SetMetadata(k, []byte("old "+k), []byte("m1")); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][]byte{"member/b": []byte("new b"), "member/c": []byte("new c")}
	if err := s.ReplaceMetadata(want, []byte("m9")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("metadata %q, want %q", got, want)
	}
	if m, err := s.Marker(); err != nil || string(m) != "m9" {
		t.Errorf("marker %q, %v; want m9", m, err)
	}
	if err := s.SetMetadata("member/d", []byte("d"), nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Metadata(); len(got) != 3 {
		t.Errorf("after SetMetadata: %q", got)
	}
}

// TestOpenSyncsTheDirectory: Open makes the names of the files it creates
// durable (the store's directory and its parent), and a failure to do so
// fails the open rather than leave a store whose files a crash could lose.
func TestOpenSyncsTheDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ledger")
	var ops []string
	s, err := Open(dir, Options{Faults: func(op string) error {
		ops = append(ops, op)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if n := slices.Index(ops, "sync directory"); n < 0 || slices.Index(ops[n+1:], "sync directory") < 0 {
		t.Errorf("open made %q, want two directory syncs", ops)
	}
	failing := errors.New("injected: input/output error")
	_, err = Open(filepath.Join(t.TempDir(), "ledger"), Options{Faults: func(op string) error {
		if op == "sync directory" {
			return failing
		}
		return nil
	}})
	if !errors.Is(err, failing) {
		t.Errorf("open with a failing directory sync: %v, want the failure", err)
	}
}

// TestFailedCommitStopsTheStore: a commit that failed may still have
// reached the disk, so the store takes no more appends (which would write
// other leaves where a reopen could find the failed batch's) until it is
// reopened; the reopened store is whole.
func TestFailedCommitStopsTheStore(t *testing.T) {
	dir := t.TempDir()
	failing := errors.New("injected: input/output error")
	fail := true
	s, err := Open(dir, Options{Faults: func(op string) error {
		if op == "commit" && fail {
			fail = false
			return failing
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append([][]byte{[]byte("one")}, nil); !errors.Is(err, failing) || !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("append with a failing commit: %v, want the failure as ErrStoreFailed", err)
	}
	if _, err := s.Append([][]byte{[]byte("two")}, nil); !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("append after a failed commit: %v, want ErrStoreFailed until the store is reopened", err)
	}
	if err := s.Flush(); !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("flush after a failed commit: %v, want ErrStoreFailed", err)
	}
	s.Close()
	s = openTestStore(t, dir, Options{})
	if _, err := s.Append([][]byte{[]byte("two")}, nil); err != nil {
		t.Fatalf("append after the reopen: %v", err)
	}
	if got := s.Size(); got != 1 {
		t.Fatalf("size %d after the reopen and one append, want 1", got)
	}
}

// TestStationIndexIsNotSeenBeforeItsLeaf: a reader that finds a station's
// registration must be able to read its leaf. An append records the
// station (in the tail, or in bbolt without deferred syncs) before it
// publishes the size that includes it; a reader in between must not get
// an index that Leaf refuses with ErrBeyondSize (the node admits an entry
// of a station just registered this way).
func TestStationIndexIsNotSeenBeforeItsLeaf(t *testing.T) {
	for _, deferred := range []bool{false, true} {
		t.Run(map[bool]string{false: "sync", true: "deferred"}[deferred], func(t *testing.T) {
			testStationIndexVisibleBeforeLeaf(t, deferred)
		})
	}
}

func testStationIndexVisibleBeforeLeaf(t *testing.T, deferred bool) {
	s := openTestStore(t, t.TempDir(), Options{DeferSync: deferred, NoSync: true})
	if _, err := s.Append([][]byte{[]byte("first")}, nil); err != nil {
		t.Fatal(err)
	}
	reg := &StationRegistration{Certificate: []byte("station cert"), RegisteredAtMs: 1}
	leaf, err := reg.MarshalLeaf()
	if err != nil {
		t.Fatal(err)
	}
	before := s.pend.Load()
	// Hold the chip index read lock: the appender stops in chips.apply,
	// after publishing the tail and before publishing the size.
	s.chips.mu.RLock()
	done := make(chan error, 1)
	go func() {
		_, err := s.Append([][]byte{leaf}, nil)
		done <- err
	}()
	for s.pend.Load() == before {
		runtime.Gosched()
	}
	idx, ok, err := s.StationRegistrationIndex(reg.StationID())
	size := s.Size()
	_, leafErr := s.Leaf(idx)
	s.chips.mu.RUnlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if ok && errors.Is(leafErr, ErrBeyondSize) {
		t.Fatalf("StationRegistrationIndex returned index %d while the visible size is %d: Leaf(%d): %v", idx, size, idx, leafErr)
	}
}

// TestAStationRecordDoesNotChangeOnFlush: with two revocation leaves of
// one station in the log (the node refuses the second since, but a log may
// hold them), the store answers with the first, before and after a flush:
// replicas flush at different times and must answer alike.
func TestAStationRecordDoesNotChangeOnFlush(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Options{DeferSync: true, NoSync: true})
	var id [32]byte
	id[0] = 7
	var leaves [][]byte
	for _, reason := range []string{"first", "second"} {
		l, err := (&StationRevocation{StationID: id, RevokedAtMs: 1, Reason: reason}).MarshalLeaf()
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, l)
	}
	if _, err := s.Append(leaves, nil); err != nil {
		t.Fatal(err)
	}
	before, _, err := s.StationRevocationIndex(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	after, _, err := s.StationRevocationIndex(id)
	if err != nil {
		t.Fatal(err)
	}
	if before != after {
		t.Fatalf("StationRevocationIndex is %d before Flush and %d after", before, after)
	}
}
