package client

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/cryptobyte"

	"github.com/chipledger/chipledger/internal/atomicfile"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// A FindingKind says what an auditor found wrong.
type FindingKind string

// The finding kinds. The first five are about nodes and checkpoints, the
// others about one leaf of the log.
const (
	// FindingFork: two checkpoints signed by the log that do not extend
	// one another: two roots for one size, or a consistency proof between
	// them that fails at every node asked. Evidence: both signed notes and
	// the failed proof.
	FindingFork FindingKind = "fork"
	// FindingRollback: a node serves a checkpoint smaller than the last
	// audited one that is not a prefix of it (its proof fails), or a
	// majority of the nodes cannot show the audited tree at all. A smaller
	// checkpoint proven to be a prefix is a lagging node, not a finding.
	FindingRollback FindingKind = "rollback"
	// FindingBadCheckpoint: a node serves a checkpoint the pinned log key
	// does not verify.
	FindingBadCheckpoint FindingKind = "bad-checkpoint"
	// FindingBadProof: a node serves entries, or a proof, that do not
	// verify against a verified checkpoint, where another node's proof
	// does or none was needed.
	FindingBadProof FindingKind = "bad-proof"
	// FindingCheckpointNotAtIndexRoot: a checkpoint signed by the log whose
	// last leaf is not an index root (kind 3) covering the leaves before
	// it: the log signs only such sizes (DESIGN.md §3.7), so that every
	// checkpoint commits to the chip index. Evidence: the signed note, and
	// the index of its last leaf.
	FindingCheckpointNotAtIndexRoot FindingKind = "checkpoint-not-at-index-root"

	// FindingInvalidEntry: a leaf that does not parse strictly, or breaks
	// an admission limit.
	FindingInvalidEntry FindingKind = "invalid-entry"
	// FindingUnknownKind: a leaf whose kind is not 1, 2, 3 or 4.
	FindingUnknownKind FindingKind = "unknown-kind"
	// FindingUnknownStation: an escrow entry whose station has no
	// registration at a lower index.
	FindingUnknownStation FindingKind = "unknown-station"
	// FindingDuplicateStation: a second registration of a registered
	// station.
	FindingDuplicateStation FindingKind = "duplicate-station"
	// FindingRevokedStation: an escrow entry of a station after the
	// station's revocation, which the ledger must refuse; or a revocation
	// of a station that is not registered before it, or already revoked.
	FindingRevokedStation FindingKind = "revoked-station"
	// FindingBadSignature: an escrow entry whose station signature does
	// not verify with the registered station's key.
	FindingBadSignature FindingKind = "bad-signature"
	// FindingUntrustedCertificate: a device or station certificate that
	// does not chain to the auditor's roots at the entry's time, or breaks
	// the certificate profile; also every entry of a station whose
	// registration does.
	FindingUntrustedCertificate FindingKind = "untrusted-certificate"
	// FindingBindingMismatch: a device certificate that binds another chip
	// ID or other identities than its entry.
	FindingBindingMismatch FindingKind = "binding-mismatch"
	// FindingEpochGap: an escrow entry whose epoch skips epochs (a chip's
	// first entry must have epoch 1, each next one the last plus one; see
	// AuditState.Check for which entry is the last).
	FindingEpochGap FindingKind = "epoch-gap"
	// FindingEpochReuse: an escrow entry whose epoch the chip already used,
	// or moved past: not above the epoch of the chip's last entry.
	FindingEpochReuse FindingKind = "epoch-reuse"
	// FindingIndexRootMismatch: an index root (kind 3) that does not carry
	// its own index as covered size, or whose chip count or root differs
	// from the auditor's own chip index over the leaves before it (only
	// the escrow entries without findings count, as the ledger would have
	// admitted them); or a log whose leaf 0 is not the genesis index root.
	// Evidence: the leaf, and the expected and found values.
	FindingIndexRootMismatch FindingKind = "index-root-mismatch"
)

// A Finding is one thing an auditor found wrong, with its evidence.
type Finding struct {
	Kind FindingKind `json:"kind"`
	// Node is the node whose answer shows it: the one that served the
	// checkpoint, the failed proof, or the entry.
	Node string `json:"node,omitempty"`
	// Index is the leaf's index, for the findings about a leaf.
	Index *uint64 `json:"index,omitempty"`
	// LeafHash is the RFC 6962 hash of the leaf, hex.
	LeafHash string `json:"leaf_hash,omitempty"`
	// Chip and Epoch are the escrow entry's, when it parses.
	Chip  string `json:"chip,omitempty"`
	Epoch uint32 `json:"epoch,omitempty"`
	// Checkpoint is a signed note: for a leaf, the verified checkpoint
	// the leaf was proven to be in; for a fork or rollback, the first of
	// the two checkpoints (the audited one, for a rollback).
	Checkpoint string `json:"checkpoint,omitempty"`
	// Other is the second signed note of a fork or rollback.
	Other string `json:"other_checkpoint,omitempty"`
	// Proof is the consistency proof that failed, if a node gave one.
	Proof [][]byte `json:"proof,omitempty"`
	// Expected and Found are, for an index-root-mismatch, the index root
	// the auditor's chip index gives and the one the leaf carries (none
	// when leaf 0 is no index root).
	Expected *IndexRootValues `json:"expected_index_root,omitempty"`
	Found    *IndexRootValues `json:"found_index_root,omitempty"`
	// Message says what is wrong, in words.
	Message string `json:"message"`
}

