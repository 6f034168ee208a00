package node

import (
	"bytes"
	"context"
	"errors"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/chipledger/chipledger/internal/testpki"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

func TestStationLimiterRefillsAtItsRate(t *testing.T) {
	l := newStationLimiter(2, 3) // 2 a second, bursts of 3
	now := time.Unix(1_800_000_000, 0)
	l.now = func() time.Time { return now }
	a, b := [32]byte{1}, [32]byte{2}
	for i := range 3 {
		if _, err := l.allow(a); err != nil {
			t.Fatalf("append %d of a burst of 3: %v", i+1, err)
		}
	}
	wait, err := l.allow(a)
	if !errors.Is(err, ErrStationRateLimited) || wait != 500*time.Millisecond {
		t.Fatalf("4th append: wait %v, %v; want 500ms and ErrStationRateLimited", wait, err)
	}
	if _, err := l.allow(b); err != nil {
		t.Fatalf("another station is limited too: %v", err)
	}
	now = now.Add(499 * time.Millisecond)
	if _, err := l.allow(a); err == nil {
		t.Fatal("a token before 500ms")
	}
	now = now.Add(time.Millisecond)
	if _, err := l.allow(a); err != nil {
		t.Fatalf("after 500ms: %v", err)
	}
	now = now.Add(time.Hour) // refills to the burst, not beyond
	for range 3 {
		if _, err := l.allow(a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.allow(a); err == nil {
		t.Fatal("the bucket grew beyond its burst")
	}
	if newStationLimiter(0, 5) != nil {
		t.Fatal("a rate of 0 should mean no limiter")
	}
}

func retryAfterMs(t *testing.T, err error) int {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%v is not a Connect error", err)
	}
	ms, perr := strconv.Atoi(ce.Meta().Get(retryAfterMsHeader))
	if perr != nil || ce.Meta().Get(retryAfterHeader) == "" {
		t.Fatalf("%v carries no retry hint (%v)", err, ce.Meta())
	}
	return ms
}

// TestStationRateLimitPushesBack checks the per-station limit end to end:
// a station over its rate is refused with a retry hint, and entries that
// only claim to be the station's do not spend its budget.
func TestStationRateLimitPushesBack(t *testing.T) {
	// One token every 100 s: the third append is refused however slow
	// the machine.
	c := newConfiguredCluster(t, 1, nil, func(cfg *Config) { cfg.StationRate, cfg.StationBurst = 0.01, 2 })
	ctx := context.Background()
	c.registerStation()
	leaves := c.escrowLeaves(0, 3)
	forged := bytes.Clone(leaves[2])
	forged[len(forged)-5] ^= 1 // breaks the station signature
	for range 5 {
		if _, err := c.append(ctx, 0, forged); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("a forged entry: %v, want InvalidArgument", err)
		}
	}
	start := time.Now()
	for _, leaf := range leaves[:2] {
		if _, err := c.append(ctx, 0, leaf); err != nil {
			t.Fatalf("within the burst: %v", err)
		}
	}
	_, err := c.append(ctx, 0, leaves[2])
	elapsed := time.Since(start)
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("over the rate: %v, want ResourceExhausted", err)
	}
	// The bucket was full at the first append: a token is due 100 s after
	// it, less what has passed since.
	if ms, low := retryAfterMs(t, err), 100_000-int(elapsed.Milliseconds())-1; ms < low || ms > 100_000 {
		t.Fatalf("retry hint %d ms, want %d to 100000 (one token at 0.01/s, %s after the burst began)", ms, low, elapsed)
	}
}

// TestAppendsInFlightArePushedBack fills a node's append slots with a
// request whose body never finishes and checks that the next append is
// refused at once with a retry hint, and accepted once the slot is free.
func TestAppendsInFlightArePushedBack(t *testing.T) {
	c := newConfiguredCluster(t, 1, nil, func(cfg *Config) { cfg.MaxAppendsInFlight = 1 })
	ctx := context.Background()
	c.registerStation()
	leaves := c.escrowLeaves(0, 2)

	body, err := proto.Marshal(&v1.AppendRequest{Leaf: leaves[0]})
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.cfgs[0].APIAddr+"/chipledger.v1.LedgerService/Append", pr)
	req.Header.Set("Content-Type", "application/proto")
	req.ContentLength = int64(len(body))
	slow := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		slow <- err
	}()
	pw.Write(body[:1]) // the handler now holds the only slot, reading the rest
	waitFor(t, "the slow append to hold the slot", 5*time.Second, func() bool { return len(c.nodes[0].appending) == 1 })

	_, err = c.append(ctx, 0, leaves[1])
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("append while the slot is held: %v, want ResourceExhausted", err)
	}
	if ms := retryAfterMs(t, err); ms != int(queueFullRetry/time.Millisecond) {
		t.Fatalf("retry hint %d ms, want %v", ms, queueFullRetry)
	}
	pw.Write(body[1:])
	pw.Close()
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slot to be free", 5*time.Second, func() bool { return len(c.nodes[0].appending) == 0 })
	if _, err := c.append(ctx, 0, leaves[1]); err != nil {
		t.Fatalf("append after the slot freed: %v", err)
	}
}

