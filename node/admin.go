package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/chipledger/chipledger/internal/hostport"
	"github.com/chipledger/chipledger/ledger"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// adminService implements the AdminService API.
type adminService struct{ n *Node }

var _ chipledgerv1connect.AdminServiceHandler = (*adminService)(nil)

func (s *adminService) Status(ctx context.Context, req *connect.Request[v1.StatusRequest]) (*connect.Response[v1.StatusResponse], error) {
	n := s.n
	st := n.localStatus()
	if req.Header().Get(localStatusHeader) != "" {
		return connect.NewResponse(st), nil
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, toConnectError(err)
	}
	members, err := n.fsm.members()
	if err != nil {
		return nil, toConnectError(err)
	}
	servers := cf.Configuration().Servers
	st.Peers = make([]*v1.Peer, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		p := &v1.Peer{
			NodeId:      string(srv.ID),
			RaftAddress: string(srv.Address),
			ApiAddress:  members[string(srv.ID)],
			Suffrage:    strings.ToLower(srv.Suffrage.String()),
		}
		st.Peers[i] = p
		if string(srv.ID) == n.cfg.ID {
			p.Role, p.TreeSize, p.AppliedIndex = st.Role, st.TreeSize, st.AppliedIndex
			continue
		}
		if p.ApiAddress == "" {
			p.Error = "API address unknown"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			r := connect.NewRequest(&v1.StatusRequest{})
			r.Header().Set(localStatusHeader, "1")
			resp, err := n.peers.admin(p.ApiAddress).Status(ctx, r)
			if err != nil {
				p.Error = err.Error()
				return
			}
			p.Role, p.TreeSize, p.AppliedIndex = resp.Msg.Role, resp.Msg.TreeSize, resp.Msg.AppliedIndex
		}()
	}
	wg.Wait()
	// Lag is measured from the leader, whichever node was asked: asked at
	// a lagging follower, lags from its own index would hide it.
	var ref uint64
	for _, p := range st.Peers {
		if p.Error == "" && p.NodeId == st.LeaderId {
			ref = p.AppliedIndex
			break
		}
		if p.Error == "" {
			ref = max(ref, p.AppliedIndex)
		}
	}
	for _, p := range st.Peers {
		if p.Error == "" && ref > p.AppliedIndex {
			p.Lag = ref - p.AppliedIndex
		}
	}
	return connect.NewResponse(st), nil
}

// localStatus reports this node's own view.
func (n *Node) localStatus() *v1.StatusResponse {
	stats := n.raft.Stats()
	num := func(k string) uint64 {
		v, _ := strconv.ParseUint(stats[k], 10, 64)
		return v
	}
	leaderID, leaderAddr := n.leaderAPI()
	cp := n.fsm.checkpoint()
	return &v1.StatusResponse{
		NodeId:        n.cfg.ID,
		Role:          strings.ToLower(n.raft.State().String()),
		Term:          num("term"),
		LeaderId:      leaderID,
		LeaderAddress: leaderAddr,
		AppliedIndex:  n.fsm.applied.Load(),
		CommitIndex:   num("commit_index"),
		LastLogIndex:  n.raft.LastIndex(),
		TreeSize:      cp.Size,
		Checkpoint:    cp.Signed,
	}
}