// key identifies a finding about checkpoints, so that a fork seen again in
// a later round is recorded once. Two checkpoints that do not extend one
// another are one finding, whichever node shows them and whether they
// count as a fork or, once the larger is audited, a rollback; a checkpoint
// not at an index root is one, whichever node serves it.
func (f *Finding) key() string {
	switch {
	case (f.Kind == FindingFork || f.Kind == FindingRollback) && f.Other != "":
		return "inconsistent\x00" + min(f.Checkpoint, f.Other) + "\x00" + max(f.Checkpoint, f.Other)
	case f.Kind == FindingCheckpointNotAtIndexRoot:
		return string(f.Kind) + "\x00" + f.Checkpoint
	}
	// Anything else, a node that cannot serve the audited leaves (a
	// rollback with no other checkpoint) among them, is the node's own.
	idx := ""
	if f.Index != nil {
		idx = fmt.Sprint(*f.Index)
	}
	return strings.Join([]string{string(f.Kind), f.Node, idx, f.Checkpoint, f.Other}, "\x00")
}

// MaxAuditFindings is the most findings an AuditState keeps with their
// evidence; beyond it, findings are only counted, so a log full of bad
// entries cannot grow the state without bound.
const MaxAuditFindings = 10_000

// An AuditState is what an auditor knows about a log after re-validating
// its first Audited leaves: the last checkpoint it verified and proved
// consistent with every earlier one, the stations registered (with the
// auditor's own verdict on their certificates), each chip's last epoch, its
// own chip index over the admitted escrow entries (DESIGN.md §3.7) and
// where the log's index roots are, and the findings so far. It is the
// auditor's memory between runs (MarshalBinary, ParseAuditState): a rerun
// continues where the last one stopped, checks the next index roots
// against the same chip index, and reports the same findings.
//
// The state moves forward only: Extend moves the checkpoint along a
// verified consistency proof, and Check re-validates the next leaves in
// order. It is not safe for concurrent use.
type AuditState struct {
	logKey   string
	verifier *proofs.LogVerifier
	trust    *ledger.Trust
	trustSum [32]byte

	cp      proofs.Checkpoint
	note    []byte // nil before the first checkpoint
	audited uint64

	indexRoots uint64
	rootAt     []uint64        // the indexes of the index roots covering the leaves before them, in order
	cmap       *ledger.ChipMap // the auditor's chip index: chipState.idx of every chip that has one
	stations   map[[32]byte]*auditedStation
	chips      map[string]chipState

	findings []Finding
	dropped  uint64
	seen     map[string]bool // keys of the checkpoint findings
}

// An auditedStation is a registered station and the auditor's verdict on
// it: verified, or err says why its own trust rejects it.
type auditedStation struct {
	index    uint64
	leaf     []byte
	reg      *ledger.StationRegistration
	verified *ledger.VerifiedStation
	err      error

	revokedAt  uint64 // the index of the revocation leaf, if revocation != nil
	revocation []byte // the revocation leaf; nil while the station stands
}

// chipState is a chip's last epoch and the index of the entry with it,
// and the chip's admitted entries, which the chip index goes by (see
// indexChecker.escrow); the epoch rule goes by both (see leafChecker.epoch).
// The last entry is never before the last admitted one, nor of a smaller
// epoch.
type chipState struct {
	epoch uint32
	index uint64
	idx   chipIndexState
}

// NewAuditState returns the state of an auditor that has seen nothing of
// the log whose verifier key is logKey, and checks certificates with trust
// (its own manufacturer roots, not the nodes').
func NewAuditState(logKey string, trust *ledger.Trust) (*AuditState, error) {
	logKey = strings.TrimSpace(logKey)
	v, err := proofs.NewLogVerifier(logKey)
	if err != nil {
		return nil, fmt.Errorf("client: audit state: %w", err)
	}
	if trust == nil {
		return nil, errors.New("client: audit state: no manufacturer trust")
	}
	return &AuditState{
		logKey:   logKey,
		verifier: v,
		trust:    trust,
		trustSum: sha256.Sum256(trust.PEM()),
		cmap:     ledger.NewChipMap(),
		stations: make(map[[32]byte]*auditedStation),
		chips:    make(map[string]chipState),
		seen:     make(map[string]bool),
	}, nil
}

// Checkpoint returns the audited checkpoint and its signed note: the
// largest checkpoint verified and proven consistent with every checkpoint
// audited before it. Before the first, it returns a zero Checkpoint and
// nil.
func (s *AuditState) Checkpoint() (proofs.Checkpoint, []byte) { return s.cp, clone(s.note) }

// Audited returns how many leaves, from the first, have been re-validated.
// It is at most the audited checkpoint's size; it is smaller while a scan
// is under way, or after one was interrupted.
func (s *AuditState) Audited() uint64 { return s.audited }

// Findings returns the findings recorded so far, in the order found.
func (s *AuditState) Findings() []Finding { return slices.Clone(s.findings) }

// FindingCount returns how many findings were recorded, including those
// beyond MaxAuditFindings that were only counted.
func (s *AuditState) FindingCount() uint64 { return uint64(len(s.findings)) + s.dropped }

// Chips returns how many chips have escrow entries among the audited
// leaves.
func (s *AuditState) Chips() int { return len(s.chips) }

// IndexRoots returns how many index-root leaves (kind 3) were audited, each
// checked against the auditor's chip index (see Check).
func (s *AuditState) IndexRoots() uint64 { return s.indexRoots }

