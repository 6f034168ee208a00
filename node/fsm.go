package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/chipledger/chipledger/internal/atomicfile"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// Checkpoint is a signed tree head of the log: the size, the root and the
// C2SP signed note over them.
type Checkpoint struct {
	Size   uint64
	Root   ledger.Hash
	Signed []byte
}

// fsm is the Raft state machine: it applies batches of leaves to the ledger
// store, one store append (and so one signed checkpoint) per Raft entry.
//
// The store is durable on its own and records the index of the last Raft
// entry that changed it (its marker), so entries replayed after a restart are
// skipped rather than appended twice. Snapshots carry the leaves; restoring
// one that the store already contains is a no-op, otherwise it rebuilds the
// store as a new generation and switches to it atomically.
type fsm struct {
	log      *slog.Logger
	dir      *ledgerDir
	signer   *ledger.LogSigner
	verifier *proofs.LogVerifier // the signer's: checks cosigned checkpoints
	noSync   bool
	metrics  *metrics

	// mu guards the store pointer, which only Restore replaces. Apply,
	// Snapshot and Restore all run on Raft's FSM goroutine, so Apply needs
	// only a read lock and never blocks readers.
	mu     sync.RWMutex
	store  *ledger.Store
	gen    int
	marker uint64 // Raft index of the last entry that changed the store

	// applied is the Raft index of the last command entry whose effect is
	// in the state machine (applied, or found already in the store); the
	// node's catch-up gate reads it. Raft's own AppliedIndex runs ahead:
	// it counts entries queued for the state machine, not yet applied.
	applied atomic.Uint64
	// started is set once Raft has started (and restored its latest
	// snapshot); a restore after that is a snapshot sent by the leader.
	started      atomic.Bool
	restoredLive atomic.Bool
	// restoredV1 is set when the snapshot Raft restored at start was a
	// "CLS1" one, which does not say which entries it holds.
	restoredV1 atomic.Bool

	flushedAt atomic.Int64 // unix nanoseconds of the last store flush
	// counted is the last Raft index whose batch the metrics counted: one
	// applied again is not counted twice. It starts at the Raft log's last
	// index when the node started, whose entries a previous run decided.
	counted atomic.Uint64

	// Store faults (see recoverStore).
	storeOpts   ledger.Options
	storeClosed bool                  // the store was closed to be reopened, under mu
	logs        raft.LogStore         // the Raft log, to replay from after reopening
	stop        chan struct{}         // closed when the node stops: give up recovering
	halted      atomic.Bool           // gave up recovering: apply nothing more
	fault       atomic.Pointer[error] // Apply cannot write (recoverStore)
	flushFault  atomic.Pointer[error] // the idle flush cannot write (flushDue)
	faulted     chan struct{}         // signalled when a fault starts
	faultMu     sync.Mutex
	faultCh     chan struct{} // closed while Apply is faulted, replaced when it recovers
	// replaying is set, under mu, while a reopened store lacks entries
	// this node applied: from reopen's start until its replay completes.
	// Apply must not add an entry to such a store (the replica would
	// skip the missing ones and sign a tree no other replica has).
	replaying bool

	cp      atomic.Pointer[Checkpoint]
	cpMu    sync.Mutex
	cpReady chan struct{} // closed and replaced on every new checkpoint
}

func newFSM(dataDir string, signer *ledger.LogSigner, noSync bool, faults func(string) error, logger *slog.Logger, m *metrics) (*fsm, error) {
	dir, err := newLedgerDir(dataDir)
	if err != nil {
		return nil, err
	}
	gen, path, err := dir.current()
	if err != nil {
		return nil, err
	}
	if err := dir.removeOthers(gen); err != nil {
		logger.Warn("could not remove old ledger generations", "err", err)
	}
	opts := storeOptions(logger, noSync)
	opts.Faults = faults
	store, err := ledger.Open(path, opts)
	if errors.Is(err, ledger.ErrCorrupt) {
		return nil, fmt.Errorf("%w; the node refuses to serve it. Run \"chipledger node verify --data-dir %s\" for the first bad leaf or node, then move %s away and restart: the node rebuilds the ledger from its Raft snapshot and log (or remove the data directory and join the cluster again)", err, dataDir, path)
	}
	if err != nil {
		return nil, err
	}
	verifier, err := proofs.NewLogVerifier(signer.VerifierKey())
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("log key: %w", err)
	}
	f := &fsm{log: logger, dir: dir, signer: signer, verifier: verifier, noSync: noSync, metrics: m, store: store, gen: gen, cpReady: make(chan struct{}),
		storeOpts: opts, stop: make(chan struct{}), faulted: make(chan struct{}, 1), faultCh: make(chan struct{})}
	if err := f.loadMarker(); err != nil {
		store.Close()
		return nil, err
	}
	f.applied.Store(f.marker)
	if err := f.publish(store.State()); err != nil {
		store.Close()
		return nil, err
	}
	return f, nil
}

