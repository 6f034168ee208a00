package provisioner

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// Ledger is where a station publishes escrow entries. Append must return a
// receipt it has verified against the log's key, and must be safe to call
// again with the same leaf (the ledger answers a retry as a duplicate).
// Entries must return the chip's escrow entries in the log, epochs 1, 2,
// …, verified (none for a chip the log does not know): a station reads
// them only to check that a pool key reserved before its run is not
// escrowed already. client.Client satisfies it through ClientLedger.
type Ledger interface {
	Append(ctx context.Context, leaf []byte) (*proofs.Receipt, error)
	Entries(ctx context.Context, chip ledger.ChipID) ([]*ledger.EscrowEntry, error)
}

// StationConfig configures a Station.
type StationConfig struct {
	// Certificate and Key are the station's certificate (issued by the
	// manufacturer CA with the station policy) and its ECDSA P-256 key.
	Certificate *x509.Certificate
	Key         *ecdsa.PrivateKey
	// CA issues the device certificates.
	CA *CA
	// MasterKeys derive the channel keys.
	MasterKeys *MasterKeys
	// Pool, if set, supplies the device key pairs; otherwise each is
	// generated during the handshake.
	Pool *Pool
	// Ledger publishes the entries.
	Ledger Ledger
	// Journal records each device's progress.
	Journal *Journal
	// Revoked, if set, says the station is revoked in the ledger (the
	// ledger refuses its new entries for good): Provision then only
	// finishes provisionings whose entry it signed before (the ledger
	// answers those as the duplicates they are, if they are in it) and
	// refuses every other, wrapping Revoked, before it changes the device.
	Revoked error
	// Logger, Now and Rand default to a discarding logger, time.Now and
	// crypto/rand.
	Logger *slog.Logger
	Now    func() time.Time
	Rand   io.Reader
}

// A Station is the factory's secure processing point: it runs the
// provisioning handshake of DESIGN.md §5 with devices.
type Station struct {
	cfg StationConfig
	id  [32]byte
	log *slog.Logger

	mu       sync.Mutex
	inFlight map[string]bool // chip IDs being provisioned
}

// Errors of the handshake.
var (
	// ErrIdentityMismatch: the identities the operator gave are not the
	// device's own.
	ErrIdentityMismatch = errors.New("identities do not match the device's")
	// ErrRoundTrip: the backup the device returned does not open to the
	// package it was given.
	ErrRoundTrip = errors.New("backup round-trip check failed")
	// ErrDeviceRejected: the device refused a certificate or receipt.
	ErrDeviceRejected = errors.New("device rejected the step")
	// ErrLedgerRejected: the ledger refused the entry for good.
	ErrLedgerRejected = errors.New("ledger rejected the entry")
	// ErrChipBusy: the station is already provisioning the chip.
	ErrChipBusy = errors.New("chip is already being provisioned by this station")
)

