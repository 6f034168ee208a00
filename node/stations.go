package node

import (
	"fmt"
	"sync"

	"github.com/chipledger/chipledger/ledger"
)

// stationCache holds the certificates of registered stations, verified once
// when first needed, so that admitting an escrow entry costs only its own
// signature checks.
type stationCache struct {
	fsm   *fsm
	trust *ledger.Trust

	mu    sync.RWMutex
	certs map[[32]byte]*ledger.VerifiedStation
}

func newStationCache(f *fsm, trust *ledger.Trust) *stationCache {
	return &stationCache{fsm: f, trust: trust, certs: make(map[[32]byte]*ledger.VerifiedStation)}
}

// get returns the verified certificate of a registered station, or
// ErrUnknownStation.
func (c *stationCache) get(id [32]byte) (*ledger.VerifiedStation, error) {
	c.mu.RLock()
	cert := c.certs[id]
	c.mu.RUnlock()
	if cert != nil {
		return cert, nil
	}
	var reg *ledger.StationRegistration
	err := c.fsm.withStore(func(s *ledger.Store) error {
		idx, ok, err := s.StationRegistrationIndex(id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: station %x", ErrUnknownStation, id)
		}
		leaf, err := s.Leaf(idx)
		if err != nil {
			return err
		}
		reg, err = ledger.ParseStationRegistration(leaf)
		return err
	})
	if err != nil {
		return nil, err
	}
	at, err := reg.RegisteredAt()
	if err != nil {
		return nil, err
	}
	cert, err = c.trust.VerifyStation(reg.Certificate, at)
	if err != nil {
		return nil, fmt.Errorf("registered station %x: %w", id, err)
	}
	c.mu.Lock()
	c.certs[id] = cert
	c.mu.Unlock()
	return cert, nil
}

// all returns every registered station with its registration index, and
// its revocation index if it is revoked.
func (c *stationCache) all() ([]registeredStation, error) {
	var out []registeredStation
	err := c.fsm.withStore(func(s *ledger.Store) error {
		regs, err := s.StationRegistrations()
		if err != nil {
			return err
		}
		for id, idx := range regs {
			leaf, err := s.Leaf(idx)
			if err != nil {
				return err
			}
			reg, err := ledger.ParseStationRegistration(leaf)
			if err != nil {
				return err
			}
			revokedAt, revoked, err := s.StationRevocationIndex(id)
			if err != nil {
				return err
			}
			if !revoked {
				revokedAt = 0
			}
			out = append(out, registeredStation{id: id, index: idx, cert: reg.Certificate, revokedAt: revokedAt})
		}
		return nil
	})
	return out, err
}

type registeredStation struct {
	id        [32]byte
	index     uint64
	cert      []byte
	revokedAt uint64 // the index of the revocation leaf; 0 if not revoked
}
