package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/proofs"
)

// maxKnown bounds the checkpoints the client remembers as proven prefixes
// of its trusted one, so that answers against them need no new proof.
const maxKnown = 1024

// trust is what the client believes about the log: the largest checkpoint
// it has accepted (top), and smaller ones proven to be prefixes of it. Every
// checkpoint in known is a prefix of top, because top only moves to a
// checkpoint proven to extend it.
type trust struct {
	// advancing is held by the one call that proves a checkpoint larger
	// than top; a 1-slot channel so the wait can end with a context.
	advancing chan struct{}

	mu    sync.Mutex
	top   known
	known map[uint64]known // by size; holds top
}

// A known checkpoint is verified, with the signed note it came in.
type known struct {
	cp     proofs.Checkpoint
	signed []byte
}

func newTrust() *trust {
	return &trust{advancing: make(chan struct{}, 1), known: make(map[uint64]known)}
}

// start trusts cp, which must be verified, as the first checkpoint.
func (t *trust) start(cp proofs.Checkpoint, signed []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.startLocked(cp, signed)
}

func (t *trust) startLocked(cp proofs.Checkpoint, signed []byte) {
	t.top = known{cp, signed}
	t.known[cp.Size] = t.top
}

func (t *trust) latest() known {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.top
}

// settle decides cp without a proof when it can: it is trusted if the client
// trusts nothing yet; it is fine if a known checkpoint has its size and
// root; it is a fork if one has its size and another root. Otherwise it
// returns the trusted checkpoint and settled false.
func (t *trust) settle(cp proofs.Checkpoint, signed []byte, node string) (top known, settled bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.top.signed == nil {
		t.startLocked(cp, signed)
		return t.top, true, nil
	}
	if k, ok := t.known[cp.Size]; ok {
		if k.cp.Hash != cp.Hash {
			return t.top, true, &ForkError{Old: k.signed, New: signed, Node: node}
		}
		return t.top, true, nil
	}
	return t.top, false, nil
}

// remember records cp as a proven prefix of the trusted checkpoint.
func (t *trust) remember(cp proofs.Checkpoint, signed []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addLocked(known{cp, signed})
}

// raise makes cp, proven to extend the trusted checkpoint, trusted. The
// caller holds advancing.
func (t *trust) raise(cp proofs.Checkpoint, signed []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.top = known{cp, signed}
	t.addLocked(t.top)
}

func (t *trust) addLocked(k known) {
	t.known[k.cp.Size] = k
	if len(t.known) <= maxKnown {
		return
	}
	smallest := t.top.cp.Size
	for size := range t.known {
		smallest = min(smallest, size)
	}
	delete(t.known, smallest)
}

