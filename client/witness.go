package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

var (
	// ErrNotWitnessed reports a checkpoint that lacks the cosignatures the
	// client's witness policy requires.
	ErrNotWitnessed = errors.New("client: checkpoint not cosigned by the witness policy's quorum")

	// ErrNoWitnessPolicy reports a call that needs Options.Witnesses on a
	// client without one.
	ErrNoWitnessPolicy = errors.New("client: no witness policy configured (Options.Witnesses)")
)

// maxCosignatureSkew is how far ahead of the client's clock a witness's
// cosignature may be dated and still count: more is a clock that runs
// ahead, whose cosignatures would look recent for good.
const maxCosignatureSkew = 5 * time.Minute

// maxWitnessedLookups bounds how often LookupChip looks again because an
// entry of the chip landed between its checkpoint and the witnessed one.
const maxWitnessedLookups = 3

// witnessScanWindow is how many of the leaves between a lookup's
// checkpoint and the witnessed one LookupChip reads (and holds) at once.
const witnessScanWindow = maxEntriesPerCall

// WitnessedCheckpoint fetches the latest checkpoint the log's witnesses
// cosigned, of at least minSize leaves (the node waits a bounded time for
// one), verifies the log's signature and that cosignatures made within
// Options.WitnessMaxAge meet the client's witness policy (ErrNotWitnessed
// otherwise), and proves it
// consistent with the trusted checkpoint; a larger one becomes trusted. It
// returns the checkpoint and its signed note, cosignatures included.
//
// A witnessed checkpoint is one the policy's quorum of independent
// witnesses saw consistent with everything they saw before: the log cannot
// have shown the client a history that differs from everyone else's
// without their collusion.
func (c *Client) WitnessedCheckpoint(ctx context.Context, minSize uint64) (proofs.Checkpoint, []byte, error) {
	if c.witnesses == nil {
		return proofs.Checkpoint{}, nil, ErrNoWitnessPolicy
	}
	var cp proofs.Checkpoint
	var signed []byte
	err := c.do(ctx, "get witnessed checkpoint", toAny, func(ctx context.Context, ep *endpoint) error {
		resp, err := ep.api.GetCheckpoint(ctx, connect.NewRequest(&v1.GetCheckpointRequest{Witnessed: true, MinSize: minSize}))
		if err != nil {
			return err
		}
		s := resp.Msg.GetCheckpoint()
		var got proofs.Checkpoint
		if c.maxAge < 0 {
			got, err = c.verifier.VerifyWitnessedCheckpoint(s, c.witnesses)
		} else {
			now := time.Now()
			got, err = c.verifier.VerifyWitnessedCheckpointBetween(s, c.witnesses, now.Add(-c.maxAge), now.Add(maxCosignatureSkew))
		}
		switch {
		case errors.Is(err, proofs.ErrNotWitnessed):
			return fmt.Errorf("%w: %w", ErrNotWitnessed, err)
		case err != nil:
			return fmt.Errorf("%w: %w", ErrBadSignature, err)
		case got.Size < minSize:
			return mismatch("asked for a witnessed checkpoint of at least %d leaves, got one of %d", minSize, got.Size)
		}
		if err := c.relate(ctx, ep, got, s); err != nil {
			return err
		}
		cp, signed = got, s
		return nil
	})
	if err != nil {
		return proofs.Checkpoint{}, nil, err
	}
	return cp, signed, nil
}

// witnessLookup checks a verified lookup answer against the witnesses: it
// fetches a witnessed checkpoint at least as large as the lookup's (which
// WitnessedCheckpoint proves consistent with it), and reads the leaves in
// between, proven to be the log's, for any newer entry of the chip. It
// reports whether one is there: the lookup must then be made again.
//
// The lookup's checkpoint itself need not be witnessed: that it is a prefix
// of a witnessed one puts its leaves, the chip index root among them, in
// the history every auditor replays, and the leaves up to the witnessed
// size show that the chip had no newer entry as of that history.
func (c *Client) witnessLookup(ctx context.Context, chip ledger.ChipID, h *ChipHistory) (stale bool, err error) {
	w, signed, err := c.WitnessedCheckpoint(ctx, h.Checkpoint.Size)
	switch {
	case errors.Is(err, ErrFork), errors.Is(err, ErrBadSignature), errors.Is(err, ErrRollback), errors.Is(err, ErrNotWitnessed):
		return false, err
	case err != nil:
		return false, fmt.Errorf("%w: the node served no checkpoint of at least the lookup's %d leaves cosigned by the witness policy's quorum (are enough witnesses up, and does the node run with the policy?): %w", ErrNotWitnessed, h.Checkpoint.Size, err)
	}
	// The node picks both checkpoints, so the leaves between may be many:
	// read them a window at a time, stopping at the chip's first.
	for start := h.Checkpoint.Size; start < w.Size; {
		end := min(w.Size, start+witnessScanWindow)
		leaves, err := c.Entries(ctx, start, end)
		if err != nil {
			return false, err
		}
		for i, leaf := range leaves {
			if k, err := ledger.PeekKind(leaf); err != nil || k != ledger.KindEscrow {
				continue
			}
			e, err := ledger.ParseEscrowEntry(leaf)
			if err != nil {
				continue // the log admitted it; the auditor reports it
			}
			if e.ChipID.Equal(chip) {
				c.log.Debug("chip has a newer entry than its lookup", "chip", chip, "index", start+uint64(i), "lookup_size", h.Checkpoint.Size, "witnessed_size", w.Size)
				return true, nil
			}
		}
		start = end
	}
	h.Witnessed, h.WitnessedNote = &w, signed
	return false, nil
}
