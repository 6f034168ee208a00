package provisioner

import (
	"context"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// ClientLedger publishes through the Go SDK: client.Client retries, follows
// the leader and verifies every receipt against the pinned log key.
type ClientLedger struct{ Client *client.Client }

// Append implements Ledger.
func (l ClientLedger) Append(ctx context.Context, leaf []byte) (*proofs.Receipt, error) {
	r, err := l.Client.Append(ctx, leaf)
	if err != nil {
		return nil, err
	}
	return r.Receipt, nil
}

// Entries implements Ledger: the chip's entries, each proven in the log
// and the whole history proven by the chip index (client.LookupChip).
func (l ClientLedger) Entries(ctx context.Context, chip ledger.ChipID) ([]*ledger.EscrowEntry, error) {
	h, err := l.Client.LookupChip(ctx, chip)
	if err != nil {
		return nil, err
	}
	out := make([]*ledger.EscrowEntry, len(h.Entries))
	for i, e := range h.Entries {
		out[i] = e.Entry
	}
	return out, nil
}
