package client

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// WatchCheckpoints calls fn with each new checkpoint the nodes stream, in
// increasing size, starting after the client's trusted checkpoint. Each is
// verified and proven consistent with the trusted one, and becomes trusted,
// before fn sees it. A node streams its latest checkpoint when it changes,
// so the log may have signed other sizes in between.
//
// It runs until ctx ends (returning ctx's error, or ErrClosed if the client
// closes), fn returns an error (returned as it is), or a checkpoint fails
// verification (ErrBadSignature, *ForkError, ErrRollback). When a stream
// breaks it reconnects, to the next node, with backoff and no limit on
// attempts; a node's answer that retrying cannot fix ends the watch.
func (c *Client) WatchCheckpoints(ctx context.Context, fn func(cp proofs.Checkpoint, signed []byte) error) error {
	ctx, release, err := c.scope(ctx)
	if err != nil {
		return err
	}
	defer release()
	after := c.trust.latest().cp.Size
	failures := 0
	for {
		ep := c.target(toAny)
		progressed, err := c.watchOnce(ctx, ep, &after, fn)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		var cbErr callbackError
		if errors.As(err, &cbErr) {
			return cbErr.err
		}
		if err != nil && !retryable(err) {
			return nodeError("watch checkpoints", ep, err)
		}
		next := c.failed(toAny, ep, "")
		if progressed {
			failures = 0
		}
		failures++
		delay := c.backoff(failures)
		c.log.Debug("reconnecting checkpoint watch", "node", ep.addr, "next", next.addr, "delay", delay, "err", err)
		if sleep(ctx, delay) != nil {
			return context.Cause(ctx)
		}
	}
}

// callbackError carries an error of WatchCheckpoints' fn.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// watchOnce streams checkpoints from ep until the stream ends, and reports
// whether fn saw any.
func (c *Client) watchOnce(ctx context.Context, ep *endpoint, after *uint64, fn func(proofs.Checkpoint, []byte) error) (progressed bool, err error) {
	stream, err := ep.api.WatchCheckpoints(ctx, connect.NewRequest(&v1.WatchCheckpointsRequest{AfterSize: *after}))
	if err != nil {
		return false, err
	}
	defer stream.Close()
	for stream.Receive() {
		signed := stream.Msg().GetCheckpoint()
		actx, cancel := context.WithTimeout(ctx, c.retry.AttemptTimeout)
		cp, err := c.accept(actx, ep, signed)
		cancel()
		if err != nil {
			return progressed, err
		}
		if cp.Size <= *after {
			continue // fn sees each size once
		}
		if err := fn(cp, clone(signed)); err != nil {
			return progressed, callbackError{err}
		}
		*after, progressed = cp.Size, true
	}
	return progressed, stream.Err()
}
