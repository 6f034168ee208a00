package client_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/client"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// unavailableNode answers every append UNAVAILABLE, naming leader (if set)
// in the Chipledger-Leader header as a follower without a reachable leader
// does.
type unavailableNode struct {
	chipledgerv1connect.UnimplementedLedgerServiceHandler
	leader  string
	appends atomic.Int64
}

func (n *unavailableNode) Append(context.Context, *connect.Request[v1.AppendRequest]) (*connect.Response[v1.AppendResponse], error) {
	n.appends.Add(1)
	err := connect.NewError(connect.CodeUnavailable, errors.New("no leader here"))
	if n.leader != "" {
		err.Meta().Set("Chipledger-Leader", n.leader)
	}
	return nil, err
}

func TestUnavailableWithLeaderHintGoesToTheLeaderInOneRequest(t *testing.T) {
	l := startLog(t, 1, nil)
	leader, leaderAddr := startProxy(t, l.cluster.Addrs()[0])
	follower := &unavailableNode{leader: leaderAddr}
	c := l.client(serve(t, follower))
	l.registerStation(c)

	if got, want := follower.appends.Load(), int64(1); got != want {
		t.Errorf("the follower got %d appends, want %d", got, want)
	}
	if got := leader.count("Append"); got != 1 {
		t.Errorf("the leader got %d appends, want 1", got)
	}
	// The client now sends appends to the leader directly.
	l.appendEscrow(c, 1)
	if got := follower.appends.Load(); got != 1 {
		t.Errorf("the follower got %d appends after the leader was known, want 1", got)
	}
	if got := leader.count("Append"); got != 2 {
		t.Errorf("the leader got %d appends, want 2", got)
	}
}

// TestLeaderNamedInAnAnswerGetsTheNextAppends has a node that forwards
// appends name the leader in its answer: the client sends later appends
// there.
func TestLeaderNamedInAnAnswerGetsTheNextAppends(t *testing.T) {
	l := startLog(t, 1, nil)
	leader, leaderAddr := startProxy(t, l.cluster.Addrs()[0])
	follower, followerAddr := startProxy(t, l.cluster.Addrs()[0])
	follower.leader = leaderAddr
	c := l.client(followerAddr)
	l.registerStation(c)
	l.appendEscrow(c, 1)
	if f, l := follower.count("Append"), leader.count("Append"); f != 1 || l != 1 {
		t.Errorf("appends: %d to the follower, %d to the leader; want 1 and 1", f, l)
	}
}

func TestUnavailableWithoutHintMovesToTheNextNode(t *testing.T) {
	l := startLog(t, 1, nil)
	down := &unavailableNode{}
	c := l.client(serve(t, down), l.cluster.Addrs()[0])
	l.registerStation(c)
	l.appendEscrow(c, 1)
	if got := down.appends.Load(); got != 1 {
		t.Errorf("the unavailable node got %d appends, want 1", got)
	}
}

