package node

import (
	"context"

	"connectrpc.com/connect"

	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// AppendInProcess appends leaf as the Append RPC does (the checks, the
// batcher, the Raft commit, the receipt), called in process rather than over
// HTTP: BenchmarkAppend's via=call runs use it to tell what the ledger costs
// from what the API hop costs.
func (n *Node) AppendInProcess(ctx context.Context, leaf []byte) error {
	_, err := (&ledgerService{n}).Append(ctx, connect.NewRequest(&v1.AppendRequest{Leaf: leaf}))
	return err
}
