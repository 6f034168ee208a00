package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// testCluster runs nodes in this process with real TCP transports on
// 127.0.0.1.
type testCluster struct {
	t        testing.TB
	pki      *testpki.PKI
	signer   *ledger.LogSigner
	verifier *proofs.LogVerifier
	cfgs     []Config
	nodes    []*Node // nil while stopped
	http     *http.Client
	raftConf func(*raft.Config)
	config   func(*Config) // adjusts every node's configuration, if set
	// dir holds the nodes' data directories. It is made before the
	// cluster's cleanup is registered, so that it is removed after the
	// nodes stop (cleanups run last first), not while they still write.
	dir string
}

const testOrigin = "test.chipledger.example/log"

var sharedPKI = sync.OnceValues(testpki.New)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("CHIPLEDGER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newTestCluster starts n nodes: the first bootstraps alone, the others
// join through it.
func newTestCluster(t testing.TB, n int, raftConf func(*raft.Config)) *testCluster {
	t.Helper()
	return newConfiguredCluster(t, n, raftConf, nil)
}

// testLogKey makes a log key for testOrigin: its signer and verifier key.
func testLogKey(t testing.TB) (*ledger.LogSigner, string) {
	t.Helper()
	skey, vkey, err := ledger.GenerateLogKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ledger.NewLogSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return signer, vkey
}

// newConfiguredCluster is newTestCluster with config applied to every
// node's configuration.
func newConfiguredCluster(t testing.TB, n int, raftConf func(*raft.Config), config func(*Config)) *testCluster {
	t.Helper()
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	signer, vkey := testLogKey(t)
	verifier, err := proofs.NewLogVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	c := &testCluster{
		t: t, pki: pki, signer: signer, verifier: verifier, raftConf: raftConf, config: config, dir: t.TempDir(),
		http: &http.Client{Transport: &http.Transport{Protocols: &p}},
	}
	t.Cleanup(c.stopAll)
	for i := range n {
		c.addNode(i == 0)
	}
	if n > 0 {
		c.waitLeader()
	}
	return c
}

// addNode starts a new node; it bootstraps or joins the first node.
func (c *testCluster) addNode(bootstrap bool) *Node {
	c.t.Helper()
	cfg := Config{
		ID:       fmt.Sprintf("node%d", len(c.cfgs)),
		DataDir:  c.nodeDir(),
		RaftAddr: "127.0.0.1:0",
		APIAddr:  "127.0.0.1:0",
		Signer:   c.signer,
		Trust:    c.pki.Trust,
		Logger:   testLogger(c.t),
		Raft:     c.raftConf,
	}
	if c.config != nil {
		c.config(&cfg)
	}
	if bootstrap {
		cfg.Bootstrap = true
	} else {
		cfg.Join = []string{c.nodes[0].APIAddr()}
	}
	n, err := New(cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", cfg.ID, err)
	}
	// Restarts reuse the addresses the node got.
	cfg.RaftAddr, cfg.APIAddr, cfg.Join, cfg.Bootstrap = n.RaftAddr(), n.APIAddr(), nil, false
	c.cfgs = append(c.cfgs, cfg)
	c.nodes = append(c.nodes, n)
	return n
}

// nodeDir makes a data directory for a new node in the cluster's
// directory.
func (c *testCluster) nodeDir() string {
	c.t.Helper()
	dir, err := os.MkdirTemp(c.dir, "node")
	if err != nil {
		c.t.Fatal(err)
	}
	return dir
}

func (c *testCluster) stop(i int) {
	c.t.Helper()
	if c.nodes[i] == nil {
		return
	}
	if err := c.nodes[i].Close(); err != nil {
		c.t.Logf("stop %s: %v", c.cfgs[i].ID, err)
	}
	c.nodes[i] = nil
}

func (c *testCluster) restart(i int) {
	c.t.Helper()
	n, err := New(c.cfgs[i])
	if err != nil {
		c.t.Fatalf("restart %s: %v", c.cfgs[i].ID, err)
	}
	c.nodes[i] = n
}

func (c *testCluster) stopAll() {
	for i := range c.nodes {
		c.stop(i)
	}
	c.http.CloseIdleConnections()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitLeader waits until one running node is leader and returns its index.
func (c *testCluster) waitLeader() int {
	c.t.Helper()
	leader := -1
	waitFor(c.t, "a leader", 10*time.Second, func() bool {
		for i, n := range c.nodes {
			if n != nil && n.IsLeader() {
				leader = i
				return true
			}
		}
		return false
	})
	return leader
}

// payload counts the leaves of a node's log that are not index roots (the
// log appends one after every batch): the entries clients appended.
func payload(t testing.TB, n *Node) uint64 {
	t.Helper()
	size := n.Checkpoint().Size
	if size == 0 {
		return 0
	}
	var count uint64
	err := n.fsm.withStore(func(s *ledger.Store) error {
		leaves, err := s.Leaves(0, size)
		if err != nil {
			return err
		}
		for _, l := range leaves {
			if k, err := ledger.PeekKind(l); err == nil && k != ledger.KindIndexRoot {
				count++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return count
}

// waitSameState waits until every running node has the same checkpoint,
// holding at least entries appended entries, and returns it.
func (c *testCluster) waitSameState(entries uint64) Checkpoint {
	c.t.Helper()
	var cp Checkpoint
	waitFor(c.t, fmt.Sprintf("every node at the same checkpoint with >= %d entries", entries), 30*time.Second, func() bool {
		first := true
		for _, n := range c.nodes {
			if n == nil {
				continue
			}
			if n.fsm.storeFault() != nil {
				return false // recovering from a disk fault
			}
			got := n.Checkpoint()
			if got.Size == 0 || (!first && string(got.Signed) != string(cp.Signed)) || payload(c.t, n) < entries {
				return false
			}
			cp, first = got, false
		}
		return true
	})
	return cp
}

func (c *testCluster) client(i int) chipledgerv1connect.LedgerServiceClient {
	return chipledgerv1connect.NewLedgerServiceClient(c.http, "http://"+c.cfgs[i].APIAddr, connect.WithGRPC())
}

func (c *testCluster) admin(i int) chipledgerv1connect.AdminServiceClient {
	return chipledgerv1connect.NewAdminServiceClient(c.http, "http://"+c.cfgs[i].APIAddr)
}

// append sends a leaf to node i.
func (c *testCluster) append(ctx context.Context, i int, leaf []byte) (*v1.AppendResponse, error) {
	resp, err := c.client(i).Append(ctx, connect.NewRequest(&v1.AppendRequest{Leaf: leaf}))
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// appendAnywhere sends a leaf to running nodes, starting at node start,
// until one acknowledges it, as a client with several addresses does; it
// gives up after 30 s, or when ctx ends.
func (c *testCluster) appendAnywhere(ctx context.Context, start int, leaf []byte) (*v1.AppendResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		i := (start + attempt) % len(c.cfgs)
		resp, err := c.append(ctx, i, leaf)
		if err == nil {
			return resp, nil
		}
		if code := connect.CodeOf(err); code != connect.CodeUnavailable && code != connect.CodeDeadlineExceeded && code != connect.CodeUnknown && code != connect.CodeInternal {
			return nil, err
		}
		if pause(ctx, 20*time.Millisecond) != nil {
			return nil, fmt.Errorf("no node acknowledged the append: %w", err)
		}
	}
}

// registerStation appends the test station's registration.
func (c *testCluster) registerStation() {
	c.t.Helper()
	if _, err := c.appendAnywhere(context.Background(), 0, c.pki.StationLeaf()); err != nil {
		c.t.Fatalf("register station: %v", err)
	}
}

// escrowLeaves makes n valid escrow leaves for fresh chips starting at
// chip number first.
func (c *testCluster) escrowLeaves(first, n int) [][]byte {
	c.t.Helper()
	leaves := make([][]byte, n)
	for i := range leaves {
		leaf, err := c.pki.EscrowLeaf(testpki.ChipID(uint64(first+i)), 1, 0)
		if err != nil {
			c.t.Fatal(err)
		}
		leaves[i] = leaf
	}
	return leaves
}

// appendEscrow appends the escrow entries of chips first to first+n-1
// through node i, one after another, failing the test on any error.
func (c *testCluster) appendEscrow(i, first, n int) {
	c.t.Helper()
	for _, leaf := range c.escrowLeaves(first, n) {
		if _, err := c.append(context.Background(), i, leaf); err != nil {
			c.t.Fatalf("append through %s: %v", c.cfgs[i].ID, err)
		}
	}
}

// checkReceipt verifies a receipt from the API offline.
func (c *testCluster) checkReceipt(r *v1.Receipt, leaf []byte) {
	c.t.Helper()
	rc, err := receiptFromProto(r)
	if err != nil {
		c.t.Fatal(err)
	}
	if string(rc.Leaf) != string(leaf) {
		c.t.Fatalf("receipt for index %d holds another leaf", r.Index)
	}
	if _, err := rc.Verify(c.verifier); err != nil {
		c.t.Fatalf("receipt for index %d does not verify: %v", r.Index, err)
	}
}

func receiptFromProto(r *v1.Receipt) (*proofs.Receipt, error) {
	p := make([][32]byte, len(r.InclusionProof))
	for i, h := range r.InclusionProof {
		if len(h) != 32 {
			return nil, fmt.Errorf("proof hash %d is %d bytes", i, len(h))
		}
		p[i] = [32]byte(h)
	}
	return &proofs.Receipt{Leaf: r.Leaf, Index: r.Index, Proof: p, Checkpoint: r.Checkpoint}, nil
}

func isCode(err error, code connect.Code) bool {
	var ce *connect.Error
	return errors.As(err, &ce) && ce.Code() == code
}

// TestLogInfoOfANewLogWaitsForItsFirstCheckpoint: asked at once after a
// new log's only node starts (before it has elected itself and signed the
// genesis checkpoint), GetLogInfo answers with a signed checkpoint, not an
// empty one a client would take for a forgery.
func TestLogInfoOfANewLogWaitsForItsFirstCheckpoint(t *testing.T) {
	c := newConfiguredCluster(t, 0, nil, nil)
	n := c.addNode(true)
	lc := chipledgerv1connect.NewLedgerServiceClient(c.http, "http://"+n.APIAddr())
	// UNAVAILABLE (the node's read gate, or no checkpoint within the wait)
	// tells a client to come back; the first answer must be a real one.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := lc.GetLogInfo(context.Background(), connect.NewRequest(&v1.GetLogInfoRequest{}))
		if connect.CodeOf(err) == connect.CodeUnavailable && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // polling, with a deadline
			continue
		}
		if err != nil {
			t.Fatalf("GetLogInfo of a node just started: %v", err)
		}
		if _, err := c.verifier.VerifyCheckpoint(resp.Msg.Checkpoint); err != nil {
			t.Fatalf("GetLogInfo's checkpoint %q: %v", resp.Msg.Checkpoint, err)
		}
		return
	}
}