func TestRetriesStopAtMaxAttemptsWithTheLastError(t *testing.T) {
	down := &unavailableNode{}
	addr := serve(t, down)
	c, err := client.New(client.Options{
		Addrs: []string{addr}, LogKey: newSigner(t).VerifierKey(),
		Retry: client.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Append(context.Background(), []byte{0, 1, 0})
	var ne *client.NodeError
	if connect.CodeOf(err) != connect.CodeUnavailable || !errors.As(err, &ne) || ne.Node != addr {
		t.Fatalf("got %v, want UNAVAILABLE from %s", err, addr)
	}
	if got := down.appends.Load(); got != 3 {
		t.Errorf("%d attempts, want 3", got)
	}
}

func TestCanceledContextEndsRetries(t *testing.T) {
	down := &unavailableNode{}
	c, err := client.New(client.Options{
		Addrs: []string{serve(t, down)}, LogKey: newSigner(t).VerifierKey(),
		Retry: client.RetryPolicy{InitialBackoff: time.Hour, MaxElapsed: 2 * time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Append(ctx, []byte{0, 1, 0})
	if !errors.Is(err, context.DeadlineExceeded) || connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("got %v, want the deadline and the node's last error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the call outlived its context by %s", d)
	}
}

func TestClosedClientFailsCalls(t *testing.T) {
	c, err := client.New(client.Options{Addrs: []string{serve(t, &unavailableNode{})}, LogKey: newSigner(t).VerifierKey()})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := c.Append(context.Background(), []byte{0, 1, 0}); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	key := newSigner(t).VerifierKey()
	other := newSigner(t)
	forged, err := other.Sign(1, [32]byte{})
	if err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]client.Options{
		"no addresses":              {LogKey: key},
		"no key":                    {Addrs: []string{"127.0.0.1:1"}},
		"malformed key":             {Addrs: []string{"127.0.0.1:1"}, LogKey: "nope"},
		"bad address":               {Addrs: []string{"ftp://x"}, LogKey: key},
		"port out of range":         {Addrs: []string{"127.0.0.1:80800"}, LogKey: key},
		"port zero":                 {Addrs: []string{"https://127.0.0.1:0"}, LogKey: key},
		"trusted under another key": {Addrs: []string{"127.0.0.1:1"}, LogKey: key, Trusted: forged},
	} {
		if _, err := client.New(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	_, err = client.New(client.Options{Addrs: []string{"127.0.0.1:1"}, LogKey: key, Trusted: forged})
	if !errors.Is(err, client.ErrBadSignature) {
		t.Errorf("trusted checkpoint under another key: %v, want ErrBadSignature", err)
	}
}

// TestConnectionResetMovesToTheNextNode plays a node killed mid-request: it
// resets every connection once the request arrives.
func TestConnectionResetMovesToTheNextNode(t *testing.T) {
	l := startLog(t, 1, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var resets atomic.Int64
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Read(make([]byte, 512))
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
			resets.Add(1)
		}
	}()
	c := l.client(ln.Addr().String(), l.cluster.Addrs()[0])
	l.registerStation(c)
	l.appendEscrow(c, 1)
	if resets.Load() == 0 {
		t.Error("the resetting node was never tried")
	}
}

// busyNode refuses every append RESOURCE_EXHAUSTED, with a retry hint if
// retryAfterMs is set, as a node pushing back does.
type busyNode struct {
	chipledgerv1connect.UnimplementedLedgerServiceHandler
	retryAfterMs string
	appends      atomic.Int64
}

func (n *busyNode) Append(context.Context, *connect.Request[v1.AppendRequest]) (*connect.Response[v1.AppendResponse], error) {
	n.appends.Add(1)
	err := connect.NewError(connect.CodeResourceExhausted, errors.New("too many appends in flight"))
	if n.retryAfterMs != "" {
		err.Meta().Set("Retry-After-Ms", n.retryAfterMs)
	}
	return nil, err
}

// TestPushbackIsRetriedOnlyWithAHint checks that RESOURCE_EXHAUSTED with
// Retry-After-Ms is retried and waits at least the hint each time, while
// one without (a request that is too large) fails at once.
func TestPushbackIsRetriedOnlyWithAHint(t *testing.T) {
	for _, tc := range []struct {
		hint         string
		wantAttempts int64
	}{{"20", 3}, {"", 1}} {
		busy := &busyNode{retryAfterMs: tc.hint}
		c, err := client.New(client.Options{
			Addrs: []string{serve(t, busy)}, LogKey: newSigner(t).VerifierKey(),
			Retry: client.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Microsecond, MaxBackoff: time.Microsecond},
		})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = c.Append(context.Background(), []byte{0, 1, 0})
		took := time.Since(start)
		c.Close()
		if connect.CodeOf(err) != connect.CodeResourceExhausted {
			t.Fatalf("hint %q: %v, want RESOURCE_EXHAUSTED", tc.hint, err)
		}
		if got := busy.appends.Load(); got != tc.wantAttempts {
			t.Errorf("hint %q: %d attempts, want %d", tc.hint, got, tc.wantAttempts)
		}
		// Two pauses of at least the 20 ms hint: a lower bound, which
		// a slow machine cannot break.
		if tc.hint != "" && took < 40*time.Millisecond {
			t.Errorf("hint %q: retried within %v, sooner than the hint allows", tc.hint, took)
		}
	}
}
