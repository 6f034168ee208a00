package node

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// TestJoinRefusesOverlongFieldsBeforeAddingTheVoter: a member record
// carries the node ID and API address with a one-byte length, so a Join
// with a longer one is INVALID_ARGUMENT, and the Raft configuration is not
// changed first (an unreachable voter would raise the quorum for good).
func TestJoinRefusesOverlongFieldsBeforeAddingTheVoter(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	l := c.waitLeader()
	for _, req := range []*v1.JoinRequest{
		{NodeId: "ghost", RaftAddress: "127.0.0.1:1", ApiAddress: strings.Repeat("a", 256)},
		{NodeId: strings.Repeat("g", 256), RaftAddress: "127.0.0.1:1", ApiAddress: "127.0.0.1:2"},
	} {
		_, err := c.admin(l).Join(context.Background(), connect.NewRequest(req))
		if code := connect.CodeOf(err); code != connect.CodeInvalidArgument {
			t.Errorf("join with a %d-byte node_id and a %d-byte api_address: %v, want INVALID_ARGUMENT", len(req.NodeId), len(req.ApiAddress), err)
		}
		cf := c.nodes[l].raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			t.Fatal(err)
		}
		for _, s := range cf.Configuration().Servers {
			if s.ID == raft.ServerID(req.NodeId) {
				t.Errorf("the refused join added %.10s… to the Raft configuration", req.NodeId)
			}
		}
	}
}

// TestTransferLeadershipThatCannotBeMadeSaysWhy: with no other voter, or
// naming the leader itself, a transfer is refused with a code the caller
// can act on, not INTERNAL.
func TestTransferLeadershipThatCannotBeMadeSaysWhy(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	l := c.waitLeader()
	for _, tc := range []struct {
		id   string
		want connect.Code
	}{
		{"", connect.CodeFailedPrecondition},
		{c.nodes[l].ID(), connect.CodeInvalidArgument},
		{"nobody", connect.CodeNotFound},
	} {
		_, err := c.admin(l).TransferLeadership(context.Background(), connect.NewRequest(&v1.TransferLeadershipRequest{NodeId: tc.id}))
		if code := connect.CodeOf(err); code != tc.want {
			t.Errorf("transfer leadership to %q in a one-node cluster: %v, want %v", tc.id, err, tc.want)
		}
	}
}

// TestLeaveThatCannotBeMadeChangesNothing: Raft removes a server that is
// not a member without complaint, so Leave must say so (a typo in the node
// ID), not report a removal; and the only voter cannot leave, which must be
// refused before the member's address is forgotten.
func TestLeaveThatCannotBeMadeChangesNothing(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	l := c.waitLeader()
	// The new leader records its members' addresses in the replicated
	// state soon after it is elected.
	waitFor(t, "the leader to record its address", 10*time.Second, func() bool {
		m, err := c.nodes[l].fsm.members()
		return err == nil && m[c.nodes[l].ID()] != ""
	})
	_, err := c.admin(l).Leave(context.Background(), connect.NewRequest(&v1.LeaveRequest{NodeId: "nobody"}))
	if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), c.nodes[l].ID()) {
		t.Fatalf("leave of a non-member: %v, want NOT_FOUND listing the members", err)
	}
	_, err = c.admin(l).Leave(context.Background(), connect.NewRequest(&v1.LeaveRequest{NodeId: c.nodes[l].ID()}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("leave of the only voter: %v, want FAILED_PRECONDITION", err)
	}
	if m, err := c.nodes[l].fsm.members(); err != nil || m[c.nodes[l].ID()] == "" {
		t.Fatalf("the refused leave forgot the member's address: %v, %v", m, err)
	}
}

