package client

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
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

	// Anomaly, if set, is called with each disagreement between the log's
	// chip index and the entries the monitor read from the log (see
	// IndexAnomaly), once each, and the monitor goes on; an error it
	// returns ends Monitor. If Anomaly is nil, the first anomaly ends
	// Monitor, with the *IndexAnomaly as its error.
	Anomaly func(IndexAnomaly) error
}

// ErrIndexAnomaly reports that the log's verifiable chip index and the log's
// entries disagree about a watched chip: a *IndexAnomaly.
var ErrIndexAnomaly = errors.New("client: the chip index and the log disagree")

// An AnomalyKind says how the chip index and the log disagree.
type AnomalyKind string

// The anomaly kinds.
const (
	// AnomalyNotInIndex: the log holds an escrow entry of the chip, among
	// the leaves the index covers, that the chip index does not record: a
	// lookup, what a device or a repair shop sees, hides it.
	AnomalyNotInIndex AnomalyKind = "entry-not-in-index"
	// AnomalyNotInLog: the chip index records an entry of the chip where
	// the monitor, reading the log, found no such entry.
	AnomalyNotInLog AnomalyKind = "index-entry-not-in-log"
	// AnomalyBadLookup: the lookup of the chip fails verification (its
	// lookup proof, or entries that are not the history it proves); Err
	// says how.
	AnomalyBadLookup AnomalyKind = "bad-lookup"
)

// An IndexAnomaly is a disagreement, about a watched chip, between the
// log's verifiable chip index (DESIGN.md §3.7), as a verified lookup proves
// it, and the chip's entries the monitor read from the log itself, all
// proven against verified checkpoints. Either the log's index roots do not
// commit to its entries, or a node served a lookup that does not verify.
type IndexAnomaly struct {
	Kind AnomalyKind
	Chip ledger.ChipID
	// Index, LeafHash and Epoch are the entry's (the epoch as the log's
	// entry or the index's history says), for NotInIndex and NotInLog.
	Index    uint64
	LeafHash [32]byte
	Epoch    uint32
	// Checkpoint is the verified checkpoint of the lookup, whose last leaf
	// is the index root: the index covers the leaves before it. Zero for
	// a lookup that failed verification.
	Checkpoint proofs.Checkpoint
	// Value is the chip's index value the lookup proved; Epoch 0 if the
	// index does not hold the chip.
	Value proofs.IndexValue
	// Err is why the lookup failed verification (BadLookup).
	Err error
	// Message says what is wrong, in words.
	Message string
}

func (a *IndexAnomaly) Error() string { return "client: monitor: " + a.Message }

// Is reports whether target is ErrIndexAnomaly.
func (a *IndexAnomaly) Is(target error) bool { return target == ErrIndexAnomaly }