// storeOptions opens the ledger store with deferred syncs: the state
// machine makes its appends durable in groups (see flushDue), because the
// Raft log, which is synced on every entry, holds every entry after the
// store's marker and replays them after a crash.
func storeOptions(logger *slog.Logger, noSync bool) ledger.Options {
	return ledger.Options{Logger: logger, NoSync: noSync, DeferSync: true}
}

const (
	// flushInterval and flushLeaves bound how much a crash can make the
	// node replay from its Raft log.
	flushInterval = 50 * time.Millisecond
	flushLeaves   = 1 << 14
)

// flushDue makes the store's appends durable if enough time or leaves have
// gone by since the last flush. It runs on the FSM goroutine after each
// append, and from the node's flusher when the log is idle.
func (f *fsm) flushDue(now time.Time) error {
	var err error
	unfinished := false // a recovery left the store without entries it must replay
	f.withStoreLocked(func(s *ledger.Store) {
		if unfinished = f.replaying; unfinished {
			return
		}
		p := s.Pending()
		if p == 0 || (p < flushLeaves && now.Sub(f.lastFlush()) < flushInterval) {
			return
		}
		if err = s.Flush(); err == nil {
			f.flushedAt.Store(now.UnixNano())
		}
	})
	if unfinished || errors.Is(err, ledger.ErrStoreFailed) {
		if err = f.recoverFlush(); err == nil {
			f.flushedAt.Store(now.UnixNano())
		}
	}
	switch {
	case err != nil && f.flushFault.Swap(&err) == nil:
		f.metrics.storeFault.Set(1)
		return err // reported once, when the fault starts
	case err == nil && f.flushFault.Swap(nil) != nil:
		f.log.Info("ledger store flushes again")
		if f.fault.Load() == nil {
			f.metrics.storeFault.Set(0)
		}
	}
	return nil
}

func (f *fsm) lastFlush() time.Time { return time.Unix(0, f.flushedAt.Load()) }

// withStoreLocked runs fn with the live store under the read lock.
func (f *fsm) withStoreLocked(fn func(s *ledger.Store)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.store)
}

func (f *fsm) loadMarker() error {
	m, err := f.store.Marker()
	if err != nil {
		return err
	}
	switch len(m) {
	case 0:
		f.marker = 0
	case 8:
		f.marker = binary.BigEndian.Uint64(m)
	default:
		return fmt.Errorf("ledger marker is %d bytes, want 8", len(m))
	}
	return nil
}

func (f *fsm) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.store.Close()
}

// withStore runs fn with the live store, which a restore cannot replace
// meanwhile.
func (f *fsm) withStore(fn func(s *ledger.Store) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	// A recovery that reopened the store at its durable state and has not
	// replayed the rest leaves it behind the published checkpoint: answers
	// from it would be below sizes the node already served. Checked
	// whether or not the fault is recorded yet: an idle flush's recovery
	// (recoverFlush) releases the lock before flushDue records its
	// failure.
	if cp := f.checkpoint(); cp != nil && f.store.Size() < cp.Size {
		fault := f.storeFault()
		if fault == nil {
			fault = fmt.Errorf("%w: the ledger store is recovering", ErrStoreFault)
		}
		return fmt.Errorf("%w: the ledger store is back at size %d, behind the served checkpoint of size %d, until it recovers", fault, f.store.Size(), cp.Size)
	}
	err := fn(f.store)
	if err != nil && f.fault.Load() != nil {
		// Recovering, the store may be back at its durable state, behind
		// the checkpoint: the reader should come back or ask another node.
		return fmt.Errorf("%w: %w", f.storeFault(), err)
	}
	return err
}

// checkpoint returns the latest signed checkpoint.
func (f *fsm) checkpoint() *Checkpoint { return f.cp.Load() }

// publish signs the tree state and makes it the latest checkpoint. A log
// is checkpointed only where its last leaf is an index root covering the
// leaves before it (DESIGN.md §3.7), so every checkpoint commits to the chip
// index; an empty log (before its genesis root) has no checkpoint, which
// readers see as size 0 with no signed note.
func (f *fsm) publish(st ledger.TreeState) error {
	var signed []byte
	if st.Size > 0 {
		if _, ok, err := f.store.IndexRootAt(st.Size); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("tree size %d does not end with an index root; refusing to sign it", st.Size)
		}
		var err error
		if signed, err = f.signer.Sign(st.Size, st.Root); err != nil {
			return err
		}
	}
	f.cp.Store(&Checkpoint{Size: st.Size, Root: st.Root, Signed: signed})
	f.notifyChanged()
	f.metrics.treeSize.Set(float64(st.Size))
	return nil
}

