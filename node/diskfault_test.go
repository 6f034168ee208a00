package node

import (
	"bytes"
	"context"
	"fmt"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/ledger"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// diskFaults makes a node's ledger store writes fail, as a full disk does,
// while broken.
type diskFaults struct {
	mu     sync.Mutex
	broken map[string]bool // by node ID
	hits   atomic.Int64
}

func (d *diskFaults) set(id string, broken bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.broken[id] = broken
}

// configure gives every node a fault hook of its own.
func (d *diskFaults) configure(cfg *Config) {
	id := cfg.ID
	cfg.StoreFaults = func(op string) error {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.broken[id] {
			d.hits.Add(1)
			return fmt.Errorf("%s: %w", op, syscall.ENOSPC)
		}
		return nil
	}
}

// TestDiskFullStopsAppendsAndRecovers fills a single node's disk while an
// append is being applied: the node refuses new appends with a clear
// error and reports not ready, the append in flight waits, and when the
// disk is freed everything resumes with every acknowledged entry in the
// log exactly once, also after a restart.
func TestDiskFullStopsAppendsAndRecovers(t *testing.T) {
	faults := &diskFaults{broken: map[string]bool{}}
	c := newConfiguredCluster(t, 1, nil, faults.configure)
	ctx := context.Background()
	c.registerStation()
	leaves := c.escrowLeaves(0, 6)
	for _, leaf := range leaves[:2] {
		if _, err := c.append(ctx, 0, leaf); err != nil {
			t.Fatal(err)
		}
	}
	n := c.nodes[0]
	faults.set(n.ID(), true)
	inFlight := make(chan error, 1)
	go func() {
		_, err := c.append(ctx, 0, leaves[2])
		inFlight <- err
	}()
	waitFor(t, "the node to notice its disk fault", 10*time.Second, func() bool { return n.fsm.storeFault() != nil })

	_, err := c.append(ctx, 0, leaves[3])
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "ledger store cannot write") ||
		!strings.Contains(err.Error(), "no space left") {
		t.Fatalf("append during the fault: %v, want UNAVAILABLE naming the disk fault", err)
	}
	resp, err := http.Get("http://" + n.APIAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during the fault: %d, want 503", resp.StatusCode)
	}
	// Reads keep working from what the node has.
	if _, err := c.client(0).GetCheckpoint(ctx, connect.NewRequest(&v1.GetCheckpointRequest{})); err != nil {
		t.Fatalf("checkpoint during the fault: %v", err)
	}

	// The append in flight is told to retry: its entry is in the Raft log
	// and will be applied, so the retry finds it.
	if err := <-inFlight; connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("the append in flight when the disk filled: %v, want UNAVAILABLE", err)
	}
	faults.set(n.ID(), false)
	waitFor(t, "the fault to clear", 10*time.Second, func() bool { return n.fsm.storeFault() == nil })
	again, err := c.append(ctx, 0, leaves[2])
	if err != nil || !again.Duplicate {
		t.Fatalf("retry of the append in flight: %v, duplicate %v; want the entry applied once", err, again.GetDuplicate())
	}
	for _, leaf := range leaves[3:] {
		if _, err := c.append(ctx, 0, leaf); err != nil {
			t.Fatalf("append after the disk recovered: %v", err)
		}
	}
	if faults.hits.Load() == 0 {
		t.Fatal("the fault hook never fired")
	}
	// The recovery applied entries again (from the store's durable point):
	// the metrics count each leaf once.
	appends := n.metrics.appends
	if got := [2]float64{testutil.ToFloat64(appends.WithLabelValues("appended")), testutil.ToFloat64(appends.WithLabelValues("duplicate"))}; got != [2]float64{7, 1} {
		t.Errorf("chipledger_appends_total appended/duplicate = %v, want [7 1]: the registration and 6 entries, and one retry", got)
	}
	want := c.nodes[0].Checkpoint()
	c.stop(0)
	c.restart(0)
	if got := c.nodes[0].Checkpoint(); got.Size != want.Size || got.Root != want.Root {
		t.Fatalf("after a restart: size %d, want %d", got.Size, want.Size)
	}
	if got := payload(t, c.nodes[0]); got != 7 {
		t.Fatalf("%d entries, want the registration and 6 escrow entries, each once", got)
	}
	c.stop(0)
	path, err := LedgerPath(c.cfgs[0].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.VerifyStore(path, nil); err != nil {
		t.Fatalf("the store after the fault: %v", err)
	}
}

