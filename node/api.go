package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"github.com/chipledger/chipledger/proofs"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/chipledger/chipledger/ledger"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

const (
	// maxEntriesPerCall bounds GetEntries.
	maxEntriesPerCall = 1000
	// maxWait bounds how long a read waits for a requested tree size, and a
	// write for a leader.
	maxWait = 10 * time.Second
	// forwardedHeader marks an append a follower forwarded, so that it is
	// never forwarded again.
	forwardedHeader = "Chipledger-Forwarded"
	// leaderHeader carries the leader's API address: on UNAVAILABLE errors
	// of a node that is not the leader, on append answers, and on the
	// leader's refusals a follower passes on.
	leaderHeader = "Chipledger-Leader"
	// localStatusHeader asks Status not to query the peers.
	localStatusHeader = "Chipledger-Local-Status"
)

// ledgerService implements the LedgerService API.
type ledgerService struct{ n *Node }

var _ chipledgerv1connect.LedgerServiceHandler = (*ledgerService)(nil)

func (s *ledgerService) Append(ctx context.Context, req *connect.Request[v1.AppendRequest]) (*connect.Response[v1.AppendResponse], error) {
	leaf := req.Msg.GetLeaf()
	if len(leaf) == 0 || len(leaf) > ledger.MaxLeafSize {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("leaf of %d bytes: want 1 to %d", len(leaf), ledger.MaxLeafSize))
	}
	forwarded := req.Header().Get(forwardedHeader) != ""
	ctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	checked := false
	for {
		if !s.n.IsLeader() {
			if forwarded {
				return nil, s.n.unavailable("this node is no longer the leader")
			}
			return s.n.forwardAppend(ctx, req.Msg)
		}
		resp, err := s.appendLocal(ctx, leaf, checked)
		if err == nil || !isLeadershipError(err) {
			return resp, err
		}
		// Leadership changed while the batch was in flight: it may or may
		// not have committed. Retrying through the new leader is safe,
		// because an exact retry is recognised as a duplicate. The leaf
		// passed its checks (and was charged to its station's rate) once;
		// this node re-queues it without checking it again.
		checked = true
		s.n.log.Info("append interrupted by a leadership change; retrying", "err", err)
		if errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			// This node leads until the handover completes or times out
			// (an election timeout): wait for it rather than spin on
			// Raft's refusal.
			if err := pause(ctx, transferRetry); err != nil {
				return nil, s.n.unavailable("leadership transfer under way: " + err.Error())
			}
		}
		if err := s.n.waitForLeader(ctx); err != nil {
			return nil, s.n.unavailable("no leader: " + err.Error())
		}
	}
}

// transferRetry is how often an append retries while this node hands its
// leadership over.
const transferRetry = 10 * time.Millisecond

// pause waits for d or until ctx is done.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func isLeadershipError(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
		errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrAbortedByRestore)
}

// appendLocal checks a leaf (unless checked says it passed already),
// submits it to the batcher and builds the receipt. Leadership errors are
// returned as they are, for Append to retry.
func (s *ledgerService) appendLocal(ctx context.Context, leaf []byte, checked bool) (*connect.Response[v1.AppendResponse], error) {
	var p *pending
	var err error
	if checked {
		p, err = s.n.batcher.enqueue(leaf)
	} else {
		p, err = s.checkAndQueue(ctx, leaf)
	}
	if err != nil {
		err = toConnectError(err)
		s.n.metrics.refused.WithLabelValues(connect.CodeOf(err).String()).Inc()
		return nil, err
	}
	out, err := s.n.batcher.wait(ctx, p)
	if err == nil {
		err = out.err
	}
	if err != nil {
		if isLeadershipError(err) {
			return nil, err
		}
		return nil, toConnectError(err)
	}
	if out.leaf.Err != nil {
		return nil, toConnectError(out.leaf.Err)
	}
	r, err := s.n.receipt(out.leaf.Index, leaf, out.checkpoint)
	if err != nil {
		return nil, toConnectError(err)
	}
	resp := connect.NewResponse(&v1.AppendResponse{Receipt: r, Duplicate: out.leaf.Duplicate})
	// Tell the client who leads, so its next append skips the forwarding
	// (a follower passes this header on with the leader's response).
	resp.Header().Set(leaderHeader, s.n.apiAddr)
	return resp, nil
}