// notifyChanged wakes everyone waiting on changed.
func (f *fsm) notifyChanged() {
	f.cpMu.Lock()
	close(f.cpReady)
	f.cpReady = make(chan struct{})
	f.cpMu.Unlock()
}

// changed returns a channel closed when the next checkpoint is published
// (or a witnessed checkpoint is recorded).
func (f *fsm) changed() <-chan struct{} {
	f.cpMu.Lock()
	defer f.cpMu.Unlock()
	return f.cpReady
}

// waitForSize waits until the node has a checkpoint of at least size.
func (f *fsm) waitForSize(ctx context.Context, size uint64) (*Checkpoint, error) {
	for {
		ch := f.changed()
		if cp := f.checkpoint(); cp.Size >= size {
			return cp, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for tree size %d (have %d): %w", size, f.checkpoint().Size, ctx.Err())
		}
	}
}

// applyResult is what Apply returns for a batch.
type applyResult struct {
	results    []leafResult
	checkpoint *Checkpoint
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	if f.halted.Load() {
		// An earlier entry could not be applied before the node stopped:
		// applying this one would skip it. The next start replays both.
		return fmt.Errorf("%w: raft entry %d not applied: the node is stopping with an earlier entry unapplied", ErrStoreFault, l.Index)
	}
	f.mu.RLock()
	var res any
	var err error
	if f.replaying {
		// An idle flush's recovery reopened the store and could not
		// replay all it lacks: recoverStore finishes that replay first.
		err = fmt.Errorf("%w: the ledger store lacks entries before raft entry %d: an earlier recovery did not finish", ErrStoreFault, l.Index)
	} else {
		res, err = f.apply(l)
	}
	if err == nil {
		// Under the lock, so that an idle flush's recovery (recoverFlush),
		// which replays through the applied index, never reopens the store
		// without this entry.
		f.noteApplied(l.Index)
	}
	f.mu.RUnlock()
	if err != nil {
		again := f.recoverStore(l, err)
		if f.halted.Load() {
			return again // not applied: the next start replays it
		}
		if again == nil && res != nil {
			// The entry was applied and only its flush failed, yet reached
			// the disk: the reopened store holds it, and applying the log
			// again would give this same result.
			again = res
		}
		res = again
	}
	return res
}

// noteApplied records that the state machine holds every command entry
// through Raft index i.
func (f *fsm) noteApplied(i uint64) {
	for {
		cur := f.applied.Load()
		if i <= cur || f.applied.CompareAndSwap(cur, i) {
			return
		}
	}
}

// noteStarted is called once Raft has started, with its applied index.
// The state machine's progress is its own: the store's marker, and the
// position of the snapshot Raft restored before it returned. Raft's applied
// index may already count entries a leader sent since and that are only
// queued (and Snapshot records this progress as the snapshot's position),
// so it is used only after a "CLS1" snapshot, which has no position.
func (f *fsm) noteStarted(appliedIndex uint64) {
	if f.restoredV1.Load() {
		f.noteApplied(appliedIndex)
	}
	f.started.Store(true)
}

// apply applies one command to the store. An error means the store could
// not be read or written: the entry is not applied, or (for a batch,
// returned with its result) it was applied and published but the flush
// after it failed, which stops the store until it is reopened. Everything
// else, including the verdict on each leaf, is in the result.
func (f *fsm) apply(l *raft.Log) (any, error) {
	if l.Index <= f.marker {
		return nil, nil // already in the store: replayed after a restart
	}
	cmd, err := decodeCommand(l.Data)
	if err != nil {
		// Only this package writes commands; a bad one is a bug or
		// corruption, and applying nothing is what every replica does.
		f.log.Error("skipping malformed raft entry", "index", l.Index, "err", err)
		return err, nil
	}
	marker := binary.BigEndian.AppendUint64(nil, l.Index)
	switch cmd.typ {
	case commandMember:
		key := memberKey(cmd.nodeID)
		var value []byte
		if cmd.apiAddr != "" {
			value = []byte(cmd.apiAddr)
		}
		if err := f.store.SetMetadata(key, value, marker); err != nil {
			return nil, err
		}
		f.marker = l.Index
		return nil, nil
	case commandBatch:
		return f.applyBatch(l.Index, cmd.leaves, marker, false)
	case commandRevoke:
		return f.applyBatch(l.Index, cmd.leaves, marker, true)
	case commandWitnessed:
		return f.applyWitnessed(l.Index, cmd.signed, marker)
	case commandGenesis:
		if f.store.Size() > 0 {
			return nil, nil
		}
		res, err := f.store.AppendIndexed(nil, marker)
		if err != nil {
			return nil, err
		}
		f.marker = l.Index
		return nil, f.publish(res.State)
	}
	return nil, nil
}

