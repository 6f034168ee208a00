package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// maxEntriesPerCall is the most leaves one GetEntries call returns.
const maxEntriesPerCall = 1000

// Checkpoint fetches a node's latest checkpoint, verifies it and proves it
// consistent with the trusted one, and returns the client's trusted
// checkpoint afterwards: the largest it has accepted, and its signed note.
// The node is asked for a tree at least as large as the trusted one.
func (c *Client) Checkpoint(ctx context.Context) (proofs.Checkpoint, []byte, error) {
	err := c.do(ctx, "get checkpoint", toAny, func(ctx context.Context, ep *endpoint) error {
		signed, err := ep.checkpoint(ctx, c.trust.latest().cp.Size)
		if err != nil {
			return err
		}
		_, err = c.accept(ctx, ep, signed)
		return err
	})
	if err != nil {
		return proofs.Checkpoint{}, nil, err
	}
	cp, signed := c.Trusted()
	return cp, signed, nil
}

// covering returns the trusted checkpoint once it has at least size leaves,
// fetching a newer one if needed. If the log is smaller, the error's
// connect code is OUT_OF_RANGE.
func (c *Client) covering(ctx context.Context, op string, size uint64) (known, error) {
	if t := c.trust.latest(); t.signed != nil && t.cp.Size >= size {
		return t, nil
	}
	if _, _, err := c.Checkpoint(ctx); err != nil {
		return known{}, err
	}
	t := c.trust.latest()
	if t.cp.Size < size {
		return known{}, fmt.Errorf("client: %s: %w", op, connect.NewError(connect.CodeOutOfRange,
			fmt.Errorf("the log's verified checkpoint has %d leaves, %d are needed", t.cp.Size, size)))
	}
	return t, nil
}

// atSize runs call, which needs ep to hold a tree of at least size leaves.
// A node that answers OUT_OF_RANGE has not applied it yet: the client waits
// there for that size once, and a node that still answers OUT_OF_RANGE
// fails with ErrRollback.
func (c *Client) atSize(ctx context.Context, ep *endpoint, size uint64, call func() error) error {
	err := call()
	if err == nil || connect.CodeOf(err) != connect.CodeOutOfRange {
		return err
	}
	if err := c.waitForSize(ctx, ep, size); err != nil {
		return err
	}
	err = call()
	if err != nil && connect.CodeOf(err) == connect.CodeOutOfRange {
		return fmt.Errorf("%w: it showed a tree of %d leaves or more, then answered: %v", ErrRollback, size, err)
	}
	return err
}

// Entries returns the leaves [start, end) of the log. It fetches them at
// most 1000 a call and proves that they are exactly those leaves of the
// client's trusted checkpoint (fetching a newer one if it has fewer than
// end leaves) with one inclusion and one consistency proof: a node that
// alters, drops or reorders a leaf fails the call with ErrBadProof.
func (c *Client) Entries(ctx context.Context, start, end uint64) ([][]byte, error) {
	if start > end {
		return nil, fmt.Errorf("client: entries: %w", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("start %d after end %d", start, end)))
	}
	if start == end {
		return nil, nil
	}
	top, err := c.covering(ctx, "entries", end)
	if err != nil {
		return nil, err
	}
	leaves, err := c.fetchEntries(ctx, start, end)
	if err != nil {
		return nil, err
	}
	err = c.do(ctx, "prove entries", toAny, func(ctx context.Context, ep *endpoint) error {
		return c.verifyRange(ctx, ep, start, leaves, top)
	})
	if err != nil {
		return nil, err
	}
	return leaves, nil
}