// checkAndQueue runs precheck and queues the leaf for the batcher. Until
// the leaf is queued or refused it counts as a check under way, which an
// idle batcher waits for rather than propose without it.
func (s *ledgerService) checkAndQueue(ctx context.Context, leaf []byte) (*pending, error) {
	b := s.n.batcher
	b.checks.start()
	defer b.checks.end()
	if err := s.n.precheck(ctx, leaf); err != nil {
		return nil, err
	}
	return b.enqueue(leaf)
}

// precheck runs the admission checks that need no replicated state and are
// expensive (signatures, certificate chains) before the leaf is proposed.
func (n *Node) precheck(ctx context.Context, leaf []byte) error {
	if err := n.fsm.storeFault(); err != nil {
		return err
	}
	kind, err := ledger.PeekKind(leaf)
	if err != nil {
		return err
	}
	switch kind {
	case ledger.KindEscrow:
		e, err := ledger.ParseEscrowEntryNoCopy(leaf)
		if err != nil {
			return err
		}
		station, err := n.registeredStation(ctx, e.StationID)
		if err != nil {
			return err
		}
		if err := ledger.CheckEscrowEntryWithStation(e, station, n.cfg.Trust); err != nil {
			return err
		}
		// Only now is the entry known to be the station's own. A retry of
		// an append that committed (its answer lost) was paid for already:
		// the state machine answers it as a duplicate.
		if wait, err := n.limiter.allow(e.StationID); err != nil && !n.logged(e.ChipID, e.Epoch, leaf) {
			return &retryAfterError{err: err, after: wait}
		}
		return nil
	case ledger.KindStation:
		r, err := ledger.ParseStationRegistration(leaf)
		if err != nil {
			return err
		}
		_, err = ledger.CheckStationRegistration(r, n.cfg.Trust)
		return err
	default:
		return fmt.Errorf("%w: %s", ErrNotAppendable, kind)
	}
}

// logged reports whether leaf is in this node's ledger as chip's entry of
// epoch (a read of what is applied: the state machine decides).
func (n *Node) logged(chip ledger.ChipID, epoch uint32, leaf []byte) bool {
	found := false
	n.fsm.withStore(func(s *ledger.Store) error {
		for _, e := range s.ChipEntries(chip) {
			if e.Epoch == epoch {
				h, err := s.LeafHash(e.Index)
				found = err == nil && h == proofs.LeafHash(leaf)
			}
		}
		return nil
	})
	return found
}

// stationWait bounds how long an append of an unknown station waits for
// the state machine to apply the Raft log (registeredStation).
const stationWait = 5 * time.Second

// registeredStation returns the verified certificate of a registered
// station. A station this node does not know may be registered by an entry
// its Raft log holds and its state machine has not applied yet (a leader
// just elected, or a slow disk): refusing it then (FAILED_PRECONDITION,
// which clients do not retry) would refuse a station whose registration
// was acknowledged. So the node first waits for its state machine to apply
// its log as it is now, and answers UNAVAILABLE if it does not in time.
func (n *Node) registeredStation(ctx context.Context, id [32]byte) (*ledger.VerifiedStation, error) {
	st, err := n.stations.get(id)
	if !errors.Is(err, ErrUnknownStation) {
		return st, err
	}
	ctx, cancel := context.WithTimeout(ctx, stationWait)
	defer cancel()
	if err := n.waitAppliedLog(ctx); err != nil {
		return nil, n.unavailable(fmt.Sprintf("station %x is not registered in what this node has applied, and its state machine has not caught up with its Raft log (%v): retry", id, err))
	}
	return n.stations.get(id)
}