// witnessedKey is the metadata key of the latest witnessed checkpoint.
const witnessedKey = "witnessed-checkpoint"

// applyWitnessed records a checkpoint cosigned by the log's witnesses, as
// the leader collected it. Every replica first checks that it is this log's
// own checkpoint of a tree it holds (the log's signature, and the root at
// that size) and no older than the one recorded: anything else is refused
// the same way on every replica, and the refusal is the entry's result.
// The cosignatures themselves are the witness policy's business, which
// the leader checked and clients check again.
func (f *fsm) applyWitnessed(index uint64, signed, marker []byte) (any, error) {
	c, err := f.verifier.VerifyCheckpoint(signed)
	if err == nil {
		err = f.checkOwnCheckpoint(c)
	}
	if err != nil {
		f.log.Error("refusing a witnessed checkpoint", "raft_index", index, "err", err)
		return err, nil
	}
	if prev, err := f.witnessedLocked(); err != nil {
		return nil, err
	} else if prev != nil && prev.Size > c.Size {
		return fmt.Errorf("witnessed checkpoint of size %d is older than the recorded one of size %d", c.Size, prev.Size), nil
	}
	if err := f.store.SetMetadata(witnessedKey, bytes.Clone(signed), marker); err != nil {
		return nil, err
	}
	f.marker = index
	f.notifyChanged()
	return nil, nil
}

// checkOwnCheckpoint checks that c is a checkpoint of the tree the store
// holds: of a size it has, with the root it has at that size.
func (f *fsm) checkOwnCheckpoint(c proofs.Checkpoint) error {
	if c.Size == 0 || c.Size > f.store.Size() {
		return fmt.Errorf("checkpoint of size %d: the log has %d leaves", c.Size, f.store.Size())
	}
	root, err := f.store.RootAt(c.Size)
	if err != nil {
		return fmt.Errorf("root at size %d: %w", c.Size, err)
	}
	if root != c.Hash {
		return fmt.Errorf("checkpoint of size %d has root %x, the log has %x: not this log's history", c.Size, c.Hash, root)
	}
	return nil
}

// witnessed returns the latest witnessed checkpoint recorded, or nil.
func (f *fsm) witnessed() (*WitnessedCheckpoint, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.witnessedLocked()
}

// witnessedLocked is witnessed with f.mu held.
func (f *fsm) witnessedLocked() (*WitnessedCheckpoint, error) {
	md, err := f.store.Metadata()
	if err != nil {
		return nil, fmt.Errorf("read the witnessed checkpoint: %w", err)
	}
	signed, ok := md[witnessedKey]
	if !ok {
		return nil, nil
	}
	c, err := f.verifier.VerifyCheckpoint(signed)
	if err != nil {
		return nil, fmt.Errorf("recorded witnessed checkpoint: %w", err)
	}
	return &WitnessedCheckpoint{Size: c.Size, Signed: signed}, nil
}

// A WitnessedCheckpoint is a checkpoint of the log with its witnesses'
// cosignatures.
type WitnessedCheckpoint struct {
	Size   uint64
	Signed []byte // the signed note: the log's signature, then the cosignatures
}

// applyBatch admits and appends the leaves of a batch (or, with admin, of
// a revoke command: revocations are appendable only through the admin API).
func (f *fsm) applyBatch(index uint64, leaves [][]byte, marker []byte, admin bool) (any, error) {
	start := time.Now()
	a := newAdmitter(f.store)
	results := make([]leafResult, len(leaves))
	for i, leaf := range leaves {
		var r leafResult
		var err error
		if admin {
			r, err = a.admitRevocation(leaf)
		} else {
			r, err = a.admit(leaf)
		}
		if err != nil {
			return nil, err
		}
		results[i] = r
	}
	cp := f.checkpoint()
	if len(a.accepted) > 0 {
		res, err := f.store.AppendIndexed(a.accepted, marker)
		if err != nil {
			return nil, err
		}
		f.marker = index
		if err := f.publish(res.State); err != nil {
			return nil, err
		}
		cp = f.checkpoint()
		if p := f.store.Pending(); p >= flushLeaves || start.Sub(f.lastFlush()) >= flushInterval {
			if err := f.store.Flush(); err != nil {
				// Applied and published: the result stands (see apply).
				return &applyResult{results: results, checkpoint: cp}, err
			}
			f.flushedAt.Store(start.UnixNano())
		}
	}
	if index > f.counted.Load() {
		// Not an entry applied again (a store recovery's replay, or one
		// in the log a previous run of the node decided).
		f.metrics.observeBatch(results, time.Since(start))
		f.counted.Store(index)
	}
	return &applyResult{results: results, checkpoint: cp}, nil
}

