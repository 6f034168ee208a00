package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
)

// memSink is a raft.SnapshotSink in memory.
type memSink struct{ bytes.Buffer }

func (*memSink) ID() string    { return "mem" }
func (*memSink) Cancel() error { return nil }
func (*memSink) Close() error  { return nil }

// snapshotOf persists a snapshot of f in memory.
func snapshotOf(t *testing.T, f *fsm) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

func commandEntry(index uint64, data []byte) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// batchCommand is the Raft command of a batch of leaves.
func batchCommand(t *testing.T, leaves ...[]byte) []byte {
	t.Helper()
	d, err := encodeBatch(leaves)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// inmemLog is a Raft log store holding entries, for a state machine to
// replay from.
func inmemLog(t *testing.T, entries ...*raft.Log) raft.LogStore {
	t.Helper()
	logs := raft.NewInmemStore()
	if err := logs.StoreLogs(entries); err != nil {
		t.Fatal(err)
	}
	return logs
}

func newTestFSM(t *testing.T, faults func(string) error) *fsm {
	t.Helper()
	signer, _ := testLogKey(t)
	f, err := newFSM(t.TempDir(), signer, true, faults, testLogger(t), newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.close() })
	return f
}

// TestStoreFaultAfterARestoreReplaysOnlyWhatFollows: a replica restored
// from a snapshot, whose next store write fails, replays the Raft log from
// the snapshot's position, not from the start of the log. Replaying from
// the start would re-decide entries against a later state: here an epoch-2
// entry every replica refused (epoch 1 was not logged yet) would be
// accepted, and the replica would sign a fork.
func TestStoreFaultAfterARestoreReplaysOnlyWhatFollows(t *testing.T) {
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	chip := testpki.ChipID(42)
	leaf := func(chip []byte, epoch uint32) []byte {
		l, err := pki.EscrowLeaf(chip, epoch, 0)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	batch := func(leaf []byte) []byte { return batchCommand(t, leaf) }
	entries := []*raft.Log{
		commandEntry(1, encodeGenesis()),
		commandEntry(2, batch(pki.StationLeaf())),
		commandEntry(3, batch(leaf(chip, 2))), // refused: epoch 1 is not logged
		commandEntry(4, batch(leaf(chip, 1))),
	}
	next := commandEntry(5, batch(leaf(testpki.ChipID(43), 1)))

	a := newTestFSM(t, nil)
	for _, e := range entries {
		a.Apply(e)
	}
	snap := snapshotOf(t, a)
	a.Apply(next)
	want := a.checkpoint()

	var failNextWrite atomic.Bool
	b := newTestFSM(t, func(op string) error {
		if op == "write" && failNextWrite.CompareAndSwap(true, false) {
			return errors.New("injected: no space left on device")
		}
		return nil
	})
	b.logs = inmemLog(t, append(entries, next)...)
	if err := b.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	failNextWrite.Store(true)
	done := make(chan any, 1)
	go func() { done <- b.Apply(next) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the state machine did not recover from one failed write")
	}
	if failNextWrite.Load() {
		t.Fatal("the injected write failure never happened")
	}
	if got := b.checkpoint(); got.Size != want.Size || got.Root != want.Root {
		t.Fatalf("replicas diverged: size %d root %x here, size %d root %x on the replica that took the snapshot", got.Size, got.Root[:4], want.Size, want.Root[:4])
	}
}

// TestRestoreOfLeavesAlreadyHeldTakesTheSnapshotsMetadata: a replica whose
// store holds a snapshot's leaves but missed entries that changed only
// metadata (a member's API address) takes the snapshot's metadata, since
// Raft will not replay those entries.
func TestRestoreOfLeavesAlreadyHeldTakesTheSnapshotsMetadata(t *testing.T) {
	a, b := newTestFSM(t, nil), newTestFSM(t, nil)
	member, err := encodeMember("node1", "10.0.0.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []*fsm{a, b} {
		f.Apply(commandEntry(1, encodeGenesis()))
	}
	a.Apply(commandEntry(2, member))
	if err := b.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, a)))); err != nil {
		t.Fatal(err)
	}
	if m, _ := b.members(); m["node1"] != "10.0.0.2:8080" {
		t.Fatalf("after the restore the members are %v, want node1 at 10.0.0.2:8080 as in the snapshot", m)
	}
	if b.marker != 2 {
		t.Errorf("marker %d after the restore, want the snapshot's 2", b.marker)
	}
}