func (s *adminService) Join(ctx context.Context, req *connect.Request[v1.JoinRequest]) (*connect.Response[v1.JoinResponse], error) {
	m := req.Msg
	if m.GetNodeId() == "" || m.GetRaftAddress() == "" || m.GetApiAddress() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("join needs node_id, raft_address and api_address"))
	}
	// Checked before the voter is added: a voter no one can reach raises
	// the quorum for good, and the member record could not be written.
	if err := checkMember(m.NodeId, m.RaftAddress, m.ApiAddress); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("join: %w", err))
	}
	n := s.n
	if !n.IsLeader() {
		return forwardAdmin(ctx, n, req, chipledgerv1connect.AdminServiceClient.Join)
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, toConnectError(err)
	}
	present := false
	for _, srv := range cf.Configuration().Servers {
		sameID, sameAddr := srv.ID == raft.ServerID(m.NodeId), srv.Address == raft.ServerAddress(m.RaftAddress)
		switch {
		case sameID && sameAddr:
			present = srv.Suffrage == raft.Voter
		case sameID && !m.GetRejoin():
			// A second machine given the same --id, say: taking the
			// member's place would count a node without its log in the
			// quorums that acknowledged entries.
			return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf(
				"node %s is already a member, at raft address %s, and the joining node has no Raft state of its own: give it another --id, or remove the member first (chipledger admin leave --node-id %s --ledger ADDR)",
				m.NodeId, srv.Address, m.NodeId))
		case sameAddr && !sameID:
			// One process would count as two voters.
			return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf(
				"raft address %s is member %s's: remove that member first (chipledger admin leave --node-id %s --ledger ADDR), or give node %s another address",
				m.RaftAddress, srv.ID, srv.ID, m.NodeId))
		}
	}
	if !present {
		n.log.Info("adding voter", "member", m.NodeId, "raft", m.RaftAddress)
		if err := n.raft.AddVoter(raft.ServerID(m.NodeId), raft.ServerAddress(m.RaftAddress), 0, maxWait).Error(); err != nil {
			return nil, raftError("add voter "+m.NodeId, err)
		}
	}
	if err := n.applyMember(ctx, m.NodeId, m.ApiAddress); err != nil {
		return nil, raftError("record member address", err)
	}
	return connect.NewResponse(&v1.JoinResponse{}), nil
}

// checkMember checks a member's node ID (1 to 255 bytes, as member
// records carry it) and its two addresses (HOST:PORT, spelled one way).
func checkMember(id, raftAddr, apiAddr string) error {
	if len(id) == 0 || len(id) > maxMemberField {
		return fmt.Errorf("node ID of %d bytes: want 1 to %d", len(id), maxMemberField)
	}
	if err := hostport.Check(raftAddr, false); err != nil {
		return fmt.Errorf("raft address %q: %w", raftAddr, err)
	}
	if err := hostport.Check(apiAddr, false); err != nil {
		return fmt.Errorf("api address %q: %w", apiAddr, err)
	}
	return nil
}

func (s *adminService) Leave(ctx context.Context, req *connect.Request[v1.LeaveRequest]) (*connect.Response[v1.LeaveResponse], error) {
	id := req.Msg.GetNodeId()
	if id == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("leave needs node_id"))
	}
	n := s.n
	if !n.IsLeader() {
		return forwardAdmin(ctx, n, req, chipledgerv1connect.AdminServiceClient.Leave)
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, toConnectError(err)
	}
	var members, voters []string
	for _, srv := range cf.Configuration().Servers {
		members = append(members, string(srv.ID))
		if srv.Suffrage == raft.Voter {
			voters = append(voters, string(srv.ID))
		}
	}
	switch {
	case !slices.Contains(members, id):
		// Raft removes a non-member without complaint: a typo must not
		// look like a removal.
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no member %q in the cluster (members: %s)", id, strings.Join(members, ", ")))
	case len(voters) == 1 && voters[0] == id:
		// Checked before anything changes: Raft would refuse it only
		// after the member's address was forgotten.
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%s is the cluster's only voter: it cannot leave (add another node first)", id))
	}
	// Forget the address first: once the leader removes itself it can no
	// longer apply anything.
	if err := n.applyMember(ctx, id, ""); err != nil {
		return nil, raftError("forget member address", err)
	}
	n.log.Info("removing server", "member", id)
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, maxWait).Error(); err != nil {
		return nil, raftError("remove server "+id, err)
	}
	return connect.NewResponse(&v1.LeaveResponse{}), nil
}