// LastEpoch returns a chip's last epoch among the audited leaves and the
// index of its entry: that of the chip's last entry that does not go back
// to an epoch it already used or moved past (see Check); ok is false for a
// chip without one.
func (s *AuditState) LastEpoch(chip ledger.ChipID) (epoch uint32, index uint64, ok bool) {
	c, ok := s.chips[string(chip)]
	return c.epoch, c.index, ok
}

// An AuditedStation is a station registered in the audited leaves, with the
// auditor's verdict on its certificate.
type AuditedStation struct {
	Station
	// Err says why the auditor's trust rejects the station's certificate
	// at its registration time; nil if it accepts it.
	Err error
}

// Stations returns the registered stations, in registration order.
func (s *AuditState) Stations() []AuditedStation {
	out := make([]AuditedStation, 0, len(s.stations))
	for id, st := range s.stations {
		as := AuditedStation{Station: Station{ID: id, Certificate: clone(st.reg.Certificate),
			RegistrationIndex: st.index, Registration: st.reg}, Err: st.err}
		if st.revocation != nil {
			// Parsed when it was audited (or loaded): it cannot fail.
			as.Revocation, _ = ledger.ParseStationRevocation(st.revocation)
			as.RevocationIndex = st.revokedAt
		}
		out = append(out, as)
	}
	slices.SortFunc(out, func(a, b AuditedStation) int { return cmpUint64(a.RegistrationIndex, b.RegistrationIndex) })
	return out
}

func cmpUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Extend moves the audited checkpoint to signed, which must be a
// checkpoint of the log (verified with the pinned key) that proof, an RFC
// 6962 consistency proof, proves to extend the current one. A checkpoint of
// the current size must have the same root (and needs no proof); the first
// checkpoint needs none. Extend never moves the state back: a smaller
// checkpoint is an error. Errors wrap ErrBadSignature or ErrFork.
func (s *AuditState) Extend(signed []byte, proof [][32]byte) error {
	cp, err := s.verifier.VerifyCheckpoint(signed)
	if err != nil {
		return fmt.Errorf("client: audit state: %w: %w", ErrBadSignature, err)
	}
	if s.note != nil {
		if cp.Size < s.cp.Size {
			return fmt.Errorf("client: audit state: checkpoint of size %d is smaller than the audited %d", cp.Size, s.cp.Size)
		}
		if err := proofs.VerifyConsistency(s.cp.Size, cp.Size, proof, s.cp.Hash, cp.Hash); err != nil {
			return fmt.Errorf("client: audit state: %w: %w", ErrFork, err)
		}
	}
	s.cp, s.note = cp, clone(signed)
	return nil
}

// record adds f to the findings, or only counts it beyond MaxAuditFindings.
func (s *AuditState) record(f Finding) {
	if len(s.findings) >= MaxAuditFindings {
		s.dropped++
		return
	}
	s.findings = append(s.findings, f)
}

// recordOnce records a checkpoint finding unless the same one (kind, node,
// notes) was recorded before, and reports whether it was new.
func (s *AuditState) recordOnce(f Finding) bool {
	k := f.key()
	if s.seen[k] {
		return false
	}
	s.seen[k] = true
	s.record(f)
	return true
}

// CheckOptions tune AuditState.Check.
type CheckOptions struct {
	// Node is the node that served the leaves, named in the findings.
	Node string
	// Workers is how many goroutines verify signatures and certificates;
	// 0 means GOMAXPROCS.
	Workers int
}