// waitAppliedLog waits until the state machine has applied every command
// entry of the node's Raft log as it is when called.
func (n *Node) waitAppliedLog(ctx context.Context) error {
	target, err := lastCommand(n.fsm.logs, n.raft.LastIndex(), n.fsm.applied.Load())
	if err != nil {
		return err
	}
	t := time.NewTicker(5 * time.Millisecond) // entries that publish nothing
	defer t.Stop()
	for {
		changed := n.fsm.changed()
		if n.fsm.applied.Load() >= target {
			return nil
		}
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// receipt proves leaf index against cp.
func (n *Node) receipt(index uint64, leaf []byte, cp *Checkpoint) (*v1.Receipt, error) {
	var proof []ledger.Hash
	err := n.fsm.withStore(func(s *ledger.Store) (err error) {
		proof, err = s.InclusionProof(index, cp.Size)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &v1.Receipt{Index: index, Leaf: leaf, InclusionProof: hashesToBytes(proof), Checkpoint: cp.Signed}, nil
}

func hashesToBytes(hs []ledger.Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

func (s *ledgerService) GetCheckpoint(ctx context.Context, req *connect.Request[v1.GetCheckpointRequest]) (*connect.Response[v1.GetCheckpointResponse], error) {
	if req.Msg.GetWitnessed() {
		w, err := s.n.witnessedAtLeast(ctx, req.Msg.GetMinSize())
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(&v1.GetCheckpointResponse{Checkpoint: w.Signed}), nil
	}
	cp, err := s.n.checkpointAtLeast(ctx, max(req.Msg.GetMinSize(), 1))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&v1.GetCheckpointResponse{Checkpoint: cp.Signed}), nil
}

// checkpointAtLeast returns the current checkpoint, after waiting (bounded)
// until it has at least minSize leaves.
func (n *Node) checkpointAtLeast(ctx context.Context, minSize uint64) (*Checkpoint, error) {
	if minSize == 0 {
		return n.fsm.checkpoint(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	cp, err := n.fsm.waitForSize(ctx, minSize)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return cp, nil
}

// witnessedAtLeast returns the latest witnessed checkpoint, after waiting
// (bounded) until there is one of at least minSize leaves.
func (n *Node) witnessedAtLeast(ctx context.Context, minSize uint64) (*WitnessedCheckpoint, error) {
	if n.cfg.Witnesses == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("this node has no witness policy: its checkpoints are signed by the log alone"))
	}
	ctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	for {
		changed := n.fsm.changed()
		w, err := n.fsm.witnessed()
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		if w != nil && w.Size >= max(minSize, 1) {
			return w, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			have := "none yet"
			if w != nil {
				have = fmt.Sprintf("the latest has size %d", w.Size)
			}
			return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("no witnessed checkpoint of size %d or more (%s); the witnesses cosign the leader's latest checkpoint about every %s: %w", max(minSize, 1), have, cmp.Or(n.cfg.WitnessInterval, DefaultWitnessInterval), ctx.Err()))
		}
	}
}

func (s *ledgerService) GetEntries(ctx context.Context, req *connect.Request[v1.GetEntriesRequest]) (*connect.Response[v1.GetEntriesResponse], error) {
	start, end := req.Msg.GetStart(), req.Msg.GetEnd()
	if start >= end || end-start > maxEntriesPerCall {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("entries [%d, %d): want start < end and at most %d entries", start, end, maxEntriesPerCall))
	}
	if size := s.n.fsm.checkpoint().Size; end > size {
		return nil, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("entries [%d, %d): the tree has %d leaves", start, end, size))
	}
	var leaves [][]byte
	err := s.n.fsm.withStore(func(st *ledger.Store) (err error) {
		leaves, err = st.Leaves(start, end)
		return err
	})
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&v1.GetEntriesResponse{Leaves: leaves}), nil
}

func (s *ledgerService) GetInclusionProof(ctx context.Context, req *connect.Request[v1.GetInclusionProofRequest]) (*connect.Response[v1.GetInclusionProofResponse], error) {
	index, size := req.Msg.GetIndex(), req.Msg.GetTreeSize()
	if size != 0 && index >= size {
		// No tree of that size ever holds the leaf: not a matter of waiting.
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("inclusion of leaf %d in a tree of size %d: want index < tree_size", index, size))
	}
	cp := s.n.fsm.checkpoint()
	resp := &v1.GetInclusionProofResponse{Index: index}
	if size == 0 {
		size = cp.Size
		resp.Checkpoint = cp.Signed
	}
	if index >= size || size > cp.Size {
		return nil, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("inclusion of leaf %d in tree of size %d: the tree has %d leaves", index, size, cp.Size))
	}
	err := s.n.fsm.withStore(func(st *ledger.Store) error {
		proof, err := st.InclusionProof(index, size)
		if err != nil {
			return err
		}
		h, err := st.LeafHash(index)
		resp.InclusionProof, resp.LeafHash = hashesToBytes(proof), h[:]
		return err
	})
	if err != nil {
		return nil, toConnectError(err)
	}
	resp.TreeSize = size
	return connect.NewResponse(resp), nil
}