func (s *adminService) TransferLeadership(ctx context.Context, req *connect.Request[v1.TransferLeadershipRequest]) (*connect.Response[v1.TransferLeadershipResponse], error) {
	n := s.n
	if !n.IsLeader() {
		return forwardAdmin(ctx, n, req, chipledgerv1connect.AdminServiceClient.TransferLeadership)
	}
	// Raft reports a transfer that cannot be made with plain errors, which
	// would reach the caller as INTERNAL: check the configuration first.
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, toConnectError(err)
	}
	id := req.Msg.GetNodeId()
	var addr raft.ServerAddress
	otherVoters := 0
	for _, srv := range cf.Configuration().Servers {
		if string(srv.ID) == id {
			addr = srv.Address
		}
		if string(srv.ID) != n.cfg.ID && srv.Suffrage == raft.Voter {
			otherVoters++
		}
	}
	var f raft.Future
	switch {
	case id == n.cfg.ID:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%q is the leader already; name another voter, or none", id))
	case id != "" && addr == "":
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no member %q", id))
	case otherVoters == 0:
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("no other voter to transfer leadership to"))
	case id != "":
		f = n.raft.LeadershipTransferToServer(raft.ServerID(id), addr)
	default:
		f = n.raft.LeadershipTransfer()
	}
	if err := f.Error(); err != nil {
		if isLeadershipError(err) {
			return nil, raftError("transfer leadership", err)
		}
		// The target did not answer or did not win in time (Raft's plain
		// errors, with transport details that are not the caller's
		// business): it may be down. This node still leads.
		n.log.Warn("leadership transfer failed", "to", id, "err", err)
		target := "the chosen voter"
		if id != "" {
			target = id
		}
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("leadership could not be handed to %s (is it up and caught up?); %s still leads: retry, or name another voter", target, n.cfg.ID))
	}
	ctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	if err := n.waitForLeader(ctx); err != nil {
		return nil, n.unavailable("no leader after the transfer")
	}
	_, lid := n.raft.LeaderWithID()
	return connect.NewResponse(&v1.TransferLeadershipResponse{LeaderId: string(lid)}), nil
}

// raftError maps a Raft failure to a Connect error.
func raftError(what string, err error) error {
	if isLeadershipError(err) {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("%s: %w", what, err))
	}
	return toConnectError(fmt.Errorf("%s: %w", what, err))
}

// forwardAdmin sends an admin request to the leader.
func forwardAdmin[Req, Resp any](ctx context.Context, n *Node, req *connect.Request[Req],
	call func(chipledgerv1connect.AdminServiceClient, context.Context, *connect.Request[Req]) (*connect.Response[Resp], error)) (*connect.Response[Resp], error) {
	if req.Header().Get(forwardedHeader) != "" {
		return nil, n.unavailable("this node is not the leader")
	}
	ctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	addr, err := n.waitForLeaderAPI(ctx)
	if err != nil {
		return nil, err
	}
	fwd := connect.NewRequest(req.Msg)
	fwd.Header().Set(forwardedHeader, n.cfg.ID)
	if auth := req.Header().Get("Authorization"); auth != "" {
		fwd.Header().Set("Authorization", auth) // the leader authorizes the caller too
	}
	return call(n.peers.admin(addr), ctx, fwd)
}

// join asks the configured members to add this node, until one accepts or
// the node stops.
func (n *Node) join(ctx context.Context) error {
	req := &v1.JoinRequest{NodeId: n.cfg.ID, RaftAddress: n.RaftAddr(), ApiAddress: n.apiAddr, Rejoin: n.hadRaftState}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var lastErr error
	for attempt := 0; ; attempt++ {
		for _, addr := range n.cfg.Join {
			_, err := n.peers.admin(addr).Join(ctx, connect.NewRequest(req))
			if err == nil {
				n.log.Info("joined the cluster", "via", addr)
				return nil
			}
			lastErr = err
			var cv *tls.CertificateVerificationError
			if errors.As(err, &cv) {
				// Retrying cannot help: the member's certificate does not
				// chain to this node's cluster CA.
				return fmt.Errorf("join the cluster through %s: %w", addr, err)
			}
			switch connect.CodeOf(err) {
			case connect.CodeAlreadyExists, connect.CodeInvalidArgument, connect.CodePermissionDenied,
				connect.CodeUnauthenticated, connect.CodeFailedPrecondition:
				// The cluster refused this node: retrying cannot help.
				return fmt.Errorf("join the cluster through %s: %w", addr, err)
			}
			n.log.Info("join attempt failed; retrying", "via", addr, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("join the cluster through %s: %w", strings.Join(n.cfg.Join, ", "), lastErr)
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second)):
		}
	}
}