// Check re-validates the next leaves of the log, from index Audited() on,
// which the caller has proven to be those leaves of the audited checkpoint
// (they must fit in it), and returns the findings, which it also records.
// Independently of any node, with the state's own trust, it checks that:
//
//   - every leaf parses strictly, as one of the known kinds (invalid-entry,
//     unknown-kind);
//   - a station registration is the station's first (duplicate-station),
//     its certificate is within the admission limit and chains to the
//     roots with the station profile at registered_at
//     (untrusted-certificate); the station is remembered either way, with
//     its index and the verdict;
//   - an escrow entry's station was registered at a lower index
//     (unknown-station) and is trusted (untrusted-certificate), the station
//     signature verifies (bad-signature), and the device certificate
//     chains at provisioned_at (untrusted-certificate) and binds the chip
//     and identities (binding-mismatch): ledger.CheckEscrowEntryWithStation;
//   - each chip's epochs run 1, 2, 3, … in log order. An entry is in
//     sequence if its epoch is the next after the chip's last admitted
//     entry (the next the ledger would admit: see the chip index below),
//     or after the chip's last entry (a log that accepted a faulty entry
//     goes on from it). Otherwise its epoch is not above the last entry's
//     (epoch-reuse), and the last entry stays as it was, or it skips
//     epochs (epoch-gap), and becomes the last entry. So each fault is one
//     finding, at its leaf, naming the chip and epoch: an entry that only
//     goes on from a reported one is not a finding (the chip index leaves
//     it out, as the ledger would), nor is one the ledger would admit,
//     while any other later fault is. The rule runs after the station,
//     signature and certificate checks, so that it knows which of the
//     chip's entries were admitted;
//   - leaf 0 is the genesis index root, and each index root (kind 3) at
//     index i carries covered size i and the chip count and root of the
//     auditor's own chip index (DESIGN.md §3.7) over the leaves [0, i)
//     (index-root-mismatch). That index maps every chip with an escrow
//     entry to the proofs.IndexValue of its latest one, over the entries
//     the ledger should have admitted: those without findings, each the
//     chip's next epoch in the index;
//   - when the leaves reach the end of the audited checkpoint, its last
//     leaf is an index root covering the leaves before it
//     (checkpoint-not-at-index-root).
//
// Parsing and the signature and certificate checks, which are independent
// of each other, run on Workers goroutines; stations are decided in log
// order before them, and epochs and the chip index in log order after.
// Check is deterministic: checking leaves in one call or in several gives
// the same findings and state.
func (s *AuditState) Check(leaves [][]byte, o CheckOptions) ([]Finding, error) {
	start := s.audited
	if uint64(len(leaves)) > s.cp.Size-start {
		return nil, fmt.Errorf("client: audit: leaves [%d, %d) are beyond the audited checkpoint of size %d", start, start+uint64(len(leaves)), s.cp.Size)
	}
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	parsed := make([]parsedLeaf, len(leaves))
	parallelFor(len(leaves), workers, func(i int) { parsed[i] = parseLeaf(leaves[i]) })

	c := leafChecker{s: s, start: start, leaves: leaves, node: o.Node, per: make(map[int][]Finding)}
	var jobs []signatureJob
	for i := range parsed {
		if job, ok := c.decide(i, &parsed[i]); ok {
			jobs = append(jobs, job)
		}
	}
	parallelFor(len(jobs), workers, func(i int) {
		jobs[i].err = ledger.CheckEscrowEntryWithStation(jobs[i].entry, jobs[i].station, s.trust)
	})
	for _, j := range jobs {
		if j.err != nil {
			c.add(j.leaf, j.entry, errorKind(j.err), j.err.Error())
		}
	}
	x := indexChecker{c: &c}
	for i := range parsed {
		x.leaf(i, &parsed[i])
	}
	x.flush()

	var out []Finding
	for i := range leaves {
		for _, f := range c.per[i] {
			s.record(f)
			out = append(out, f)
		}
	}
	s.audited += uint64(len(leaves))
	if start < s.cp.Size && s.audited == s.cp.Size {
		if f, bad := s.checkpointFinding(s.note, s.cp.Size, o.Node); bad && s.recordOnce(f) {
			out = append(out, f)
		}
	}
	return out, nil
}

// A parsedLeaf is a leaf parsed on a worker.
type parsedLeaf struct {
	kind    ledger.Kind
	entry   ledger.Entry
	err     error
	unknown bool     // the kind is not one of the known ones
	hash    [32]byte // the leaf hash of an escrow entry
}

func parseLeaf(leaf []byte) parsedLeaf {
	e, err := ledger.ParseEntry(leaf)
	if err != nil {
		return parsedLeaf{err: err, unknown: errors.Is(err, ledger.ErrUnknownKind)}
	}
	p := parsedLeaf{kind: e.Kind(), entry: e}
	if p.kind == ledger.KindEscrow {
		p.hash = proofs.LeafHash(leaf)
	}
	return p
}

// A signatureJob is an escrow entry whose signature and certificate a
// worker checks.
type signatureJob struct {
	leaf    int
	entry   *ledger.EscrowEntry
	station *ledger.VerifiedStation
	err     error
}

// leafChecker applies the order-dependent checks to the leaves of one
// Check call, in log order, and collects the findings of each leaf.
type leafChecker struct {
	s      *AuditState
	start  uint64
	leaves [][]byte
	node   string
	per    map[int][]Finding // by leaf, in the order found
}

// add records a finding about leaf i.
func (c *leafChecker) add(i int, e *ledger.EscrowEntry, kind FindingKind, msg string) {
	f := c.finding(i, kind, msg)
	if e != nil {
		f.Chip, f.Epoch = e.ChipID.String(), e.Epoch
	}
	c.per[i] = append(c.per[i], f)
}

// addIndex records an index-root-mismatch about leaf i.
func (c *leafChecker) addIndex(i int, expected, found *IndexRootValues, msg string) {
	f := c.finding(i, FindingIndexRootMismatch, msg)
	f.Expected, f.Found = expected, found
	c.per[i] = append(c.per[i], f)
}

func (c *leafChecker) finding(i int, kind FindingKind, msg string) Finding {
	idx := c.start + uint64(i)
	h := proofs.LeafHash(c.leaves[i])
	return Finding{Kind: kind, Node: c.node, Index: &idx, LeafHash: hex.EncodeToString(h[:]),
		Checkpoint: string(c.s.note), Message: msg}
}

// decide runs the order-dependent checks of leaf i and returns the
// signature job of an escrow entry whose station is trusted.
func (c *leafChecker) decide(i int, p *parsedLeaf) (signatureJob, bool) {
	switch {
	case p.unknown:
		c.add(i, nil, FindingUnknownKind, p.err.Error())
		return signatureJob{}, false
	case p.err != nil:
		c.add(i, nil, FindingInvalidEntry, p.err.Error())
		return signatureJob{}, false
	}
	switch e := p.entry.(type) {
	case *ledger.EscrowEntry:
		return c.escrow(i, e)
	case *ledger.StationRegistration:
		c.station(i, e)
	case *ledger.StationRevocation:
		c.revocation(i, e)
	}
	// Index roots are checked after the other leaves' verdicts, by
	// indexChecker.
	return signatureJob{}, false
}