func (s *ledgerService) GetConsistencyProof(ctx context.Context, req *connect.Request[v1.GetConsistencyProofRequest]) (*connect.Response[v1.GetConsistencyProofResponse], error) {
	size1, size2 := req.Msg.GetSize1(), req.Msg.GetSize2()
	if size2 != 0 && size1 > size2 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("consistency from size %d to %d: want size1 <= size2", size1, size2))
	}
	cp := s.n.fsm.checkpoint()
	resp := &v1.GetConsistencyProofResponse{Size1: size1}
	if size2 == 0 {
		size2 = cp.Size
		resp.Checkpoint = cp.Signed
	}
	if size1 > size2 || size2 > cp.Size {
		return nil, connect.NewError(connect.CodeOutOfRange, fmt.Errorf("consistency from size %d to %d: want size1 <= size2 <= %d", size1, size2, cp.Size))
	}
	err := s.n.fsm.withStore(func(st *ledger.Store) error {
		proof, err := st.ConsistencyProof(size1, size2)
		resp.ConsistencyProof = hashesToBytes(proof)
		return err
	})
	if err != nil {
		return nil, toConnectError(err)
	}
	resp.Size2 = size2
	return connect.NewResponse(resp), nil
}

func (s *ledgerService) LookupChip(ctx context.Context, req *connect.Request[v1.LookupChipRequest]) (*connect.Response[v1.LookupChipResponse], error) {
	chip := ledger.ChipID(req.Msg.GetChipId())
	if err := chip.Validate(); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if _, err := s.n.checkpointAtLeast(ctx, max(req.Msg.GetMinSize(), 1)); err != nil {
		return nil, err
	}
	var resp *v1.LookupChipResponse
	err := s.n.fsm.withStore(func(st *ledger.Store) error {
		// The proof is at the store's current size, whose last leaf is the
		// index root the map is under; the checkpoint of that size is
		// signed here (the same bytes every replica signs).
		cl, err := st.LookupChip(chip)
		if err != nil {
			return err
		}
		root, err := st.RootAt(cl.Size)
		if err != nil {
			return err
		}
		if cp := s.n.fsm.checkpoint(); cp != nil && cp.Size == cl.Size && cp.Root == root {
			// The checkpoint the node published at that size: the bytes
			// signing again would give (Ed25519 is deterministic).
			cl.Proof.Checkpoint = cp.Signed
		} else if cl.Proof.Checkpoint, err = s.n.cfg.Signer.Sign(cl.Size, root); err != nil {
			return err
		}
		lp, err := cl.Proof.MarshalBinary()
		if err != nil {
			return err
		}
		resp = &v1.LookupChipResponse{Checkpoint: cl.Proof.Checkpoint, LookupProof: lp}
		for i, e := range cl.Entries {
			// The latest entry's leaf and proof are in the lookup proof.
			leaf, proof := cl.Proof.Entry, cl.Proof.EntryProof
			if i < len(cl.Entries)-1 {
				if leaf, err = st.Leaf(e.Index); err != nil {
					return err
				}
				if proof, err = st.InclusionProof(e.Index, cl.Size); err != nil {
					return err
				}
			}
			resp.Entries = append(resp.Entries, &v1.ChipEntry{Epoch: e.Epoch, Receipt: &v1.Receipt{
				Index: e.Index, Leaf: leaf, InclusionProof: hashesToBytes(proof), Checkpoint: cl.Proof.Checkpoint,
			}})
		}
		return nil
	})
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(resp), nil
}

func (s *ledgerService) WatchCheckpoints(ctx context.Context, req *connect.Request[v1.WatchCheckpointsRequest], stream *connect.ServerStream[v1.WatchCheckpointsResponse]) error {
	after := req.Msg.GetAfterSize()
	for {
		ch := s.n.fsm.changed()
		if cp := s.n.fsm.checkpoint(); cp.Size > after {
			if err := stream.Send(&v1.WatchCheckpointsResponse{Checkpoint: cp.Signed}); err != nil {
				return err
			}
			after = cp.Size
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		case <-s.n.streams.Done():
			return connect.NewError(connect.CodeUnavailable, ErrShuttingDown)
		}
	}
}

func (s *ledgerService) GetLogInfo(ctx context.Context, req *connect.Request[v1.GetLogInfoRequest]) (*connect.Response[v1.GetLogInfoResponse], error) {
	stations, err := s.n.stations.all()
	if err != nil {
		return nil, toConnectError(err)
	}
	slices.SortFunc(stations, func(a, b registeredStation) int { return cmp.Compare(a.index, b.index) })
	// A new log gets its first checkpoint moments after a leader is
	// elected: wait briefly rather than answer with none.
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cp, err := s.n.fsm.waitForSize(wctx, 1)
	if err != nil {
		return nil, s.n.unavailable("the log has no checkpoint yet")
	}
	resp := &v1.GetLogInfoResponse{
		Origin:            s.n.cfg.Signer.Origin(),
		VerifierKey:       s.n.cfg.Signer.VerifierKey(),
		ManufacturerTrust: s.n.cfg.Trust.PEM(),
		Checkpoint:        cp.Signed,
	}
	for _, st := range stations {
		resp.Stations = append(resp.Stations, &v1.Station{StationId: st.id[:], Certificate: st.cert, RegistrationIndex: st.index, RevocationIndex: st.revokedAt})
	}
	return connect.NewResponse(resp), nil
}

