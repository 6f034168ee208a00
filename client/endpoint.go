package client

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// An endpoint is one node's API.
type endpoint struct {
	addr   string // as configured or hinted, for errors and logs
	host   string // host:port, to match leader hints
	scheme string
	api    chipledgerv1connect.LedgerServiceClient
}

// checkpoint returns the node's signed checkpoint once it has at least
// minSize leaves (the node waits a bounded time for that).
func (e *endpoint) checkpoint(ctx context.Context, minSize uint64) ([]byte, error) {
	resp, err := e.api.GetCheckpoint(ctx, connect.NewRequest(&v1.GetCheckpointRequest{MinSize: minSize}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetCheckpoint(), nil
}

// consistencyProof returns the node's proof that the tree of size2 extends
// the tree of size1; malformed hashes wrap errMalformedProof.
func (e *endpoint) consistencyProof(ctx context.Context, size1, size2 uint64) ([][32]byte, error) {
	resp, err := e.api.GetConsistencyProof(ctx, connect.NewRequest(&v1.GetConsistencyProofRequest{Size1: size1, Size2: size2}))
	if err != nil {
		return nil, err
	}
	if resp.Msg.GetSize1() != size1 || resp.Msg.GetSize2() != size2 {
		return nil, mismatch("asked for consistency from size %d to %d, got a proof from %d to %d", size1, size2, resp.Msg.GetSize1(), resp.Msg.GetSize2())
	}
	return proofHashes(resp.Msg.GetConsistencyProof())
}

// inclusionProof returns the node's proof that leaf index is in the tree of
// the given size, and the leaf's hash as the node states it.
func (e *endpoint) inclusionProof(ctx context.Context, index, size uint64) (leafHash [32]byte, proof [][32]byte, err error) {
	resp, err := e.api.GetInclusionProof(ctx, connect.NewRequest(&v1.GetInclusionProofRequest{Index: index, TreeSize: size}))
	if err != nil {
		return leafHash, nil, err
	}
	m := resp.Msg
	if m.GetIndex() != index || m.GetTreeSize() != size {
		return leafHash, nil, mismatch("asked for inclusion of leaf %d in tree of size %d, got leaf %d in size %d", index, size, m.GetIndex(), m.GetTreeSize())
	}
	if len(m.GetLeafHash()) != len(leafHash) {
		return leafHash, nil, mismatch("leaf hash of %d bytes", len(m.GetLeafHash()))
	}
	proof, err = proofHashes(m.GetInclusionProof())
	return [32]byte(m.GetLeafHash()), proof, err
}

// errMalformedProof reports proof hashes that are not 32 bytes each, or
// too many of them.
var errMalformedProof = errors.New("malformed proof")

// proofHashes converts the API's proof hashes.
func proofHashes(hs [][]byte) ([][32]byte, error) {
	if len(hs) > proofs.MaxProofHashes {
		return nil, fmt.Errorf("%w: %d hashes, at most %d", errMalformedProof, len(hs), proofs.MaxProofHashes)
	}
	if len(hs) == 0 {
		return nil, nil
	}
	out := make([][32]byte, len(hs))
	for i, h := range hs {
		if len(h) != 32 {
			return nil, fmt.Errorf("%w: hash %d is %d bytes, want 32", errMalformedProof, i, len(h))
		}
		out[i] = [32]byte(h)
	}
	return out, nil
}

// verifyReceipt checks a receipt from the API against cp, the verified
// checkpoint its Checkpoint field holds, and returns it as a
// proofs.Receipt that does not alias the message.
func verifyReceipt(ep *endpoint, r *v1.Receipt, cp proofs.Checkpoint) (*proofs.Receipt, error) {
	if r == nil || len(r.GetLeaf()) == 0 {
		return nil, mismatch("no receipt, or a receipt without a leaf")
	}
	proof, err := proofHashes(r.GetInclusionProof())
	if err == nil {
		err = proofs.VerifyInclusion(r.GetIndex(), cp.Size, proofs.LeafHash(r.GetLeaf()), proof, cp.Hash)
	}
	if err != nil {
		return nil, &ProofError{Index: r.GetIndex(), Size: cp.Size, Node: ep.addr, Err: err}
	}
	return &proofs.Receipt{
		Leaf:       clone(r.GetLeaf()),
		Index:      r.GetIndex(),
		Proof:      proof,
		Checkpoint: clone(r.GetCheckpoint()),
	}, nil
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
