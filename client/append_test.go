package client_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/internal/testpki"
)

// TestAppendThroughFollowerFirstLandsWithVerifiedReceipt gives the client
// every address with followers first: appends land, their receipts verify
// offline, and an exact retry is a duplicate at the same index.
func TestAppendThroughFollowerFirstLandsWithVerifiedReceipt(t *testing.T) {
	l := startLog(t, 3, nil)
	leader := l.leader()
	var addrs []string
	for i, n := range l.cluster.Nodes {
		if i != leader {
			if n.IsLeader() {
				t.Fatal("two leaders")
			}
			addrs = append(addrs, n.APIAddr())
		}
	}
	addrs = append(addrs, l.cluster.Nodes[leader].APIAddr())
	c := l.client(addrs...)
	l.registerStation(c)

	leaf := l.escrowLeaf(1, 1)
	res, err := c.Append(context.Background(), leaf)
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicate {
		t.Error("first append reported as a duplicate")
	}
	if !bytes.Equal(res.Receipt.Leaf, leaf) {
		t.Error("receipt holds another leaf")
	}
	cp, err := res.Receipt.Verify(l.verifier)
	if err != nil {
		t.Fatalf("receipt does not verify offline: %v", err)
	}
	if cp != res.Checkpoint || cp.Size <= res.Receipt.Index {
		t.Errorf("result checkpoint %+v, receipt's %+v, index %d", res.Checkpoint, cp, res.Receipt.Index)
	}
	if trusted, _ := c.Trusted(); trusted.Size < cp.Size {
		t.Errorf("trusted size %d below the receipt's %d", trusted.Size, cp.Size)
	}

	again, err := c.Append(context.Background(), leaf)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Receipt.Index != res.Receipt.Index {
		t.Errorf("retry: duplicate %v at %d, want true at %d", again.Duplicate, again.Receipt.Index, res.Receipt.Index)
	}
}

// TestAppendsSurviveLeaderStop stops the leader while appends run: every
// append still succeeds through retries, and afterwards each chip has
// exactly its acknowledged entry, once in the log.
func TestAppendsSurviveLeaderStop(t *testing.T) {
	l := startLog(t, 3, nil)
	c := l.client()
	l.registerStation(c)
	leader := l.leader()

	const chips, workers = 40, 4
	leaves := make([][]byte, chips)
	for i := range leaves {
		leaves[i] = l.escrowLeaf(uint64(100+i), 1)
	}
	acked := make([]uint64, chips)
	var done sync.WaitGroup
	var next, ok int
	var mu sync.Mutex
	stopped := make(chan struct{})
	// Canceled if the test gives up, so that the workers end before it.
	wctx, abort := context.WithCancel(context.Background())
	defer abort()
	for range workers {
		done.Go(func() {
			for wctx.Err() == nil {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= chips {
					return
				}
				ctx, cancel := context.WithTimeout(wctx, 30*time.Second)
				res, err := c.Append(ctx, leaves[i])
				cancel()
				if err != nil {
					t.Errorf("append %d: %v", i, err)
					continue
				}
				acked[i] = res.Receipt.Index
				mu.Lock()
				ok++
				if ok == 10 {
					close(stopped)
				}
				mu.Unlock()
			}
		})
	}
	finished := make(chan struct{})
	go func() { done.Wait(); close(finished) }()
	deadline := time.After(3 * time.Minute)
	giveUp := func(why string) {
		t.Helper()
		abort()
		<-finished
		t.Fatal(why)
	}
	select {
	case <-stopped:
	case <-finished:
		t.Fatal("the appends ended before ten succeeded")
	case <-deadline:
		giveUp("ten appends did not succeed in time")
	}
	if err := l.cluster.Nodes[leader].Close(); err != nil {
		t.Logf("stop leader: %v", err)
	}
	select {
	case <-finished:
	case <-deadline:
		giveUp("the appends did not end in time")
	}
	if t.Failed() {
		t.FailNow()
	}
	if l.leader() == leader {
		t.Fatal("the stopped node still leads")
	}

	seen := make(map[uint64]int)
	for i := range leaves {
		h, err := c.LookupChip(context.Background(), testpki.ChipID(uint64(100+i)))
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Entries) != 1 {
			t.Fatalf("chip of append %d has %d entries, want 1", i, len(h.Entries))
		}
		e := h.Entries[0]
		if e.Receipt.Index != acked[i] || !bytes.Equal(e.Receipt.Leaf, leaves[i]) {
			t.Fatalf("chip of append %d: entry at %d, acknowledged at %d", i, e.Receipt.Index, acked[i])
		}
		seen[acked[i]]++
	}
	if len(seen) != chips {
		t.Fatalf("%d distinct indices for %d appends", len(seen), chips)
	}

	// Replay the whole log, verified: every leaf is in it exactly once.
	cp, _, err := c.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	all, err := c.Entries(context.Background(), 0, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	for i, leaf := range leaves {
		n := 0
		for _, got := range all {
			if bytes.Equal(got, leaf) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("leaf of append %d is in the log %d times", i, n)
		}
	}
}