// TestRestoreReadsSnapshotsWithoutAPosition: a "CLS1" snapshot, written
// before snapshots carried their position, still restores.
func TestRestoreReadsSnapshotsWithoutAPosition(t *testing.T) {
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	a := newTestFSM(t, nil)
	a.Apply(commandEntry(1, encodeGenesis()))
	station, err := encodeBatch([][]byte{pki.StationLeaf()})
	if err != nil {
		t.Fatal(err)
	}
	a.Apply(commandEntry(2, station))
	snap := snapshotOf(t, a)
	hdr := snapshotHeader(a.store.State(), 2, map[string][]byte{})
	v1 := append(v1SnapshotHeader(hdr), snap[len(hdr):]...)
	b := newTestFSM(t, nil)
	if err := b.Restore(io.NopCloser(bytes.NewReader(v1))); err != nil {
		t.Fatal(err)
	}
	if got, want := b.checkpoint(), a.checkpoint(); got.Size != want.Size || got.Root != want.Root {
		t.Fatalf("restored %d %x, want %d %x", got.Size, got.Root[:4], want.Size, want.Root[:4])
	}
}

// TestHaltedStateMachineTakesNoSnapshot: once the state machine gave up on
// an entry (its store failing as the node stops), Raft counts the entry as
// applied; a snapshot would claim it and the next start would not replay
// it, so the state machine refuses to take one.
func TestHaltedStateMachineTakesNoSnapshot(t *testing.T) {
	f := newTestFSM(t, nil)
	f.Apply(commandEntry(1, encodeGenesis()))
	if _, err := f.Snapshot(); err != nil {
		t.Fatalf("snapshot of a healthy state machine: %v", err)
	}
	f.halted.Store(true)
	if _, err := f.Snapshot(); !errors.Is(err, ErrStoreFault) {
		t.Fatalf("snapshot of a halted state machine: %v, want ErrStoreFault", err)
	}
}

