package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"

	"github.com/chipledger/chipledger/ledger"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// A fakeLog serves an in-memory log of synthetic leaves, signed with a
// test key: it answers the read calls like a node, to test what the client
// does with large logs and exact page boundaries without a cluster.
type fakeLog struct {
	chipledgerv1connect.UnimplementedLedgerServiceHandler
	signer *ledger.LogSigner

	mu       sync.Mutex
	tree     *testonly.Tree
	leaves   [][]byte
	maxPage  uint64
	getPages int
	// witnessed is what GetCheckpoint with witnessed set answers; nil:
	// FAILED_PRECONDITION, as a node without a witness policy.
	witnessed []byte
}

// setWitnessed sets the witnessed checkpoint the fake log serves.
func (f *fakeLog) setWitnessed(signed []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.witnessed = signed
}

func startFakeLog(t testing.TB, size int) (*fakeLog, string) {
	f := &fakeLog{signer: newSigner(t), tree: testonly.New(rfc6962.DefaultHasher)}
	f.grow(size)
	return f, serve(t, f)
}

func (f *fakeLog) grow(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		leaf := fmt.Appendf(nil, "leaf %d", len(f.leaves))
		f.leaves = append(f.leaves, leaf)
		f.tree.AppendData(leaf)
	}
}

func (f *fakeLog) size() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tree.Size()
}

func (f *fakeLog) GetCheckpoint(ctx context.Context, req *connect.Request[v1.GetCheckpointRequest]) (*connect.Response[v1.GetCheckpointResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.Msg.GetWitnessed() {
		if f.witnessed == nil {
			return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("no witness policy"))
		}
		return connect.NewResponse(&v1.GetCheckpointResponse{Checkpoint: f.witnessed}), nil
	}
	if req.Msg.MinSize > f.tree.Size() {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("size %d not reached", req.Msg.MinSize))
	}
	signed, err := f.signer.Sign(f.tree.Size(), ledger.Hash(f.tree.Hash()))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&v1.GetCheckpointResponse{Checkpoint: signed}), nil
}

func (f *fakeLog) GetEntries(ctx context.Context, req *connect.Request[v1.GetEntriesRequest]) (*connect.Response[v1.GetEntriesResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	start, end := req.Msg.Start, req.Msg.End
	if start >= end || end-start > 1000 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("entries [%d, %d)", start, end))
	}
	if end > f.tree.Size() {
		return nil, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("entries [%d, %d) of %d", start, end, f.tree.Size()))
	}
	f.maxPage = max(f.maxPage, end-start)
	f.getPages++
	return connect.NewResponse(&v1.GetEntriesResponse{Leaves: f.leaves[start:end]}), nil
}

func (f *fakeLog) GetInclusionProof(ctx context.Context, req *connect.Request[v1.GetInclusionProofRequest]) (*connect.Response[v1.GetInclusionProofResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	index, size := req.Msg.Index, req.Msg.TreeSize
	if size == 0 || index >= size || size > f.tree.Size() {
		return nil, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("leaf %d in %d", index, size))
	}
	p, err := f.tree.InclusionProof(index, size)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&v1.GetInclusionProofResponse{
		Index: index, TreeSize: size, InclusionProof: p, LeafHash: f.tree.LeafHash(index),
	}), nil
}

func (f *fakeLog) GetConsistencyProof(ctx context.Context, req *connect.Request[v1.GetConsistencyProofRequest]) (*connect.Response[v1.GetConsistencyProofResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s1, s2 := req.Msg.Size1, req.Msg.Size2
	if s2 == 0 || s1 > s2 || s2 > f.tree.Size() {
		return nil, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("consistency %d to %d", s1, s2))
	}
	p, err := f.tree.ConsistencyProof(s1, s2)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&v1.GetConsistencyProofResponse{Size1: s1, Size2: s2, ConsistencyProof: p}), nil
}