// NewStation returns a station; every field of cfg but Pool, Logger, Now
// and Rand is required.
func NewStation(cfg StationConfig) (*Station, error) {
	if cfg.Certificate == nil || cfg.Key == nil || cfg.CA == nil || cfg.MasterKeys == nil || cfg.Ledger == nil || cfg.Journal == nil {
		return nil, errors.New("station: certificate, key, CA, master keys, ledger and journal are all required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	return &Station{cfg: cfg, id: ledger.StationID(cfg.Certificate.Raw), log: cfg.Logger, inFlight: make(map[string]bool)}, nil
}

// ID returns the station ID, SHA-256 of its certificate.
func (s *Station) ID() [32]byte { return s.id }

// Result is the outcome of one provisioning.
type Result struct {
	ChipID  ledger.ChipID
	Epoch   uint32
	Index   uint64
	Receipt *proofs.Receipt
	// Resumed is set when the run finished a provisioning an earlier run
	// had left unfinished.
	Resumed bool
	// Timings of the steps, for benchmarks.
	Timings Timings
}

// Timings break a provisioning down.
type Timings struct {
	KeyPair, Package, Certificate, Sign, Ledger, Receipt time.Duration
}

// Provision runs the handshake with the device behind dev. ids, if not
// empty, must be the device's own identities (the operator's scan of the
// label); otherwise the device's are used. A crash anywhere can be resumed
// by calling Provision again with the same device: an entry that was signed
// is appended (again, harmlessly) rather than replaced, so the ledger never
// gets two entries for one provisioning. If the device has moved to another
// epoch since (another station re-provisioned it), the signed entry is
// still finished first, and its pool key consumed or destroyed, so the new
// provisioning cannot be handed that same key again. A chip is provisioned
// by one call at a time: a call for a chip already in flight fails with
// ErrChipBusy.
func (s *Station) Provision(ctx context.Context, dev device.Conn, ids ledger.Identities) (*Result, error) {
	return s.provisionOne(ctx, dev, ids, nil)
}

// chipSet is a set of chip IDs, safe for concurrent use.
type chipSet struct {
	mu sync.Mutex
	m  map[string]bool
}

// add adds chip and reports whether it was not in the set yet.
func (c *chipSet) add(chip ledger.ChipID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[string(chip)] {
		return false
	}
	if c.m == nil {
		c.m = make(map[string]bool)
	}
	c.m[string(chip)] = true
	return true
}

// provisionOne is Provision. batch, if not nil, holds the chips of a
// batch (ProvisionAll) provisioned or under way: a chip met again there
// (its device listed twice) fails with ErrChipBusy, whether or not the
// first run still goes on, rather than being provisioned a second time,
// at the next epoch.
func (s *Station) provisionOne(ctx context.Context, dev device.Conn, ids ledger.Identities, batch *chipSet) (*Result, error) {
	if len(ids) > 0 {
		if err := ids.Validate(); err != nil {
			return nil, err // before touching the device
		}
	}
	info, err := dev.ChipInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the chip: %w", err)
	}
	if len(ids) == 0 {
		ids = info.Identities
	} else if !ids.Equal(info.Identities) {
		return nil, fmt.Errorf("%w: given %s, device %s holds %s", ErrIdentityMismatch, ids, info.ChipID, info.Identities)
	}
	if batch != nil && !batch.add(info.ChipID) {
		return nil, fmt.Errorf("%w: chip %s is listed twice in this batch; provisioning it once", ErrChipBusy, info.ChipID)
	}
	// Two runs for one chip would share its reserved key and its journal
	// record, and the loser's failure would overwrite the winner's record.
	if !s.claim(info.ChipID) {
		return nil, fmt.Errorf("%w: chip %s (was its device given twice?)", ErrChipBusy, info.ChipID)
	}
	defer s.release(info.ChipID)
	// Another run of the chip may have ended between the read and the
	// claim, and moved the device on: what the rest goes by is read now,
	// while no other run of this station can move it.
	claimed := info.ChipID
	if info, err = dev.ChipInfo(ctx); err != nil {
		return nil, fmt.Errorf("read chip %s again once claimed: %w", claimed, err)
	}
	if !info.ChipID.Equal(claimed) {
		return nil, fmt.Errorf("the device read as chip %s, then as chip %s", claimed, info.ChipID)
	}
	rec, err := s.cfg.Journal.Get(info.ChipID)
	if err != nil {
		return nil, err
	}
	if rec != nil && (rec.Step == StepSigned || rec.Step == StepAppended) {
		if device.KeyOrigin(rec.KeyOrigin) == device.KeyFromPool && s.cfg.Pool == nil {
			return nil, fmt.Errorf("%w: chip %s's unfinished provisioning (epoch %d) took its key pair from a key pool; run the station with that pool to finish it", ErrNoPool, rec.ChipID, rec.Epoch)
		}
		switch rec.Epoch {
		case info.Epoch + 1:
			// The entry was signed: finish publishing that very entry.
			return s.finish(ctx, dev, rec, true)
		case info.Epoch:
			// The device already took the receipt; only the journal lagged.
			return s.finish(ctx, nil, rec, true)
		}
		if err := s.settle(ctx, rec, info.Epoch); err != nil {
			return nil, err
		}
	}
	if s.cfg.Revoked != nil {
		return nil, fmt.Errorf("chip %s: %w (the device was not changed)", info.ChipID, s.cfg.Revoked)
	}
	return s.provision(ctx, dev, info, ids)
}

// claim marks chip as being provisioned, unless it already is.
func (s *Station) claim(chip ledger.ChipID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inFlight[string(chip)] {
		return false
	}
	s.inFlight[string(chip)] = true
	return true
}

// release ends claim.
func (s *Station) release(chip ledger.ChipID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inFlight, string(chip))
}