// TestAppendDuringALeadershipTransferWaitsForIt: while the leader hands
// over (here to a stopped follower, so the transfer runs until it times
// out), Raft refuses every proposal. An append then waits for the handover
// to end and commits; it is checked, and charged to its station's rate,
// once (a station allowed one append here), not once per refusal.
func TestAppendDuringALeadershipTransferWaitsForIt(t *testing.T) {
	c := newConfiguredCluster(t, 3, nil, func(cfg *Config) { cfg.StationRate, cfg.StationBurst = 0.01, 1 })
	ctx := context.Background()
	l := c.waitLeader()
	c.registerStation()
	target := (l + 1) % 3
	targetID := c.nodes[target].ID()
	targetAddr := c.nodes[target].RaftAddr()
	c.stop(target)
	leader := c.nodes[l]
	// An entry the stopped node lacks: the leader then tries to bring it
	// up to date before handing over, until the transfer times out.
	if err := leader.raft.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	transfer := make(chan error, 1)
	go func() {
		transfer <- leader.raft.LeadershipTransferToServer(raft.ServerID(targetID), raft.ServerAddress(targetAddr)).Error()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !errors.Is(leader.raft.Barrier(time.Second).Error(), raft.ErrLeadershipTransferInProgress) {
		if time.Now().After(deadline) {
			t.Fatal("the leader never reported the transfer under way")
		}
	}
	if _, err := c.append(ctx, l, c.escrowLeaves(0, 1)[0]); err != nil {
		t.Fatalf("append during the transfer: %v", err)
	}
	if err := <-transfer; err == nil {
		t.Fatal("the transfer to a stopped node succeeded")
	}
}

// TestARetryOfACommittedAppendIsADuplicateEvenAtTheRateLimit: a station's
// append commits but its answer is lost; the retry of the very same leaf
// must be answered as a duplicate (retries are safe, DESIGN §3.2), not
// refused for the rate the first attempt paid already.
func TestARetryOfACommittedAppendIsADuplicateEvenAtTheRateLimit(t *testing.T) {
	c := newConfiguredCluster(t, 1, nil, func(cfg *Config) { cfg.StationRate, cfg.StationBurst = 0.01, 1 })
	ctx := context.Background()
	c.registerStation()
	leaves := c.escrowLeaves(0, 2)
	if _, err := c.append(ctx, 0, leaves[0]); err != nil {
		t.Fatal(err)
	}
	resp, err := c.append(ctx, 0, leaves[0])
	if err != nil || !resp.GetDuplicate() {
		t.Fatalf("retry of a committed append: %v (code %v), want a duplicate answer", err, connect.CodeOf(err))
	}
	if _, err := c.append(ctx, 0, leaves[1]); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("a new append over the rate: %v, want RESOURCE_EXHAUSTED", err)
	}
	// Only the very leaf that is logged is exempt: another entry for the
	// same chip and epoch is a new append, and pays.
	twin, err := c.pki.EscrowLeaf(testpki.ChipID(0), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.append(ctx, 0, twin); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("another leaf for a logged chip and epoch over the rate: %v, want RESOURCE_EXHAUSTED", err)
	}
}

// TestPushbackThroughAFollowerKeepsItsRetryHint: a station over its rate
// appending through a follower must get the leader's retry hint, or the
// SDK (which retries RESOURCE_EXHAUSTED only with a hint) gives up at once.
// Connect does not send on the headers of an error from another server.
func TestPushbackThroughAFollowerKeepsItsRetryHint(t *testing.T) {
	c := newConfiguredCluster(t, 3, nil, func(cfg *Config) { cfg.StationRate, cfg.StationBurst = 0.01, 1 })
	ctx := context.Background()
	c.registerStation()
	l := c.waitLeader()
	f := (l + 1) % 3
	leaves := c.escrowLeaves(0, 2)
	if _, err := c.append(ctx, f, leaves[0]); err != nil {
		t.Fatal(err)
	}
	// The SDK speaks the Connect protocol; the test client gRPC.
	for _, api := range []interface {
		Append(context.Context, *connect.Request[v1.AppendRequest]) (*connect.Response[v1.AppendResponse], error)
	}{chipledgerv1connect.NewLedgerServiceClient(c.http, "http://"+c.cfgs[f].APIAddr), c.client(f)} {
		_, err := api.Append(ctx, connect.NewRequest(&v1.AppendRequest{Leaf: leaves[1]}))
		if connect.CodeOf(err) != connect.CodeResourceExhausted {
			t.Fatalf("over the rate through a follower: %v, want RESOURCE_EXHAUSTED", err)
		}
		retryAfterMs(t, err)
		// And who leads, so the station's retry goes there directly.
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Meta().Get(leaderHeader) != c.cfgs[l].APIAddr {
			t.Errorf("the follower's error names leader %q, want %s", ce.Meta().Get(leaderHeader), c.cfgs[l].APIAddr)
		}
	}
}