// revocationOf returns the station's revocation in this node's ledger, or
// nil if it has none.
func (n *Node) revocationOf(id [32]byte) (*ledger.StationRevocation, error) {
	var rev *ledger.StationRevocation
	err := n.fsm.withStore(func(s *ledger.Store) error {
		idx, revoked, err := s.StationRevocationIndex(id)
		if err != nil || !revoked {
			return err
		}
		leaf, err := s.Leaf(idx)
		if err != nil {
			return err
		}
		rev, err = ledger.ParseStationRevocation(leaf)
		return err
	})
	return rev, err
}

// maxRevocationSkew is how far in the future a revocation time may be, to
// allow for clocks a little ahead of the leader's.
const maxRevocationSkew = time.Minute

func (s *adminService) RevokeStation(ctx context.Context, req *connect.Request[v1.RevokeStationRequest]) (*connect.Response[v1.RevokeStationResponse], error) {
	m := req.Msg
	if len(m.GetStationId()) != 32 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("station_id of %d bytes: want 32 (the SHA-256 of the station certificate)", len(m.GetStationId())))
	}
	now := time.Now()
	if at := m.GetRevokedAtMs(); at > uint64(now.Add(maxRevocationSkew).UnixMilli()) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("revoked_at_ms %d is in the future", at))
	}
	n := s.n
	if !n.IsLeader() {
		return forwardAdmin(ctx, n, req, chipledgerv1connect.AdminServiceClient.RevokeStation)
	}
	rev := ledger.StationRevocation{RevokedAtMs: m.GetRevokedAtMs(), Reason: m.GetReason()}
	copy(rev.StationID[:], m.GetStationId())
	if rev.RevokedAtMs == 0 {
		// "Now": a retry of this request (its answer lost) must be the
		// same revocation, so a station already revoked for this reason
		// takes that revocation's time, and the state machine answers it
		// as the duplicate it is.
		rev.RevokedAtMs = uint64(now.UnixMilli())
		if first, err := n.revocationOf(rev.StationID); err != nil {
			return nil, toConnectError(err)
		} else if first != nil && first.Reason == rev.Reason {
			rev.RevokedAtMs = first.RevokedAtMs
		}
	}
	leaf, err := rev.MarshalLeaf()
	if err != nil {
		return nil, toConnectError(err)
	}
	data, err := encodeRevoke(leaf)
	if err != nil {
		return nil, toConnectError(err)
	}
	ctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	out, err := n.apply(ctx, data)
	if err != nil {
		return nil, raftError("revoke station", err)
	}
	res, ok := out.(*applyResult)
	if !ok || len(res.results) != 1 {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("state machine returned %T for a revocation", out))
	}
	r := res.results[0]
	if r.Err != nil {
		return nil, toConnectError(r.Err)
	}
	if r.Duplicate {
		// The first revocation: its leaf is the one to prove.
		if err := n.fsm.withStore(func(s *ledger.Store) (err error) { leaf, err = s.Leaf(r.Index); return err }); err != nil {
			return nil, toConnectError(err)
		}
	}
	receipt, err := n.receipt(r.Index, leaf, res.checkpoint)
	if err != nil {
		return nil, toConnectError(err)
	}
	n.log.Warn("station revoked", "station", fmt.Sprintf("%x", rev.StationID), "index", r.Index, "reason", rev.Reason)
	return connect.NewResponse(&v1.RevokeStationResponse{Receipt: receipt, Duplicate: r.Duplicate}), nil
}
