package node

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// stallHook makes a node's ledger store writes block (a stalled disk)
// while armed for that node. Nothing fails: the writes just wait.
type stallHook struct {
	mu      sync.Mutex
	stalled map[string]chan struct{}
}

func newStallHook() *stallHook { return &stallHook{stalled: map[string]chan struct{}{}} }

func (h *stallHook) configure(cfg *Config) {
	id := cfg.ID
	cfg.StoreFaults = func(string) error {
		h.mu.Lock()
		ch := h.stalled[id]
		h.mu.Unlock()
		if ch != nil {
			<-ch
		}
		return nil
	}
}

func (h *stallHook) stall(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stalled[id] == nil {
		h.stalled[id] = make(chan struct{})
	}
}

func (h *stallHook) releaseAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, ch := range h.stalled {
		close(ch)
		delete(h.stalled, id)
	}
}

// readyz returns the status code and body of node i's /readyz (0 if it
// does not answer).
func (c *testCluster) readyz(i int) (int, string) {
	resp, err := c.http.Get("http://" + c.cfgs[i].APIAddr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestAFollowerWhoseStateMachineStallsIsNotReady: a follower whose state
// machine is stalled (a slow disk) while its Raft log takes the leader's
// entries serves an old tree: /readyz answers 503 saying so, and 200 again
// once it has applied them. (Raft's own AppliedIndex counts entries merely
// queued for the state machine.)
func TestAFollowerWhoseStateMachineStallsIsNotReady(t *testing.T) {
	hook := newStallHook()
	c := newConfiguredCluster(t, 3, nil, hook.configure)
	t.Cleanup(hook.releaseAll)
	c.registerStation()
	leader := c.waitLeader()
	f := (leader + 1) % 3
	c.waitSameState(1)
	waitFor(t, "the follower to be ready", 10*time.Second, func() bool { code, _ := c.readyz(f); return code == http.StatusOK })

	hook.stall(c.cfgs[f].ID)
	c.appendEscrow(leader, 0, 10)
	fn := c.nodes[f]
	waitFor(t, "the follower's Raft to hold the entries", 10*time.Second, func() bool {
		return fn.raft.LastIndex() >= c.nodes[leader].raft.CommitIndex()
	})
	waitFor(t, "/readyz to say the follower is behind", 10*time.Second, func() bool {
		code, body := c.readyz(f)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "state machine")
	})
	if code, body := c.readyz(f); code == http.StatusOK {
		t.Fatalf("/readyz %d %q while the state machine is stalled at raft index %d", code, body, fn.fsm.applied.Load())
	}
	hook.releaseAll()
	waitFor(t, "the follower to be ready again", 10*time.Second, func() bool { code, _ := c.readyz(f); return code == http.StatusOK })
}

// TestARestartedFollowerIsNotReadyUntilItHasTheLeadersLog: a follower
// that was down while the leader compacted its log restarts, and the
// leader must send it a snapshot; until it has installed it, it serves a
// tree far behind the cluster's, so /readyz answers 503 (its own commit
// index never passes its own log: the leader's heartbeats say where the
// cluster is).
func TestARestartedFollowerIsNotReadyUntilItHasTheLeadersLog(t *testing.T) {
	c := newTestCluster(t, 3, compactEarly)
	c.registerStation()
	leader := c.waitLeader()
	f := (leader + 1) % 3
	c.waitSameState(1)

	c.stop(f)
	c.appendEscrow(leader, 100, 200)
	waitFor(t, "the leader to snapshot and compact", 20*time.Second, func() bool {
		first, err := c.nodes[leader].raftStore.FirstIndex()
		return err == nil && first > 40
	})
	want := c.nodes[leader].Checkpoint().Size
	c.restart(f)
	fn := c.nodes[f]
	deadline := time.Now().Add(20 * time.Second)
	for {
		size := fn.Checkpoint().Size
		code, body := c.readyz(f)
		if code == http.StatusOK {
			if size < want {
				t.Fatalf("/readyz is 200 on the restarted follower at tree size %d, the leader's %d (%q)", size, want, body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted follower is not ready after 20 s: %d %q at size %d", code, body, size)
		}
	}
}

// TestStatusMeasuresLagFromTheLeader: asked at a follower whose state
// machine is stalled, Status shows that follower behind (lags are measured
// from the leader, not from the node asked), and its applied index is its
// state machine's, not Raft's count of entries queued for it.
func TestStatusMeasuresLagFromTheLeader(t *testing.T) {
	hook := newStallHook()
	c := newConfiguredCluster(t, 3, nil, hook.configure)
	t.Cleanup(hook.releaseAll)
	c.registerStation()
	leader := c.waitLeader()
	f := (leader + 1) % 3
	c.waitSameState(1)
	hook.stall(c.cfgs[f].ID)
	c.appendEscrow(leader, 0, 10)
	fn := c.nodes[f]
	waitFor(t, "the follower's Raft to hold the entries", 10*time.Second, func() bool {
		return fn.raft.LastIndex() >= c.nodes[leader].raft.CommitIndex()
	})
	for _, asked := range []int{f, leader} {
		st, err := c.admin(asked).Status(context.Background(), connect.NewRequest(&v1.StatusRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Msg.Peers {
			switch p.NodeId {
			case c.cfgs[f].ID:
				if p.Lag == 0 || p.AppliedIndex != fn.fsm.applied.Load() {
					t.Errorf("asked at %s: the stalled follower shows lag %d, applied %d (its state machine's: %d)", c.cfgs[asked].ID, p.Lag, p.AppliedIndex, fn.fsm.applied.Load())
				}
			case c.cfgs[leader].ID:
				if p.Lag != 0 {
					t.Errorf("asked at %s: the leader shows lag %d", c.cfgs[asked].ID, p.Lag)
				}
			}
		}
	}
}