// TestJoinDoesNotLetANodeTakeAMembersIDOrAddress: a node without Raft
// state that asks to join under an existing member's ID (a second machine
// given the same --id) would replace that member in the configuration and
// count, without the member's log, in the quorums that acknowledged
// entries; a node under a new ID at a member's Raft address would make one
// process two voters. Both are refused, ALREADY_EXISTS, and change nothing.
// A member restarting with its own state may move its address.
func TestJoinDoesNotLetANodeTakeAMembersIDOrAddress(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	l := c.waitLeader()
	member := 1 - l
	id, addr := c.nodes[member].ID(), c.nodes[member].RaftAddr()
	servers := func() map[raft.ServerID]raft.ServerAddress {
		t.Helper()
		cf := c.nodes[l].raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			t.Fatal(err)
		}
		m := map[raft.ServerID]raft.ServerAddress{}
		for _, s := range cf.Configuration().Servers {
			m[s.ID] = s.Address
		}
		return m
	}
	for _, req := range []*v1.JoinRequest{
		{NodeId: id, RaftAddress: "127.0.0.1:1", ApiAddress: "127.0.0.1:2"},
		{NodeId: "impostor", RaftAddress: addr, ApiAddress: "127.0.0.1:2"},
		{NodeId: "impostor", RaftAddress: addr, ApiAddress: "127.0.0.1:2", Rejoin: true},
	} {
		_, err := c.admin(l).Join(context.Background(), connect.NewRequest(req))
		if connect.CodeOf(err) != connect.CodeAlreadyExists || !strings.Contains(err.Error(), "admin leave") {
			t.Errorf("join %v: %v, want ALREADY_EXISTS saying how to remove the member", req, err)
		}
		if got := servers(); len(got) != 2 || got[raft.ServerID(id)] != raft.ServerAddress(addr) {
			t.Fatalf("after the refused join %v the configuration is %v", req, got)
		}
	}
	// The member's own join again changes nothing and succeeds.
	if _, err := c.admin(l).Join(context.Background(), connect.NewRequest(&v1.JoinRequest{NodeId: id, RaftAddress: addr, ApiAddress: c.nodes[member].APIAddr()})); err != nil {
		t.Fatalf("a member's repeated join: %v", err)
	}

	// The member restarts at a new Raft address with its data: its join is
	// a rejoin, and moves it.
	c.stop(member)
	c.cfgs[member].RaftAddr, c.cfgs[member].Join = "127.0.0.1:0", []string{c.nodes[l].APIAddr()}
	c.restart(member)
	moved := c.nodes[member].RaftAddr()
	if moved == addr {
		t.Fatalf("the restarted member kept raft address %s", addr)
	}
	if got := servers(); len(got) != 2 || got[raft.ServerID(id)] != raft.ServerAddress(moved) {
		t.Fatalf("after the member's rejoin at %s the configuration is %v", moved, got)
	}
	// Two voters: an append commits only with the moved member's vote.
	c.registerStation()
	c.appendEscrow(l, 0, 1)
}

// TestJoinRefusesMalformedAddresses: a Join whose Raft address Raft cannot
// dial (no port, a space) would add a voter no one reaches, which raises
// the quorum for good; one whose address is spelled another way (a port
// with a leading zero) would make the same address two members. Each is
// INVALID_ARGUMENT, before the configuration changes.
func TestJoinRefusesMalformedAddresses(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	l := c.waitLeader()
	for _, req := range []*v1.JoinRequest{
		{NodeId: "ghost", RaftAddress: "no port here", ApiAddress: "127.0.0.1:2"},
		{NodeId: "ghost", RaftAddress: "127.0.0.1:1", ApiAddress: "nor\nhere:2"},
		{NodeId: "ghost", RaftAddress: "127.0.0.1:01", ApiAddress: "127.0.0.1:2"},
		{NodeId: "ghost", RaftAddress: "[127.0.0.1]:1", ApiAddress: "127.0.0.1:2"},
		{NodeId: "ghost", RaftAddress: strings.Repeat("h", 300) + ":1", ApiAddress: "127.0.0.1:2"},
	} {
		_, err := c.admin(l).Join(context.Background(), connect.NewRequest(req))
		if code := connect.CodeOf(err); code != connect.CodeInvalidArgument {
			t.Errorf("join with raft_address %.20q and api_address %q: %v, want INVALID_ARGUMENT", req.RaftAddress, req.ApiAddress, err)
		}
		cf := c.nodes[l].raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			t.Fatal(err)
		}
		if n := len(cf.Configuration().Servers); n != 2 {
			t.Fatalf("after the refused join the configuration has %d servers: %v", n, cf.Configuration().Servers)
		}
	}
}