func (c *leafChecker) escrow(i int, e *ledger.EscrowEntry) (signatureJob, bool) {
	idx := c.start + uint64(i)
	st, ok := c.s.stations[e.StationID]
	switch {
	case !ok:
		c.add(i, e, FindingUnknownStation, fmt.Sprintf("station %x has no registration before index %d", e.StationID, idx))
		return signatureJob{}, false
	case st.revocation != nil:
		c.add(i, e, FindingRevokedStation, fmt.Sprintf("station %x was revoked at index %d, before this entry", e.StationID, st.revokedAt))
		return signatureJob{}, false
	case st.verified == nil:
		c.add(i, e, FindingUntrustedCertificate, fmt.Sprintf("station %x, registered at index %d, is not trusted by the auditor's roots", e.StationID, st.index))
		return signatureJob{}, false
	}
	return signatureJob{leaf: i, entry: e, station: st.verified}, true
}

// epoch applies the epoch rule (see Check) to entry e, leaf i at index
// idx, of a chip whose state is st (zero for a chip without entries), and
// moves st's last entry on unless e goes back. It runs in log order, after
// the checks that decide whether the chip's earlier entries were admitted.
func (c *leafChecker) epoch(i int, idx uint64, e *ledger.EscrowEntry, st *chipState) {
	switch {
	case e.Epoch == st.epoch+1 || e.Epoch == st.idx.epoch+1:
	case st.epoch == 0:
		c.add(i, e, FindingEpochGap, fmt.Sprintf("chip %s: first entry has epoch %d, want 1", e.ChipID, e.Epoch))
	case e.Epoch <= st.epoch && st.idx.epoch == st.epoch:
		c.add(i, e, FindingEpochReuse, fmt.Sprintf("chip %s: epoch %d is already used: the chip is at epoch %d since index %d", e.ChipID, e.Epoch, st.epoch, st.index))
		return // the chip's last entry stays as it was
	case e.Epoch <= st.epoch:
		c.add(i, e, FindingEpochReuse, fmt.Sprintf("chip %s: epoch %d goes back: the chip's last entry, at index %d, has epoch %d, and its last admitted one %s; want %d or %d",
			e.ChipID, e.Epoch, st.index, st.epoch, st.idx.describe(), st.epoch+1, st.idx.epoch+1))
		return
	case st.idx.epoch == st.epoch:
		c.add(i, e, FindingEpochGap, fmt.Sprintf("chip %s: epoch %d follows epoch %d (index %d), want %d", e.ChipID, e.Epoch, st.epoch, st.index, st.epoch+1))
	default:
		c.add(i, e, FindingEpochGap, fmt.Sprintf("chip %s: epoch %d follows epoch %d (index %d), and the chip's last admitted entry %s; want %d or %d",
			e.ChipID, e.Epoch, st.epoch, st.index, st.idx.describe(), st.epoch+1, st.idx.epoch+1))
	}
	st.epoch, st.index = e.Epoch, idx
}

// station registers the station of registration r at leaf i, and records
// the auditor's verdict on its certificate.
func (c *leafChecker) station(i int, r *ledger.StationRegistration) {
	idx := c.start + uint64(i)
	id := r.StationID()
	if prev, ok := c.s.stations[id]; ok {
		c.add(i, nil, FindingDuplicateStation, fmt.Sprintf("station %x is already registered at index %d", id, prev.index))
		return
	}
	st := &auditedStation{index: idx, leaf: clone(c.leaves[i]), reg: r}
	st.verified, st.err = verifyStation(r, c.s.trust)
	if st.err != nil {
		c.add(i, nil, errorKind(st.err), fmt.Sprintf("station %x: %v", id, st.err))
	}
	c.s.stations[id] = st
}

// revocation records the revocation r at leaf i: its station must be
// registered before it and not yet revoked.
func (c *leafChecker) revocation(i int, r *ledger.StationRevocation) {
	idx := c.start + uint64(i)
	st, ok := c.s.stations[r.StationID]
	switch {
	case !ok:
		c.add(i, nil, FindingRevokedStation, fmt.Sprintf("revocation of station %x, which has no registration before index %d", r.StationID, idx))
	case st.revocation != nil:
		c.add(i, nil, FindingRevokedStation, fmt.Sprintf("station %x is already revoked at index %d", r.StationID, st.revokedAt))
	default:
		st.revokedAt, st.revocation = idx, clone(c.leaves[i])
	}
}

// verifyStation runs the station checks of ledger.CheckStationRegistration
// and returns the station verified for its entries.
func verifyStation(r *ledger.StationRegistration, trust *ledger.Trust) (*ledger.VerifiedStation, error) {
	if len(r.Certificate) > ledger.MaxStationCertificateSize {
		return nil, fmt.Errorf("%w: station certificate is %d bytes, at most %d", ledger.ErrFieldTooLarge, len(r.Certificate), ledger.MaxStationCertificateSize)
	}
	at, err := r.RegisteredAt()
	if err != nil {
		return nil, err
	}
	return trust.VerifyStation(r.Certificate, at)
}

// errorKind classifies an error of the ledger's checks.
func errorKind(err error) FindingKind {
	switch {
	case errors.Is(err, ledger.ErrBadStationSignature):
		return FindingBadSignature
	case errors.Is(err, ledger.ErrChipIDMismatch), errors.Is(err, ledger.ErrIdentityMismatch):
		return FindingBindingMismatch
	case errors.Is(err, ledger.ErrUntrustedCertificate), errors.Is(err, ledger.ErrCertificateProfile):
		return FindingUntrustedCertificate
	default:
		return FindingInvalidEntry
	}
}

