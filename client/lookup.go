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

// A ChipHistory is a chip's escrow entries, each with a receipt, all
// verified against one checkpoint.
type ChipHistory struct {
	// Checkpoint is the verified checkpoint every receipt proves
	// inclusion in. It is the client's trusted checkpoint or a proven
	// prefix of it.
	Checkpoint proofs.Checkpoint
	// Index is the verified chip-index proof result: the chip's latest
	// entry (its index value) or its absence, at Checkpoint. The entries
	// below are exactly the history it records.
	Index *proofs.LookupResult
	// LookupProof is the encoded lookup proof (proofs.LookupProof) that
	// Index is the result of, as the node served it: a device verifies it
	// again before it restores a backup (device.Conn's RestoreBackup).
	LookupProof []byte
	// Entries are the chip's entries in log order, epochs 1, 2, …; empty
	// for a chip the log does not know.
	Entries []ChipEntry
	// Witnessed, with a witness policy (Options.Witnesses), is the
	// checkpoint the policy's quorum cosigned that Checkpoint is proven a
	// prefix of, with no entry of the chip in the leaves between them;
	// WitnessedNote is its signed note, cosignatures included. Both are
	// nil without a policy.
	Witnessed     *proofs.Checkpoint
	WitnessedNote []byte
}

// A ChipEntry is one escrow entry of a chip and its receipt.
type ChipEntry struct {
	Entry   *ledger.EscrowEntry
	Receipt *proofs.Receipt
}

// Latest returns the chip's newest entry, or nil if it has none.
func (h *ChipHistory) Latest() *ChipEntry {
	if len(h.Entries) == 0 {
		return nil
	}
	return &h.Entries[len(h.Entries)-1]
}

// LookupChip returns the chip's escrow entries, each with a receipt verified
// against one checkpoint, which is verified and proven consistent with the
// client's trusted checkpoint. A chip the log does not hold has no entries;
// that is not an error.
//
// With a witness policy (Options.Witnesses), that checkpoint must also be
// a prefix of one the policy's quorum of witnesses cosigned (see
// WitnessedCheckpoint; ErrNotWitnessed otherwise), and the leaves between
// the two must hold no entry of the chip: if one landed there, the chip is
// looked up again (a few times at most). The history returned is then the
// chip's whole history as of a witnessed checkpoint.
//
// Every entry must be an escrow entry for this chip, with the epoch the node
// states, and the epochs must run 1, 2, … in log order; otherwise the call
// fails with ErrMismatch. The lookup is answered at a tree at least as large
// as the trusted one, and its lookup proof (DESIGN.md §3.7) proves under the
// index root of that tree that the entries are the chip's whole history, so
// a node can hide neither the newest entry nor the chip's existence.
func (c *Client) LookupChip(ctx context.Context, chip ledger.ChipID) (*ChipHistory, error) {
	if err := chip.Validate(); err != nil {
		return nil, fmt.Errorf("client: lookup chip: %w", connect.NewError(connect.CodeInvalidArgument, err))
	}
	for attempt := 1; ; attempt++ {
		h, err := c.lookupChip(ctx, chip)
		if err != nil || c.witnesses == nil {
			return h, err
		}
		stale, err := c.witnessLookup(ctx, chip, h)
		if err != nil {
			return nil, fmt.Errorf("client: lookup chip %s: %w", chip, err)
		}
		if !stale {
			return h, nil
		}
		if attempt == maxWitnessedLookups {
			return nil, fmt.Errorf("client: lookup chip %s: %w: %d lookups in a row were overtaken by a newer entry of the chip before a witnessed checkpoint", chip, ErrNotLatest, attempt)
		}
	}
}