// fetchEntries fetches the leaves [start, end), unverified.
func (c *Client) fetchEntries(ctx context.Context, start, end uint64) ([][]byte, error) {
	leaves := make([][]byte, 0, min(end-start, 1<<16))
	for next := start; next < end; {
		pageEnd := min(end, next+maxEntriesPerCall)
		err := c.do(ctx, "get entries", toAny, func(ctx context.Context, ep *endpoint) error {
			var resp *connect.Response[v1.GetEntriesResponse]
			err := c.atSize(ctx, ep, pageEnd, func() (err error) {
				resp, err = ep.api.GetEntries(ctx, connect.NewRequest(&v1.GetEntriesRequest{Start: next, End: pageEnd}))
				return err
			})
			if err != nil {
				return err
			}
			got := resp.Msg.GetLeaves()
			if len(got) == 0 || uint64(len(got)) > pageEnd-next {
				return mismatch("asked for %d leaves from %d, got %d", pageEnd-next, next, len(got))
			}
			leaves = append(leaves, got...)
			next += uint64(len(got))
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return leaves, nil
}

// verifyRange proves that leaves are the leaves [start, start+len(leaves))
// of top's tree: the compact range of [0, start), from an inclusion proof of
// leaf start, and the leaves give the root of the first end leaves, which a
// consistency proof leads to top's root.
func (c *Client) verifyRange(ctx context.Context, ep *endpoint, start uint64, leaves [][]byte, top known) error {
	end := start + uint64(len(leaves))
	fail := func(err error) error {
		return &ProofError{Index: start, Size: top.cp.Size, Node: ep.addr, Err: err}
	}
	var left [][]byte
	if start > 0 {
		var proof [][32]byte
		err := c.atSize(ctx, ep, end, func() (err error) {
			_, proof, err = ep.inclusionProof(ctx, start, end)
			return err
		})
		if errors.Is(err, errMalformedProof) {
			return fail(err)
		}
		if err != nil {
			return err
		}
		if left, err = leftSiblings(start, end, proof); err != nil {
			return fail(err)
		}
	}
	root, err := rangeRoot(start, left, leaves)
	if err != nil {
		return fail(err)
	}
	var proof [][32]byte
	if end < top.cp.Size {
		proof, err = c.consistency(ctx, ep, end, top.cp.Size)
		if errors.Is(err, errMalformedProof) {
			return fail(err)
		}
		if err != nil {
			return err
		}
	}
	if err := proofs.VerifyConsistency(end, top.cp.Size, proof, root, top.cp.Hash); err != nil {
		return fail(err)
	}
	return nil
}

// InclusionProof proves that leaf is leaf number index of the log, in the
// client's trusted checkpoint (fetching a newer one if it has no more than
// index leaves), and returns the verified receipt. A proof that fails is
// ErrBadProof; a log that holds another leaf at index is ErrMismatch.
func (c *Client) InclusionProof(ctx context.Context, index uint64, leaf []byte) (*proofs.Receipt, error) {
	if len(leaf) == 0 || index == math.MaxUint64 {
		return nil, fmt.Errorf("client: inclusion proof: %w", connect.NewError(connect.CodeInvalidArgument, errors.New("empty leaf or index beyond any log")))
	}
	top, err := c.covering(ctx, "inclusion proof", index+1)
	if err != nil {
		return nil, err
	}
	var r *proofs.Receipt
	err = c.do(ctx, "get inclusion proof", toAny, func(ctx context.Context, ep *endpoint) error {
		var leafHash [32]byte
		var proof [][32]byte
		err := c.atSize(ctx, ep, top.cp.Size, func() (err error) {
			leafHash, proof, err = ep.inclusionProof(ctx, index, top.cp.Size)
			return err
		})
		if err == nil {
			err = proofs.VerifyInclusion(index, top.cp.Size, leafHash, proof, top.cp.Hash)
		}
		if errors.Is(err, errMalformedProof) || errors.Is(err, proofs.ErrInclusion) {
			return &ProofError{Index: index, Size: top.cp.Size, Node: ep.addr, Err: err}
		}
		if err != nil {
			return err
		}
		if leafHash != proofs.LeafHash(leaf) {
			return mismatch("the log holds another leaf at index %d", index)
		}
		r = &proofs.Receipt{Leaf: clone(leaf), Index: index, Proof: proof, Checkpoint: top.signed}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// A Consistency is a verified proof that one checkpoint of the log is a
// prefix of another.
type Consistency struct {
	From, To         proofs.Checkpoint
	FromNote, ToNote []byte     // their signed notes
	Proof            [][32]byte // RFC 6962 consistency proof from From to To
}

// ConsistencyProof checks a signed checkpoint obtained elsewhere (a
// device's receipt, another monitor's view) against the log: it verifies
// its signature, fetches the log's latest checkpoint, and proves that the
// smaller of the two is a prefix of the larger. A larger one becomes
// trusted. Two checkpoints that do not extend one another are a *ForkError.
func (c *Client) ConsistencyProof(ctx context.Context, signed []byte) (*Consistency, error) {
	cp, err := c.verifyCheckpoint(signed)
	if err != nil {
		return nil, fmt.Errorf("client: consistency proof: %w", err)
	}
	if _, _, err := c.Checkpoint(ctx); err != nil {
		return nil, err
	}
	var res *Consistency
	err = c.do(ctx, "get consistency proof", toAny, func(ctx context.Context, ep *endpoint) error {
		top := c.trust.latest()
		small, large := known{cp, signed}, top
		if cp.Size > top.cp.Size {
			small, large = top, small
		}
		proof, err := c.consistency(ctx, ep, small.cp.Size, large.cp.Size)
		if err == nil {
			err = proofs.VerifyConsistency(small.cp.Size, large.cp.Size, proof, small.cp.Hash, large.cp.Hash)
		}
		if errors.Is(err, proofs.ErrConsistency) || errors.Is(err, errMalformedProof) {
			return &ForkError{Old: top.signed, New: signed, Proof: proof, Node: ep.addr, Err: err}
		}
		if err != nil {
			return err
		}
		if cp.Size <= top.cp.Size {
			c.trust.remember(cp, signed)
		} else if err := c.relate(ctx, ep, cp, signed); err != nil {
			// Trust may have moved on since top: relate proves cp
			// against what is trusted now before trusting it.
			return err
		}
		res = &Consistency{From: small.cp, To: large.cp, FromNote: small.signed, ToNote: large.signed, Proof: proof}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// LogInfo describes the log as a node reports it, checked: the verifier
// key is the pinned one, the checkpoint verifies and is consistent with the
// trusted one, and each station's registration is proven to be in the log
// at its index.
type LogInfo struct {
	Origin      string
	VerifierKey string
	// ManufacturerTrust is the PEM bundle of manufacturer roots and
	// intermediates the log admits certificates from. It is not in the
	// log, so it is as the node states it: pin it out of band, as the
	// log key, where it matters.
	ManufacturerTrust []byte
	Stations          []Station
	// Checkpoint is the node's checkpoint, verified and consistent with
	// the trusted one.
	Checkpoint proofs.Checkpoint
}

// A Station is a registered station, whose registration leaf the client has
// verified.
type Station struct {
	ID                [32]byte // SHA-256 of Certificate
	Certificate       []byte   // DER
	RegistrationIndex uint64
	Registration      *ledger.StationRegistration
	// Revocation is the station's revocation, nil while it stands, and
	// RevocationIndex the index of its leaf. From LogInfo, a revocation
	// is verified against its leaf as the registration is; but a node
	// that leaves one out is not caught (only an audit of the log would
	// find it), so a station not shown revoked may still be refused.
	Revocation      *ledger.StationRevocation
	RevocationIndex uint64
}

// LogInfo fetches and checks the log's description. A node that reports
// another verifier key or origin, or a station whose registration (or
// revocation) is not at its index, fails the call with ErrMismatch.
func (c *Client) LogInfo(ctx context.Context) (*LogInfo, error) {
	var info *LogInfo
	var stations []*v1.Station
	err := c.do(ctx, "get log info", toAny, func(ctx context.Context, ep *endpoint) error {
		resp, err := ep.api.GetLogInfo(ctx, connect.NewRequest(&v1.GetLogInfoRequest{}))
		if err != nil {
			return err
		}
		m := resp.Msg
		if m.GetVerifierKey() != c.logKey || m.GetOrigin() != c.verifier.Origin() {
			return mismatch("the node serves log %q with key %q, not the pinned %q", m.GetOrigin(), m.GetVerifierKey(), c.logKey)
		}
		cp, err := c.accept(ctx, ep, m.GetCheckpoint())
		if err != nil {
			return err
		}
		info = &LogInfo{Origin: m.GetOrigin(), VerifierKey: m.GetVerifierKey(), ManufacturerTrust: clone(m.GetManufacturerTrust()), Checkpoint: cp}
		stations = m.GetStations()
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, s := range stations {
		st, err := c.verifyStation(ctx, s)
		if err != nil {
			return nil, err
		}
		info.Stations = append(info.Stations, st)
	}
	return info, nil
}

// verifyStation checks a station against its registration leaf, and its
// revocation leaf if it has one, fetched and proven with Entries.
func (c *Client) verifyStation(ctx context.Context, s *v1.Station) (Station, error) {
	st := Station{Certificate: clone(s.GetCertificate()), RegistrationIndex: s.GetRegistrationIndex()}
	if len(s.GetStationId()) != len(st.ID) || [32]byte(s.GetStationId()) != ledger.StationID(st.Certificate) {
		return st, fmt.Errorf("client: log info: %w", mismatch("station ID %x is not the hash of its certificate", s.GetStationId()))
	}
	st.ID = [32]byte(s.GetStationId())
	leaves, err := c.Entries(ctx, st.RegistrationIndex, st.RegistrationIndex+1)
	if err != nil {
		return st, err
	}
	reg, err := ledger.ParseStationRegistration(leaves[0])
	if err != nil || !bytes.Equal(reg.Certificate, st.Certificate) {
		return st, fmt.Errorf("client: log info: %w", mismatch("leaf %d is not the registration of station %x", st.RegistrationIndex, st.ID))
	}
	st.Registration = reg
	if idx := s.GetRevocationIndex(); idx != 0 {
		if idx <= st.RegistrationIndex {
			return st, fmt.Errorf("client: log info: %w", mismatch("station %x is revoked at index %d, not after its registration at index %d", st.ID, idx, st.RegistrationIndex))
		}
		leaves, err := c.Entries(ctx, idx, idx+1)
		if err != nil {
			return st, err
		}
		rev, err := ledger.ParseStationRevocation(leaves[0])
		if err != nil || rev.StationID != st.ID {
			return st, fmt.Errorf("client: log info: %w", mismatch("leaf %d is not the revocation of station %x", idx, st.ID))
		}
		st.Revocation, st.RevocationIndex = rev, idx
	}
	return st, nil
}