// settle finishes, without the device, a signed provisioning of a chip
// whose device is at another epoch than the entry's (say another station
// re-provisioned it after restoring it from the ledger): the entry is
// appended (the ledger answers a duplicate if it is in) and its pool key
// consumed, or, if the ledger refuses it for good, the key is destroyed.
// The pool reserves one key per chip, not per epoch, so without this the
// next provisioning of the chip would be handed the key of the signed
// entry, which may already be escrowed under another epoch.
func (s *Station) settle(ctx context.Context, rec *JournalRecord, deviceEpoch uint32) error {
	_, err := s.finish(ctx, nil, rec, true)
	if err != nil && !errors.Is(err, ErrLedgerRejected) {
		return fmt.Errorf("finish chip %s's provisioning of epoch %d (the device is at epoch %d) before provisioning it again: %w", rec.ChipID, rec.Epoch, deviceEpoch, err)
	}
	s.log.Info("finished a provisioning the device had moved past", "chip", rec.ChipID, "epoch", rec.Epoch, "device_epoch", deviceEpoch, "step", rec.Step)
	return nil
}

func (s *Station) provision(ctx context.Context, dev device.Conn, info *device.Info, ids ledger.Identities) (res *Result, err error) {
	chip, epoch := info.ChipID, info.Epoch+1
	res = &Result{ChipID: chip, Epoch: epoch}
	rec := &JournalRecord{ChipID: chip, Identities: identityStrings(ids), Epoch: epoch, Step: StepStarted}

	// 1. The key pair: reserved from the pool for this chip, or new.
	t := time.Now()
	key, origin, err := s.keyPair(ctx, chip)
	if err != nil {
		return nil, err
	}
	rec.KeyOrigin = uint8(origin)
	res.Timings.KeyPair = time.Since(t)
	// Until the entry is signed, a failure gives up this provisioning: the
	// pool key is destroyed, never reused for another chip.
	defer func() {
		if err != nil && rec.Step != StepSigned && rec.Step != StepAppended {
			s.fail(rec, origin, err)
		}
	}()

	// 2. The data package, stored in the device; the backup it returns must
	// open to the same package.
	t = time.Now()
	version, master := s.cfg.MasterKeys.Current()
	channelKey, err := device.ChannelKey(master, ids, version)
	if err != nil {
		return nil, err
	}
	pkg, err := device.NewPackage(ids, epoch, version, channelKey, key, origin)
	if err != nil {
		return nil, err
	}
	pkgBytes, err := pkg.MarshalBinary()
	if err != nil {
		return nil, err
	}
	backup, err := dev.StorePackage(ctx, pkgBytes)
	if err != nil {
		return nil, fmt.Errorf("store the data package in the device: %w", err)
	}
	// The backup is published for good: besides the device's own round
	// trip, its header (readable without the chip key) must name this
	// chip, these identities and this epoch, or no chip could ever open
	// it as the backup of this entry.
	if h, _, err := device.ParseBackupHeader(backup); err != nil {
		return nil, fmt.Errorf("%w: the device's backup: %w", ErrRoundTrip, err)
	} else if !h.ChipID.Equal(chip) || !h.Identities.Equal(ids) || h.Epoch != epoch {
		return nil, fmt.Errorf("%w: the device's backup is labelled chip %s, %s, epoch %d; this is chip %s, %s, epoch %d", ErrRoundTrip, h.ChipID, h.Identities, h.Epoch, chip, ids, epoch)
	}
	if err := dev.CheckBackup(ctx, backup); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRoundTrip, err)
	}
	rec.Step = StepPackaged
	res.Timings.Package = time.Since(t)

	// 3. The device certificate, verified by the device against its ROM.
	t = time.Now()
	now := s.cfg.Now().UTC()
	tmpl, err := ledger.DeviceCertificateTemplate(s.cfg.CA.Manufacturer(), chip, ids, now, s.cfg.Rand)
	if err != nil {
		return nil, err
	}
	cert, err := s.cfg.CA.IssueDeviceCertificate(tmpl, &key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("issue the device certificate: %w", err)
	}
	if err := dev.StoreCertificate(ctx, cert); err != nil {
		return nil, fmt.Errorf("%w: certificate: %w", ErrDeviceRejected, err)
	}
	rec.Step = StepCertified
	res.Timings.Certificate = time.Since(t)

	// 4. The escrow entry, signed and journaled before it is appended.
	t = time.Now()
	e := &ledger.EscrowEntry{
		ChipID:          chip,
		Identities:      ids,
		Epoch:           epoch,
		Certificate:     cert,
		Backup:          backup,
		StationID:       s.id,
		ProvisionedAtMs: uint64(max(now.UnixMilli(), 0)),
	}
	if err := e.Sign(s.cfg.Rand, s.cfg.Key); err != nil {
		return nil, err
	}
	if rec.Leaf, err = e.MarshalLeaf(); err != nil {
		return nil, err
	}
	rec.Step = StepSigned
	if err := s.cfg.Journal.Put(rec); err != nil {
		rec.Step = StepCertified // not journaled: nothing was published
		return nil, err
	}
	res.Timings.Sign = time.Since(t)

	fin, err := s.finish(ctx, dev, rec, false)
	if fin != nil {
		fin.Timings.KeyPair, fin.Timings.Package, fin.Timings.Certificate, fin.Timings.Sign =
			res.Timings.KeyPair, res.Timings.Package, res.Timings.Certificate, res.Timings.Sign
	}
	return fin, err
}