// TestConfigRefusesPeersRaftCannotUse: a founding peer list is checked as
// Join requests are, so a cluster is never bootstrapped with a voter whose
// member record cannot be written or whose address Raft cannot dial.
func TestConfigRefusesPeersRaftCannotUse(t *testing.T) {
	signer, _ := testLogKey(t)
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []Peer{
		{ID: strings.Repeat("n", 300), RaftAddr: "127.0.0.1:7000", APIAddr: "127.0.0.1:8080"},
		{ID: "n2", RaftAddr: "127.0.0.1", APIAddr: "127.0.0.1:8080"},
		{ID: "n2", RaftAddr: "127.0.0.1:7000", APIAddr: "127.0.0.1:08080"},
	} {
		cfg := Config{ID: "n1", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", Signer: signer, Trust: pki.Trust,
			Bootstrap: true, Peers: []Peer{{ID: "n1", RaftAddr: "127.0.0.1:7001", APIAddr: "127.0.0.1:8081"}, p}}
		if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "peer") {
			t.Errorf("peer %.20s at %q and %q: %v, want an error about the peer", p.ID, p.RaftAddr, p.APIAddr, err)
		}
	}
}

// TestTransferLeadershipToAStoppedVoterIsUnavailable: a transfer to a
// voter that is down fails in Raft with a plain error (a transport error
// naming internal addresses); the caller gets UNAVAILABLE saying the
// target may be down and who still leads, not INTERNAL.
func TestTransferLeadershipToAStoppedVoterIsUnavailable(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	l := c.waitLeader()
	target := (l + 1) % 3
	targetID := c.nodes[target].ID()
	c.stop(target)
	_, err := c.admin(l).TransferLeadership(context.Background(), connect.NewRequest(&v1.TransferLeadershipRequest{NodeId: targetID}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), targetID) || strings.Contains(err.Error(), "dial tcp") {
		t.Fatalf("transfer leadership to the stopped voter %s: %v; want UNAVAILABLE naming it, without transport details", targetID, err)
	}
	if !c.nodes[l].IsLeader() {
		t.Errorf("the leader lost its leadership to a failed transfer")
	}
}

// TestAJoinTheClusterRefusesFailsAtOnce: a node the cluster refuses (here
// a fresh node under a member's ID) gets the refusal and its advice at
// once, instead of retrying it until the join's deadline; and a start
// whose context ends stops trying.
func TestAJoinTheClusterRefusesFailsAtOnce(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	l := c.waitLeader()
	cfg := c.cfgs[1-l]
	cfg.DataDir, cfg.RaftAddr, cfg.APIAddr, cfg.Join = c.nodeDir(), "127.0.0.1:0", "127.0.0.1:0", []string{c.nodes[l].APIAddr()}
	// A node that never started does not drain: it was never ready.
	cfg.DrainDelay = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type started struct {
		n   *Node
		err error
	}
	result := make(chan started, 1)
	go func() {
		n, err := Start(ctx, cfg)
		result <- started{n, err}
	}()
	var r started
	select {
	case r = <-result:
	case <-time.After(30 * time.Second):
		t.Fatal("the refused start did not return: it drained (DrainDelay) though it never started")
	}
	n, err := r.n, r.err
	if err == nil {
		n.Close()
		t.Fatal("a fresh node under a member's ID joined")
	}
	if connect.CodeOf(err) != connect.CodeAlreadyExists || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "admin leave --node-id "+cfg.ID) {
		t.Fatalf("join refused: %v; want the ALREADY_EXISTS refusal at once, with the command that removes the member", err)
	}

	// A start that cannot reach the cluster ends with its context.
	cfg.DataDir, cfg.ID, cfg.Join = c.nodeDir(), "late", []string{"127.0.0.1:1"}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if n, err := Start(ctx, cfg); err == nil || !errors.Is(err, context.Canceled) {
		if n != nil {
			n.Close()
		}
		t.Fatalf("start with an ended context: %v, want context.Canceled", err)
	}
}

// TestAGracefulCloseHandsLeadershipOver: a leader closed with
// HandOverOnClose (the node command's SIGTERM) hands its leadership to
// another voter before it stops, so the cluster has a leader when Close
// returns, rather than none for an election timeout; and its /readyz says
// it is shutting down from the start of Close.
func TestAGracefulCloseHandsLeadershipOver(t *testing.T) {
	c := newConfiguredCluster(t, 3, nil, func(cfg *Config) { cfg.HandOverOnClose = true })
	c.registerStation()
	l := c.waitLeader()
	c.waitSameState(1)
	c.stop(l)
	leaders := 0
	for i, n := range c.nodes {
		if n != nil && n.IsLeader() {
			leaders++
			c.appendEscrow(i, 0, 1) // and it takes appends
		}
	}
	if leaders != 1 {
		t.Fatalf("%d leaders among the other nodes when the old leader's Close returned, want 1", leaders)
	}
}