// lookupChip is LookupChip without the witnesses.
func (c *Client) lookupChip(ctx context.Context, chip ledger.ChipID) (*ChipHistory, error) {
	var h *ChipHistory
	err := c.do(ctx, "lookup chip", toAny, func(ctx context.Context, ep *endpoint) error {
		minSize := c.trust.latest().cp.Size
		req := &v1.LookupChipRequest{ChipId: chip, MinSize: minSize}
		resp, err := ep.api.LookupChip(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		if h, err = c.verifyLookup(ctx, ep, chip, resp.Msg); err != nil {
			return err
		}
		// An older tree, even a genuine prefix, could lack the chip's newest
		// entry: the answer must cover what the client already trusted.
		if h.Checkpoint.Size < minSize {
			return &NodeError{Op: "lookup chip", Node: ep.addr, Err: fmt.Errorf("%w: answered at tree size %d, below the trusted size %d", ErrRollback, h.Checkpoint.Size, minSize)}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}

// verifyLookup checks a lookup answer: its checkpoint, then every entry.
func (c *Client) verifyLookup(ctx context.Context, ep *endpoint, chip ledger.ChipID, m *v1.LookupChipResponse) (*ChipHistory, error) {
	cp, err := c.accept(ctx, ep, m.GetCheckpoint())
	if err != nil {
		return nil, err
	}
	h := &ChipHistory{Checkpoint: cp}
	for i, e := range m.GetEntries() {
		if !bytes.Equal(e.GetReceipt().GetCheckpoint(), m.GetCheckpoint()) {
			return nil, mismatch("entry %d of chip %s has a receipt against another checkpoint", i, chip)
		}
		r, err := verifyReceipt(ep, e.GetReceipt(), cp)
		if err != nil {
			return nil, err
		}
		entry, err := ledger.ParseEscrowEntry(r.Leaf)
		if err != nil {
			return nil, mismatch("leaf %d, returned for chip %s, is not an escrow entry: %v", r.Index, chip, err)
		}
		switch {
		case !entry.ChipID.Equal(chip):
			return nil, mismatch("leaf %d is an entry of chip %s, not %s", r.Index, entry.ChipID, chip)
		case entry.Epoch != e.GetEpoch():
			return nil, mismatch("leaf %d has epoch %d, the node says %d", r.Index, entry.Epoch, e.GetEpoch())
		case entry.Epoch != uint32(i+1):
			return nil, mismatch("chip %s: entry %d has epoch %d, want %d: entries are missing or out of order", chip, i, entry.Epoch, i+1)
		case i > 0 && r.Index <= h.Entries[i-1].Receipt.Index:
			return nil, mismatch("chip %s: entries are not in log order", chip)
		}
		h.Entries = append(h.Entries, ChipEntry{Entry: entry, Receipt: r})
	}
	if err := c.verifyLatest(ep, chip, m, cp, h); err != nil {
		return nil, err
	}
	return h, nil
}

// verifyLatest checks the lookup proof of a lookup answer: under the index
// root that the checkpoint's last leaf carries, the chip's latest entry is
// the last of the entries returned (with exactly their history), or the
// chip has none and none were returned. A node can thus neither hide a
// chip's newest entry nor deny that a chip has one (DESIGN.md §3.7).
func (c *Client) verifyLatest(ep *endpoint, chip ledger.ChipID, m *v1.LookupChipResponse, cp proofs.Checkpoint, h *ChipHistory) error {
	raw := m.GetLookupProof()
	if len(raw) == 0 {
		return notLatest(mismatch("the lookup of chip %s came without a lookup proof", chip))
	}
	lp, err := proofs.ParseLookupProof(raw)
	if err != nil {
		return notLatest(&ProofError{Index: cp.Size - 1, Size: cp.Size, Node: ep.addr, Err: err})
	}
	if !bytes.Equal(lp.Checkpoint, m.GetCheckpoint()) {
		return notLatest(mismatch("the lookup proof of chip %s is for another checkpoint than its entries", chip))
	}
	res, err := lp.Verify(c.verifier, chip)
	if err != nil {
		return notLatest(&ProofError{Index: cp.Size - 1, Size: cp.Size, Node: ep.addr, Err: err})
	}
	if !res.Present {
		if len(h.Entries) > 0 {
			return notLatest(mismatch("the chip index says chip %s has no entry, yet %d were returned", chip, len(h.Entries)))
		}
		h.Index, h.LookupProof = res, bytes.Clone(raw)
		return nil
	}
	if uint32(len(h.Entries)) != res.Value.Epoch {
		return notLatest(mismatch("the chip index says chip %s is at epoch %d, but %d entries were returned: the newest is hidden", chip, res.Value.Epoch, len(h.Entries)))
	}
	for i, e := range h.Entries {
		if want := res.History[i]; e.Receipt.Index != want.Index || proofs.LeafHash(e.Receipt.Leaf) != want.LeafHash {
			return notLatest(mismatch("chip %s: entry %d (index %d) is not the one the chip index records (index %d)", chip, i, e.Receipt.Index, want.Index))
		}
	}
	h.Index, h.LookupProof = res, bytes.Clone(raw)
	return nil
}