// ErrStoreFault reports that the node's ledger store cannot write (a full
// or failing disk): the node refuses appends until it recovers.
var ErrStoreFault = errors.New("ledger store cannot write")

// recoverStore handles a failure to read or write the store while applying
// Raft entry l. The state machine cannot skip the entry without diverging
// from the other replicas, so it holds it: it refuses appends (fault), and
// retries with a growing pause until the disk works again: it reopens the
// store at its last durable state, which a failed write never damages, and
// applies the Raft log from there through l. Raft meanwhile goes on
// (this node hands leadership away) and queues the entries after l.
func (f *fsm) recoverStore(l *raft.Log, err error) any {
	f.setFault(err)
	f.log.Error("ledger store write failed; refusing appends until it recovers", "index", l.Index, "err", err)
	delay := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		t := time.NewTimer(delay)
		select {
		case <-f.stop:
			t.Stop()
			// The node is stopping: the entry stays in the Raft log, and
			// the next start replays it from the store's durable marker.
			// Nothing after it may be applied meanwhile.
			f.halted.Store(true)
			return fmt.Errorf("%w: raft entry %d not applied: %w", ErrStoreFault, l.Index, err)
		case <-t.C:
		}
		res, rerr := f.reapply(l)
		if rerr == nil {
			f.setFault(nil)
			f.log.Info("ledger store recovered; accepting appends again", "index", l.Index, "attempts", attempt)
			return res
		}
		f.setFault(rerr)
		if attempt%20 == 0 {
			f.log.Warn("ledger store still failing", "index", l.Index, "attempts", attempt, "err", rerr)
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// reapply reopens the store and applies the Raft entries after its durable
// marker, through l.
func (f *fsm) reapply(l *raft.Log) (any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.reopen(l.Index - 1); err != nil {
		return nil, err
	}
	res, err := f.apply(l)
	if err != nil {
		return nil, err
	}
	// What the retries appended is durable before the node says it is well.
	if err := f.store.Flush(); err != nil {
		return nil, err
	}
	f.noteApplied(l.Index)
	return res, nil
}

// reopen reopens the store at its durable state and applies again the Raft
// entries after its marker, through last. The caller holds f.mu.
func (f *fsm) reopen(last uint64) error {
	f.replaying = true
	if !f.storeClosed {
		f.store.Close() // flushes what it can; the error is the one being recovered from
		f.storeClosed = true
	}
	store, err := ledger.Open(f.dir.path(f.gen), f.storeOpts)
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	f.store, f.storeClosed = store, false
	if err := f.loadMarker(); err != nil {
		return err
	}
	if f.logs == nil {
		return errors.New("no raft log to replay from")
	}
	for i := f.marker + 1; i <= last; i++ {
		var e raft.Log
		if err := f.logs.GetLog(i, &e); err != nil {
			return fmt.Errorf("replay raft entry %d: %w (restart the node to restore from a snapshot)", i, err)
		}
		if e.Type != raft.LogCommand {
			continue
		}
		if _, err := f.apply(&e); err != nil {
			return fmt.Errorf("replay raft entry %d: %w", i, err)
		}
	}
	f.replaying = false
	return nil
}

// recoverFlush brings back a store that failed in an idle flush (a failed
// commit stops a store until it is reopened): it reopens it, applies again
// the entries its durable state lacks, and flushes them. Apply recovers a
// store that fails under it (recoverStore); this is for the store that
// fails while the log is idle, which no Apply may come to repair (appends
// are refused meanwhile).
func (f *fsm) recoverFlush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.reopen(f.applied.Load()); err != nil {
		return err
	}
	return f.store.Flush()
}

// setFault records the store's failure (nil: recovered).
func (f *fsm) setFault(err error) {
	f.faultMu.Lock()
	defer f.faultMu.Unlock()
	if err == nil {
		if f.fault.Swap(nil) != nil {
			f.faultCh = make(chan struct{})
		}
		if f.flushFault.Load() == nil {
			f.metrics.storeFault.Set(0)
		}
		return
	}
	if f.fault.Swap(&err) == nil {
		close(f.faultCh)
	}
	f.metrics.storeFault.Set(1)
	select {
	case f.faulted <- struct{}{}:
	default:
	}
}

// faultSignal returns a channel closed while Apply cannot write the store,
// and the fault then.
func (f *fsm) faultSignal() (<-chan struct{}, error) {
	f.faultMu.Lock()
	defer f.faultMu.Unlock()
	return f.faultCh, f.storeFault()
}

// storeFault returns the store's current failure, or nil.
func (f *fsm) storeFault() error {
	p := f.fault.Load()
	if p == nil {
		p = f.flushFault.Load()
	}
	if p != nil {
		return fmt.Errorf("%w: %w; appends resume when the disk recovers", ErrStoreFault, *p)
	}
	return nil
}

func memberKey(nodeID string) string { return "member/" + nodeID }

// members returns the API address of every node recorded by member commands.
func (f *fsm) members() (map[string]string, error) {
	var md map[string][]byte
	err := f.withStore(func(s *ledger.Store) (err error) {
		md, err = s.Metadata()
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string)
	for k, v := range md {
		if id, ok := cutPrefix(k, "member/"); ok {
			out[id] = string(v)
		}
	}
	return out, nil
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return "", false
}

// Snapshot implements raft.FSM. It captures the committed tree size; the
// leaves up to it are immutable, so Persist can stream them while Apply
// goes on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if f.halted.Load() {
		// Raft counts the entry the state machine gave up on as applied;
		// a snapshot now would claim it, and the next start would not
		// replay it.
		return nil, fmt.Errorf("%w: the state machine stopped with an entry unapplied; no snapshot until the node restarts", ErrStoreFault)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	md, err := f.store.Metadata()
	if err != nil {
		return nil, err
	}
	// Raft calls Snapshot between Applies, so the state holds the effect of
	// every command through the last one applied.
	through := max(f.marker, f.applied.Load())
	return &fsmSnapshot{f: f, store: f.store, state: f.store.State(), through: through, metadata: md}, nil
}

// The snapshot stream:
//
//	"CLS2" ‖ u64 size ‖ root[32] ‖ u64 through ‖ u32 n ‖ n × (u16 len ‖ key ‖ u32 len ‖ value)
//	‖ the leaves [0, size) as u16-length-framed records
//
// through is the Raft index through which the snapshot holds the effect of
// every entry: the marker of a store restored from it, from which a replay
// after a store fault starts. Snapshots written before it was added start
// "CLS1" and have no through (read as 0: such a store replays from the
// start of the Raft log, as it always did).
const (
	snapshotMagic   = "CLS2"
	snapshotMagicV1 = "CLS1"
)

type fsmSnapshot struct {
	f        *fsm
	store    *ledger.Store
	state    ledger.TreeState
	through  uint64
	metadata map[string][]byte
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	err := s.persist(sink)
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot at size %d: %w", s.state.Size, err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) persist(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := bw.Write(snapshotHeader(s.state, s.through, s.metadata)); err != nil {
		return err
	}
	// The store may be replaced by a restore while this runs; the old one
	// is then closed and reading from it fails, which cancels the snapshot.
	if err := s.store.WriteLeaves(bw, s.state.Size); err != nil {
		return err
	}
	return bw.Flush()
}