func (a *IndexAnomaly) Unwrap() error { return a.Err }

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
// At the start and at each new checkpoint it also looks every watched
// chip up (LookupChip, whose lookup proof shows the chip's history as the
// log's chip index records it) and checks that history against the chip's
// entries it read from the log: an entry the index hides, or one it
// records that the log does not hold, is an IndexAnomaly (see
// MonitorOptions.Anomaly). Entries it did not read are not compared: those
// before FromSize, or, with Lookup, those before the start that the
// start-up lookup did not return.
//
// With a witness policy (Options.Witnesses) those lookups are checked
// against a witnessed checkpoint as LookupChip's are, so they wait for the
// witnesses to cosign; one that no witnessed checkpoint covers ends
// Monitor with ErrNotWitnessed.
//
// Monitor reports entries; it does not judge them (an Auditor does). It
// reads through a client of its own, of the same nodes, starting from c's
// trusted checkpoint, so that other calls on c cannot move the checkpoint
// it watches from. It runs until ctx ends (returning ctx's error) or c is
// closed (ErrClosed), fn or o.Anomaly returns an error (returned as it
// is), the log fails verification (ErrBadProof, *ForkError, …), or, with
// no o.Anomaly, the index and the log disagree (*IndexAnomaly).
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
	m := &monitor{c: own, fn: fn, anomaly: o.Anomaly, chips: make(map[string]bool, len(o.Chips)), reported: make(map[uint64]bool),
		seen: make(map[string]map[uint64]seenEntry), anomalies: make(map[string]bool), from: o.FromSize}
	for _, chip := range o.Chips {
		if err := chip.Validate(); err != nil {
			return fmt.Errorf("client: monitor: %w", err)
		}
		if !m.chips[string(chip)] {
			m.chips[string(chip)] = true
			m.order = append(m.order, chip)
		}
	}
	next := o.FromSize
	if o.Lookup {
		if next, err = m.lookup(ctx, m.order); err != nil {
			return err
		}
		m.from = next
	}
	// The watch starts after the trusted checkpoint, which the lookups
	// may have moved past the one fetched here: scan up to it first. With
	// Lookup the start is the lookups' checkpoint, so what this scan finds
	// was appended since.
	if _, _, err := own.Checkpoint(ctx); err != nil {
		return err
	}
	top, _ := own.Trusted()
	if err := m.scan(ctx, &next, top.Size, !o.Lookup); err != nil {
		return err
	}
	if err := m.checkIndex(ctx, &next); err != nil {
		return err
	}
	err = own.WatchCheckpoints(ctx, func(cp proofs.Checkpoint, _ []byte) error {
		if err := m.scan(ctx, &next, cp.Size, false); err != nil {
			return err
		}
		if cp.Size <= m.checked {
			return nil // the index was checked at this size or a later one
		}
		return m.checkIndex(ctx, &next)
	})
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// fork returns a new client of c's nodes and log, trusting c's trusted
// checkpoint, holding its witness policy and the maximum age of its
// cosignatures, and sharing its HTTP client, logger and retry policy.
func (c *Client) fork() (*Client, error) {
	addrs := make([]string, len(c.nodes))
	for i, ep := range c.nodes {
		addrs[i] = ep.addr
	}
	_, trusted := c.Trusted()
	return New(Options{Addrs: addrs, LogKey: c.logKey, Trusted: trusted, Witnesses: c.witnesses, WitnessMaxAge: c.maxAge,
		HTTPClient: c.http, Logger: c.log, Retry: c.retry})
}

type monitor struct {
	c        *Client
	fn       func(ChipEvent) error
	anomaly  func(IndexAnomaly) error
	chips    map[string]bool
	order    []ledger.ChipID // the watched chips, as given
	reported map[uint64]bool // entries the start-up lookup reported

	// seen holds each watched chip's entries proven to be in the log, by
	// leaf index: those the start-up lookup returned, and all of them
	// among the leaves the scan read, from `from` on.
	seen      map[string]map[uint64]seenEntry
	from      uint64
	checked   uint64          // the scan's end at the last index check
	anomalies map[string]bool // those reported
}

// A seenEntry is an escrow entry of a watched chip read from the log.
type seenEntry struct {
	hash  [32]byte
	epoch uint32
}

// see records an entry of a watched chip.
func (m *monitor) see(chip []byte, index uint64, e seenEntry) {
	byIndex := m.seen[string(chip)]
	if byIndex == nil {
		byIndex = make(map[uint64]seenEntry)
		m.seen[string(chip)] = byIndex
	}
	byIndex[index] = e
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
			m.see(chip, e.Receipt.Index, seenEntry{hash: proofs.LeafHash(e.Receipt.Leaf), epoch: e.Entry.Epoch})
			if err := m.fn(newChipEvent(e.Entry, e.Receipt.Index, h.Checkpoint, true)); err != nil {
				return 0, err
			}
		}
	}
	return next, nil
}

// checkIndex looks every watched chip up and compares the history the
// chip index proves with the entries read from the log, first reading the
// log up to the lookup's checkpoint (reporting its new entries) if the
// lookup was answered at a larger one.
func (m *monitor) checkIndex(ctx context.Context, next *uint64) error {
	for _, chip := range m.order {
		h, err := m.c.LookupChip(ctx, chip)
		if err != nil {
			if !isVerificationError(err) {
				return err
			}
			if err := m.report(IndexAnomaly{Kind: AnomalyBadLookup, Chip: chip, Err: err,
				Message: fmt.Sprintf("the lookup of chip %s does not verify: %v", chip, err)}); err != nil {
				return err
			}
			continue
		}
		if err := m.scan(ctx, next, h.Checkpoint.Size, false); err != nil {
			return err
		}
		for _, a := range indexAnomalies(chip, h, m.seen[string(chip)], m.from) {
			if err := m.report(a); err != nil {
				return err
			}
		}
	}
	m.checked = *next
	return nil
}

