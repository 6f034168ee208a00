package client

import (
	"bytes"
	"context"
	"fmt"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// An AppendResult is an append the client has verified.
type AppendResult struct {
	// Receipt proves that the leaf is at Receipt.Index in the tree of
	// Checkpoint; it verifies offline with proofs.Receipt.Verify.
	Receipt *proofs.Receipt
	// Checkpoint is Receipt's checkpoint, verified and proven consistent
	// with every other checkpoint the client accepted.
	Checkpoint proofs.Checkpoint
	// Duplicate reports that the log already held the leaf: it was
	// appended before, or by an earlier attempt of this call whose answer
	// was lost.
	Duplicate bool
}

// Append adds a leaf (an escrow entry or a station registration, encoded by
// package ledger) to the log and waits until it is committed. It sends the
// leaf to the node that last acted as leader, and retries transient
// failures at the leader a node names or at the next node; a retry is safe,
// since the log answers an exact retry with the leaf's existing index.
//
// The returned receipt has been verified: its checkpoint is signed by the
// log and consistent with the client's trusted checkpoint, and its
// inclusion proof leads to that checkpoint's root. A rejected leaf fails at
// once with a *NodeError whose connect.CodeOf is the node's verdict:
// INVALID_ARGUMENT (malformed, bad signature or certificate),
// FAILED_PRECONDITION (unregistered station, epoch not the chip's next) or
// ALREADY_EXISTS (another leaf for that epoch).
func (c *Client) Append(ctx context.Context, leaf []byte) (*AppendResult, error) {
	if len(leaf) == 0 || len(leaf) > ledger.MaxLeafSize {
		return nil, fmt.Errorf("client: append: %w", connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("leaf of %d bytes, want 1 to %d", len(leaf), ledger.MaxLeafSize)))
	}
	var res *AppendResult
	err := c.do(ctx, "append", toLeader, func(ctx context.Context, ep *endpoint) error {
		resp, err := ep.api.Append(ctx, connect.NewRequest(&v1.AppendRequest{Leaf: leaf}))
		if err != nil {
			return err
		}
		r, cp, err := c.verifyAppend(ctx, ep, leaf, resp.Msg)
		if err != nil {
			return err
		}
		c.actedAsLeader(ep, resp.Header().Get(leaderHeader))
		res = &AppendResult{Receipt: r, Checkpoint: cp, Duplicate: resp.Msg.GetDuplicate()}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// verifyAppend checks an append's receipt: signed checkpoint, inclusion of
// the receipt's leaf, that leaf being the one sent, and the checkpoint's
// consistency with trust.
func (c *Client) verifyAppend(ctx context.Context, ep *endpoint, leaf []byte, m *v1.AppendResponse) (*proofs.Receipt, proofs.Checkpoint, error) {
	if m.GetReceipt() == nil {
		return nil, proofs.Checkpoint{}, mismatch("append answered without a receipt")
	}
	cp, err := c.verifyCheckpoint(m.GetReceipt().GetCheckpoint())
	if err != nil {
		return nil, cp, err
	}
	r, err := verifyReceipt(ep, m.GetReceipt(), cp)
	if err != nil {
		return nil, cp, err
	}
	if !bytes.Equal(r.Leaf, leaf) {
		return nil, cp, mismatch("the receipt is for another leaf, at index %d", r.Index)
	}
	if err := c.relate(ctx, ep, cp, r.Checkpoint); err != nil {
		return nil, cp, err
	}
	return r, cp, nil
}
