package node

import (
	"errors"
	"fmt"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// Errors of the state-dependent admission rules, decided inside the state
// machine so that every replica decides alike.
var (
	// ErrUnknownStation reports an escrow entry whose station has no
	// registration in the log (before the entry).
	ErrUnknownStation = errors.New("station not registered")
	// ErrStationRegistered reports a registration of a station that is
	// already registered by another leaf.
	ErrStationRegistered = errors.New("station already registered")
	// ErrNotAppendable reports a leaf kind that cannot be submitted, such as
	// the index-root leaves the log writes itself.
	ErrNotAppendable = errors.New("leaf kind cannot be appended")
	// ErrStationRevoked reports an escrow entry, or a second revocation, of
	// a station whose registration a revocation entry withdrew.
	ErrStationRevoked = errors.New("station revoked")
)

// leafResult is the outcome of one leaf of a batch.
type leafResult struct {
	Index     uint64
	Duplicate bool
	Err       error
}

// admitter applies the state-dependent admission rules of DESIGN.md §3.2 to
// the leaves of one batch, in order, over the store's state plus the leaves
// already accepted in the batch. It is deterministic: it reads only the
// store and the batch.
type admitter struct {
	store    *ledger.Store
	next     uint64 // index the next accepted leaf gets
	accepted [][]byte
	chips    map[string][]ledger.ChipEpoch
	stations map[[32]byte]ledger.ChipEpoch // registration index and leaf hash
	revoked  map[[32]byte]revocation       // the store's answers (see revocation)
}

// revocation is what the store says of a station's revocation.
type revocation struct {
	index   uint64
	revoked bool
}

func newAdmitter(store *ledger.Store) *admitter {
	next := store.Size()
	if next == 0 {
		next = 1 // the genesis index root comes first
	}
	return &admitter{
		store:    store,
		next:     next,
		chips:    make(map[string][]ledger.ChipEpoch),
		stations: make(map[[32]byte]ledger.ChipEpoch),
		revoked:  make(map[[32]byte]revocation),
	}
}

// admit decides one leaf and, if it is accepted, queues it for the append.
// An error return means the store could not be read: the batch cannot be
// decided and the replica must stop rather than diverge.
func (a *admitter) admit(leaf []byte) (leafResult, error) {
	kind, err := ledger.PeekKind(leaf)
	if err != nil {
		return leafResult{Err: err}, nil
	}
	hash := proofs.LeafHash(leaf)
	switch kind {
	case ledger.KindEscrow:
		return a.admitEscrow(leaf, hash)
	case ledger.KindStation:
		return a.admitStation(leaf, hash)
	default:
		return leafResult{Err: fmt.Errorf("%w: %s", ErrNotAppendable, kind)}, nil
	}
}

func (a *admitter) admitEscrow(leaf []byte, hash ledger.Hash) (leafResult, error) {
	e, err := ledger.ParseEscrowEntryNoCopy(leaf)
	if err != nil {
		return leafResult{Err: err}, nil
	}
	if _, ok, err := a.station(e.StationID); err != nil {
		return leafResult{}, err
	} else if !ok {
		return leafResult{Err: fmt.Errorf("%w: station %x", ErrUnknownStation, e.StationID)}, nil
	}
	history, err := a.history(e.ChipID)
	if err != nil {
		return leafResult{}, err
	}
	existing, dup, err := ledger.DecideEpoch(history, e.Epoch, hash)
	if dup {
		// Already in the log, whatever happened to its station since: a
		// retry of an append that committed gets its index.
		return leafResult{Index: existing, Duplicate: true}, nil
	}
	if idx, revoked, err := a.revocation(e.StationID); err != nil {
		return leafResult{}, err
	} else if revoked {
		return leafResult{Err: fmt.Errorf("%w: station %x at index %d", ErrStationRevoked, e.StationID, idx)}, nil
	}
	if err != nil {
		return leafResult{Err: fmt.Errorf("chip %s: %w", e.ChipID, err)}, nil
	}
	idx := a.accept(leaf)
	a.chips[string(e.ChipID)] = append(history, ledger.ChipEpoch{Epoch: e.Epoch, Index: idx, LeafHash: hash})
	return leafResult{Index: idx}, nil
}

func (a *admitter) admitStation(leaf []byte, hash ledger.Hash) (leafResult, error) {
	r, err := ledger.ParseStationRegistration(leaf)
	if err != nil {
		return leafResult{Err: err}, nil
	}
	id := r.StationID()
	reg, ok, err := a.station(id)
	switch {
	case err != nil:
		return leafResult{}, err
	case ok && reg.LeafHash == hash:
		return leafResult{Index: reg.Index, Duplicate: true}, nil
	case ok:
		return leafResult{Err: fmt.Errorf("%w: station %x at index %d", ErrStationRegistered, id, reg.Index)}, nil
	}
	idx := a.accept(leaf)
	a.stations[id] = ledger.ChipEpoch{Index: idx, LeafHash: hash}
	return leafResult{Index: idx}, nil
}

// admitRevocation decides a station revocation: the station must be
// registered and not yet revoked; the same revocation again is a duplicate.
func (a *admitter) admitRevocation(leaf []byte) (leafResult, error) {
	r, err := ledger.ParseStationRevocation(leaf)
	if err != nil {
		return leafResult{Err: err}, nil
	}
	if _, ok, err := a.station(r.StationID); err != nil {
		return leafResult{}, err
	} else if !ok {
		return leafResult{Err: fmt.Errorf("%w: station %x", ErrUnknownStation, r.StationID)}, nil
	}
	idx, revoked, err := a.store.StationRevocationIndex(r.StationID)
	if err != nil {
		return leafResult{}, err
	}
	if revoked {
		h, err := a.store.LeafHash(idx)
		if err != nil {
			return leafResult{}, err
		}
		if h == proofs.LeafHash(leaf) {
			return leafResult{Index: idx, Duplicate: true}, nil
		}
		return leafResult{Err: fmt.Errorf("%w: station %x at index %d", ErrStationRevoked, r.StationID, idx)}, nil
	}
	return leafResult{Index: a.accept(leaf)}, nil
}

func (a *admitter) accept(leaf []byte) uint64 {
	a.accepted = append(a.accepted, leaf)
	a.next++
	return a.next - 1
}

// station returns the registration of a station, from this batch or the
// store.
func (a *admitter) station(id [32]byte) (ledger.ChipEpoch, bool, error) {
	if reg, ok := a.stations[id]; ok {
		return reg, true, nil
	}
	idx, ok, err := a.store.StationRegistrationIndex(id)
	if err != nil || !ok {
		return ledger.ChipEpoch{}, false, err
	}
	h, err := a.store.LeafHash(idx)
	if err != nil {
		return ledger.ChipEpoch{}, false, err
	}
	reg := ledger.ChipEpoch{Index: idx, LeafHash: h}
	a.stations[id] = reg
	return reg, true, nil
}

// revocation returns the index of the leaf that revoked a station, if one
// did, as the store says: read once per batch, since the store does not
// change while the batch is admitted (a revocation is admitted alone, in
// a batch of its own).
func (a *admitter) revocation(id [32]byte) (uint64, bool, error) {
	if r, ok := a.revoked[id]; ok {
		return r.index, r.revoked, nil
	}
	idx, revoked, err := a.store.StationRevocationIndex(id)
	if err != nil {
		return 0, false, err
	}
	a.revoked[id] = revocation{idx, revoked}
	return idx, revoked, nil
}

// history returns a chip's escrow entries with their leaf hashes, from this
// batch or the store.
func (a *admitter) history(chip ledger.ChipID) ([]ledger.ChipEpoch, error) {
	if h, ok := a.chips[string(chip)]; ok {
		return h, nil
	}
	entries := a.store.ChipEntries(chip)
	h := make([]ledger.ChipEpoch, len(entries))
	for i, e := range entries {
		lh, err := a.store.LeafHash(e.Index)
		if err != nil {
			return nil, err
		}
		h[i] = ledger.ChipEpoch{Epoch: e.Epoch, Index: e.Index, LeafHash: lh}
	}
	a.chips[string(chip)] = h
	return h, nil
}