// errorCodes maps the package's and the ledger's errors to Connect codes.
var errorCodes = []struct {
	err  error
	code connect.Code
}{
	{ErrStoreFault, connect.CodeUnavailable}, // first: it may wrap any of the others
	{ledger.ErrEpochReused, connect.CodeAlreadyExists},
	{ErrStationRegistered, connect.CodeAlreadyExists},
	{ErrUnknownStation, connect.CodeFailedPrecondition},
	{ErrStationRevoked, connect.CodeFailedPrecondition},
	{ledger.ErrEpochGap, connect.CodeFailedPrecondition},
	{ledger.ErrBeyondSize, connect.CodeOutOfRange},
	{ledger.ErrCorrupt, connect.CodeDataLoss},
	{ledger.ErrNotIndexed, connect.CodeUnavailable},
	{errQueueFull, connect.CodeResourceExhausted},
	{ErrStationRateLimited, connect.CodeResourceExhausted},
	{ErrShuttingDown, connect.CodeUnavailable},
	{raft.ErrRaftShutdown, connect.CodeUnavailable},
	{raft.ErrEnqueueTimeout, connect.CodeUnavailable},
	{context.DeadlineExceeded, connect.CodeDeadlineExceeded},
	{context.Canceled, connect.CodeCanceled},
	{ErrNotAppendable, connect.CodeInvalidArgument},
	{ledger.ErrMalformed, connect.CodeInvalidArgument},
	{ledger.ErrInvalidEpoch, connect.CodeInvalidArgument},
	{ledger.ErrInvalidEntry, connect.CodeInvalidArgument},
	{ledger.ErrInvalidChipID, connect.CodeInvalidArgument},
	{ledger.ErrInvalidIdentity, connect.CodeInvalidArgument},
	{ledger.ErrLeafTooLarge, connect.CodeInvalidArgument},
	{ledger.ErrFieldTooLarge, connect.CodeInvalidArgument},
	{ledger.ErrChipIDMismatch, connect.CodeInvalidArgument},
	{ledger.ErrIdentityMismatch, connect.CodeInvalidArgument},
	{ledger.ErrUntrustedCertificate, connect.CodeInvalidArgument},
	{ledger.ErrCertificateProfile, connect.CodeInvalidArgument},
	{ledger.ErrStationIDMismatch, connect.CodeInvalidArgument},
	{ledger.ErrBadStationSignature, connect.CodeInvalidArgument},
}

// toConnectError wraps err with the Connect code its cause calls for.
func toConnectError(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	for _, ec := range errorCodes {
		if errors.Is(err, ec.err) {
			ce := connect.NewError(ec.code, err)
			var ra *retryAfterError
			if errors.As(err, &ra) {
				setRetryAfter(ce.Meta(), ra.after)
			}
			return ce
		}
	}
	return connect.NewError(connect.CodeInternal, err)
}

// Pushback headers: an append refused for load carries when to retry, in
// whole seconds (Retry-After, RFC 9110) and in milliseconds (Retry-After-Ms).
const (
	retryAfterHeader   = "Retry-After"
	retryAfterMsHeader = "Retry-After-Ms"
)

// retryAfterError is a refusal for load, with when to retry.
type retryAfterError struct {
	err   error
	after time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

func setRetryAfter(h http.Header, d time.Duration) {
	d = max(d, time.Millisecond)
	h.Set(retryAfterHeader, strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10))
	h.Set(retryAfterMsHeader, strconv.FormatInt(int64((d+time.Millisecond-1)/time.Millisecond), 10))
}

// unavailable is the error for a request this node cannot serve without a
// leader; it names the leader's API address when known.
func (n *Node) unavailable(msg string) error {
	id, addr := n.leaderAPI()
	if addr == "" {
		return connect.NewError(connect.CodeUnavailable, errors.New(msg))
	}
	err := connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s (leader %s at %s)", msg, id, addr))
	err.Meta().Set(leaderHeader, addr)
	return err
}