// snapshotHeader encodes the header readSnapshotHeader reads: magic, size,
// root, through and the metadata records in key order.
func snapshotHeader(st ledger.TreeState, through uint64, metadata map[string][]byte) []byte {
	hdr := append([]byte(snapshotMagic), binary.BigEndian.AppendUint64(nil, st.Size)...)
	hdr = append(hdr, st.Root[:]...)
	hdr = binary.BigEndian.AppendUint64(hdr, through)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(metadata)))
	keys := make([]string, 0, len(metadata))
	for k := range metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(k)))
		hdr = append(hdr, k...)
		hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(metadata[k])))
		hdr = append(hdr, metadata[k]...)
	}
	return hdr
}

func (s *fsmSnapshot) Release() {}

// Restore implements raft.FSM. Raft calls it at start-up with the latest
// snapshot and when a leader sends one to a follower that fell behind its
// log.
func (f *fsm) Restore(rc io.ReadCloser) (err error) {
	defer rc.Close()
	if f.started.Load() {
		// A leader sends a snapshot only to a node behind its log, whose
		// entries then are all in the snapshot (see watchCatchUp).
		defer func() {
			if err == nil {
				f.restoredLive.Store(true)
			}
		}()
	}
	br := bufio.NewReaderSize(rc, 1<<20)
	size, root, through, md, err := readSnapshotHeader(br)
	if err != nil {
		return err
	}
	if !f.started.Load() && through == 0 && size > 0 {
		f.restoredV1.Store(true)
	}
	// The store is replaced only at the end: while the snapshot's leaves
	// are read, hashed and written to the next generation (minutes, for a
	// large log), reads go on from the live store under the read lock.
	// Nothing else writes the store meanwhile: Raft applies entries on
	// this goroutine, and an idle flush's recovery waits for the lock.
	f.mu.Lock()
	contained, err := f.restoreContained(size, root, through, md)
	f.mu.Unlock()
	if err != nil || contained {
		return err
	}
	start := time.Now()
	f.mu.RLock()
	gen, err := f.build(br, size, root, through, md)
	f.mu.RUnlock()
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.switchTo(gen, through); err != nil {
		return err
	}
	f.log.Info("restored ledger from snapshot", "size", size, "took", time.Since(start))
	return f.publish(f.store.State())
}