// finish appends the journaled leaf (again, if a crash interrupted an
// earlier run: the ledger answers with the same index), consumes the pool
// key once the receipt verifies, and stores the receipt in the device
// (unless dev is nil: it has it).
func (s *Station) finish(ctx context.Context, dev device.Conn, rec *JournalRecord, resumed bool) (*Result, error) {
	res := &Result{ChipID: rec.ChipID, Epoch: rec.Epoch, Resumed: resumed}
	t := time.Now()
	receipt, err := s.cfg.Ledger.Append(ctx, rec.Leaf)
	if connect.CodeOf(err) == connect.CodeAlreadyExists {
		twin, terr := s.loggedTwin(ctx, rec)
		if terr != nil {
			return nil, fmt.Errorf("append the entry of chip %s: %w; reading the chip's entries, to see whether its epoch %d holds this very entry, failed (rerun to resume): %w", rec.ChipID, err, rec.Epoch, terr)
		}
		if twin != nil {
			s.log.Warn("the chip's epoch holds this entry with another encoding of the station signature (someone who saw the entry logged its twin first): going on with the logged leaf",
				"chip", rec.ChipID, "epoch", rec.Epoch)
			rec.Leaf = twin
			if err := s.cfg.Journal.Put(rec); err != nil {
				return nil, err
			}
			receipt, err = s.cfg.Ledger.Append(ctx, rec.Leaf)
		}
	}
	if err != nil {
		if isPermanent(err) {
			s.fail(rec, device.KeyOrigin(rec.KeyOrigin), err)
			return nil, fmt.Errorf("%w: %w", ErrLedgerRejected, err)
		}
		// The entry may or may not be in: a rerun appends the same leaf.
		return nil, fmt.Errorf("append the entry of chip %s (rerun to resume): %w", rec.ChipID, err)
	}
	if string(receipt.Leaf) != string(rec.Leaf) {
		return nil, fmt.Errorf("the ledger's receipt for chip %s is for another leaf", rec.ChipID)
	}
	// The key is escrowed now: the pool's copy goes at once, not when the
	// device takes the receipt, which it may never come back for.
	if err := s.consume(rec); err != nil {
		return nil, err
	}
	rec.Step, rec.Index = StepAppended, receipt.Index
	if rec.Receipt, err = receipt.MarshalBinary(); err != nil {
		return nil, err
	}
	if err := s.cfg.Journal.Put(rec); err != nil {
		return nil, err
	}
	res.Timings.Ledger = time.Since(t)

	t = time.Now()
	if dev == nil {
		// The device holds the receipt already (see Provision).
	} else if err := dev.StoreReceipt(ctx, rec.Receipt); err != nil {
		// The entry is in the ledger; the device can take the receipt on a
		// rerun (or recover the backup from the ledger later).
		return nil, fmt.Errorf("%w: receipt (entry %d is in the ledger; rerun to retry): %w", ErrDeviceRejected, rec.Index, err)
	}
	res.Timings.Receipt = time.Since(t)
	out, err := s.complete(rec, resumed)
	if out != nil {
		out.Timings = res.Timings
	}
	return out, err
}