// parallelFor calls fn(i) for every i in [0, n) on up to workers
// goroutines, handing out indexes in small runs.
func parallelFor(n, workers int, fn func(i int)) {
	const run = 16
	workers = min(workers, (n+run-1)/run)
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				lo := int(next.Add(run)) - run
				if lo >= n {
					return
				}
				for i := lo; i < min(lo+run, n); i++ {
					fn(i)
				}
			}
		})
	}
	wg.Wait()
}

// auditStateMagic starts an encoded AuditState: "CLAS" and version 2.
// Version 1 had no chip index.
var auditStateMagic = []byte("CLAS\x02")

// MarshalBinary encodes the state (big-endian, cryptobyte framing):
//
//	"CLAS" 0x02                                   magic and version
//	opaque log_key<1..2^16-1>                     the pinned verifier key
//	opaque trust_sha256[32]                       SHA-256 of the roots' PEM (ledger.Trust.PEM)
//	opaque checkpoint<0..2^16-1>                  signed note; empty before the first
//	uint64 audited                                leaves [0, audited) re-validated
//	uint64 index_roots                            kind-3 leaves among them
//	opaque root_positions<0..2^32-1>              the indexes of those covering the leaves before
//	                                              them, increasing: each as a uvarint of its gap
//	                                              to the one before minus one (the first: itself)
//	opaque index_root[32]                         the root of the auditor's chip index
//	uint32 station_count, then per station, in registration order:
//	    uint64 registration_index
//	    opaque registration_leaf<1..2^16-1>        the kind-2 leaf as logged
//	uint64 chip_count, then per chip, in increasing byte order of chip_id:
//	    opaque chip_id<8..32>                     (u8 length)
//	    uint32 last_epoch
//	    uint64 last_index                         index of the entry with last_epoch
//	    uint8  indexed                            0: not in the chip index; 1: in it with the
//	                                              entry of last_epoch; 2: with an earlier one:
//	    [2]    uint32 index_epoch ‖ uint64 index_leaf_index
//	    [1, 2] opaque leaf_hash[32]               that entry's leaf hash
//	           opaque history_range[32 × k]       the compact range of the chip's admitted leaf
//	                                              hashes, largest subtree first, without the
//	                                              last when the epoch is odd (it is leaf_hash):
//	                                              k = popcount(epoch) − epoch mod 2
//	uint64 dropped_findings                       counted beyond MaxAuditFindings
//	opaque findings<0..2^32-1>                    JSON array of Finding, in the order found
//	opaque sha256[32]                             over every byte before it
//
// Every state has exactly one encoding, and ParseAuditState is its inverse.
// The stations' verdicts are not stored: they are recomputed from the
// registration leaves with the trust, whose hash the state pins. Nor is the
// chip index map: ParseAuditState rebuilds it from the chips (and checks its
// root), so a resumed audit checks the next index roots against the same
// map.
func (s *AuditState) MarshalBinary() ([]byte, error) {
	findings, err := json.Marshal(s.findingsOrEmpty())
	if err != nil {
		return nil, err
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 256+len(findings)+len(s.chips)*(1+ledger.DefaultChipIDLen+13+32)+len(s.rootAt)*2))
	b.AddBytes(auditStateMagic)
	addOpaque16(b, []byte(s.logKey))
	b.AddBytes(s.trustSum[:])
	addOpaque16(b, s.note)
	b.AddUint64(s.audited)
	b.AddUint64(s.indexRoots)
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) {
		var buf []byte
		prev := int64(-1)
		for _, p := range s.rootAt {
			buf = binary.AppendUvarint(buf[:0], uint64(int64(p)-prev-1))
			b.AddBytes(buf)
			prev = int64(p)
		}
	})
	root := s.cmap.Root()
	b.AddBytes(root[:])
	stations := s.Stations()
	b.AddUint32(uint32(len(stations)))
	for _, st := range stations {
		b.AddUint64(st.RegistrationIndex)
		as := s.stations[st.ID]
		addOpaque16(b, as.leaf)
		addOpaque16(b, as.revocation) // empty while the station stands
		if as.revocation != nil {
			b.AddUint64(as.revokedAt)
		}
	}
	chips := make([]string, 0, len(s.chips))
	for c := range s.chips {
		chips = append(chips, c)
	}
	slices.Sort(chips)
	b.AddUint64(uint64(len(chips)))
	for _, c := range chips {
		st := s.chips[c]
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(c)) })
		b.AddUint32(st.epoch)
		b.AddUint64(st.index)
		switch {
		case st.idx.epoch == 0:
			b.AddUint8(0)
			continue
		case st.idx.epoch == st.epoch && st.idx.index == st.index:
			b.AddUint8(1)
		default:
			b.AddUint8(2)
			b.AddUint32(st.idx.epoch)
			b.AddUint64(st.idx.index)
		}
		b.AddBytes(st.idx.hash[:])
		for _, h := range st.idx.rng {
			b.AddBytes(h[:])
		}
	}
	b.AddUint64(s.dropped)
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(findings) })
	out, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("client: encode audit state: %w", err)
	}
	sum := sha256.Sum256(out)
	return append(out, sum[:]...), nil
}

func (s *AuditState) findingsOrEmpty() []Finding {
	if s.findings == nil {
		return []Finding{}
	}
	return s.findings
}

func addOpaque16(b *cryptobyte.Builder, v []byte) {
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(v) })
}