// TestLeaderWithAFullDiskHandsOver fills the leader's disk in a 3-node
// cluster: the others take over and keep appending, and the node catches
// up once its disk is freed.
func TestLeaderWithAFullDiskHandsOver(t *testing.T) {
	faults := &diskFaults{broken: map[string]bool{}}
	c := newConfiguredCluster(t, 3, nil, faults.configure)
	ctx := context.Background()
	c.registerStation()
	leaves := c.escrowLeaves(0, 20)
	if _, err := c.appendAnywhere(ctx, 0, leaves[0]); err != nil {
		t.Fatal(err)
	}
	leader := c.waitLeader()
	sick := c.nodes[leader]
	faults.set(sick.ID(), true)
	// Appends go on through every node; the sick leader gives way.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i, leaf := range leaves[1:10] {
		if _, err := c.appendAnywhere(ctx, (leader+1+i)%3, leaf); err != nil {
			t.Fatalf("append %d with the leader's disk full: %v", i, err)
		}
	}
	waitFor(t, "another leader", 10*time.Second, func() bool { return !sick.IsLeader() && sick.fsm.storeFault() != nil })
	faults.set(sick.ID(), false)
	for _, leaf := range leaves[10:] {
		if _, err := c.appendAnywhere(ctx, leader, leaf); err != nil {
			t.Fatal(err)
		}
	}
	cp := c.waitSameState(21)
	if sick.Checkpoint().Root != cp.Root || sick.fsm.storeFault() != nil {
		t.Fatal("the recovered node does not match the others")
	}
}

// TestNodeStopsCleanlyDuringADiskFault stops a node whose store cannot
// write while an entry waits to be applied: Close returns, and a restart
// on a healed disk applies the entry once.
func TestNodeStopsCleanlyDuringADiskFault(t *testing.T) {
	faults := &diskFaults{broken: map[string]bool{}}
	c := newConfiguredCluster(t, 1, nil, faults.configure)
	ctx := context.Background()
	c.registerStation()
	leaves := c.escrowLeaves(0, 2)
	n := c.nodes[0]
	faults.set(n.ID(), true)
	inFlight := make(chan error, 1)
	go func() {
		_, err := c.append(ctx, 0, leaves[0])
		inFlight <- err
	}()
	waitFor(t, "the node to notice its disk fault", 10*time.Second, func() bool { return n.fsm.storeFault() != nil })
	<-inFlight
	c.stop(0) // must not wait for the disk
	faults.set(n.ID(), false)
	c.restart(0)
	again, err := c.appendAnywhere(ctx, 0, leaves[0])
	if err != nil || !again.Duplicate {
		t.Fatalf("the entry in flight at the stop: %v, duplicate %v; want it applied once at restart", err, again.GetDuplicate())
	}
	if _, err := c.append(ctx, 0, leaves[1]); err != nil {
		t.Fatal(err)
	}
	if got := payload(t, c.nodes[0]); got != 3 {
		t.Fatalf("%d entries, want 3", got)
	}
}

// TestAnAppendWhoseFaultEndedWhileItWaitedIsRefused: an append waiting for
// its batch sees the store's fault signal, and the store recovers before
// it reads the fault. It must get ErrStoreFault (a retry is answered as a
// duplicate if its batch committed), not an outcome with no checkpoint,
// for which the handler would build a receipt and panic.
func TestAnAppendWhoseFaultEndedWhileItWaitedIsRefused(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	c.registerStation()
	n := c.nodes[0]
	on := make(chan struct{})
	close(on)
	var calls atomic.Int32
	n.batcher.faulted = func() (<-chan struct{}, error) {
		if calls.Add(1) == 1 {
			return on, fmt.Errorf("%w: injected", ErrStoreFault) // the fault is on...
		}
		return make(chan struct{}), nil // ...and over by the time wait reads it
	}
	leaf := c.escrowLeaves(0, 1)[0]
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Append panicked: %v", r)
			}
		}()
		err = n.AppendInProcess(context.Background(), leaf)
	}()
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), ErrStoreFault.Error()) {
		t.Fatalf("append: %v, want UNAVAILABLE for a store fault", err)
	}
}

