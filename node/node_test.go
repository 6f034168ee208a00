package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// TestClusterAppendsThroughEveryNode appends through all three nodes at
// once and checks that the replicas agree byte for byte and that every proof
// from every node verifies with x/mod/sumdb/tlog.
func TestClusterAppendsThroughEveryNode(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.registerStation()
	leaves := c.escrowLeaves(0, 90)
	resps := make([]*v1.AppendResponse, len(leaves))
	var wg sync.WaitGroup
	for i, leaf := range leaves {
		wg.Go(func() {
			resp, err := c.append(context.Background(), i%3, leaf)
			if err != nil {
				t.Errorf("append %d through node %d: %v", i, i%3, err)
				return
			}
			resps[i] = resp
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	seen := map[uint64]bool{}
	for i, r := range resps {
		c.checkReceipt(r.Receipt, leaves[i])
		if seen[r.Receipt.Index] {
			t.Fatalf("two appends got index %d", r.Receipt.Index)
		}
		seen[r.Receipt.Index] = true
	}
	cp := c.waitSameState(uint64(len(leaves) + 1))
	if got := payload(t, c.nodes[0]); got != uint64(len(leaves)+1) {
		t.Fatalf("%d entries in the log, want %d", got, len(leaves)+1)
	}
	v, _ := note.NewVerifier(c.signer.VerifierKey())
	for i := range c.nodes {
		client := c.client(i)
		for _, idx := range []uint64{0, 1, 45, cp.Size - 1} {
			resp, err := client.GetInclusionProof(context.Background(), connect.NewRequest(&v1.GetInclusionProofRequest{Index: idx}))
			if err != nil {
				t.Fatal(err)
			}
			n, err := note.Open(resp.Msg.Checkpoint, note.VerifierList(v))
			if err != nil {
				t.Fatalf("node %d checkpoint: %v", i, err)
			}
			body, _ := proofs.ParseCheckpoint([]byte(n.Text))
			p := make([]tlog.Hash, len(resp.Msg.InclusionProof))
			for k, h := range resp.Msg.InclusionProof {
				p[k] = tlog.Hash(h)
			}
			if err := tlog.CheckRecord(p, int64(body.Size), tlog.Hash(body.Hash), int64(idx), tlog.Hash(resp.Msg.LeafHash)); err != nil {
				t.Fatalf("node %d: inclusion of %d: %v", i, idx, err)
			}
		}
		cons, err := client.GetConsistencyProof(context.Background(), connect.NewRequest(&v1.GetConsistencyProofRequest{Size1: 7}))
		if err != nil {
			t.Fatal(err)
		}
		old, _ := c.nodes[i].fsm.store.RootAt(7)
		p := make([]tlog.Hash, len(cons.Msg.ConsistencyProof))
		for k, h := range cons.Msg.ConsistencyProof {
			p[k] = tlog.Hash(h)
		}
		if err := tlog.CheckTree(p, int64(cp.Size), tlog.Hash(cp.Root), 7, tlog.Hash(old)); err != nil {
			t.Fatalf("node %d: consistency 7 → %d: %v", i, cp.Size, err)
		}
	}
}

func TestAppendErrorsHaveTheRightCodes(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	ctx := context.Background()
	chip := testpki.ChipID(1)
	// Before the station is registered.
	leaf1, err := c.pki.EscrowLeaf(chip, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.append(ctx, 0, leaf1); !isCode(err, connect.CodeFailedPrecondition) {
		t.Fatalf("entry of an unregistered station: %v, want FailedPrecondition", err)
	}
	c.registerStation()
	if _, err := c.append(ctx, 0, leaf1); err != nil {
		t.Fatal(err)
	}
	again, err := c.append(ctx, 0, leaf1)
	if err != nil || !again.Duplicate {
		t.Fatalf("same leaf again: %v, duplicate=%v; want success with duplicate", err, again.GetDuplicate())
	}
	other1, _ := c.pki.EscrowLeaf(chip, 1, 0)
	gap3, _ := c.pki.EscrowLeaf(chip, 3, 0)
	bad := slices.Clone(leaf1)
	bad[len(bad)-5] ^= 1 // inside the station signature
	idxRoot, _ := (&ledger.IndexRoot{CoveredSize: 1}).MarshalLeaf()
	// The registered station again, registered at another time: not the
	// same leaf, so not a duplicate.
	reregister, err := (&ledger.StationRegistration{Certificate: c.pki.Station.Raw, RegisteredAtMs: uint64(c.pki.Station.NotBefore.Add(time.Minute).UnixMilli())}).MarshalLeaf()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		leaf []byte
		code connect.Code
	}{
		{"another leaf for a used epoch", other1, connect.CodeAlreadyExists},
		{"another registration of a registered station", reregister, connect.CodeAlreadyExists},
		{"an epoch gap", gap3, connect.CodeFailedPrecondition},
		{"a bad station signature", bad, connect.CodeInvalidArgument},
		{"garbage", []byte("garbage"), connect.CodeInvalidArgument},
		{"an index-root leaf", idxRoot, connect.CodeInvalidArgument},
		{"an empty leaf", nil, connect.CodeInvalidArgument},
		{"an oversized request", make([]byte, 200<<10), connect.CodeResourceExhausted},
	} {
		if _, err := c.append(ctx, 0, tc.leaf); !isCode(err, tc.code) {
			t.Errorf("append %s: %v, want %v", tc.name, err, tc.code)
		}
	}
	if got := payload(t, c.nodes[0]); got != 2 {
		t.Fatalf("%d entries after the rejected appends, want 2", got)
	}
	// The state machine decided the registration, leaf1 (twice), the two
	// epoch faults and the second registration; the other refusals never
	// reached it.
	appends := c.nodes[0].metrics.appends
	got := [3]float64{testutil.ToFloat64(appends.WithLabelValues("appended")), testutil.ToFloat64(appends.WithLabelValues("duplicate")), testutil.ToFloat64(appends.WithLabelValues("rejected"))}
	if got != [3]float64{2, 1, 3} {
		t.Errorf("chipledger_appends_total appended/duplicate/rejected = %v, want [2 1 3]", got)
	}
	// The refusals before proposing: the unregistered station, and the
	// bad signature, garbage and index-root leaf (the empty and oversized
	// requests never reach the append path).
	refused := c.nodes[0].metrics.refused
	if got := [2]float64{testutil.ToFloat64(refused.WithLabelValues("failed_precondition")), testutil.ToFloat64(refused.WithLabelValues("invalid_argument"))}; got != [2]float64{1, 3} {
		t.Errorf("chipledger_appends_refused_total failed_precondition/invalid_argument = %v, want [1 3]", got)
	}
	// Reads out of range.
	cl := c.client(0)
	size := c.nodes[0].Checkpoint().Size
	if _, err := cl.GetEntries(ctx, connect.NewRequest(&v1.GetEntriesRequest{Start: 0, End: size + 1})); !isCode(err, connect.CodeOutOfRange) {
		t.Errorf("GetEntries past the end: %v", err)
	}
	if _, err := cl.GetEntries(ctx, connect.NewRequest(&v1.GetEntriesRequest{Start: 0, End: 5000})); !isCode(err, connect.CodeInvalidArgument) {
		t.Errorf("GetEntries of 5000: %v", err)
	}
	if _, err := cl.GetInclusionProof(ctx, connect.NewRequest(&v1.GetInclusionProofRequest{Index: size})); !isCode(err, connect.CodeOutOfRange) {
		t.Errorf("GetInclusionProof past the end: %v", err)
	}
	if _, err := cl.LookupChip(ctx, connect.NewRequest(&v1.LookupChipRequest{ChipId: []byte("short")})); !isCode(err, connect.CodeInvalidArgument) {
		t.Errorf("LookupChip of a 5-byte chip ID: %v", err)
	}
	lookup, err := cl.LookupChip(ctx, connect.NewRequest(&v1.LookupChipRequest{ChipId: chip}))
	if err != nil || len(lookup.Msg.Entries) != 1 || lookup.Msg.Entries[0].Epoch != 1 {
		t.Fatalf("LookupChip: %v, %v", lookup, err)
	}
	c.checkReceipt(lookup.Msg.Entries[0].Receipt, leaf1)
}

// TestLeaderLossLosesNoAcknowledgedAppend stops the leader while clients
// append through every node, and checks that every acknowledged append is in
// the log exactly once, and that appends continue.
func TestLeaderLossLosesNoAcknowledgedAppend(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.registerStation()
	leaves := c.escrowLeaves(1000, 300)
	var mu sync.Mutex
	acked := map[int]uint64{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	next := make(chan int)
	for w := range 8 {
		wg.Go(func() {
			for i := range next {
				resp, err := c.appendAnywhere(ctx, w, leaves[i])
				if err != nil {
					t.Errorf("append %d: %v", i, err)
					continue
				}
				mu.Lock()
				acked[i] = resp.Receipt.Index
				mu.Unlock()
			}
		})
	}
	for i := range leaves {
		if i == 100 {
			old := c.waitLeader()
			c.stop(old)
			t.Logf("stopped leader %s", c.cfgs[old].ID)
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	c.waitSameState(uint64(len(leaves) + 1))
	live := slices.IndexFunc(c.nodes, func(n *Node) bool { return n != nil })
	if got := payload(t, c.nodes[live]); got != uint64(len(leaves)+1) {
		t.Fatalf("%d entries, want %d: some append landed twice or not at all", got, len(leaves)+1)
	}
	store := c.nodes[live].fsm.store
	for i, idx := range acked {
		got, err := store.Leaf(idx)
		if err != nil || string(got) != string(leaves[i]) {
			t.Fatalf("acknowledged append %d is not at its index %d", i, idx)
		}
		if e := store.ChipEntries(testpki.ChipID(uint64(1000 + i))); len(e) != 1 {
			t.Fatalf("chip of append %d has %d entries, want 1", i, len(e))
		}
	}
}

// compactEarly makes Raft snapshot and compact its log after a few dozen
// entries, so that a node that falls behind needs a snapshot.
func compactEarly(conf *raft.Config) {
	conf.SnapshotThreshold = 64
	conf.SnapshotInterval = 50 * time.Millisecond
	conf.TrailingLogs = 16
}

// TestFollowerCatchesUpFromLogAndFromSnapshot stops a follower, appends,
// and restarts it: once with the entries still in the leader's Raft log,
// once after the leader compacted them into a snapshot.
func TestFollowerCatchesUpFromLogAndFromSnapshot(t *testing.T) {
	c := newTestCluster(t, 3, compactEarly)
	c.registerStation()
	leader := c.waitLeader()
	follower := (leader + 1) % 3

	c.stop(follower)
	c.appendEscrow(leader, 0, 30) // 30 Raft entries: stays in the log
	c.restart(follower)
	c.waitSameState(31)

	c.stop(follower)
	c.appendEscrow(leader, 100, 200) // past the snapshot threshold: compacted away
	waitFor(t, "the leader to snapshot and compact", 20*time.Second, func() bool {
		first, err := c.nodes[leader].raftStore.FirstIndex()
		return err == nil && first > 40
	})
	c.restart(follower)
	c.waitSameState(231)
	if got := c.nodes[follower].fsm.gen; got < 2 {
		t.Errorf("follower ledger generation %d: it was not restored from a snapshot", got)
	}
	if got := c.nodes[follower].fsm.store.ChipCount(); got != 230 {
		t.Errorf("restored follower indexes %d chips, want 230", got)
	}
	if got := payload(t, c.nodes[follower]); got != 231 {
		t.Fatalf("%d entries, want 231", got)
	}
	// And it keeps up afterwards.
	c.appendEscrow(leader, 400, 5)
	c.waitSameState(236)
}

func TestMembershipJoinLeaveTransfer(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.registerStation()
	ctx := context.Background()
	for _, leaf := range c.escrowLeaves(0, 20) {
		if _, err := c.appendAnywhere(ctx, 0, leaf); err != nil {
			t.Fatal(err)
		}
	}
	n4 := c.addNode(false)
	cp := c.waitSameState(21)
	if got := payload(t, n4); got != 21 {
		t.Fatalf("new node holds %d entries, want 21", got)
	}
	st, err := c.admin(0).Status(ctx, connect.NewRequest(&v1.StatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Msg.Peers) != 4 {
		t.Fatalf("status lists %d peers, want 4", len(st.Msg.Peers))
	}
	for _, p := range st.Msg.Peers {
		if p.Error != "" || p.ApiAddress == "" || p.TreeSize != cp.Size {
			t.Errorf("peer %+v", p)
		}
	}

	// Transfer leadership to node 3, then remove node 1.
	if _, err := c.admin(1).TransferLeadership(ctx, connect.NewRequest(&v1.TransferLeadershipRequest{NodeId: "node3"})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node3 to lead", 10*time.Second, func() bool { return c.nodes[3].IsLeader() })
	if _, err := c.admin(0).Leave(ctx, connect.NewRequest(&v1.LeaveRequest{NodeId: "node1"})); err != nil {
		t.Fatal(err)
	}
	// The removed node, still running, says it is no longer a member.
	waitFor(t, "the removed node to say it is no longer a member", 10*time.Second, func() bool {
		code, body := c.readyz(1)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "no longer a member")
	})
	c.stop(1)
	for _, leaf := range c.escrowLeaves(50, 5) {
		if _, err := c.appendAnywhere(ctx, 2, leaf); err != nil {
			t.Fatal(err)
		}
	}
	c.waitSameState(26)
	st, err = c.admin(3).Status(ctx, connect.NewRequest(&v1.StatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Msg.Peers) != 3 || st.Msg.Role != "leader" {
		t.Fatalf("after leave: role %s, %d peers", st.Msg.Role, len(st.Msg.Peers))
	}
}

// TestSameLeafThroughEveryNodeLandsOnce sends one leaf through every node
// concurrently.
func TestSameLeafThroughEveryNodeLandsOnce(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.registerStation()
	for round := range 5 {
		leaf := c.escrowLeaves(round, 1)[0]
		var wg sync.WaitGroup
		idx := make([]uint64, 6)
		for i := range idx {
			wg.Go(func() {
				resp, err := c.append(context.Background(), i%3, leaf)
				if err != nil {
					t.Errorf("append through node %d: %v", i%3, err)
					return
				}
				idx[i] = resp.Receipt.Index
			})
		}
		wg.Wait()
		for _, x := range idx[1:] {
			if x != idx[0] {
				t.Fatalf("round %d: callers got indexes %v", round, idx)
			}
		}
	}
	c.waitSameState(6)
	if got := payload(t, c.nodes[0]); got != 6 {
		t.Fatalf("%d entries, want 6", got)
	}
}

// TestFollowerForwardsOnceItLearnsTheLeadersAddress appends through a
// node that hears from the leader before it knows where the leader serves
// its API (it learns that by applying the leader's membership entry, which
// a full disk holds up here): the append waits for the address, within its
// deadline, rather than failing at once.
func TestFollowerForwardsOnceItLearnsTheLeadersAddress(t *testing.T) {
	var full atomic.Bool // node4's disk takes no more writes
	c := newConfiguredCluster(t, 3, nil, func(cfg *Config) {
		if cfg.ID != "node4" {
			return
		}
		cfg.StoreFaults = func(op string) error {
			if op != "sync directory" && full.Load() {
				return fmt.Errorf("%s: %w", op, syscall.ENOSPC)
			}
			return nil
		}
	})
	ctx := context.Background()
	c.registerStation()
	// node3 joins after the station's registration, and leads: a node that
	// cannot apply the registration does not learn node3's address.
	c.addNode(false)
	c.waitSameState(1)
	if _, err := c.admin(0).TransferLeadership(ctx, connect.NewRequest(&v1.TransferLeadershipRequest{NodeId: "node3"})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node3 to lead", 10*time.Second, func() bool { return c.nodes[3].IsLeader() })
	full.Store(true)
	n := c.addNode(false)
	waitFor(t, "node4 to hear from the leader and fail to apply", 10*time.Second, func() bool {
		_, id := n.raft.LeaderWithID()
		return id == "node3" && n.fsm.storeFault() != nil
	})
	if _, addr := n.leaderAPI(); addr != "" {
		t.Fatalf("node4 knows the leader at %s before applying its membership", addr)
	}
	leaf := c.escrowLeaves(0, 1)[0]
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := c.append(short, 4, leaf); connect.CodeOf(err) != connect.CodeUnavailable && connect.CodeOf(err) != connect.CodeDeadlineExceeded {
		t.Fatalf("append before the address is known, with a short deadline: %v, want UNAVAILABLE or DEADLINE_EXCEEDED", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.append(ctx, 4, leaf)
		done <- err
	}()
	full.Store(false)
	if err := <-done; err != nil {
		t.Fatalf("append through node4: %v, want it forwarded once the node knows the leader's address", err)
	}
	c.waitSameState(2)
}

// TestTilesClientVerifiesInclusion reads the log over HTTP as a C2SP
// tlog-tiles client that knows only the verifier key.
func TestTilesClientVerifiesInclusion(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	c.registerStation()
	leaves := c.escrowLeaves(0, 300)
	byIndex := map[int64][]byte{}
	for _, leaf := range leaves {
		resp, err := c.append(context.Background(), 0, leaf)
		if err != nil {
			t.Fatal(err)
		}
		byIndex[int64(resp.Receipt.Index)] = leaf
	}
	base := "http://" + c.cfgs[0].APIAddr + "/"
	get := func(path string) ([]byte, *http.Response) {
		resp, err := c.http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b, resp
	}
	raw, _ := get("checkpoint")
	v, _ := note.NewVerifier(c.signer.VerifierKey())
	n, err := note.Open(raw, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	cp, err := proofs.ParseCheckpoint([]byte(n.Text))
	if err != nil {
		t.Fatal(err)
	}
	tr := httpTiles{t: t, get: get}
	hr := tlog.TileHashReader(tlog.Tree{N: int64(cp.Size), Hash: tlog.Hash(cp.Hash)}, tr)
	all, err := c.nodes[0].fsm.store.Leaves(0, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int64{0, 1, 200, 255, 256, 300, int64(cp.Size) - 1} {
		leaf := all[i]
		if want, ok := byIndex[i]; ok && string(want) != string(leaf) {
			t.Fatalf("leaf %d is not the entry appended there", i)
		}
		p, err := tlog.ProveRecord(int64(cp.Size), i, hr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, int64(cp.Size), tlog.Hash(cp.Hash), i, tlog.RecordHash(leaf)); err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
	}
	// Entry bundle 1 holds leaves 256..300 and matches.
	bundle, resp := get("tile/entries/001.p/45")
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") == "" {
		t.Fatalf("bundle: %d %v", resp.StatusCode, resp.Header)
	}
	for j := range 45 {
		l := int(binary.BigEndian.Uint16(bundle))
		if string(bundle[2:2+l]) != string(all[256+j]) {
			t.Fatalf("bundle entry %d differs", j)
		}
		bundle = bundle[2+l:]
	}
	if _, resp := get("tile/0/000"); !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Errorf("full tile Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	if _, resp := get("tile/0/009"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("tile beyond the tree: %d", resp.StatusCode)
	}
	if _, resp := get("tile/0/0x2"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad tile path: %d", resp.StatusCode)
	}
	for _, path := range []string{"healthz", "readyz", "metrics"} {
		if body, resp := get(path); resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
}

// httpTiles is a tlog.TileReader over the node's tiles API.
type httpTiles struct {
	t   testing.TB
	get func(string) ([]byte, *http.Response)
}

func (h httpTiles) Height() int { return 8 }

func (h httpTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		path := strings.Replace(tile.Path(), "tile/8/", "tile/", 1)
		b, resp := h.get(path)
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("GET %s: %d", path, resp.StatusCode)
		}
		out[i] = b
	}
	return out, nil
}

func (h httpTiles) SaveTiles([]tlog.Tile, [][]byte) {}

func TestRestartReplaysNothingTwice(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	c.registerStation()
	c.appendEscrow(0, 0, 50)
	before := c.nodes[0].Checkpoint()
	c.stop(0)
	c.restart(0)
	c.waitLeader()
	if got := c.nodes[0].Checkpoint(); string(got.Signed) != string(before.Signed) {
		t.Fatalf("after restart the checkpoint is %q, want %q", got.Signed, before.Signed)
	}
	if _, err := c.append(context.Background(), 0, c.escrowLeaves(99, 1)[0]); err != nil {
		t.Fatal(err)
	}
	if got := c.nodes[0].Checkpoint().Size; got != before.Size+2 {
		t.Fatalf("size %d after one more append, want %d (the entry and its index root)", got, before.Size+2)
	}
}

// TestNewFailsCleanly starts a node on an API address already in use: New
// must return an error (not panic) and release what it opened, so the same
// data directory can be used at once.
// TestCloseEndsWatchStreams: a node closing with a WatchCheckpoints stream
// open (a monitor following it) ends the stream when its server shuts
// down, instead of letting the shutdown wait for it until its deadline and
// fail.
func TestCloseEndsWatchStreams(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.client(0).WatchCheckpoints(ctx, connect.NewRequest(&v1.WatchCheckpointsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() {
		t.Fatalf("no first checkpoint: %v", stream.Err())
	}
	err = c.nodes[0].Close()
	c.nodes[0] = nil
	if err != nil {
		t.Fatalf("Close with a watch stream open: %v", err)
	}
	for stream.Receive() {
	}
	if connect.CodeOf(stream.Err()) != connect.CodeUnavailable {
		t.Fatalf("the stream ended with %v, want UNAVAILABLE (shutting down)", stream.Err())
	}
}

func TestNewFailsCleanly(t *testing.T) {
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := testLogKey(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := Config{ID: "n", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", APIAddr: busy.Addr().String(),
		Signer: signer, Trust: pki.Trust, Bootstrap: true}
	if n, err := New(cfg); err == nil {
		n.Close()
		t.Fatal("New succeeded on an API address in use")
	}
	cfg.APIAddr = "127.0.0.1:0"
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New on the same data directory after a failed start: %v", err)
	}
	n.Close()

	// An admin token without TLS would cross the network in the clear,
	// and a node joining could not present it.
	cfg.AdminTokenHash = make([]byte, 32)
	if n, err := New(cfg); err == nil || !strings.Contains(err.Error(), "TLS") {
		if n != nil {
			n.Close()
		}
		t.Fatalf("New with an admin token and no TLS: %v, want a refusal", err)
	}
}

// TestAppendNamesTheLeader checks that an append answered through a
// follower carries the leader's API address, so clients can go straight
// there next time.
func TestAppendNamesTheLeader(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	leader := c.waitLeader()
	follower := (leader + 1) % 3
	resp, err := c.client(follower).Append(context.Background(), connect.NewRequest(&v1.AppendRequest{Leaf: c.pki.StationLeaf()}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.Header().Get(leaderHeader), c.cfgs[leader].APIAddr; got != want {
		t.Fatalf("leader header %q, want %q", got, want)
	}
}

// TestCorruptLedgerIsRefusedAndRebuilt corrupts a stopped node's ledger: the
// node refuses to start on it, and once the ledger is moved away it
// rebuilds the same log from its Raft log.
func TestCorruptLedgerIsRefusedAndRebuilt(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	c.registerStation()
	c.appendEscrow(0, 0, 20)
	before := c.nodes[0].Checkpoint()
	c.stop(0)
	path, err := LedgerPath(c.cfgs[0].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	corruptRecordedRoot(t, path)
	refusesCorruptLedger(t, c.cfgs[0])
	if err := os.Rename(filepath.Join(c.cfgs[0].DataDir, "ledger"), filepath.Join(c.cfgs[0].DataDir, "ledger.corrupt")); err != nil {
		t.Fatal(err)
	}
	c.restart(0)
	waitFor(t, "the rebuilt ledger to reach the old checkpoint", 10*time.Second, func() bool {
		return c.nodes[0].Checkpoint().Size >= before.Size
	})
	if got := c.nodes[0].Checkpoint(); got.Size != before.Size || got.Root != before.Root {
		t.Fatalf("rebuilt ledger at %d %x, want %d %x", got.Size, got.Root, before.Size, before.Root)
	}
}

// TestFollowerWithLostDataIsRebuiltFromPeers corrupts a follower's ledger
// in a cluster whose Raft logs are compacted: the follower refuses to start
// on it; its data directory is deleted and it is started again with the
// same identity, and the leader rebuilds it by sending a snapshot.
func TestFollowerWithLostDataIsRebuiltFromPeers(t *testing.T) {
	c := newTestCluster(t, 3, compactEarly)
	c.registerStation()
	leader := c.waitLeader()
	follower := (leader + 1) % 3
	c.appendEscrow(leader, 0, 150)
	before := c.waitSameState(151)
	waitFor(t, "the leader to snapshot and compact its log", 20*time.Second, func() bool {
		first, err := c.nodes[leader].raftStore.FirstIndex()
		return err == nil && first > 40
	})

	c.stop(follower)
	path, err := LedgerPath(c.cfgs[follower].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	corruptRecordedRoot(t, path)
	refusesCorruptLedger(t, c.cfgs[follower])

	// The operator's remedy: delete the data directory and start again.
	if err := os.RemoveAll(c.cfgs[follower].DataDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(c.cfgs[follower].DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	c.restart(follower)
	cp := c.waitSameState(151)
	if cp.Size != before.Size || cp.Root != before.Root {
		t.Fatalf("rebuilt cluster at %d %x, want %d %x", cp.Size, cp.Root, before.Size, before.Root)
	}
	if got := c.nodes[follower].fsm.gen; got < 2 {
		t.Errorf("follower ledger generation %d: it was not restored from a snapshot", got)
	}
	if got := c.nodes[follower].fsm.store.ChipCount(); got != 150 {
		t.Errorf("rebuilt follower indexes %d chips, want 150", got)
	}
	// It is a full replica again: it keeps up, and its store verifies.
	c.appendEscrow(leader, 500, 5)
	c.waitSameState(156)
	c.stop(follower)
	if path, err = LedgerPath(c.cfgs[follower].DataDir); err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.VerifyStore(path, nil); err != nil {
		t.Fatalf("the rebuilt store: %v", err)
	}
}

// corruptRecordedRoot flips a bit of the tree root a stopped node's ledger
// store records.
func corruptRecordedRoot(t *testing.T, ledgerPath string) {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(ledgerPath, "ledger.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket([]byte("meta"))
		root := append([]byte(nil), meta.Get([]byte("root"))...)
		root[0] ^= 1
		return meta.Put([]byte("root"), root)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// refusesCorruptLedger checks that a node will not start on a corrupt
// ledger, and says what to do.
func refusesCorruptLedger(t *testing.T, cfg Config) {
	t.Helper()
	n, err := New(cfg)
	if err == nil || !errors.Is(err, ledger.ErrCorrupt) || !strings.Contains(err.Error(), "node verify") {
		if n != nil {
			n.Close()
		}
		t.Fatalf("New on a corrupt ledger: %v, want ErrCorrupt with what to do", err)
	}
}

// TestProofRequestsThatCanNeverSucceedAreInvalidArgument: a
// consistency proof from a larger size to a smaller one, or an inclusion
// proof of a leaf at or past the tree size it is asked in, can never be
// answered however far the log grows: INVALID_ARGUMENT, not OUT_OF_RANGE
// (which clients, this SDK included, read as "this node lags: wait for the
// size, then call it a rollback").
func TestProofRequestsThatCanNeverSucceedAreInvalidArgument(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	c.registerStation()
	c.appendEscrow(0, 0, 3)
	ctx := context.Background()
	cp := c.nodes[0].Checkpoint()
	if cp.Size < 4 {
		t.Fatalf("tree size %d", cp.Size)
	}
	_, err := c.client(0).GetConsistencyProof(ctx, connect.NewRequest(&v1.GetConsistencyProofRequest{Size1: cp.Size, Size2: 2}))
	if code := connect.CodeOf(err); code != connect.CodeInvalidArgument {
		t.Errorf("consistency from size %d to 2: %v (code %v), want INVALID_ARGUMENT", cp.Size, err, code)
	}
	_, err = c.client(0).GetInclusionProof(ctx, connect.NewRequest(&v1.GetInclusionProofRequest{Index: 3, TreeSize: 2}))
	if code := connect.CodeOf(err); code != connect.CodeInvalidArgument {
		t.Errorf("inclusion of leaf 3 in tree of size 2: %v (code %v), want INVALID_ARGUMENT", err, code)
	}
}

// TestRaftLogsKeepTheirLevelAndFields: Raft's errors reach the node's log
// as errors (an alert on level=ERROR must see a failed snapshot), with
// their message and fields as attributes.
func TestRaftLogsKeepTheirLevelAndFields(t *testing.T) {
	var buf bytes.Buffer
	h := newHCLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	h.Error("failed to take snapshot", "error", "disk full", "index", 7)
	h.Warn("heartbeat timeout reached")
	h.Info("not logged: below warn")
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("logged %d lines, want 2:\n%s", len(lines), buf.String())
	}
	if l := lines[0]; l["level"] != "ERROR" || l["msg"] != "failed to take snapshot" || l["error"] != "disk full" || l["index"] != float64(7) || l["component"] != "raft" {
		t.Errorf("raft error logged as %v", l)
	}
	if l := lines[1]; l["level"] != "WARN" || l["msg"] != "heartbeat timeout reached" {
		t.Errorf("raft warning logged as %v", l)
	}
}

// TestARestartDoesNotCountTheEntriesItAppliesAgain: a restarted node
// applies again the entries of its Raft log after its store's durable
// point (a batch of refused leaves writes nothing, so it is always among
// them); the previous run counted them, so the metrics do not.
func TestARestartDoesNotCountTheEntriesItAppliesAgain(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	ctx := context.Background()
	c.registerStation()
	gap, err := c.pki.EscrowLeaf(testpki.ChipID(1), 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.append(ctx, 0, gap); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("an epoch gap: %v, want FAILED_PRECONDITION", err)
	}
	if got := testutil.ToFloat64(c.nodes[0].metrics.appends.WithLabelValues("rejected")); got != 1 {
		t.Fatalf("rejected = %v before the restart, want 1", got)
	}
	last := c.nodes[0].raft.LastIndex()
	c.stop(0)
	c.restart(0)
	n := c.nodes[0]
	waitFor(t, "the restarted node to apply its log", 10*time.Second, func() bool { return n.raft.AppliedIndex() >= last && n.fsm.counted.Load() >= last })
	c.appendEscrow(0, 5, 1) // one new entry, counted
	for result, want := range map[string]float64{"appended": 1, "duplicate": 0, "rejected": 0} {
		if got := testutil.ToFloat64(n.metrics.appends.WithLabelValues(result)); got != want {
			t.Errorf("after the restart, %s = %v, want %v", result, got, want)
		}
	}
}

// TestCloseWithAnAppendThatCannotFinish: an append in flight that cannot
// commit (no quorum) does not make a graceful stop fail: Close waits for it
// a little, then closes its connection (the caller retries elsewhere) and
// returns without error, so the node command exits 0 on SIGTERM.
func TestCloseWithAnAppendThatCannotFinish(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.registerStation()
	l := c.waitLeader()
	c.waitSameState(1)
	for i := range c.nodes {
		if i != l {
			c.stop(i)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.append(context.Background(), l, c.escrowLeaves(0, 1)[0])
		done <- err
	}()
	waitFor(t, "the append to be in flight", 10*time.Second, func() bool {
		return testutil.ToFloat64(c.nodes[l].metrics.inFlight) == 1
	})
	if err := c.nodes[l].Close(); err != nil {
		t.Fatalf("Close with an append that cannot commit: %v", err)
	}
	if err := <-done; err == nil {
		t.Fatal("the append without a quorum succeeded")
	}
}

// TestADrainingNodeIsNotReady: during Config.DrainDelay the node still
// serves, but /readyz answers 503, so that load balancers take it out of
// rotation before its listener closes.
func TestADrainingNodeIsNotReady(t *testing.T) {
	c := newConfiguredCluster(t, 1, nil, func(cfg *Config) { cfg.DrainDelay = 2 * time.Second })
	waitFor(t, "the node to be ready", 10*time.Second, func() bool { code, _ := c.readyz(0); return code == http.StatusOK })
	n := c.nodes[0]
	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	waitFor(t, "/readyz to say the node is shutting down", 1900*time.Millisecond, func() bool {
		code, body := c.readyz(0)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "shutting down")
	})
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	c.nodes[0] = nil
}