// ErrBadAuditState reports an audit state that is corrupt, or that belongs
// to another log or another set of roots.
var ErrBadAuditState = errors.New("client: bad audit state")

// ParseAuditState decodes a state made by MarshalBinary for the log of
// logKey with the roots of trust. It checks the encoding and its checksum,
// verifies the checkpoint with logKey again, refuses a state of another log
// or made with other roots, and verifies the registered stations with
// trust again. Errors wrap ErrBadAuditState.
func ParseAuditState(b []byte, logKey string, trust *ledger.Trust) (*AuditState, error) {
	s, err := NewAuditState(logKey, trust)
	if err != nil {
		return nil, err
	}
	if err := s.decode(b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadAuditState, err)
	}
	return s, nil
}

func (s *AuditState) decode(b []byte) error {
	if len(b) < sha256.Size {
		return errors.New("truncated")
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return errors.New("checksum mismatch: the file is truncated or corrupt")
	}
	in := cryptobyte.String(body)
	var magic, key, trustSum, note []byte
	if !in.ReadBytes(&magic, len(auditStateMagic)) || !bytes.Equal(magic, auditStateMagic) {
		if bytes.HasPrefix(body, []byte("CLAS\x01")) {
			return errors.New("a state of version 1, which has no chip index: start a new state")
		}
		return errors.New("not an audit state (or an unknown version)")
	}
	var positions, indexRoot []byte
	if !readOpaque16(&in, &key) || !in.ReadBytes(&trustSum, 32) || !readOpaque16(&in, &note) ||
		!in.ReadUint64(&s.audited) || !in.ReadUint64(&s.indexRoots) || !readOpaque32(&in, &positions) ||
		!in.ReadBytes(&indexRoot, 32) {
		return errors.New("truncated header")
	}
	if string(key) != s.logKey {
		return fmt.Errorf("it is the state of another log, whose key is %q, not %q", key, s.logKey)
	}
	if !bytes.Equal(trustSum, s.trustSum[:]) {
		return errors.New("it was made with other manufacturer roots; audit with the same roots, or start a new state")
	}
	if len(note) > 0 {
		cp, err := s.verifier.VerifyCheckpoint(note)
		if err != nil {
			return fmt.Errorf("its checkpoint: %w", err)
		}
		s.cp, s.note = cp, clone(note)
	}
	if s.audited > s.cp.Size || s.indexRoots > s.audited {
		return fmt.Errorf("%d leaves audited, %d index roots, in a checkpoint of %d", s.audited, s.indexRoots, s.cp.Size)
	}
	if err := s.decodeRootPositions(positions); err != nil {
		return err
	}
	if err := s.decodeStations(&in); err != nil {
		return err
	}
	if err := s.decodeChips(&in); err != nil {
		return err
	}
	if root := s.cmap.Root(); !bytes.Equal(root[:], indexRoot) {
		return fmt.Errorf("the chip index rebuilt from the chips has root %x, the state says %x", root, indexRoot)
	}
	var findings []byte
	var n uint32
	if !in.ReadUint64(&s.dropped) || !in.ReadUint32(&n) || !in.ReadBytes(&findings, int(n)) || !in.Empty() {
		return errors.New("truncated findings, or trailing bytes")
	}
	if err := json.Unmarshal(findings, &s.findings); err != nil {
		return fmt.Errorf("findings: %w", err)
	}
	// JSON spells one value many ways (spacing, null, the case of field
	// names, unknown or repeated fields); a state has exactly one encoding,
	// the one MarshalBinary writes.
	if canonical, err := json.Marshal(s.findingsOrEmpty()); err != nil || !bytes.Equal(canonical, findings) {
		return errors.New("findings: not in the encoding MarshalBinary writes")
	}
	if len(s.findings) > MaxAuditFindings || (s.dropped > 0 && len(s.findings) < MaxAuditFindings) {
		return fmt.Errorf("%d findings kept and %d counted", len(s.findings), s.dropped)
	}
	if len(s.findings) == 0 {
		s.findings = nil
	}
	for i := range s.findings {
		s.seen[s.findings[i].key()] = true
	}
	return nil
}

func (s *AuditState) decodeStations(in *cryptobyte.String) error {
	var n uint32
	if !in.ReadUint32(&n) {
		return errors.New("truncated stations")
	}
	var last uint64
	for i := range n {
		var idx, revokedAt uint64
		var leaf, revocation []byte
		if !in.ReadUint64(&idx) || !readOpaque16(in, &leaf) || !readOpaque16(in, &revocation) ||
			(len(revocation) > 0 && !in.ReadUint64(&revokedAt)) {
			return errors.New("truncated station")
		}
		reg, err := ledger.ParseStationRegistration(leaf)
		if err != nil {
			return fmt.Errorf("station %d: %w", i, err)
		}
		if idx >= s.audited || (i > 0 && idx <= last) {
			return fmt.Errorf("station registered at index %d: out of order or not audited", idx)
		}
		if _, dup := s.stations[reg.StationID()]; dup {
			return fmt.Errorf("station %x twice", reg.StationID())
		}
		st := &auditedStation{index: idx, leaf: clone(leaf), reg: reg}
		if len(revocation) > 0 {
			r, err := ledger.ParseStationRevocation(revocation)
			if err != nil {
				return fmt.Errorf("revocation of station %d: %w", i, err)
			}
			if r.StationID != reg.StationID() || revokedAt <= idx || revokedAt >= s.audited {
				return fmt.Errorf("revocation of station %x at index %d: another station's, or out of order", reg.StationID(), revokedAt)
			}
			st.revokedAt, st.revocation = revokedAt, clone(revocation)
		}
		st.verified, st.err = verifyStation(reg, s.trust)
		s.stations[reg.StationID()] = st
		last = idx
	}
	return nil
}