// TestRejectedAppendsFailAtOnceWithTheNodesCode checks that the node's
// verdict on a leaf reaches the caller unretried, with its code and the
// node's address.
func TestRejectedAppendsFailAtOnceWithTheNodesCode(t *testing.T) {
	l := startLog(t, 1, nil)
	p, addr := startProxy(t, l.cluster.Addrs()[0])
	c := l.client(addr)
	ctx := context.Background()

	check := func(what string, leaf []byte, want connect.Code) {
		t.Helper()
		before := p.count("Append")
		_, err := c.Append(ctx, leaf)
		if got := connect.CodeOf(err); err == nil || got != want {
			t.Fatalf("%s: error %v (code %v), want code %v", what, err, got, want)
		}
		var ne *client.NodeError
		if !errors.As(err, &ne) || ne.Node != addr {
			t.Errorf("%s: error %v does not name node %s", what, err, addr)
		}
		if n := p.count("Append") - before; n != 1 {
			t.Errorf("%s: %d requests, want 1", what, n)
		}
	}
	check("escrow before its station registered", l.escrowLeaf(1, 1), connect.CodeFailedPrecondition)
	check("malformed leaf", []byte{0, 1, 2}, connect.CodeInvalidArgument)
	l.registerStation(c)
	l.appendEscrow(c, 1)
	check("another leaf for a used epoch", l.escrowLeaf(1, 1), connect.CodeAlreadyExists)
	check("an epoch gap", l.escrowLeaf(1, 3), connect.CodeFailedPrecondition)

	if _, err := c.Append(ctx, nil); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("empty leaf: %v", err)
	}
}

// TestConcurrentAppendsShareOneTrustedHistory appends from many goroutines,
// so receipts arrive against checkpoints older and newer than the trusted
// one: every receipt's checkpoint ends up proven a prefix of the final
// trusted checkpoint.
func TestConcurrentAppendsShareOneTrustedHistory(t *testing.T) {
	l := startLog(t, 1, nil)
	c := l.client()
	l.registerStation(c)
	const n = 32
	leaves := make([][]byte, n)
	for i := range leaves {
		leaves[i] = l.escrowLeaf(uint64(i), 1)
	}
	results := make([]*client.AppendResult, n)
	var wg sync.WaitGroup
	for i := range leaves {
		wg.Go(func() {
			res, err := c.Append(context.Background(), leaves[i])
			if err != nil {
				t.Errorf("append %d: %v", i, err)
			}
			results[i] = res
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	trusted, _ := c.Trusted()
	for i, res := range results {
		if res.Checkpoint.Size > trusted.Size {
			t.Fatalf("append %d: checkpoint of %d leaves beyond the trusted %d", i, res.Checkpoint.Size, trusted.Size)
		}
		cons, err := c.ConsistencyProof(context.Background(), res.Receipt.Checkpoint)
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if cons.From != res.Checkpoint {
			t.Fatalf("append %d: proof from %+v", i, cons.From)
		}
	}
}