// loggedTwin is for an append refused because the chip's epoch holds
// another leaf. That leaf may be this very entry with the station
// signature encoded otherwise: an ECDSA signature (r, s) has a twin
// (r, n−s) that verifies as well and that anyone can compute, so whoever
// saw the leaf before it was logged (a node it passed through, say) can
// log the twin first. The backup and certificate are then escrowed exactly
// as this station signed them, and the provisioning goes on with the
// logged leaf. loggedTwin returns that leaf: the chip's entry of rec's
// epoch if it has the same signed content as rec's leaf and a signature
// that verifies with this station's key; nil if the epoch holds another
// entry.
func (s *Station) loggedTwin(ctx context.Context, rec *JournalRecord) ([]byte, error) {
	ours, err := ledger.ParseEscrowEntry(rec.Leaf)
	if err != nil {
		return nil, err
	}
	want, err := ours.Digest()
	if err != nil {
		return nil, err
	}
	entries, err := s.cfg.Ledger.Entries(ctx, rec.ChipID)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.Epoch != rec.Epoch {
			continue
		}
		got, err := e.Digest()
		if err != nil || got != want || e.VerifySignature(&s.cfg.Key.PublicKey) != nil {
			return nil, nil
		}
		return e.MarshalLeaf()
	}
	return nil, nil
}

// consume deletes the pool key of a provisioning whose entry is in the
// ledger with a verified receipt. Consuming it again does nothing.
func (s *Station) consume(rec *JournalRecord) error {
	if device.KeyOrigin(rec.KeyOrigin) != device.KeyFromPool {
		return nil
	}
	if err := s.cfg.Pool.Consume(rec.ChipID); err != nil && !errors.Is(err, ErrNoReservation) {
		return fmt.Errorf("delete the pool key of chip %s: %w", rec.ChipID, err)
	}
	return nil
}

// complete marks the provisioning done.
func (s *Station) complete(rec *JournalRecord, resumed bool) (*Result, error) {
	receipt, err := proofs.ParseReceipt(rec.Receipt)
	if err != nil {
		return nil, err
	}
	// rec moves to done only once that is journaled: the failure handling
	// of provision must see the step the journal holds, appended, and
	// leave it (a rerun finishes), not record a finished provisioning as
	// failed.
	done := *rec
	done.Step = StepDone
	if err := s.cfg.Journal.Put(&done); err != nil {
		return nil, err
	}
	*rec = done
	return &Result{ChipID: rec.ChipID, Epoch: rec.Epoch, Index: rec.Index, Receipt: receipt, Resumed: resumed}, nil
}

