package node

import (
	"bufio"
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

	"github.com/chipledger/chipledger/ledger"
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
	log     *slog.Logger
	dir     *ledgerDir
	signer  *ledger.LogSigner
	noSync  bool
	metrics *metrics

	// mu guards the store pointer, which only Restore replaces. Apply,
	// Snapshot and Restore all run on Raft's FSM goroutine, so Apply needs
	// only a read lock and never blocks readers.
	mu     sync.RWMutex
	store  *ledger.Store
	gen    int
	marker uint64 // Raft index of the last entry that changed the store

	flushedAt atomic.Int64 // unix nanoseconds of the last store flush

	cp      atomic.Pointer[Checkpoint]
	cpMu    sync.Mutex
	cpReady chan struct{} // closed and replaced on every new checkpoint
}

func newFSM(dataDir string, signer *ledger.LogSigner, noSync bool, logger *slog.Logger, m *metrics) (*fsm, error) {
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
	store, err := ledger.Open(path, storeOptions(logger, noSync))
	if errors.Is(err, ledger.ErrCorrupt) {
		return nil, fmt.Errorf("%w; the node refuses to serve it. Run \"chipledger node verify --data-dir %s\" for the first bad leaf or node, then move %s away and restart: the node rebuilds the ledger from its Raft snapshot and log (or remove the data directory and join the cluster again)", err, dataDir, path)
	}
	if err != nil {
		return nil, err
	}
	f := &fsm{log: logger, dir: dir, signer: signer, noSync: noSync, metrics: m, store: store, gen: gen, cpReady: make(chan struct{})}
	if err := f.loadMarker(); err != nil {
		store.Close()
		return nil, err
	}
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
	f.withStoreLocked(func(s *ledger.Store) {
		p := s.Pending()
		if p == 0 || (p < flushLeaves && now.Sub(f.lastFlush()) < flushInterval) {
			return
		}
		if err = s.Flush(); err == nil {
			f.flushedAt.Store(now.UnixNano())
		}
	})
	return err
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
	return fn(f.store)
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
	f.cpMu.Lock()
	close(f.cpReady)
	f.cpReady = make(chan struct{})
	f.cpMu.Unlock()
	f.metrics.treeSize.Set(float64(st.Size))
	return nil
}

// changed returns a channel closed when the next checkpoint is published.
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
	f.mu.RLock()
	defer f.mu.RUnlock()
	if l.Index <= f.marker {
		return nil // already in the store: replayed after a restart
	}
	cmd, err := decodeCommand(l.Data)
	if err != nil {
		// Only this package writes commands; a bad one is a bug or
		// corruption, and applying nothing is what every replica does.
		f.log.Error("skipping malformed raft entry", "index", l.Index, "err", err)
		return err
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
			return f.fatal(l.Index, err)
		}
		f.marker = l.Index
		return nil
	case commandBatch:
		return f.applyBatch(l.Index, cmd.leaves, marker, false)
	case commandRevoke:
		return f.applyBatch(l.Index, cmd.leaves, marker, true)
	case commandGenesis:
		if f.store.Size() > 0 {
			return nil
		}
		res, err := f.store.AppendIndexed(nil, marker)
		if err != nil {
			return f.fatal(l.Index, err)
		}
		f.marker = l.Index
		if err := f.publish(res.State); err != nil {
			return f.fatal(l.Index, err)
		}
	}
	return nil
}

// applyBatch admits and appends the leaves of a batch (or, with admin, of
// a revoke command: revocations are appendable only through the admin API).
func (f *fsm) applyBatch(index uint64, leaves [][]byte, marker []byte, admin bool) any {
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
			return f.fatal(index, err)
		}
		results[i] = r
	}
	cp := f.checkpoint()
	if len(a.accepted) > 0 {
		res, err := f.store.AppendIndexed(a.accepted, marker)
		if err != nil {
			return f.fatal(index, err)
		}
		f.marker = index
		if err := f.publish(res.State); err != nil {
			return f.fatal(index, err)
		}
		cp = f.checkpoint()
		if p := f.store.Pending(); p >= flushLeaves || start.Sub(f.lastFlush()) >= flushInterval {
			if err := f.store.Flush(); err != nil {
				return f.fatal(index, err)
			}
			f.flushedAt.Store(start.UnixNano())
		}
	}
	f.metrics.observeBatch(len(leaves), len(a.accepted), time.Since(start))
	return &applyResult{results: results, checkpoint: cp}
}

// fatal handles a failure to read or write the store inside Apply. The
// state machine cannot skip an entry it failed to apply without diverging
// from the other replicas, so it stops: Apply panics, the node process dies,
// and a restart replays the entry from the Raft log.
func (f *fsm) fatal(index uint64, err error) any {
	f.log.Error("cannot apply raft entry; stopping", "index", index, "err", err)
	panic(fmt.Sprintf("chipledger: apply raft entry %d: %v", index, err))
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
	f.mu.RLock()
	defer f.mu.RUnlock()
	md, err := f.store.Metadata()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{f: f, store: f.store, state: f.store.State(), metadata: md}, nil
}