func (t *trust) lock(ctx context.Context) error {
	select {
	case t.advancing <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *trust) unlock() { <-t.advancing }

// verifyCheckpoint checks a signed checkpoint against the pinned key: its
// signature, format and origin.
func (c *Client) verifyCheckpoint(signed []byte) (proofs.Checkpoint, error) {
	cp, err := c.verifier.VerifyCheckpoint(signed)
	if err != nil {
		return proofs.Checkpoint{}, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	return cp, nil
}

// accept verifies a signed checkpoint that ep served and relates it to the
// trusted one (see relate).
func (c *Client) accept(ctx context.Context, ep *endpoint, signed []byte) (proofs.Checkpoint, error) {
	cp, err := c.verifyCheckpoint(signed)
	if err != nil {
		return proofs.Checkpoint{}, err
	}
	if err := c.relate(ctx, ep, cp, signed); err != nil {
		return proofs.Checkpoint{}, err
	}
	return cp, nil
}

// relate proves that cp, verified and served by ep, and the trusted
// checkpoint extend one another, with consistency proofs from ep. A larger
// cp becomes trusted; a smaller one is remembered as a proven prefix. It
// fails with a *ForkError if a proof fails, and with ErrRollback if ep
// cannot show the larger tree of the two.
func (c *Client) relate(ctx context.Context, ep *endpoint, cp proofs.Checkpoint, signed []byte) error {
	for {
		top, settled, err := c.trust.settle(cp, signed, ep.addr)
		if settled {
			return err
		}
		if cp.Size < top.cp.Size {
			// Proving against this top is enough even if trust moves
			// on meanwhile: the new top extends it.
			return c.provePrefix(ctx, ep, cp, signed, top)
		}
		if err := c.trust.lock(ctx); err != nil {
			return err
		}
		if c.trust.latest().cp != top.cp {
			c.trust.unlock()
			continue // another call moved trust: relate to the new top
		}
		err = c.proveExtension(ctx, ep, top, cp, signed)
		if err == nil {
			c.trust.raise(cp, signed)
		}
		c.trust.unlock()
		return err
	}
}

// provePrefix proves that cp is a prefix of top, and remembers it.
func (c *Client) provePrefix(ctx context.Context, ep *endpoint, cp proofs.Checkpoint, signed []byte, top known) error {
	if err := c.proveConsistent(ctx, ep, cp, top.cp, top.signed, signed); err != nil {
		return err
	}
	c.trust.remember(cp, signed)
	return nil
}

// proveExtension proves that cp extends top.
func (c *Client) proveExtension(ctx context.Context, ep *endpoint, top known, cp proofs.Checkpoint, signed []byte) error {
	return c.proveConsistent(ctx, ep, top.cp, cp, top.signed, signed)
}

// proveConsistent proves with a proof from ep that small is a prefix of
// large. old is the accepted one of the two and new the one ep served, as
// evidence for a *ForkError if the proof is malformed or fails.
func (c *Client) proveConsistent(ctx context.Context, ep *endpoint, small, large proofs.Checkpoint, old, new []byte) error {
	proof, err := c.consistency(ctx, ep, small.Size, large.Size)
	if err == nil {
		err = proofs.VerifyConsistency(small.Size, large.Size, proof, small.Hash, large.Hash)
	}
	if err != nil && (errors.Is(err, proofs.ErrConsistency) || errors.Is(err, errMalformedProof)) {
		return &ForkError{Old: old, New: new, Proof: proof, Node: ep.addr, Err: err}
	}
	return err
}

// consistency asks ep for a consistency proof from size1 to size2. A node
// that has not applied size2 yet (a follower that forwarded an append, or
// one that lags) answers OUT_OF_RANGE; the client then waits there for that
// size once, and a node that still cannot prove it fails with ErrRollback.
func (c *Client) consistency(ctx context.Context, ep *endpoint, size1, size2 uint64) ([][32]byte, error) {
	if size1 == size2 {
		return nil, nil
	}
	proof, err := ep.consistencyProof(ctx, size1, size2)
	if err == nil || connect.CodeOf(err) != connect.CodeOutOfRange {
		return proof, err
	}
	if err := c.waitForSize(ctx, ep, size2); err != nil {
		return nil, err
	}
	proof, err = ep.consistencyProof(ctx, size1, size2)
	if err != nil && connect.CodeOf(err) == connect.CodeOutOfRange {
		return nil, fmt.Errorf("%w: it showed a tree of %d leaves or more, then cannot prove consistency up to it: %v", ErrRollback, size2, err)
	}
	return proof, err
}

// waitForSize makes ep wait until it has applied a tree of at least size
// leaves. An honest node answers UNAVAILABLE if it cannot; one that answers
// with a smaller signed tree fails with ErrRollback.
func (c *Client) waitForSize(ctx context.Context, ep *endpoint, size uint64) error {
	signed, err := ep.checkpoint(ctx, size)
	if err != nil {
		return err
	}
	cp, err := c.verifyCheckpoint(signed)
	if err != nil {
		return err
	}
	if cp.Size < size {
		return fmt.Errorf("%w: asked for a tree of at least %d leaves, it answered with %d", ErrRollback, size, cp.Size)
	}
	return nil
}