// fail records that a provisioning was given up and destroys its pool key.
func (s *Station) fail(rec *JournalRecord, origin device.KeyOrigin, cause error) {
	rec.Step, rec.Error = StepFailed, cause.Error()
	if err := s.cfg.Journal.Put(rec); err != nil {
		s.log.Error("journal a failed provisioning", "chip", rec.ChipID, "err", err)
	}
	if origin == device.KeyFromPool {
		if err := s.cfg.Pool.Destroy(rec.ChipID, truncate(cause.Error(), 1000)); err != nil && !errors.Is(err, ErrNoReservation) {
			s.log.Error("destroy the pool key of a failed provisioning", "chip", rec.ChipID, "err", err)
		}
	}
}

// keyPair returns the chip's device key pair.
func (s *Station) keyPair(ctx context.Context, chip ledger.ChipID) (*ecdsa.PrivateKey, device.KeyOrigin, error) {
	if s.cfg.Pool != nil {
		key, err := s.poolKey(ctx, chip)
		if err != nil {
			return nil, 0, err
		}
		return key, device.KeyFromPool, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), s.cfg.Rand)
	if err != nil {
		return nil, 0, err
	}
	return key, device.KeyGenerated, nil
}

// poolKey reserves the chip's key pair in the pool. The pool hands a chip
// the key it reserved for it earlier until that key is consumed or
// destroyed, so that a rerun after a crash escrows the key the device may
// hold already. But the earlier run may have escrowed it and died before
// consuming it, with its journal, which settles such runs (see Provision),
// out of reach: a station that lost its journal, or another station given
// the pool. A key reserved before this run is therefore checked against
// the chip's entries in the ledger, and if one of them escrows it, it is
// consumed (the audit records it as escrowed, which it is) and the chip
// gets a new key: one key pair is never escrowed under two epochs.
func (s *Station) poolKey(ctx context.Context, chip ledger.ChipID) (*ecdsa.PrivateKey, error) {
	id, held, err := s.cfg.Pool.Reservation(chip)
	if err != nil {
		return nil, fmt.Errorf("read chip %s's pool reservation: %w", chip, err)
	}
	_, key, err := s.cfg.Pool.Reserve(chip)
	if err != nil {
		return nil, fmt.Errorf("reserve a pool key for chip %s: %w", chip, err)
	}
	if !held {
		return key, nil
	}
	entries, err := s.cfg.Ledger.Entries(ctx, chip)
	if err != nil {
		return nil, fmt.Errorf("check the ledger for chip %s's entries before using pool key %s, reserved for it by an earlier run: %w", chip, id, err)
	}
	epoch, err := escrowedIn(entries, &key.PublicKey)
	if err != nil || epoch == 0 {
		return key, err
	}
	if err := s.cfg.Pool.Consume(chip); err != nil {
		return nil, fmt.Errorf("consume pool key %s of chip %s, escrowed under epoch %d: %w", id, chip, epoch, err)
	}
	s.log.Warn("the chip's reserved pool key is escrowed by an earlier run this station has no journal of: consumed it, reserving another",
		"chip", chip, "key", id, "epoch", epoch)
	if _, key, err = s.cfg.Pool.Reserve(chip); err != nil {
		return nil, fmt.Errorf("reserve a pool key for chip %s: %w", chip, err)
	}
	return key, nil
}

// escrowedIn returns the epoch of the entry whose device certificate
// certifies pub, or 0 if none does.
func escrowedIn(entries []*ledger.EscrowEntry, pub *ecdsa.PublicKey) (uint32, error) {
	for _, e := range entries {
		cert, err := x509.ParseCertificate(e.Certificate)
		if err != nil {
			return 0, fmt.Errorf("parse the device certificate of chip %s's epoch %d: %w", e.ChipID, e.Epoch, err)
		}
		if k, ok := cert.PublicKey.(*ecdsa.PublicKey); ok && k.Equal(pub) {
			return e.Epoch, nil
		}
	}
	return 0, nil
}

func identityStrings(ids ledger.Identities) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// isPermanent reports whether the ledger refused the entry for good (a
// malformed or unauthorised entry, an epoch that is taken): appending it
// again cannot succeed.
func isPermanent(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeAlreadyExists, connect.CodePermissionDenied:
		return true
	}
	return false
}
