package provisioner

import (
	"context"

	"github.com/chipledger/chipledger/client"
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
