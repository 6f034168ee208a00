package client

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// MonitorOptions say which chips Monitor watches and where it starts.
type MonitorOptions struct {
	// Chips are the chips to watch; at least one.
	Chips []ledger.ChipID

	// FromSize is the leaf index the monitor starts scanning at: it first
	// reports the watched chips' entries among the leaves from FromSize to
	// the log's current size, then the new ones. Ignored with Lookup.
	FromSize uint64

	// Lookup starts from each chip's current entries as LookupChip returns
	// them (with verified receipts), instead of scanning the log from
	// FromSize: faster on a large log.
	Lookup bool
}

// A ChipEvent is an escrow entry of a watched chip, proven to be in the log.
type ChipEvent struct {
	Chip          ledger.ChipID
	Epoch         uint32
	Index         uint64
	StationID     [32]byte
	ProvisionedAt time.Time
	// Serial is the device certificate's serial number, hex, or "" if the
	// certificate does not parse.
	Serial string
	Entry  *ledger.EscrowEntry
	// Checkpoint is the verified checkpoint the entry was proven in.
	Checkpoint proofs.Checkpoint
	// Initial reports an entry the log held when the monitor started, as
	// opposed to one appended while it ran.
	Initial bool
}

// monitorPage is the most leaves the monitor fetches and proves at once.
const monitorPage = 10_000

// Monitor watches the log for escrow entries of the given chips, and calls
// fn with each, in log order: first those the log holds when it starts
// (Initial, see MonitorOptions), then each one appended while it runs, as
// soon as a node streams a checkpoint that covers it (WatchCheckpoints).
// Every entry comes from a range of leaves proven against a verified
// checkpoint (Entries), so a node cannot hide one without failing the
// proof. A new entry for a chip that was provisioned before is a
// re-provisioning its owner may not expect: that is what Monitor is for.
//
// Monitor reports entries; it does not judge them (an Auditor does). It
// reads through a client of its own, of the same nodes, starting from c's
// trusted checkpoint, so that other calls on c cannot move the checkpoint
// it watches from. It runs until ctx ends (returning ctx's error) or c is
// closed (ErrClosed), fn returns an error (returned as it is), or the log
// fails verification (ErrBadProof, *ForkError, …).
func (c *Client) Monitor(ctx context.Context, o MonitorOptions, fn func(ChipEvent) error) error {
	if len(o.Chips) == 0 {
		return errors.New("client: monitor: no chips to watch")
	}
	ctx, release, err := c.scope(ctx)
	if err != nil {
		return err
	}
	defer release()
	own, err := c.fork()
	if err != nil {
		return err
	}
	defer own.Close()
	m := &monitor{c: own, fn: fn, chips: make(map[string]bool, len(o.Chips)), reported: make(map[uint64]bool)}
	for _, chip := range o.Chips {
		if err := chip.Validate(); err != nil {
			return fmt.Errorf("client: monitor: %w", err)
		}
		m.chips[string(chip)] = true
	}
	next := o.FromSize
	if o.Lookup {
		if next, err = m.lookup(ctx, o.Chips); err != nil {
			return err
		}
	}
	// The watch starts after the trusted checkpoint, which the lookups
	// may have moved past the one fetched here: scan up to it first.
	if _, _, err := own.Checkpoint(ctx); err != nil {
		return err
	}
	top, _ := own.Trusted()
	if err := m.scan(ctx, &next, top.Size, true); err != nil {
		return err
	}
	err = own.WatchCheckpoints(ctx, func(cp proofs.Checkpoint, _ []byte) error {
		return m.scan(ctx, &next, cp.Size, false)
	})
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// fork returns a new client of c's nodes and log, trusting c's trusted
// checkpoint and sharing its HTTP client.
func (c *Client) fork() (*Client, error) {
	addrs := make([]string, len(c.nodes))
	for i, ep := range c.nodes {
		addrs[i] = ep.addr
	}
	_, trusted := c.Trusted()
	return New(Options{Addrs: addrs, LogKey: c.logKey, Trusted: trusted, HTTPClient: c.http, Logger: c.log, Retry: c.retry})
}

type monitor struct {
	c        *Client
	fn       func(ChipEvent) error
	chips    map[string]bool
	reported map[uint64]bool // entries the start-up lookup reported
}

// lookup reports the chips' current entries and returns the leaf index to
// scan on from: the smallest checkpoint a lookup was answered at.
func (m *monitor) lookup(ctx context.Context, chips []ledger.ChipID) (uint64, error) {
	next := ^uint64(0)
	for _, chip := range chips {
		h, err := m.c.LookupChip(ctx, chip)
		if err != nil {
			return 0, err
		}
		next = min(next, h.Checkpoint.Size)
		for _, e := range h.Entries {
			m.reported[e.Receipt.Index] = true
			if err := m.fn(newChipEvent(e.Entry, e.Receipt.Index, h.Checkpoint, true)); err != nil {
				return 0, err
			}
		}
	}
	return next, nil
}

// scan reports the watched chips' entries among the leaves [*next, end)
// and moves *next to end.
func (m *monitor) scan(ctx context.Context, next *uint64, end uint64, initial bool) error {
	for *next < end {
		to := min(end, *next+monitorPage)
		leaves, err := m.c.Entries(ctx, *next, to)
		if err != nil {
			return err
		}
		cp, _ := m.c.Trusted() // what Entries proved the leaves against
		for i, leaf := range leaves {
			if err := m.match(*next+uint64(i), leaf, cp, initial); err != nil {
				return err
			}
		}
		*next = to
	}
	return nil
}

// match reports leaf index if it is an escrow entry of a watched chip.
func (m *monitor) match(index uint64, leaf []byte, cp proofs.Checkpoint, initial bool) error {
	chip, _, err := ledger.PeekEscrow(leaf)
	if err != nil || !m.chips[string(chip)] || m.reported[index] {
		return nil
	}
	e, err := ledger.ParseEscrowEntry(leaf)
	if err != nil {
		m.c.log.Warn("a watched chip's entry does not parse", "chip", chip, "index", index, "err", err)
		return nil
	}
	return m.fn(newChipEvent(e, index, cp, initial))
}

func newChipEvent(e *ledger.EscrowEntry, index uint64, cp proofs.Checkpoint, initial bool) ChipEvent {
	ev := ChipEvent{Chip: e.ChipID, Epoch: e.Epoch, Index: index, StationID: e.StationID, Entry: e, Checkpoint: cp, Initial: initial}
	ev.ProvisionedAt, _ = e.ProvisionedAt()
	if cert, err := x509.ParseCertificate(e.Certificate); err == nil {
		ev.Serial = hex.EncodeToString(cert.SerialNumber.Bytes())
	}
	return ev
}
