package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/proofs"
)

// watch runs c.WatchCheckpoints until the test's end and sends what fn sees
// on the returned channel; the watch's result arrives on the other.
func watch(t *testing.T, c *client.Client) (<-chan proofs.Checkpoint, <-chan error, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	seen := make(chan proofs.Checkpoint, 100)
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- c.WatchCheckpoints(ctx, func(cp proofs.Checkpoint, _ []byte) error {
			select { // unread checkpoints must not keep the watch from returning
			case seen <- cp:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-finished })
	return seen, done, cancel
}

// awaitSize reads checkpoints from seen, in strictly increasing size,
// until one has at least size leaves.
func awaitSize(t *testing.T, seen <-chan proofs.Checkpoint, last *uint64, size uint64) {
	t.Helper()
	for *last < size {
		select {
		case cp := <-seen:
			if cp.Size <= *last {
				t.Fatalf("watch delivered size %d after %d", cp.Size, *last)
			}
			*last = cp.Size
		case <-time.After(10 * time.Second):
			t.Fatalf("watch did not reach size %d (at %d)", size, *last)
		}
	}
}

func TestWatchCheckpointsDeliversVerifiedGrowthUntilCanceled(t *testing.T) {
	l := startLog(t, 1, nil)
	writer := l.client()
	l.registerStation(writer)
	c := l.client()
	seen, done, cancel := watch(t, c)
	var last uint64
	for n := range uint64(3) {
		res := l.appendEscrow(writer, n)
		awaitSize(t, seen, &last, res.Checkpoint.Size)
	}
	if cp, _ := c.Trusted(); cp.Size != last {
		t.Errorf("trusted size %d, last delivered %d", cp.Size, last)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("watch ended with %v, want context.Canceled", err)
	}
}

func TestWatchReconnectsToTheNextNodeWhenAStreamEnds(t *testing.T) {
	l := startLog(t, 1, nil)
	writer := l.client()
	l.registerStation(writer)
	p, addr := startProxy(t, l.cluster.Addrs()[0])
	p.streamMax = 1
	c := l.client(addr, l.cluster.Addrs()[0])
	seen, _, _ := watch(t, c)
	var last uint64
	for n := range uint64(4) {
		res := l.appendEscrow(writer, n)
		awaitSize(t, seen, &last, res.Checkpoint.Size)
	}
	if p.count("WatchCheckpoints") < 1 {
		t.Error("the watch never used the first node")
	}
}

func TestWatchEndsWithTheCallbacksError(t *testing.T) {
	l := startLog(t, 1, nil)
	l.registerStation(l.client())
	c := l.client() // trusts nothing yet: the node's current checkpoint is new to it
	stop := errors.New("enough")
	err := c.WatchCheckpoints(context.Background(), func(proofs.Checkpoint, []byte) error { return stop })
	if err != stop {
		t.Fatalf("got %v, want the callback's error", err)
	}
}

func TestCloseEndsAWatchInFlightWithErrClosed(t *testing.T) {
	l := startLog(t, 1, nil)
	l.registerStation(l.client())
	c := l.client() // trusts nothing yet: the node's current checkpoint is new to it
	seen, done, _ := watch(t, c)
	// The first checkpoint proves the stream open and the watch in flight;
	// nothing new comes after it.
	select {
	case <-seen:
	case err := <-done:
		t.Fatalf("watch ended with %v before its first checkpoint", err)
	case <-time.After(10 * time.Second):
		t.Fatal("watch saw no checkpoint")
	}
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, client.ErrClosed) {
			t.Fatalf("watch ended with %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the watch")
	}
}