// TestRestoreRefusesATreeWithoutAnIndexRoot: a snapshot whose leaves match
// its root but do not end with an index root (a faulty leader) is refused
// before the node switches to it: the node keeps its ledger and checkpoint,
// and still starts afterwards.
func TestRestoreRefusesATreeWithoutAnIndexRoot(t *testing.T) {
	src, err := ledger.Open(t.TempDir(), ledger.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.AppendIndexed(nil, nil); err != nil { // the genesis index root
		t.Fatal(err)
	}
	if _, err := src.Append([][]byte{[]byte("not an index root")}, nil); err != nil {
		t.Fatal(err)
	}
	st := src.State()
	var stream bytes.Buffer
	stream.Write(snapshotHeader(st, 9, nil))
	if err := src.WriteLeaves(&stream, st.Size); err != nil {
		t.Fatal(err)
	}

	dataDir := t.TempDir()
	signer, _ := testLogKey(t)
	f, err := newFSM(dataDir, signer, true, nil, testLogger(t), newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	f.Apply(commandEntry(1, encodeGenesis()))
	before := *f.checkpoint()
	if err := f.Restore(io.NopCloser(&stream)); err == nil {
		t.Fatal("a snapshot without an index root at its end was restored")
	}
	if cp := f.checkpoint(); cp.Size != before.Size || cp.Root != before.Root || f.store.State().Size != before.Size {
		t.Fatalf("after the refused restore: checkpoint size %d, store size %d; want both %d", cp.Size, f.store.State().Size, before.Size)
	}
	f.close()
	again, err := newFSM(dataDir, signer, true, nil, testLogger(t), newMetrics())
	if err != nil {
		t.Fatalf("restart after the refused restore: %v", err)
	}
	again.close()
}

// TestSnapshotPositionIsTheStateMachinesOwn: at start Raft's applied index
// may already count entries a leader sent and that are only queued; a
// snapshot taken before the state machine applies them must not claim
// them, or a follower restoring it would never apply them.
func TestSnapshotPositionIsTheStateMachinesOwn(t *testing.T) {
	f := newTestFSM(t, nil)
	f.Apply(commandEntry(1, encodeGenesis()))
	f.noteStarted(10) // Raft: 10 applied, 2 to 10 merely queued
	_, _, through, _, err := readSnapshotHeader(bytes.NewReader(snapshotOf(t, f)))
	if err != nil {
		t.Fatal(err)
	}
	if through != 1 {
		t.Errorf("the snapshot says it holds every entry through %d, want 1", through)
	}
}

// TestIdleFlushRecoversFromAFailedCommit: a commit that fails in the idle
// flush stops the store until it is reopened, and no Apply comes to
// reopen it (the node refuses appends meanwhile): the flusher reopens it
// itself, replays what its durable state lacks, and the node takes
// appends again once the disk works.
func TestIdleFlushRecoversFromAFailedCommit(t *testing.T) {
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	var broken atomic.Bool
	f := newTestFSM(t, func(op string) error {
		if op == "commit" && broken.Load() {
			return errors.New("injected: no space left on device")
		}
		return nil
	})
	batch := func(leaf []byte) []byte { return batchCommand(t, leaf) }
	leaf, err := pki.EscrowLeaf(testpki.ChipID(7), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	entries := []*raft.Log{commandEntry(1, encodeGenesis()), commandEntry(2, batch(pki.StationLeaf())), commandEntry(3, batch(leaf))}
	f.logs = inmemLog(t, entries...)
	for _, e := range entries[:2] {
		f.Apply(e)
	}
	f.flushedAt.Store(time.Now().UnixNano()) // within the interval: the next batch stays pending
	f.Apply(entries[2])
	if f.store.Pending() == 0 {
		t.Fatal("the last batch is not pending: nothing for the idle flush to do")
	}
	want := f.checkpoint()
	broken.Store(true)
	if err := f.flushDue(time.Now().Add(time.Second)); err == nil {
		t.Fatal("the idle flush did not fail")
	}
	if f.storeFault() == nil {
		t.Fatal("a failing flush is not reported as a store fault")
	}
	broken.Store(false) // the disk works again
	if err := f.flushDue(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatalf("idle flush after the disk recovered: %v", err)
	}
	if err := f.storeFault(); err != nil {
		t.Fatalf("the disk recovered, yet the node refuses appends: %v", err)
	}
	if got := f.store.State(); got.Size != want.Size || got.Root != want.Root || f.store.Pending() != 0 {
		t.Fatalf("after the recovery the store is at size %d (%d pending), want %d, all durable", got.Size, f.store.Pending(), want.Size)
	}
}

// TestAnUnfinishedIdleFlushRecoveryIsFinishedBeforeTheNextApply: the idle
// flush fails, and its recovery reopens the store but cannot replay what
// the store's durable state lacks (the Raft log cannot be read either),
// which leaves the reopened store, healthy in itself, without an entry the
// node had applied. When the disk works again, the next entry must not be
// applied on top of that store (the replica would skip the missing entry
// and sign a tree no other replica has), nor may the next idle flush call
// it recovered: either finishes the replay first.
func TestAnUnfinishedIdleFlushRecoveryIsFinishedBeforeTheNextApply(t *testing.T) {
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	var broken atomic.Bool
	batch := func(chip uint64) []byte {
		leaf, err := pki.EscrowLeaf(testpki.ChipID(chip), 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		return batchCommand(t, leaf)
	}
	entries := []*raft.Log{commandEntry(1, encodeGenesis()), commandEntry(2, batchCommand(t, pki.StationLeaf())), commandEntry(3, batch(7)), commandEntry(4, batch(8))}
	// What every healthy replica holds after the four entries.
	ref := newTestFSM(t, nil)
	for _, e := range entries {
		ref.Apply(e)
	}
	want := ref.checkpoint()

	for _, idleFlushFirst := range []bool{false, true} {
		broken.Store(false)
		f := newTestFSM(t, func(op string) error {
			if op == "commit" && broken.Load() {
				return errors.New("injected: no space left on device")
			}
			return nil
		})
		f.logs = &flakyLogs{LogStore: inmemLog(t, entries...), broken: &broken}
		for _, e := range entries[:2] {
			f.Apply(e)
		}
		f.flushedAt.Store(time.Now().UnixNano()) // within the interval: entry 3 stays pending
		f.Apply(entries[2])
		if f.store.Pending() == 0 {
			t.Fatal("entry 3 is not pending: nothing for the idle flush to do")
		}
		broken.Store(true)
		if err := f.flushDue(time.Now().Add(time.Second)); err == nil {
			t.Fatal("the idle flush and its recovery did not fail")
		}
		broken.Store(false) // the disk works again
		if idleFlushFirst {
			if err := f.flushDue(time.Now().Add(2 * time.Second)); err != nil || f.storeFault() != nil {
				t.Fatalf("the idle flush after the disk recovered: %v; fault %v", err, f.storeFault())
			}
			if got, cp := f.store.Size(), f.checkpoint().Size; got != cp {
				t.Fatalf("the idle flush after the disk recovered left the store at size %d, behind the checkpoint it signed, of size %d", got, cp)
			}
		}
		if res, ok := f.Apply(entries[3]).(error); ok {
			t.Fatalf("entry 4 after the disk recovered: %v", res)
		}
		if got := f.store.State(); got.Size != want.Size || got.Root != want.Root {
			t.Fatalf("idle flush first %v: after entry 4 the store is at size %d root %x; every other replica is at size %d root %x", idleFlushFirst, got.Size, got.Root, want.Size, want.Root)
		}
		if cp := f.checkpoint(); cp.Size != want.Size || cp.Root != want.Root {
			t.Fatalf("idle flush first %v: the node signs size %d root %x, want %d %x", idleFlushFirst, cp.Size, cp.Root, want.Size, want.Root)
		}
	}
}

// flakyLogs is a Raft log whose reads fail while broken.
type flakyLogs struct {
	raft.LogStore
	broken *atomic.Bool
}

func (l *flakyLogs) GetLog(i uint64, out *raft.Log) error {
	if l.broken.Load() {
		return errors.New("injected: input/output error")
	}
	return l.LogStore.GetLog(i, out)
}

// TestABatchWhoseFlushFailedStillAnswersItsAppends: the flush that ends an
// applied batch fails (a disk error), and the recovery finds the batch
// durable all the same (the store's close on reopen, or a commit that
// reached the disk though its fsync failed, flushed it). The batch's
// appends must still get their results: it is in the ledger, and an
// answer without one would fail them with INTERNAL, which clients do not
// retry.
func TestABatchWhoseFlushFailedStillAnswersItsAppends(t *testing.T) {
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	var failSync atomic.Bool
	f := newTestFSM(t, func(op string) error {
		if op == "sync" && failSync.CompareAndSwap(true, false) {
			return errors.New("injected: transient I/O error")
		}
		return nil
	})
	batch := func(leaf []byte) []byte { return batchCommand(t, leaf) }
	leaf, err := pki.EscrowLeaf(testpki.ChipID(9), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	entries := []*raft.Log{commandEntry(1, encodeGenesis()), commandEntry(2, batch(pki.StationLeaf())), commandEntry(3, batch(leaf))}
	f.logs = inmemLog(t, entries...)
	f.Apply(entries[0])
	f.Apply(entries[1])
	f.flushedAt.Store(0) // the next batch flushes as it is applied
	failSync.Store(true)
	res := f.Apply(entries[2])
	if failSync.Load() {
		t.Fatal("the injected sync failure never happened")
	}
	ar, ok := res.(*applyResult)
	if !ok || len(ar.results) != 1 || ar.results[0].Err != nil || ar.results[0].Index != 3 || ar.checkpoint.Size != 5 {
		t.Fatalf("Apply of the batch whose flush failed returned %T %+v, want its append's result (index 3) at size 5", res, res)
	}
	if f.store.Size() != 5 || f.applied.Load() != 3 || f.storeFault() != nil {
		t.Fatalf("after the recovery: size %d, applied %d, fault %v", f.store.Size(), f.applied.Load(), f.storeFault())
	}
}

// TestAFailedRestoreLeavesCURRENTOnTheLiveGeneration: a restore whose
// last step, opening the new generation, fails must leave CURRENT naming
// the generation the node goes on serving. Otherwise the next restore
// deletes the generation CURRENT names, and a restart opens an empty store
// there and deletes the one that held the node's ledger.
func TestAFailedRestoreLeavesCURRENTOnTheLiveGeneration(t *testing.T) {
	src := newTestFSM(t, nil)
	src.Apply(commandEntry(1, encodeGenesis()))
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	station, err := encodeBatch([][]byte{pki.StationLeaf()})
	if err != nil {
		t.Fatal(err)
	}
	src.Apply(commandEntry(2, station))
	snap := snapshotOf(t, src)

	dataDir := t.TempDir()
	signer, _ := testLogKey(t)
	var failOpen atomic.Bool
	faults := func(op string) error {
		if op == "sync directory" && failOpen.Load() {
			return errors.New("injected: EIO on directory fsync")
		}
		return nil
	}
	f, err := newFSM(dataDir, signer, true, faults, testLogger(t), newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	f.Apply(commandEntry(1, encodeGenesis()))
	served := *f.checkpoint()

	// 1. A restore whose final reopen fails (a transient disk error).
	failOpen.Store(true)
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err == nil {
		t.Fatal("the injected reopen failure did not fail the restore")
	}
	failOpen.Store(false)
	cur, err := LedgerPath(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	live := f.dir.path(f.gen)
	if cur != live {
		t.Errorf("after a failed restore CURRENT names %s, but the node serves (and writes) %s", cur, live)
	}

	// 2. The leader sends the snapshot again; this attempt fails too.
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap[:len(snap)-1]))); err == nil {
		t.Fatal("a truncated snapshot was restored")
	}
	if _, err := os.Stat(cur); err != nil {
		t.Errorf("CURRENT names %s, which the second restore deleted: %v", cur, err)
	}
	f.close()

	// 3. Restart.
	again, err := newFSM(dataDir, signer, true, nil, testLogger(t), newMetrics())
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer again.close()
	if cp := again.checkpoint(); cp.Size != served.Size || cp.Root != served.Root {
		t.Errorf("the node served size %d before the restart and opens a ledger of size %d (marker %d) after it: its ledger generation was deleted", served.Size, cp.Size, again.marker)
	}
}

// snapshotOfLeaves returns a snapshot stream of the given leaves, with
// the root they hash to (so rebuild's own check passes).
func snapshotOfLeaves(t *testing.T, leaves [][]byte, through uint64) []byte {
	t.Helper()
	src, err := ledger.Open(t.TempDir(), ledger.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for _, l := range leaves {
		if _, err := src.Append([][]byte{l}, nil); err != nil {
			t.Fatal(err)
		}
	}
	st := src.State()
	var stream bytes.Buffer
	stream.Write(snapshotHeader(st, through, nil))
	if err := src.WriteLeaves(&stream, st.Size); err != nil {
		t.Fatal(err)
	}
	return stream.Bytes()
}

// TestRestoreNeverSignsAForkOfWhatTheNodeSigned: a snapshot whose tree
// does not extend the tree the node already signed (a faulty leader, a
// snapshot of another log) is refused: rebuilding it would have the node
// sign two checkpoints no consistency proof links, or a checkpoint smaller
// than one it served.
func TestRestoreNeverSignsAForkOfWhatTheNodeSigned(t *testing.T) {
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	station, err := encodeBatch([][]byte{pki.StationLeaf()})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("larger", func(t *testing.T) {
		f := newTestFSM(t, nil)
		f.Apply(commandEntry(1, encodeGenesis()))
		f.noteStarted(1)
		served := *f.checkpoint()
		ir, _ := (&ledger.IndexRoot{CoveredSize: 1, ChipCount: 0, Root: [32]byte{1}}).MarshalLeaf()
		snap := snapshotOfLeaves(t, [][]byte{[]byte("not the genesis"), ir}, 9)
		if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); !errors.Is(err, errForeignSnapshot) {
			t.Fatalf("restore of a larger tree that does not extend the node's: %v, want errForeignSnapshot", err)
		}
		if cp := f.checkpoint(); cp.Size != served.Size || cp.Root != served.Root {
			t.Fatalf("after the refused restore the node serves size %d, want its own %d", cp.Size, served.Size)
		}
	})
	t.Run("smaller", func(t *testing.T) {
		f := newTestFSM(t, nil)
		f.Apply(commandEntry(1, encodeGenesis()))
		f.Apply(commandEntry(2, station))
		f.noteStarted(2)
		served := *f.checkpoint()
		ir, _ := (&ledger.IndexRoot{CoveredSize: 0, ChipCount: 7, Root: [32]byte{2}}).MarshalLeaf()
		snap := snapshotOfLeaves(t, [][]byte{ir}, 9)
		if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); !errors.Is(err, errForeignSnapshot) {
			t.Fatalf("restore of a smaller tree that is no prefix of the node's: %v, want errForeignSnapshot", err)
		}
		if cp := f.checkpoint(); cp.Size != served.Size || cp.Root != served.Root {
			t.Fatalf("after the refused restore the node serves size %d, want its own %d", cp.Size, served.Size)
		}
	})
}

// TestRestoreRefusesTrailingBytes: the snapshot stream is "header ‖ the
// leaves [0, size) as u16-length-framed records", and trailing bytes are
// an error (DESIGN.md §3): a snapshot carrying more than it says (one
// more leaf record, or garbage) is refused, not restored with the surplus
// dropped.
func TestRestoreRefusesTrailingBytes(t *testing.T) {
	snap, _ := fuzzSnapshot(t)
	leaf := []byte{0, 3, 0xaa, 0xbb} // a leaf record past the snapshot's size
	extra := append(binary.BigEndian.AppendUint16(nil, uint16(len(leaf))), leaf...)
	for name, stream := range map[string][]byte{
		"extra leaf record": append(bytes.Clone(snap), extra...),
		"garbage":           append(bytes.Clone(snap), 0xde, 0xad, 0xbe, 0xef),
	} {
		f := newFuzzFSM(t)
		if res, ok := f.Apply(commandEntry(1, encodeGenesis())).(error); ok {
			t.Fatal(res)
		}
		f.noteStarted(1)
		if err := f.Restore(io.NopCloser(bytes.NewReader(stream))); err == nil {
			t.Errorf("%s: Restore accepted a snapshot with %d bytes after its last leaf (now at size %d)", name, len(stream)-len(snap), f.checkpoint().Size)
		}
	}
}

// TestJoinRefusesMalformedAddresses: Join checks only that node_id and

// TestReadsGoOnWhileARestoreBuildsTheNextGeneration: while a follower
// rebuilds its ledger from a snapshot, its live store is unchanged until
// the switch, so reads of it (the API's proofs, entries and lookups, the
// station checks of appends, the idle flusher) go on: they do not wait
// for the whole snapshot to be read, hashed and written.
func TestReadsGoOnWhileARestoreBuildsTheNextGeneration(t *testing.T) {
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	a, b := newTestFSM(t, nil), newTestFSM(t, nil)
	a.Apply(commandEntry(1, encodeGenesis()))
	b.Apply(commandEntry(1, encodeGenesis()))
	a.Apply(commandEntry(2, batchCommand(t, pki.StationLeaf())))
	for i := uint64(0); i < 20; i++ {
		l, err := pki.EscrowLeaf(testpki.ChipID(500+i), 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		a.Apply(commandEntry(3+i, batchCommand(t, l)))
	}
	snap := snapshotOf(t, a)
	liveSize := b.checkpoint().Size

	// The snapshot arrives slowly: all but its last bytes, then nothing
	// until the read below is done.
	pr, pw := io.Pipe()
	restored := make(chan error, 1)
	go func() { restored <- b.Restore(pr) }()
	if _, err := pw.Write(snap[:len(snap)-10]); err != nil {
		t.Fatal(err)
	}
	next := b.dir.path(b.gen + 1)
	waitFor(t, "the restore to build the next generation", 10*time.Second, func() bool {
		_, err := os.Stat(next)
		return err == nil
	})

	read := make(chan uint64, 1)
	go func() {
		b.withStore(func(s *ledger.Store) error { read <- s.Size(); return nil })
	}()
	select {
	case got := <-read:
		if got != liveSize {
			t.Errorf("read the live store at size %d during the restore, want %d", got, liveSize)
		}
	case <-time.After(5 * time.Second):
		t.Error("a read of the live store waited for the snapshot restore in progress")
	}
	if _, err := pw.Write(snap[len(snap)-10:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-restored; err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got, want := b.checkpoint().Size, a.checkpoint().Size; got != want {
		t.Errorf("restored size %d, want %d", got, want)
	}
}
