package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	dto "github.com/prometheus/client_model/go"
)

// TestIdleBatcherWaitsForAppendsBeingChecked shows the batcher's one
// exception to "propose as soon as nothing is in flight": it waits for the
// appends whose checks are under way (they will be queued within a check's
// time), so that they share a batch: one Raft round and one fsync per node
// instead of several.
func TestIdleBatcherWaitsForAppendsBeingChecked(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	n := c.nodes[c.waitLeader()]
	c.registerStation()
	leaves := c.escrowLeaves(0, 2)

	queued := func() float64 {
		var m dto.Metric
		if err := n.metrics.inFlight.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetGauge().GetValue()
	}
	type result struct {
		resp *v1.AppendResponse
		err  error
	}
	results := make(chan result, len(leaves))
	send := func(leaf []byte) {
		go func() {
			resp, err := c.append(context.Background(), 0, leaf)
			results <- result{resp, err}
		}()
	}
	// A check under way, as if a third client's certificate chain were
	// still being verified when the first append is queued.
	n.batcher.checks.start()
	held := true
	defer func() {
		if held {
			n.batcher.checks.end()
		}
	}()
	for i, leaf := range leaves {
		send(leaf)
		// Without the wait, the first append would be proposed alone now
		// (and be answered before the second is sent).
		waitFor(t, "the append to be queued", 10*time.Second, func() bool { return queued() == float64(i+1) || len(results) > 0 })
	}
	n.batcher.checks.end() // the held check ends: the batch goes
	held = false

	var checkpoints []string
	for range leaves {
		r := <-results
		if r.err != nil {
			t.Fatalf("append: %v", r.err)
		}
		checkpoints = append(checkpoints, string(r.resp.GetReceipt().GetCheckpoint()))
	}
	if checkpoints[0] != checkpoints[1] {
		t.Errorf("the two appends went into different batches:\n%s\n%s", checkpoints[0], checkpoints[1])
	}
}

// TestChecksThatKeepBeginningDoNotHoldABatchBack: the batcher waits until
// no check is under way or a batch's worth of checks have ended, so a
// stream of checks that keep beginning (bad appends, say) cannot hold a
// batch back for longer than that.
func TestChecksThatKeepBeginningDoNotHoldABatchBack(t *testing.T) {
	c := checks{nudge: make(chan struct{}, 1)}
	c.start()
	mark := c.mark(3)
	if c.reached(mark) {
		t.Fatal("reached with a check under way and none ended")
	}
	for i := range 3 {
		c.start() // the next check begins before the last one ends
		c.end()
		if i < 2 && c.reached(mark) {
			t.Fatalf("reached after %d of 3 checks ended", i+1)
		}
	}
	if !c.reached(mark) {
		t.Fatalf("not reached after 3 checks ended (%d still under way)", c.running.Load())
	}
	c.end()
	if !c.reached(c.mark(100)) {
		t.Fatal("not reached with no check under way")
	}
}

// errorFSM is a state machine whose every entry fails with err.
type errorFSM struct{ err error }

func (f errorFSM) Apply(*raft.Log) any               { return f.err }
func (errorFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("no snapshots") }
func (errorFSM) Restore(io.ReadCloser) error         { return errors.New("no snapshots") }

// TestAnEntryTheStateMachineRefusesAnswersItsAppendsWithThatError: when
// Apply returns an error (a store fault on a stopping node, say), each
// append of the batch gets that error, with its Connect code
// (UNAVAILABLE for a store fault, which a retry at another node can
// overcome), not an INTERNAL error about the result's type.
func TestAnEntryTheStateMachineRefusesAnswersItsAppendsWithThatError(t *testing.T) {
	conf := raft.DefaultConfig()
	conf.LocalID = "a"
	conf.LogOutput = io.Discard
	conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	store := raft.NewInmemStore()
	_, trans := raft.NewInmemTransport("a")
	fault := fmt.Errorf("%w: raft entry 7 not applied: the node is stopping", ErrStoreFault)
	r, err := raft.NewRaft(conf, errorFSM{fault}, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown().Error() })
	if err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: "a", Address: trans.LocalAddr()}}}).Error(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a leader", 10*time.Second, func() bool { return r.State() == raft.Leader })

	ctx, cancel := context.WithCancel(context.Background())
	b := newBatcher(r, newMetrics(), ctx.Done())
	done := make(chan struct{})
	go func() { defer close(done); b.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	p, err := b.enqueue([]byte("leaf"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := b.wait(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(o.err, ErrStoreFault) {
		t.Fatalf("outcome error %v, want the state machine's %v", o.err, fault)
	}
	if code := connect.CodeOf(toConnectError(o.err)); code != connect.CodeUnavailable {
		t.Errorf("code %v, want %v", code, connect.CodeUnavailable)
	}
}

// TestAnAppendQueuedAfterTheBatchersLastDrainIsAnswered: enqueue checks
// that the node is not stopping, then queues; the batcher may make its
// last drain of the queue and return in between. Such an append must be
// answered ErrShuttingDown (UNAVAILABLE: retry elsewhere) at once, not
// wait out its deadline.
func TestAnAppendQueuedAfterTheBatchersLastDrainIsAnswered(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	b := newBatcher(nil, newMetrics(), ctx.Done())
	done := make(chan struct{})
	go func() { b.run(ctx); close(done) }()
	cancel()
	<-done
	// As enqueue does when its check of stopped came just before the stop.
	p := &pending{leaf: []byte("leaf"), done: make(chan batchOutcome, 1)}
	b.queue <- p
	wctx, wcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer wcancel()
	if _, err := b.wait(wctx, p); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("wait = %v, want ErrShuttingDown", err)
	}
}
