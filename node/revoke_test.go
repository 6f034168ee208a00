package node

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/ledger"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// TestRevokedStationIsRefused revokes a station through a follower and
// checks that every replica, before and after a restart, refuses its
// entries while the entries it made before stay in the log.
func TestRevokedStationIsRefused(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	ctx := context.Background()
	c.registerStation()
	leaves := c.escrowLeaves(0, 4)
	for _, leaf := range leaves[:2] {
		if _, err := c.appendAnywhere(ctx, 0, leaf); err != nil {
			t.Fatal(err)
		}
	}
	leader := c.waitLeader()
	follower := (leader + 1) % 3
	id := c.pki.StationID()
	at := uint64(time.Now().Add(-time.Hour).UnixMilli())
	revoke := func(i int, reason string) (*v1.RevokeStationResponse, error) {
		resp, err := c.admin(i).RevokeStation(ctx, connect.NewRequest(&v1.RevokeStationRequest{StationId: id[:], Reason: reason, RevokedAtMs: at}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	first, err := revoke(follower, "key extracted from station 7")
	if err != nil {
		t.Fatalf("revoke through a follower: %v", err)
	}
	want, err := (&ledger.StationRevocation{StationID: id, RevokedAtMs: at, Reason: "key extracted from station 7"}).MarshalLeaf()
	if err != nil {
		t.Fatal(err)
	}
	c.checkReceipt(first.Receipt, want)
	if first.Duplicate {
		t.Fatal("the first revocation reported a duplicate")
	}

	// The same revocation again is answered with the first; another one is
	// refused.
	again, err := revoke(leader, "key extracted from station 7")
	if err != nil || !again.Duplicate || again.Receipt.Index != first.Receipt.Index {
		t.Fatalf("the same revocation again: %v, %v; want a duplicate of index %d", again, err, first.Receipt.Index)
	}
	if _, err := revoke(leader, "another reason"); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("a second, different revocation: %v, want FailedPrecondition", err)
	}

	// Bad requests.
	unknown := [32]byte{1}
	for _, tc := range []struct {
		name string
		req  *v1.RevokeStationRequest
		code connect.Code
	}{
		{"an unregistered station", &v1.RevokeStationRequest{StationId: unknown[:]}, connect.CodeFailedPrecondition},
		{"a short station ID", &v1.RevokeStationRequest{StationId: id[:31]}, connect.CodeInvalidArgument},
		{"a reason with a newline", &v1.RevokeStationRequest{StationId: unknown[:], Reason: "a\nb"}, connect.CodeInvalidArgument},
		{"a time in the future", &v1.RevokeStationRequest{StationId: id[:], RevokedAtMs: uint64(time.Now().Add(time.Hour).UnixMilli())}, connect.CodeInvalidArgument},
	} {
		if _, err := c.admin(follower).RevokeStation(ctx, connect.NewRequest(tc.req)); connect.CodeOf(err) != tc.code {
			t.Errorf("revoke %s: %v, want %v", tc.name, err, tc.code)
		}
	}
	// A revocation leaf cannot come in through Append.
	other, _ := (&ledger.StationRevocation{StationID: id, RevokedAtMs: 1}).MarshalLeaf()
	if _, err := c.append(ctx, leader, other); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("Append of a revocation leaf: %v, want InvalidArgument", err)
	}

	// The station's new entries are refused by every node, also after a
	// restart (which replays the revocation from the store).
	for i := range 3 {
		if _, err := c.append(ctx, i, leaves[2]); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Fatalf("entry of a revoked station through n%d: %v, want FailedPrecondition", i, err)
		}
	}
	c.waitSameState(4)
	c.stop(leader)
	c.restart(leader)
	if _, err := c.appendAnywhere(ctx, leader, leaves[3]); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("entry of a revoked station after a restart: %v, want FailedPrecondition", err)
	}
	// An entry it made before the revocation, sent again (a client retrying
	// an append that committed), is answered with its index.
	resp, err := c.appendAnywhere(ctx, leader, leaves[0])
	if err != nil || !resp.Duplicate {
		t.Fatalf("an earlier entry of the revoked station sent again: %v (duplicate %v), want its index", err, resp.GetDuplicate())
	}
	// Its earlier entries stay, and so does the revocation.
	if got := payload(t, c.nodes[follower]); got != 4 {
		t.Fatalf("%d entries, want the registration, 2 escrow entries and the revocation", got)
	}
}

// TestARetriedRevocationIsTheFirstOne: "revoking the same way again
// returns the first revocation" (ledger.proto). An operator whose answer
// was lost sends the very same request again; with revoked_at_ms left at 0
// ("now", what `chipledger admin revoke` sends without --at) the retry is
// answered as a duplicate of the first revocation, not refused as a
// second one. Another reason is another revocation, and is refused.
func TestARetriedRevocationIsTheFirstOne(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	ctx := context.Background()
	c.registerStation()
	id := c.pki.StationID()
	req := &v1.RevokeStationRequest{StationId: id[:], Reason: "key extracted"}
	sent := time.Now().UnixMilli()
	first, err := c.admin(0).RevokeStation(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatalf("first revocation: %v", err)
	}
	// The retry comes at a later millisecond: "now" is another time.
	waitFor(t, "the clock to move on", 5*time.Second, func() bool { return time.Now().UnixMilli() > sent+1 })
	again, err := c.admin(0).RevokeStation(ctx, connect.NewRequest(req))
	if err != nil || !again.Msg.GetDuplicate() || again.Msg.GetReceipt().GetIndex() != first.Msg.GetReceipt().GetIndex() {
		t.Fatalf("the same RevokeStation request again: %v; want a duplicate of the revocation at index %d", err, first.Msg.GetReceipt().GetIndex())
	}
	other := &v1.RevokeStationRequest{StationId: id[:], Reason: "decommissioned"}
	if _, err := c.admin(0).RevokeStation(ctx, connect.NewRequest(other)); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("a revocation for another reason: %v, want FAILED_PRECONDITION (already revoked)", err)
	}
}

// TestARevocationDuringAStoreFaultIsUnavailable: while the ledger store
// cannot write, Append answers UNAVAILABLE at once; so does RevokeStation,
// the other write, rather than hold the call until the disk recovers.
func TestARevocationDuringAStoreFaultIsUnavailable(t *testing.T) {
	faults := &diskFaults{broken: map[string]bool{}}
	c := newConfiguredCluster(t, 1, nil, faults.configure)
	ctx := context.Background()
	c.registerStation()
	n := c.nodes[0]
	faults.set(n.ID(), true)
	defer faults.set(n.ID(), false) // let the node stop cleanly
	if _, err := c.append(ctx, 0, c.escrowLeaves(0, 1)[0]); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("append during the fault: %v, want UNAVAILABLE", err)
	}
	waitFor(t, "the node to notice its disk fault", 10*time.Second, func() bool { return n.fsm.storeFault() != nil })
	id := c.pki.StationID()
	cctx, cancel := context.WithTimeout(ctx, 2*maxWait)
	defer cancel()
	_, err := c.admin(0).RevokeStation(cctx, connect.NewRequest(&v1.RevokeStationRequest{StationId: id[:], Reason: "x"}))
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("RevokeStation during a store fault: %v, want UNAVAILABLE from the node", err)
	}
}