// restoreContained handles a snapshot the store already holds: it takes
// the snapshot's metadata and position if it must, and reports true. A
// snapshot the store does not extend is refused. The caller holds f.mu.
func (f *fsm) restoreContained(size uint64, root ledger.Hash, through uint64, md map[string][]byte) (bool, error) {
	if f.store.Size() >= size {
		have, err := f.store.RootAt(size)
		if err != nil {
			return false, err
		}
		if have == root {
			if f.store.Size() == size && through > f.marker {
				// The store holds the snapshot's leaves but not the
				// entries after its marker that changed only metadata
				// (a member's address, a witnessed checkpoint): Raft will
				// not replay them, so take the snapshot's metadata and
				// position.
				if err := f.store.ReplaceMetadata(md, binary.BigEndian.AppendUint64(nil, through)); err != nil {
					return false, err
				}
				f.marker = through
				f.noteApplied(through)
				f.notifyChanged() // a witnessed checkpoint may be among them
			}
			f.log.Info("snapshot already contained in the ledger", "size", size, "ledger_size", f.store.Size())
			return true, nil
		}
		// Rebuilding would make this node sign a tree that does not extend
		// the one it signed: a fork, or a rollback, under the log key.
		return false, fmt.Errorf("%w: the snapshot's tree of size %d is not a prefix of this node's ledger of size %d", errForeignSnapshot, size, f.store.Size())
	}
	return false, nil
}

// errForeignSnapshot reports a snapshot whose tree does not extend the
// node's ledger: restoring it would have the node sign a fork of what it
// signed before. A node whose ledger is not its cluster's is rebuilt from
// its peers by wiping its data directory (docs/operating.md).
var errForeignSnapshot = errors.New("refusing a snapshot of another history (wipe this node's data directory to rebuild it from its peers)")

// maxSnapshotMetadata bounds the metadata records of a snapshot (member
// addresses: one per node that ever joined).
const maxSnapshotMetadata = 1 << 16

func readSnapshotHeader(r io.Reader) (size uint64, root ledger.Hash, through uint64, md map[string][]byte, err error) {
	var hdr [4 + 8 + 32]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, root, 0, nil, fmt.Errorf("read snapshot header: %w", err)
	}
	var rest []byte
	switch string(hdr[:4]) {
	case snapshotMagic:
		rest = make([]byte, 8+4)
	case snapshotMagicV1:
		rest = make([]byte, 4)
	default:
		return 0, root, 0, nil, fmt.Errorf("not a chipledger snapshot (magic %q)", hdr[:4])
	}
	if _, err := io.ReadFull(r, rest); err != nil {
		return 0, root, 0, nil, fmt.Errorf("read snapshot header: %w", err)
	}
	size = binary.BigEndian.Uint64(hdr[4:])
	copy(root[:], hdr[12:44])
	if len(rest) == 12 {
		through, rest = binary.BigEndian.Uint64(rest), rest[8:]
	}
	n := binary.BigEndian.Uint32(rest)
	if n > maxSnapshotMetadata {
		return 0, root, 0, nil, fmt.Errorf("snapshot holds %d metadata records, at most %d", n, maxSnapshotMetadata)
	}
	md = make(map[string][]byte, n)
	var last string
	for range n {
		var kl [2]byte
		if _, err := io.ReadFull(r, kl[:]); err != nil {
			return 0, root, 0, nil, fmt.Errorf("read snapshot metadata: %w", err)
		}
		k := make([]byte, binary.BigEndian.Uint16(kl[:]))
		var vl [4]byte
		if _, err := io.ReadFull(r, k); err != nil {
			return 0, root, 0, nil, err
		}
		if _, err := io.ReadFull(r, vl[:]); err != nil {
			return 0, root, 0, nil, err
		}
		if binary.BigEndian.Uint32(vl[:]) > 1<<20 {
			return 0, root, 0, nil, errors.New("snapshot metadata value too large")
		}
		v := make([]byte, binary.BigEndian.Uint32(vl[:]))
		if _, err := io.ReadFull(r, v); err != nil {
			return 0, root, 0, nil, err
		}
		if string(k) <= last && len(md) > 0 {
			return 0, root, 0, nil, fmt.Errorf("snapshot metadata key %q out of order or repeated", k)
		}
		last = string(k)
		md[string(k)] = v
	}
	return size, root, through, md, nil
}