// TestALaggingLeaderDoesNotRefuseARegisteredStation: the node that leads
// holds a station's registration, committed, in its Raft log, but its
// state machine has not applied it (its disk stalls). An escrow entry of
// that station must not be refused as from an unknown station
// (FAILED_PRECONDITION, which clients do not retry): the node answers
// UNAVAILABLE while it lags, and accepts the entry once it has caught up.
func TestALaggingLeaderDoesNotRefuseARegisteredStation(t *testing.T) {
	var armed atomic.Bool
	gate := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	c := newConfiguredCluster(t, 3, nil, func(cfg *Config) {
		if cfg.ID != "node1" {
			return
		}
		cfg.StoreFaults = func(op string) error {
			if armed.Load() {
				<-gate // node1's disk stalls: its state machine falls behind its log
			}
			return nil
		}
	})
	t.Cleanup(release) // before the cluster stops
	if leader := c.waitLeader(); leader != 0 {
		t.Skipf("node%d leads, want node0", leader)
	}
	waitFor(t, "node1 to apply the genesis root", 10*time.Second, func() bool { return c.nodes[1].Checkpoint().Size > 0 })
	armed.Store(true)
	c.registerStation() // acknowledged by node0, committed with node2
	waitFor(t, "node1's log to hold the registration", 10*time.Second, func() bool {
		return c.nodes[1].raft.LastIndex() >= c.nodes[0].raft.LastIndex()
	})
	if err := c.nodes[0].raft.LeadershipTransferToServer(raft.ServerID("node1"), raft.ServerAddress(c.nodes[1].RaftAddr())).Error(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node1 to lead", 10*time.Second, func() bool { return c.nodes[1].IsLeader() })

	leaf := c.escrowLeaves(7, 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := c.append(ctx, 1, leaf); connect.CodeOf(err) != connect.CodeUnavailable && connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("escrow entry of a registered station through a leader that has not applied its registration: %v, want UNAVAILABLE", err)
	}
	release()
	if _, err := c.append(context.Background(), 1, leaf); err != nil {
		t.Fatalf("the same entry once the leader caught up: %v", err)
	}
}

// opFaults fails the store operations named in broken, as a full disk does:
// writes and syncs fail with ENOSPC, while opening the store (and syncing
// its directory) still works.
type opFaults struct {
	mu     sync.Mutex
	broken map[string]bool
}

func (o *opFaults) set(ops ...string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.broken = map[string]bool{}
	for _, op := range ops {
		o.broken[op] = true
	}
}

func (o *opFaults) hook(op string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.broken[op] {
		return fmt.Errorf("%s: %w", op, syscall.ENOSPC)
	}
	return nil
}

// durableClusterWithFaults is a one-node cluster whose store operations
// faults can fail, with a station and two escrow entries, all durable.
func durableClusterWithFaults(t *testing.T) (*testCluster, *opFaults, *Node) {
	t.Helper()
	faults := &opFaults{}
	c := newConfiguredCluster(t, 1, nil, func(cfg *Config) { cfg.StoreFaults = faults.hook })
	c.registerStation()
	c.appendEscrow(0, 0, 2)
	n := c.nodes[0]
	waitFor(t, "the first appends to be durable", 10*time.Second, func() bool {
		var p uint64
		n.fsm.withStore(func(s *ledger.Store) error { p = s.Pending(); return nil })
		return p == 0
	})
	return c, faults, n
}

// TestTilesOfAStoreBehindItsCheckpointAreUnavailable: while a node
// recovers from a full disk, it reopens its store at its durable state,
// which may be behind the checkpoint it served (syncs are deferred), and
// while replaying the rest fails, that smaller store is all it has. Tiles
// inside the served checkpoint must then be 503 (come back, or ask another
// node), not 404 (they do not exist).
func TestTilesOfAStoreBehindItsCheckpointAreUnavailable(t *testing.T) {
	c, faults, n := durableClusterWithFaults(t)
	ctx := context.Background()

	// Syncs fail: the next append is applied and published but never made
	// durable.
	faults.set("sync")
	before := n.Checkpoint().Size
	leaves := c.escrowLeaves(10, 2)
	go func() {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c.append(actx, 0, leaves[0])
	}()
	waitFor(t, "the append to be published", 10*time.Second, func() bool { return n.Checkpoint().Size > before })
	published := n.Checkpoint()

	// Now writes fail too. The store is reopened at its durable state and
	// replaying the published batch fails.
	faults.set("sync", "write")
	go func() {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c.append(actx, 0, leaves[1])
	}()
	waitFor(t, "the store to be reopened behind the checkpoint", 10*time.Second, func() bool {
		var size uint64
		n.fsm.withStore(func(s *ledger.Store) error { size = s.Size(); return nil })
		return size < published.Size
	})
	if got := n.Checkpoint().Size; got != published.Size {
		t.Fatalf("published checkpoint moved to %d", got)
	}

	var failures []string
	// The tiles API: /checkpoint serves the published size; the entry
	// bundle it implies must not be "not found".
	get := func(path string) (int, []byte) {
		r, err := c.http.Get("http://" + c.cfgs[0].APIAddr + "/" + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, b
	}
	_, raw := get("checkpoint")
	served, err := c.verifier.VerifyCheckpoint(raw)
	if err != nil {
		t.Fatal(err)
	}
	if served.Size >= 256 {
		t.Fatalf("test assumes a tree under 256 leaves, have %d", served.Size)
	}
	path := ledger.TileRef{Entries: true, Width: int(served.Size)}.Path()
	if code, body := get(path); code == http.StatusNotFound {
		failures = append(failures, fmt.Sprintf("GET /%s, implied by the /checkpoint of size %d: 404 %q (want 200, or 503 while recovering)", path, served.Size, body))
	}
	hpath := ledger.TileRef{Width: int(served.Size)}.Path()
	if code, body := get(hpath); code == http.StatusNotFound {
		failures = append(failures, fmt.Sprintf("GET /%s: 404 %q", hpath, body))
	}
	for _, f := range failures {
		t.Error(f)
	}
	if code, _ := get(path); code != http.StatusServiceUnavailable {
		t.Errorf("GET /%s while the store is behind: %d, want 503", path, code)
	}
	faults.set()
	waitFor(t, "the store to recover", 15*time.Second, func() bool { return n.fsm.storeFault() == nil })
}

// TestLookupChipOfAStoreBehindItsCheckpointIsUnavailable: as above, with
// a batch that carries no chip entry (a station revocation) published but
// not durable when the disk fills. The store reopened at its durable state
// has the same chip map as the index root there; LookupChip must not prove
// the chip at that smaller size (below min_size, and below what the node
// served: clients call that a rollback) but answer UNAVAILABLE.
func TestLookupChipOfAStoreBehindItsCheckpointIsUnavailable(t *testing.T) {
	c, faults, n := durableClusterWithFaults(t)
	ctx := context.Background()

	// Commits fail: the revocation is applied and published, never durable.
	faults.set("commit")
	before := n.Checkpoint().Size
	id := c.pki.StationID()
	go func() {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c.admin(0).RevokeStation(actx, connect.NewRequest(&v1.RevokeStationRequest{StationId: id[:], Reason: "test", RevokedAtMs: uint64(time.Now().UnixMilli())}))
	}()
	waitFor(t, "the revocation to be published", 10*time.Second, func() bool { return n.Checkpoint().Size > before })
	published := n.Checkpoint()

	// Writes fail too: the next reopen cannot replay the revocation.
	faults.set("commit", "write")
	waitFor(t, "the store to be reopened behind the checkpoint", 10*time.Second, func() bool {
		var size uint64
		n.fsm.withStore(func(s *ledger.Store) error { size = s.Size(); return nil })
		return size < published.Size
	})

	resp, err := c.client(0).LookupChip(ctx, connect.NewRequest(&v1.LookupChipRequest{ChipId: testpki.ChipID(0), MinSize: published.Size}))
	switch {
	case err != nil && connect.CodeOf(err) == connect.CodeUnavailable:
	case err != nil:
		t.Errorf("LookupChip: %v, want UNAVAILABLE or an answer at size >= %d", err, published.Size)
	default:
		cp, verr := c.verifier.VerifyCheckpoint(resp.Msg.GetCheckpoint())
		if verr != nil {
			t.Fatal(verr)
		}
		if cp.Size < published.Size {
			t.Errorf("LookupChip with min_size %d (the node's published checkpoint) answered at tree size %d", published.Size, cp.Size)
		}
	}
	faults.set()
	waitFor(t, "the store to recover", 15*time.Second, func() bool { return n.fsm.storeFault() == nil })
}

// TestANodeRefusesToServeALeafCorruptedOnDisk flips a byte of a logged
// leaf in a running node's entries file: the API answers DATA_LOSS and the
// tiles API a server error for reads that include it, and the node logs
// the fault, rather than serve bytes the log never held; other leaves
// still read.
func TestANodeRefusesToServeALeafCorruptedOnDisk(t *testing.T) {
	logs := &countingHandler{counts: make(map[string]int)}
	c := newConfiguredCluster(t, 1, nil, func(cfg *Config) { cfg.Logger = slog.New(logs) })
	c.registerStation()
	ctx := context.Background()
	for _, leaf := range c.escrowLeaves(0, 3) {
		if _, err := c.append(ctx, 0, leaf); err != nil {
			t.Fatal(err)
		}
	}
	size := c.nodes[0].Checkpoint().Size
	all, err := c.client(0).GetEntries(ctx, connect.NewRequest(&v1.GetEntriesRequest{Start: 0, End: size}))
	if err != nil {
		t.Fatal(err)
	}
	// Corrupt the last escrow entry (the log also holds the station's
	// registration and each batch's index-root leaf).
	bad, off := -1, int64(0)
	var at int64
	for i, l := range all.Msg.Leaves {
		if _, err := ledger.ParseEscrowEntry(l); err == nil {
			bad, off = i, at+2+int64(len(l))/2
		}
		at += 2 + int64(len(l))
	}
	if bad < 1 || bad == int(size)-1 {
		t.Fatalf("escrow entry at %d of %d leaves: want one with leaves on both sides", bad, size)
	}
	path, err := LedgerPath(c.cfgs[0].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(path, "entries.dat"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	f.Close()

	_, err = c.client(0).GetEntries(ctx, connect.NewRequest(&v1.GetEntriesRequest{Start: 0, End: size}))
	if connect.CodeOf(err) != connect.CodeDataLoss || !strings.Contains(err.Error(), fmt.Sprintf("leaf %d ", bad)) {
		t.Fatalf("GetEntries over corrupted leaf %d: %v, want DATA_LOSS naming it", bad, err)
	}
	if logs.count("request answered with a server fault") == 0 {
		t.Error("the node did not log the fault")
	}
	resp, err := c.http.Get(fmt.Sprintf("http://%s/tile/entries/000.p/%d", c.cfgs[0].APIAddr, size))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("entry bundle over a corrupted leaf: HTTP %d, want 500", resp.StatusCode)
	}
	for _, i := range []uint64{uint64(bad) - 1, uint64(bad) + 1} {
		got, err := c.client(0).GetEntries(ctx, connect.NewRequest(&v1.GetEntriesRequest{Start: i, End: i + 1}))
		if err != nil || !bytes.Equal(got.Msg.Leaves[0], all.Msg.Leaves[i]) {
			t.Fatalf("GetEntries [%d, %d) beside the corrupted leaf: %v", i, i+1, err)
		}
	}
}
