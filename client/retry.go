package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"time"

	"connectrpc.com/connect"
)

// A route says which node a call starts at and how it moves on.
type route int

const (
	// toLeader sends to the node that last acted as leader and follows
	// leader hints.
	toLeader route = iota
	// toAny sends to the node that last answered a read; any node can.
	toAny
)

// do runs attempt against one node after another until it succeeds, fails
// with an error retrying cannot fix, or the retry policy gives up. op names
// the call in errors and logs.
func (c *Client) do(ctx context.Context, op string, r route, attempt func(context.Context, *endpoint) error) error {
	ctx, release, err := c.scope(ctx)
	if err != nil {
		return err
	}
	defer release()
	start := time.Now()
	followedHint := false
	for n := 1; ; n++ {
		ep := c.target(r)
		actx, cancel := context.WithTimeout(ctx, c.retry.AttemptTimeout)
		err := attempt(actx, ep)
		cancel()
		if err == nil {
			c.answered(r, ep)
			return nil
		}
		if ctx.Err() != nil {
			return c.interrupted(ctx, op, ep, err)
		}
		if !retryable(err) {
			if isVerificationError(err) {
				c.log.Warn("node answer failed verification", "op", op, "node", ep.addr, "err", err)
			}
			return nodeError(op, ep, err)
		}
		hint := leaderHint(err)
		next := c.failed(r, ep, hint)
		if n >= c.retry.MaxAttempts {
			return nodeError(op, ep, fmt.Errorf("giving up after %d attempts: %w", n, err))
		}
		// Going straight to a leader a node named costs no pause, once
		// per call: nodes that name each other in turn back off.
		delay := c.backoff(n)
		if hint != "" && next != ep && !followedHint {
			delay, followedHint = 0, true
		}
		if after := retryAfter(err); after > 0 {
			// A node pushing back says when to come back; a little
			// jitter keeps the clients it refused together from
			// returning together.
			delay = after + rand.N(after/4+1)
		}
		if time.Since(start)+delay > c.retry.MaxElapsed {
			return nodeError(op, ep, fmt.Errorf("giving up after %d attempts in %s: %w", n, time.Since(start).Round(time.Millisecond), err))
		}
		c.log.Debug("retrying", "op", op, "node", ep.addr, "next", next.addr, "attempt", n, "delay", delay, "err", err)
		if sleep(ctx, delay) != nil {
			return c.interrupted(ctx, op, ep, err)
		}
	}
}

// interrupted is the error of a call whose context ended: it wraps the
// context's cause (ErrClosed if the client closed) and the last error.
func (c *Client) interrupted(ctx context.Context, op string, ep *endpoint, last error) error {
	cause := context.Cause(ctx)
	if errors.Is(last, cause) {
		return nodeError(op, ep, last)
	}
	return nodeError(op, ep, fmt.Errorf("%w (last error: %w)", cause, last))
}

// nodeError wraps err with the node and the call, unless err names the
// node itself.
func nodeError(op string, ep *endpoint, err error) error {
	var fe *ForkError
	var pe *ProofError
	if errors.As(err, &fe) || errors.As(err, &pe) {
		return err
	}
	return &NodeError{Op: op, Node: ep.addr, Err: err}
}

// retryable reports whether another attempt, perhaps at another node, may
// succeed where err failed. The caller checks its context first: CANCELED
// and UNKNOWN are transport failures (a reset connection) only while it is
// alive.
func retryable(err error) bool {
	if isVerificationError(err) {
		return false
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		var ne net.Error
		return errors.As(err, &ne)
	}
	switch ce.Code() {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded,
		connect.CodeAborted, connect.CodeUnknown, connect.CodeCanceled:
		return true
	case connect.CodeResourceExhausted:
		// Load pushback says when to retry; a request that is too large
		// is refused the same way every time.
		return retryAfter(err) > 0
	}
	return false
}

// retryAfterMsHeader and retryAfterHeader carry a node's pushback: when to
// retry a call it refused for load.
const (
	retryAfterMsHeader = "Retry-After-Ms"
	retryAfterHeader   = "Retry-After"
	maxRetryAfter      = 10 * time.Second
)

// retryAfter returns the pause a RESOURCE_EXHAUSTED error asks for
// (at most maxRetryAfter), or 0.
func retryAfter(err error) time.Duration {
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
		return 0
	}
	if ms, perr := strconv.ParseUint(ce.Meta().Get(retryAfterMsHeader), 10, 32); perr == nil && ms > 0 {
		return min(time.Duration(ms)*time.Millisecond, maxRetryAfter)
	}
	if s, perr := strconv.ParseUint(ce.Meta().Get(retryAfterHeader), 10, 32); perr == nil && s > 0 {
		return min(time.Duration(s)*time.Second, maxRetryAfter)
	}
	return 0
}

// leaderHint returns the leader address an UNAVAILABLE error names, if any.
func leaderHint(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) && ce.Code() == connect.CodeUnavailable {
		return ce.Meta().Get(leaderHeader)
	}
	return ""
}

// target returns the node the next attempt of a call on route r goes to.
func (c *Client) target(r route) *endpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r == toLeader {
		return c.leader
	}
	return c.reader
}

// answered records that ep answered a call on route r.
func (c *Client) answered(r route, ep *endpoint) {
	if r == toAny {
		c.mu.Lock()
		c.reader = ep
		c.mu.Unlock()
	}
}

// actedAsLeader records that ep accepted an append, and the leader it named
// in its answer, if any.
func (c *Client) actedAsLeader(ep *endpoint, hint string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if hint != "" {
		ep = c.hintedLocked(hint, ep)
	}
	c.leader = ep
}

// failed records that ep failed a call on route r, moves the route on (to
// the hinted leader, if any, else to the next configured node) unless a
// concurrent call already did, and returns where the next attempt goes.
func (c *Client) failed(r route, ep *endpoint, hint string) *endpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := &c.reader
	if r == toLeader {
		cur = &c.leader
	}
	switch {
	case r == toLeader && hint != "":
		*cur = c.hintedLocked(hint, ep)
	case *cur == ep:
		*cur = c.nodes[(slices.Index(c.nodes, ep)+1)%len(c.nodes)]
	}
	return *cur
}

// hintedLocked returns the endpoint for a leader hint ("host:port") from
// node from: a configured node with that address, or one made for it with
// from's scheme. c.mu is held.
func (c *Client) hintedLocked(hint string, from *endpoint) *endpoint {
	for _, ep := range c.nodes {
		if ep.host == hint {
			return ep
		}
	}
	if ep, ok := c.hinted[hint]; ok {
		return ep
	}
	ep, err := c.newEndpoint(from.scheme + "://" + hint)
	if err != nil {
		c.log.Warn("ignoring an unusable leader hint", "node", from.addr, "hint", hint, "err", err)
		return from
	}
	ep.addr = hint
	if len(c.hinted) < maxHintedNodes {
		c.hinted[hint] = ep
	}
	return ep
}

// backoff returns the pause before attempt n+1: doubling from
// InitialBackoff, at most MaxBackoff, with a random half.
func (c *Client) backoff(n int) time.Duration {
	d := c.retry.InitialBackoff
	for i := 1; i < n && d < c.retry.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.retry.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