// build builds the next ledger generation from the snapshot's leaves and
// checks it: its root, that it extends the live store, and that it ends
// with an index root. It returns the generation, closed and synced. The
// caller holds f.mu for reading.
func (f *fsm) build(r io.Reader, size uint64, root ledger.Hash, through uint64, md map[string][]byte) (int, error) {
	gen := f.gen + 1
	path := f.dir.path(gen)
	if err := f.dir.removeOthers(f.gen); err != nil {
		return 0, err
	}
	ns, err := ledger.Open(path, ledger.Options{Logger: f.log, DeferSync: true})
	if err != nil {
		return 0, err
	}
	fail := func(err error) (int, error) {
		ns.Close()
		f.dir.removeOthers(f.gen)
		return 0, fmt.Errorf("restore snapshot of size %d: %w", size, err)
	}
	const chunk = 4096
	batch := make([][]byte, 0, chunk)
	var hdr [2]byte
	for i := uint64(0); i < size; i++ {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return fail(fmt.Errorf("leaf %d: %w", i, err))
		}
		leaf := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(r, leaf); err != nil {
			return fail(fmt.Errorf("leaf %d: %w", i, err))
		}
		batch = append(batch, leaf)
		if len(batch) == chunk || i == size-1 {
			if _, err := ns.Append(batch, nil); err != nil {
				return fail(err)
			}
			batch = batch[:0]
			if ns.Pending() >= 1<<16 {
				if err := ns.Flush(); err != nil {
					return fail(err)
				}
			}
		}
	}
	// The stream ends with the last leaf: anything after it is a snapshot
	// this node did not write, not leaves to drop without a word.
	if n, err := io.ReadFull(r, hdr[:1]); n != 0 || !errors.Is(err, io.EOF) {
		return fail(fmt.Errorf("bytes after leaf %d, the snapshot's last (%v)", size-1, err))
	}
	if got := ns.State(); got.Size != size || got.Root != root {
		return fail(fmt.Errorf("rebuilt tree has size %d root %x, the snapshot says %d %x", got.Size, got.Root, size, root))
	}
	if cur := f.store.State(); cur.Size > 0 {
		if at, err := ns.RootAt(cur.Size); err != nil || at != cur.Root {
			return fail(fmt.Errorf("%w: its tree of size %d does not extend this node's ledger of size %d (%v)", errForeignSnapshot, size, cur.Size, err))
		}
	}
	// The node signs only a tree that ends with an index root: checked
	// before the switch, or a bad snapshot would leave a ledger the node
	// could not sign, now or at its next start.
	if size > 0 {
		if _, ok, err := ns.IndexRootAt(size); err != nil || !ok {
			return fail(fmt.Errorf("the snapshot's tree of size %d does not end with an index root (%v)", size, err))
		}
	}
	// The snapshot's position becomes the store's marker: a replay after a
	// store fault starts after it, not at the start of the Raft log (whose
	// entries the snapshot holds, and would apply twice).
	var marker []byte
	if through > 0 {
		marker = binary.BigEndian.AppendUint64(nil, through)
	}
	if err := ns.ReplaceMetadata(md, marker); err != nil {
		return fail(err)
	}
	if err := ns.Flush(); err != nil {
		return fail(err)
	}
	if err := ns.Close(); err != nil {
		return fail(err)
	}
	if err := atomicfile.SyncDir(path); err != nil {
		return fail(err)
	}
	return gen, nil
}

// switchTo makes generation gen, built by build, the live store, at Raft
// position through. The caller holds f.mu.
func (f *fsm) switchTo(gen int, through uint64) error {
	// Open the new generation before switching to it: once CURRENT names a
	// generation, it is the one the node serves and writes, and the one
	// every later clean-up keeps.
	ns, err := ledger.Open(f.dir.path(gen), f.storeOpts)
	if err != nil {
		f.dir.removeOthers(f.gen)
		return fmt.Errorf("reopen restored ledger: %w", err)
	}
	if err := f.dir.setCurrent(gen); err != nil {
		// The switch may have happened although it failed (the directory
		// sync after the rename): CURRENT says which generation is live.
		if live, _, cerr := f.dir.current(); cerr != nil || live != gen {
			ns.Close()
			if cerr == nil {
				f.dir.removeOthers(live)
			}
			return err
		}
		f.log.Warn("switching to the restored ledger reported an error, but CURRENT names it: going on with it", "err", err)
	}
	old := f.store
	if !f.storeClosed {
		old.Close()
	}
	f.store, f.gen, f.marker, f.storeClosed = ns, gen, through, false
	f.noteApplied(through)
	if err := f.dir.removeOthers(gen); err != nil {
		f.log.Warn("could not remove the previous ledger generation", "err", err)
	}
	return nil
}