// The snapshot stream:
//
//	"CLS1" ‖ u64 size ‖ root[32] ‖ u32 n ‖ n × (u16 len ‖ key ‖ u32 len ‖ value)
//	‖ the leaves [0, size) as u16-length-framed records
const snapshotMagic = "CLS1"

type fsmSnapshot struct {
	f        *fsm
	store    *ledger.Store
	state    ledger.TreeState
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
	hdr := append([]byte(snapshotMagic), binary.BigEndian.AppendUint64(nil, s.state.Size)...)
	hdr = append(hdr, s.state.Root[:]...)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(s.metadata)))
	keys := make([]string, 0, len(s.metadata))
	for k := range s.metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(k)))
		hdr = append(hdr, k...)
		hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(s.metadata[k])))
		hdr = append(hdr, s.metadata[k]...)
	}
	if _, err := bw.Write(hdr); err != nil {
		return err
	}
	// The store may be replaced by a restore while this runs; the old one
	// is then closed and reading from it fails, which cancels the snapshot.
	if err := s.store.WriteLeaves(bw, s.state.Size); err != nil {
		return err
	}
	return bw.Flush()
}

func (s *fsmSnapshot) Release() {}

// Restore implements raft.FSM. Raft calls it at start-up with the latest
// snapshot and when a leader sends one to a follower that fell behind its
// log.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 1<<20)
	size, root, md, err := readSnapshotHeader(br)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.store.Size() >= size {
		have, err := f.store.RootAt(size)
		if err != nil {
			return err
		}
		if have == root {
			f.log.Info("snapshot already contained in the ledger", "size", size, "ledger_size", f.store.Size())
			return nil
		}
		f.log.Warn("ledger differs from the snapshot; rebuilding it", "size", size)
	}
	return f.rebuild(br, size, root, md)
}

func readSnapshotHeader(r io.Reader) (size uint64, root ledger.Hash, md map[string][]byte, err error) {
	var hdr [4 + 8 + 32 + 4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, root, nil, fmt.Errorf("read snapshot header: %w", err)
	}
	if string(hdr[:4]) != snapshotMagic {
		return 0, root, nil, fmt.Errorf("not a chipledger snapshot (magic %q)", hdr[:4])
	}
	size = binary.BigEndian.Uint64(hdr[4:])
	copy(root[:], hdr[12:44])
	n := binary.BigEndian.Uint32(hdr[44:])
	md = make(map[string][]byte, n)
	for range n {
		var kl [2]byte
		if _, err := io.ReadFull(r, kl[:]); err != nil {
			return 0, root, nil, fmt.Errorf("read snapshot metadata: %w", err)
		}
		k := make([]byte, binary.BigEndian.Uint16(kl[:]))
		var vl [4]byte
		if _, err := io.ReadFull(r, k); err != nil {
			return 0, root, nil, err
		}
		if _, err := io.ReadFull(r, vl[:]); err != nil {
			return 0, root, nil, err
		}
		if binary.BigEndian.Uint32(vl[:]) > 1<<20 {
			return 0, root, nil, errors.New("snapshot metadata value too large")
		}
		v := make([]byte, binary.BigEndian.Uint32(vl[:]))
		if _, err := io.ReadFull(r, v); err != nil {
			return 0, root, nil, err
		}
		md[string(k)] = v
	}
	return size, root, md, nil
}

// rebuild builds the next ledger generation from the snapshot's leaves,
// checks its root, and switches to it. The caller holds f.mu.
func (f *fsm) rebuild(r io.Reader, size uint64, root ledger.Hash, md map[string][]byte) error {
	start := time.Now()
	gen := f.gen + 1
	path := f.dir.path(gen)
	if err := f.dir.removeOthers(f.gen); err != nil {
		return err
	}
	ns, err := ledger.Open(path, ledger.Options{Logger: f.log, DeferSync: true})
	if err != nil {
		return err
	}
	fail := func(err error) error {
		ns.Close()
		f.dir.removeOthers(f.gen)
		return fmt.Errorf("restore snapshot of size %d: %w", size, err)
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
	if got := ns.State(); got.Size != size || got.Root != root {
		return fail(fmt.Errorf("rebuilt tree has size %d root %x, the snapshot says %d %x", got.Size, got.Root, size, root))
	}
	for k, v := range md {
		if err := ns.SetMetadata(k, v, nil); err != nil {
			return fail(err)
		}
	}
	if err := ns.Flush(); err != nil {
		return fail(err)
	}
	if err := ns.Close(); err != nil {
		return fail(err)
	}
	if err := syncDir(path); err != nil {
		return fail(err)
	}
	if err := f.dir.setCurrent(gen); err != nil {
		f.dir.removeOthers(f.gen)
		return err
	}
	old := f.store
	ns, err = ledger.Open(path, storeOptions(f.log, f.noSync))
	if err != nil {
		return fmt.Errorf("reopen restored ledger: %w", err)
	}
	f.store, f.gen, f.marker = ns, gen, 0
	old.Close()
	if err := f.dir.removeOthers(gen); err != nil {
		f.log.Warn("could not remove the previous ledger generation", "err", err)
	}
	f.log.Info("restored ledger from snapshot", "size", size, "took", time.Since(start))
	return f.publish(ns.State())
}