// waitForLeader waits until some node is leader.
func (n *Node) waitForLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := n.raft.LeaderWithID(); addr != "" {
			return nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitForLeaderAPI waits until some node is leader and this node knows the
// leader's API address: a follower that has just started or joined learns
// it when it applies the leader's membership entry, moments after it hears
// from the leader. A node that cannot read its member table (its ledger
// store failed and is behind what it served, or closed) does not learn the
// address by waiting: it answers at once, so that the client tries another
// node rather than wait out its deadline here. The error is the caller's
// answer.
func (n *Node) waitForLeaderAPI(ctx context.Context) (string, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		_, addr, err := n.leaderAPIOrErr()
		if addr != "" {
			return addr, nil
		}
		if err != nil {
			return "", n.unavailable("the leader's API address is not known: this node cannot read its member table: " + err.Error())
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			if addr, _ := n.raft.LeaderWithID(); addr == "" {
				return "", n.unavailable("no leader: " + ctx.Err().Error())
			}
			return "", n.unavailable("the leader's API address is not known yet: " + ctx.Err().Error())
		}
	}
}

// forwardAppend sends an append to the leader and returns its answer.
func (n *Node) forwardAppend(ctx context.Context, msg *v1.AppendRequest) (*connect.Response[v1.AppendResponse], error) {
	addr, err := n.waitForLeaderAPI(ctx)
	if err != nil {
		return nil, err
	}
	req := connect.NewRequest(msg)
	req.Header().Set(forwardedHeader, n.cfg.ID)
	resp, err := n.peers.ledger(addr).Append(ctx, req)
	if err != nil {
		// The leader's refusal names the leader, so that the caller's
		// retry (of a refusal for load, say) goes there directly.
		err = passOn(err)
		var ce *connect.Error
		if errors.As(err, &ce) && ce.Meta().Get(leaderHeader) == "" {
			ce.Meta().Set(leaderHeader, addr)
		}
		return nil, err
	}
	return resp, nil
}

// passOn makes a peer's error this node's answer. Connect does not send on
// the headers of an error received from another server, so the ones the
// caller acts on, the retry hints of a refusal for load and the leader's
// address, are copied to a new error of the same code.
func passOn(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	out := connect.NewError(ce.Code(), errors.New(ce.Message()))
	for _, h := range []string{retryAfterHeader, retryAfterMsHeader, leaderHeader} {
		if v := ce.Meta().Get(h); v != "" {
			out.Meta().Set(h, v)
		}
	}
	for _, d := range ce.Details() {
		out.AddDetail(d)
	}
	return out
}

// peerClients caches API clients of the other nodes.
type peerClients struct {
	http   *http.Client
	scheme string
	mu     sync.Mutex
	l      map[string]chipledgerv1connect.LedgerServiceClient
	a      map[string]chipledgerv1connect.AdminServiceClient
}

func newPeerClients(tlsc *TLSConfig) *peerClients {
	var p http.Protocols
	tr := &http.Transport{Protocols: &p, MaxIdleConnsPerHost: 64}
	scheme := "http://"
	if tlsc != nil {
		// Other nodes' API with this node's certificate: forwarded admin
		// calls are authorised by it.
		p.SetHTTP2(true)
		tr.TLSClientConfig = tlsc.clientConfig()
		scheme = "https://"
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	return &peerClients{
		http:   &http.Client{Transport: tr},
		scheme: scheme,
		l:      make(map[string]chipledgerv1connect.LedgerServiceClient),
		a:      make(map[string]chipledgerv1connect.AdminServiceClient),
	}
}

// dialFrom makes the peer clients connect from ip.
func (p *peerClients) dialFrom(ip net.IP) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	p.http.Transport.(*http.Transport).DialContext = d.DialContext
}

func (p *peerClients) ledger(addr string) chipledgerv1connect.LedgerServiceClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.l[addr]
	if !ok {
		c = chipledgerv1connect.NewLedgerServiceClient(p.http, p.scheme+addr)
		p.l[addr] = c
	}
	return c
}

func (p *peerClients) admin(addr string) chipledgerv1connect.AdminServiceClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.a[addr]
	if !ok {
		c = chipledgerv1connect.NewAdminServiceClient(p.http, p.scheme+addr)
		p.a[addr] = c
	}
	return c
}

func (p *peerClients) close() { p.http.CloseIdleConnections() }