// decodeRootPositions reads the index-root positions: increasing, and
// below audited.
func (s *AuditState) decodeRootPositions(b []byte) error {
	if uint64(len(b)) > s.indexRoots*binary.MaxVarintLen64 {
		return errors.New("more index-root positions than index roots")
	}
	next := uint64(0) // the smallest the next position may be
	for len(b) > 0 {
		gap, n := binary.Uvarint(b)
		if n <= 0 || gap >= s.audited-next {
			return errors.New("bad index-root positions")
		}
		if n != len(binary.AppendUvarint(nil, gap)) {
			return errors.New("index-root position not minimally encoded")
		}
		p := next + gap
		s.rootAt = append(s.rootAt, p)
		next, b = p+1, b[n:]
	}
	if uint64(len(s.rootAt)) > s.indexRoots {
		return fmt.Errorf("%d index-root positions, %d index roots", len(s.rootAt), s.indexRoots)
	}
	return nil
}

// decodeChips reads the chips and rebuilds the chip index map from them.
func (s *AuditState) decodeChips(in *cryptobyte.String) error {
	var n uint64
	if !in.ReadUint64(&n) || n > uint64(len(*in))/(1+ledger.MinChipIDLen+13) {
		return errors.New("truncated chips")
	}
	s.chips = make(map[string]chipState, n)
	var pairs []ledger.MapPair
	var prev []byte
	for range n {
		var chip cryptobyte.String
		var st chipState
		var indexed uint8
		if !in.ReadUint8LengthPrefixed(&chip) || !in.ReadUint32(&st.epoch) || !in.ReadUint64(&st.index) || !in.ReadUint8(&indexed) {
			return errors.New("truncated chip")
		}
		if err := ledger.ChipID(chip).Validate(); err != nil {
			return err
		}
		if prev != nil && bytes.Compare(prev, chip) >= 0 {
			return errors.New("chips out of order")
		}
		if st.epoch == 0 || st.index >= s.audited {
			return fmt.Errorf("chip %x: epoch %d at index %d", []byte(chip), st.epoch, st.index)
		}
		if err := decodeChipIndex(in, &st, indexed); err != nil {
			return fmt.Errorf("chip %x: %w", []byte(chip), err)
		}
		if st.idx.epoch > 0 {
			pairs = append(pairs, st.idx.mapPair(chip))
		}
		s.chips[string(chip)] = st
		prev = chip
	}
	s.cmap = ledger.BuildChipMap(pairs)
	return nil
}

// decodeChipIndex reads a chip's entry in the chip index, whose form is
// indexed.
func decodeChipIndex(in *cryptobyte.String, st *chipState, indexed uint8) error {
	switch indexed {
	case 0:
		return nil
	case 1:
		st.idx.epoch, st.idx.index = st.epoch, st.index
	case 2:
		if !in.ReadUint32(&st.idx.epoch) || !in.ReadUint64(&st.idx.index) {
			return errors.New("truncated chip index entry")
		}
		if st.idx.epoch == 0 || st.idx.epoch > st.epoch || st.idx.index > st.index ||
			(st.idx.epoch == st.epoch && st.idx.index == st.index) {
			return fmt.Errorf("chip index entry of epoch %d at %d, for a chip at epoch %d since %d", st.idx.epoch, st.idx.index, st.epoch, st.index)
		}
	default:
		return fmt.Errorf("unknown chip index form %d", indexed)
	}
	if !in.CopyBytes(st.idx.hash[:]) {
		return errors.New("truncated chip index entry")
	}
	if k := rangeLen(st.idx.epoch); k > 0 {
		st.idx.rng = make([][32]byte, k)
		for i := range st.idx.rng {
			if !in.CopyBytes(st.idx.rng[i][:]) {
				return errors.New("truncated history range")
			}
		}
	}
	return nil
}

func readOpaque32(in *cryptobyte.String, out *[]byte) bool {
	var n uint32
	return in.ReadUint32(&n) && in.ReadBytes(out, int(n))
}

func readOpaque16(in *cryptobyte.String, out *[]byte) bool {
	var v cryptobyte.String
	if !in.ReadUint16LengthPrefixed(&v) {
		return false
	}
	*out = v
	return true
}

// ReadAuditStateFile reads and parses a state file written by WriteFile
// (see ParseAuditState). A missing file is an error wrapping
// fs.ErrNotExist, for which callers start with NewAuditState.
func ReadAuditStateFile(path, logKey string, trust *ledger.Trust) (*AuditState, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("client: audit state: %w", err)
	}
	s, err := ParseAuditState(b, logKey, trust)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// WriteFile saves the state to path atomically: it writes a temporary file
// beside it, syncs it, renames it over path and syncs the directory, so a
// crash leaves either the old state or the new one.
func (s *AuditState) WriteFile(path string) error {
	b, err := s.MarshalBinary()
	if err != nil {
		return err
	}
	// atomicfile's errors name the file and what failed ("write PATH: ..."),
	// and callers such as Auditor say that it was the state being saved.
	return atomicfile.Replace(path, b, 0o644)
}
