package node

import (
	"context"
	"testing"
	"time"

	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	dto "github.com/prometheus/client_model/go"
)

// TestIdleBatcherWaitsForAppendsBeingChecked shows the batcher's one
// exception to "propose as soon as nothing is in flight": appends whose
// signatures are still being checked will reach it within a check's time,
// so it waits for them and they share a batch (one Raft round and one
// fsync per node instead of several).
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
	// An append whose checks are under way, as if a third client's
	// certificate chain were still being verified.
	n.batcher.startCheck()
	for i, leaf := range leaves {
		go func() {
			resp, err := c.append(context.Background(), 0, leaf)
			results <- result{resp, err}
		}()
		// Without the wait, the first append would be proposed alone now.
		waitFor(t, "the append to be queued", 10*time.Second, func() bool { return queued() == float64(i+1) })
	}
	n.batcher.endCheck()

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