// report hands an anomaly to the caller once.
func (m *monitor) report(a IndexAnomaly) error {
	key := fmt.Sprintf("%s\x00%x\x00%d\x00%s", a.Kind, []byte(a.Chip), a.Index, a.Message)
	if a.Kind != AnomalyBadLookup {
		key = fmt.Sprintf("%s\x00%x\x00%d", a.Kind, []byte(a.Chip), a.Index)
	}
	if m.anomalies[key] {
		return nil
	}
	m.anomalies[key] = true
	m.c.log.Warn("chip index anomaly", "kind", a.Kind, "chip", a.Chip, "index", a.Index, "msg", a.Message)
	if m.anomaly == nil {
		return &a
	}
	return m.anomaly(a)
}

// indexAnomalies compares what a verified lookup of chip, h, proves the
// chip index records with the chip's entries proven to be in the log,
// seen, which hold all of them among the leaves from `from` up to at least
// the lookup's checkpoint. The index covers the leaves before the
// checkpoint's last, the index root: every entry seen there must be in the
// index, and every entry the index records from `from` on must be seen.
func indexAnomalies(chip ledger.ChipID, h *ChipHistory, seen map[uint64]seenEntry, from uint64) []IndexAnomaly {
	res := h.Index
	if res == nil {
		return []IndexAnomaly{{Kind: AnomalyBadLookup, Chip: chip, Checkpoint: h.Checkpoint,
			Message: fmt.Sprintf("the lookup of chip %s carries no chip index proof", chip)}}
	}
	covered := res.Checkpoint.Size - 1
	recorded := make(map[uint64][32]byte, len(res.History))
	for _, e := range res.History {
		recorded[e.Index] = e.LeafHash
	}
	value := res.Value // zero if the chip is not in the index
	var out []IndexAnomaly
	for _, i := range slices.Sorted(maps.Keys(seen)) {
		e := seen[i]
		if i >= covered {
			continue
		}
		if hash, ok := recorded[i]; !ok || hash != e.hash {
			out = append(out, IndexAnomaly{Kind: AnomalyNotInIndex, Chip: chip, Index: i, LeafHash: e.hash, Epoch: e.epoch,
				Checkpoint: res.Checkpoint, Value: value,
				Message: fmt.Sprintf("chip %s: the log holds its entry of epoch %d at leaf %d, but the chip index at size %d does not record it (%s)",
					chip, e.epoch, i, res.Checkpoint.Size, describeValue(res))})
		}
	}
	for k, r := range res.History {
		if r.Index < from {
			continue
		}
		if e, ok := seen[r.Index]; !ok || e.hash != r.LeafHash {
			out = append(out, IndexAnomaly{Kind: AnomalyNotInLog, Chip: chip, Index: r.Index, LeafHash: r.LeafHash, Epoch: uint32(k + 1),
				Checkpoint: res.Checkpoint, Value: value,
				Message: fmt.Sprintf("chip %s: the chip index at size %d records its entry of epoch %d at leaf %d, but the log holds no such entry there",
					chip, res.Checkpoint.Size, k+1, r.Index)})
		}
	}
	return out
}

// describeValue says what a lookup proves about a chip.
func describeValue(res *proofs.LookupResult) string {
	if !res.Present {
		return "it says the chip has no entry"
	}
	return fmt.Sprintf("it says the latest is epoch %d at leaf %d", res.Value.Epoch, res.Value.LeafIndex)
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
	chip, epoch, err := ledger.PeekEscrow(leaf)
	if err != nil || !m.chips[string(chip)] {
		return nil
	}
	// What the chip index counts as the chip's entry, valid or not.
	m.see(chip, index, seenEntry{hash: proofs.LeafHash(leaf), epoch: epoch})
	if m.reported[index] {
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
