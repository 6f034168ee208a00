package client

import (
	"connectrpc.com/connect"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// The recovery errors, beside the verification errors (ErrBadSignature,
// ErrFork, ErrRollback, ErrBadProof, ErrMismatch) that Recover also returns.
// Whatever the error, Recover has handed nothing to the device unless it is
// ErrDeviceRefused, and then the device kept its keys, or ErrRestoreUnknown.
// Test with errors.Is.
var (
	// ErrNotInLedger reports a chip the ledger holds no escrow entry for:
	// it was never provisioned, or provisioned against another log. Recover
	// returns it only once the chip index (DESIGN.md §3.7) of a verified
	// checkpoint proves the chip absent; a node that merely says so fails
	// with ErrNotLatest.
	ErrNotInLedger = errors.New("client: this chip has no backup in the ledger")

	// ErrStaleBackup reports a chip whose latest entry, as the chip index
	// proves, is of an older epoch than the device's epoch counter: the
	// device installed newer keys that were never published in this log
	// (a provisioning that failed before its append, or another log).
	// Restoring would roll the device's keys back.
	ErrStaleBackup = errors.New("client: the ledger's latest backup is older than the keys the device installed")

	// ErrUnknownStation reports an entry that no registered station is
	// shown to have signed: its station is not registered in the log, is
	// registered only after the entry, or its signature on the entry does
	// not verify (the error then also wraps ledger.ErrBadStationSignature).
	ErrUnknownStation = errors.New("client: entry not signed by a station registered before it")

	// ErrUntrustedCertificate reports a station or device certificate that
	// does not chain to the manufacturer trust in the device's ROM at the
	// time that matters (the station's registration, the entry's
	// provisioning), or breaks its certificate profile. The error also
	// wraps the ledger error that says which (ledger.ErrUntrustedCertificate
	// or ledger.ErrCertificateProfile).
	ErrUntrustedCertificate = errors.New("client: certificate not trusted by the device")

	// ErrWrongLog reports a device whose ROM holds another log verifier key
	// than the client's pinned one: it would refuse the receipt.
	ErrWrongLog = errors.New("client: the device trusts another log")

	// ErrDeviceRefused reports a device that refused the verified backup
	// (it wraps the device's error): it could not decrypt it with its chip
	// key, or found it is not its own, older than its epoch counter, or not
	// the latest its own check of the lookup proof names.
	ErrDeviceRefused = errors.New("client: the device refused the backup")

	// ErrRestoreUnknown reports a restore whose answer did not come (the
	// connection failed, the deadline passed, the device failed inside):
	// the device may have restored the backup or kept its keys. Recovering
	// again is safe (a device takes the backup of its own epoch again),
	// and its status says which.
	ErrRestoreUnknown = errors.New("client: the device's answer to the restore was lost: it may have restored the backup")
)

// A RecoveryDevice is a device being recovered: what Recover needs of it.
// The device's firmware, not Recover, opens the backup; Recover only
// decides whether to hand it over.
type RecoveryDevice interface {
	// Identity reads the chip ID, the identities, the epoch counter and
	// the manufacturer trust bundle (PEM) in the device's ROM, and the
	// log verifier key in ROM if the device tells it.
	Identity(ctx context.Context) (*DeviceIdentity, error)

	// RestoreBackup hands the device a backup, the device certificate of
	// its entry, the receipt (proofs.Receipt encoding) proving the entry is
	// in the log, and the chip's lookup proof (proofs.LookupProof encoding)
	// proving the chip index names that entry as the chip's latest
	// (DESIGN.md §3.7). The device opens the backup with its chip key,
	// checks the certificate, the receipt, the lookup proof (with the log
	// key in its ROM, for its own chip ID) and the epoch, and restores its
	// keys; if any check fails it keeps the keys it had.
	RestoreBackup(ctx context.Context, backup, cert, receipt, lookupProof []byte) error
}

// DeviceIdentity is what a device tells Recover about itself.
type DeviceIdentity struct {
	ChipID     ledger.ChipID
	Identities ledger.Identities
	// Epoch is the chip's epoch counter: the highest epoch of keys the
	// device ever installed, 0 if none.
	Epoch uint32
	// Trust is the manufacturer trust bundle (PEM) in the device's ROM.
	// Station and device certificates are verified against it, not against
	// the trust a ledger node states.
	Trust []byte
	// LogVerifierKey is the log's verifier key in the device's ROM; empty
	// if the device does not tell it.
	LogVerifierKey string
}

// RecoverOptions configure Recover. The zero value is the usual recovery.
type RecoverOptions struct {
	// LogInfo, if not nil, is a LogInfo the same client returned earlier;
	// its verified station registrations are used instead of fetching
	// them again, so a repair shop recovering many devices fetches them
	// once. A station it does not list is looked up again.
	LogInfo *LogInfo

	// VerifyOnly runs every check and stops before handing anything to
	// the device: the report then has Restored false and no restore step.
	VerifyOnly bool
}

// A RecoveryCheck names one step of a recovery. The names are stable: they
// appear in RecoveryReport's JSON.
type RecoveryCheck string

// The steps of a recovery, in the order Recover runs them.
const (
	// CheckDevice reads the chip ID, identities, epoch counter and ROM
	// trust from the device.
	CheckDevice RecoveryCheck = "device"
	// CheckLookup fetches the chip's entries and picks the latest.
	CheckLookup RecoveryCheck = "lookup"
	// CheckCheckpoint verifies the checkpoint's signature with the pinned
	// log key and its consistency with every checkpoint the client saw.
	CheckCheckpoint RecoveryCheck = "checkpoint"
	// CheckIndex verifies the chip index's lookup proof in that checkpoint
	// (DESIGN.md §3.7): the entry used is the chip's latest, and the
	// entries served are its whole history.
	CheckIndex RecoveryCheck = "index"
	// CheckWitnesses, with a witness policy (Options.Witnesses), checks
	// that the checkpoint is a prefix of one the policy's quorum of
	// witnesses cosigned, with no newer entry of the chip in between.
	CheckWitnesses RecoveryCheck = "witnesses"
	// CheckInclusion verifies the entry's inclusion proof.
	CheckInclusion RecoveryCheck = "inclusion"
	// CheckStation verifies the station: registered before the entry,
	// certified by the device's ROM trust, and its signature on the entry.
	CheckStation RecoveryCheck = "station"
	// CheckCertificate verifies the device certificate against the
	// device's ROM trust and its binding to the device's chip and
	// identities.
	CheckCertificate RecoveryCheck = "certificate"
	// CheckIdentities compares the entry's identities with the device's.
	CheckIdentities RecoveryCheck = "identities"
	// CheckEpoch refuses an entry older than the device's epoch counter.
	CheckEpoch RecoveryCheck = "epoch"
	// CheckRestore hands the backup to the device with the receipt and the
	// lookup proof, which it verifies itself, and it restores its keys.
	CheckRestore RecoveryCheck = "restore"
)

// A RecoveryReport is what Recover did and verified, for a technician or a
// record. Its JSON field names are stable.
type RecoveryReport struct {
	ChipID     string   `json:"chip_id"`    // lower-case hex
	Identities []string `json:"identities"` // text forms, "imei:490154203237518"
	// DeviceEpoch is the device's epoch counter before recovery.
	DeviceEpoch uint32 `json:"device_epoch"`
	// Epoch, LedgerIndex and ProvisionedAt are those of the entry
	// restored (or, after a failure, the entry checked).
	Epoch         uint32    `json:"epoch"`
	LedgerIndex   uint64    `json:"ledger_index"`
	ProvisionedAt time.Time `json:"provisioned_at"`
	// Entries is how many entries the ledger holds for the chip.
	Entries int `json:"entries"`

	Checkpoint *RecoveryCheckpoint `json:"checkpoint,omitempty"`
	// Witnessed, with a witness policy, is the cosigned checkpoint that
	// Checkpoint was proven a prefix of.
	Witnessed   *RecoveryCheckpoint  `json:"witnessed,omitempty"`
	Station     *RecoveryStation     `json:"station,omitempty"`
	Certificate *RecoveryCertificate `json:"certificate,omitempty"`

	// Steps are the checks that passed, in order, followed on failure by
	// the one that failed.
	Steps []RecoveryStep `json:"steps"`
	// Restored reports whether the device restored its keys.
	Restored bool `json:"restored"`
	// FailedCheck and Error say why a recovery failed; empty on success.
	FailedCheck RecoveryCheck `json:"failed_check,omitempty"`
	Error       string        `json:"error,omitempty"`

	Durations RecoveryDurations `json:"durations"`
}

// RecoveryCheckpoint is the verified checkpoint the entry's receipt leads
// to.
type RecoveryCheckpoint struct {
	Origin   string `json:"origin"`
	Size     uint64 `json:"size"`
	RootHash string `json:"root_hash"` // standard base64, as in the note
	// Note is the signed note, which anyone holding the log's verifier key
	// can check again.
	Note string `json:"note"`
	// TrustedSize is the size of the checkpoint the client trusted before
	// the lookup (0 if none), which Checkpoint was proven to extend.
	TrustedSize uint64 `json:"trusted_size"`
}

// RecoveryStation is the registered station that signed the entry.
type RecoveryStation struct {
	ID                string    `json:"id"` // hex SHA-256 of its certificate
	Name              string    `json:"name"`
	Manufacturer      string    `json:"manufacturer"`
	RegistrationIndex uint64    `json:"registration_index"`
	RegisteredAt      time.Time `json:"registered_at"`
}

// RecoveryCertificate describes the entry's device certificate.
type RecoveryCertificate struct {
	Serial string `json:"serial"` // hex
	Issuer string `json:"issuer"`
	// Manufacturer is the issuing CA's organization.
	Manufacturer string `json:"manufacturer"`
}

// A RecoveryStep is one check of a recovery, in plain words.
type RecoveryStep struct {
	Check  RecoveryCheck `json:"check"`
	OK     bool          `json:"ok"`
	Detail string        `json:"detail"`
	Error  string        `json:"error,omitempty"`
}

// RecoveryDurations break a recovery's time down. Each is in nanoseconds in
// JSON.
type RecoveryDurations struct {
	// Device is reading the device's identity.
	Device time.Duration `json:"device_ns"`
	// Ledger is fetching the entries and the station registrations with
	// their proofs, checkpoint and proof checks included.
	Ledger time.Duration `json:"ledger_ns"`
	// Verify is the checks made locally: station, certificates,
	// identities, epoch.
	Verify time.Duration `json:"verify_ns"`
	// Restore is the device opening the backup and restoring its keys.
	Restore time.Duration `json:"restore_ns"`
	// Total is the whole recovery, from reading the chip ID to the keys
	// restored.
	Total time.Duration `json:"total_ns"`
}

// Recover restores a device's keys from the ledger (DESIGN.md §5, seed
// claim 17): it reads the chip ID from dev, fetches the chip's entries with
// c, verifies the latest one without trusting any node, and hands its backup
// to the device, which decrypts it with its chip key.
//
// The checks, in order, each recorded in the report:
//
//   - lookup: the chip has entries (else ErrNotInLedger, once the chip
//     index proves it has none), all this chip's, with epochs 1, 2, …
//     (else ErrMismatch); the latest is used;
//   - checkpoint: signed by the pinned log key (else ErrBadSignature),
//     consistent with every checkpoint c accepted (else ErrFork), and not
//     smaller than the one c trusted before the lookup (else ErrRollback);
//   - index: the chip index in that checkpoint proves the entry used is
//     the chip's latest and the entries served its whole history (else
//     ErrNotLatest, with ErrMismatch or ErrBadProof): no node can hide a
//     newer backup or deny the chip has one;
//   - inclusion: the entry's proof leads to the checkpoint (else
//     ErrBadProof);
//   - station: the entry's station is registered in the log before the
//     entry (else ErrUnknownStation), its certificate chains to the
//     device's ROM trust at registration and at provisioning (else
//     ErrUntrustedCertificate), and its signature over the entry verifies
//     (else ErrUnknownStation);
//   - certificate: the device certificate chains to the device's ROM trust
//     at provisioned_at (else ErrUntrustedCertificate) and binds exactly
//     the device's chip ID and identities (else ErrMismatch);
//   - identities: the entry's identities are the device's (else
//     ErrMismatch);
//   - epoch: the entry is not older than the device's epoch counter (else
//     ErrStaleBackup: the device's newest keys never reached this log);
//   - restore: the device, handed the backup, certificate, receipt and
//     lookup proof, verifies the proofs itself against the log key in its
//     ROM (the chip index must name this backup's epoch as its chip's
//     latest) and restores the backup (else ErrDeviceRefused).
//
// A device whose ROM names another log key than c's fails first, with
// ErrWrongLog. Nothing is handed to the device unless every check passed.
//
// Recover always returns a report: on failure it holds the checks that
// passed and the one that failed, with the error also returned.
func Recover(ctx context.Context, c *Client, dev RecoveryDevice, opts RecoverOptions) (*RecoveryReport, error) {
	r := &recovery{c: c, dev: dev, opts: opts, rep: &RecoveryReport{Steps: []RecoveryStep{}}}
	start := time.Now()
	err := r.run(ctx)
	r.rep.Durations.Total = time.Since(start)
	if err != nil {
		r.rep.Error = err.Error()
	}
	return r.rep, err
}

// recovery is one run of Recover.
type recovery struct {
	c    *Client
	dev  RecoveryDevice
	opts RecoverOptions
	rep  *RecoveryReport

	id    *DeviceIdentity
	trust *ledger.Trust // the device's ROM trust

	trustedSize uint64 // the client's trusted size before the lookup
	history     *ChipHistory
	latest      *ChipEntry
	at          time.Time // the entry's provisioned_at
	station     *Station
}

func (r *recovery) run(ctx context.Context) error {
	t := time.Now()
	err := r.readDevice(ctx)
	r.rep.Durations.Device = time.Since(t)
	if err != nil {
		return r.fail(CheckDevice, err)
	}

	t = time.Now()
	check, err := r.fetch(ctx)
	r.rep.Durations.Ledger = time.Since(t)
	if err != nil {
		return r.fail(check, err)
	}

	t = time.Now()
	for _, step := range []struct {
		check RecoveryCheck
		run   func() (string, error)
	}{
		{CheckCheckpoint, r.checkCheckpoint},
		{CheckIndex, r.checkIndex},
		{CheckWitnesses, r.checkWitnesses},
		{CheckInclusion, r.checkInclusion},
		{CheckStation, r.checkStation},
		{CheckCertificate, r.checkCertificate},
		{CheckIdentities, r.checkIdentities},
		{CheckEpoch, r.checkEpoch},
	} {
		if step.check == CheckWitnesses && r.c.witnesses == nil {
			continue
		}
		detail, err := step.run()
		if err != nil {
			r.rep.Durations.Verify = time.Since(t)
			return r.fail(step.check, err)
		}
		r.pass(step.check, detail)
	}
	r.rep.Durations.Verify = time.Since(t)

	if r.opts.VerifyOnly {
		return nil
	}
	t = time.Now()
	err = r.restore(ctx)
	r.rep.Durations.Restore = time.Since(t)
	if err != nil {
		return r.fail(CheckRestore, err)
	}
	r.rep.Restored = true
	r.pass(CheckRestore, "The device checked the lookup proof and the receipt itself against the log key in its ROM, decrypted the backup with its own chip key and restored its keys")
	return nil
}

func (r *recovery) pass(check RecoveryCheck, detail string) {
	r.rep.Steps = append(r.rep.Steps, RecoveryStep{Check: check, OK: true, Detail: detail})
}

// fail records the failed check and returns err.
func (r *recovery) fail(check RecoveryCheck, err error) error {
	r.rep.FailedCheck = check
	detail := failureDetail(check, err)
	if errors.Is(err, ErrNotInLedger) && r.history != nil {
		detail += fmt.Sprintf(": the chip index in the ledger's signed checkpoint of %d entries proves it", r.history.Checkpoint.Size)
	}
	r.rep.Steps = append(r.rep.Steps, RecoveryStep{Check: check, Detail: detail, Error: err.Error()})
	return err
}

// failureDetail says in plain words what a failed check means.
func failureDetail(check RecoveryCheck, err error) string {
	switch check {
	case CheckDevice:
		if errors.Is(err, ErrWrongLog) {
			return "The device trusts another ledger than the one asked"
		}
		return "Could not read the chip ID, identities and ROM trust from the device"
	case CheckLookup:
		if errors.Is(err, ErrNotInLedger) {
			return "This chip has no backup in the ledger"
		}
		if errors.Is(err, ErrMismatch) {
			return "The ledger answered with entries that are not this chip's"
		}
		return "Could not fetch this chip's entries from the ledger"
	case CheckCheckpoint:
		return "The ledger's checkpoint is not trustworthy: nothing it proves can be used"
	case CheckIndex:
		if errors.Is(err, ErrBadProof) {
			return "The ledger node's answer does not match the chip index: its lookup proof does not verify against the signed checkpoint"
		}
		return "The ledger node hid the chip's newest backup: its answer does not match the chip index in its signed checkpoint"
	case CheckWitnesses:
		if errors.Is(err, ErrFork) || errors.Is(err, ErrBadSignature) || errors.Is(err, ErrRollback) {
			return "The ledger's checkpoint is not covered by a checkpoint its witnesses cosigned: this client may be shown a history no one else sees"
		}
		return "No checkpoint cosigned by the witnesses could be had to cover the ledger's answer (are enough of the policy's witnesses up?): the backup was not trusted"
	case CheckInclusion:
		return "The backup's inclusion proof does not lead to the ledger's signed checkpoint"
	case CheckStation:
		return "The entry is not signed by a station registered in the ledger that this device trusts"
	case CheckCertificate:
		return "The device certificate is not one this device trusts for itself"
	case CheckIdentities:
		return "The entry is for other identities than this device's"
	case CheckEpoch:
		return "The ledger's latest backup is older than the keys this device already installed, which were never published in this ledger"
	case CheckRestore:
		if errors.Is(err, ErrRestoreUnknown) {
			return "The device's answer was lost: it may have restored the backup or kept its keys; recover it again (taking the same backup twice is harmless) or read its status"
		}
		return "The device refused the backup and kept its keys"
	}
	return "Recovery failed"
}

// readDevice reads the device's identity and parses its ROM trust.
func (r *recovery) readDevice(ctx context.Context) error {
	id, err := r.dev.Identity(ctx)
	if err != nil {
		return fmt.Errorf("read the device: %w", err)
	}
	if id == nil {
		return errors.New("read the device: no identity")
	}
	r.id = id
	r.rep.ChipID = id.ChipID.String()
	r.rep.DeviceEpoch = id.Epoch
	for _, i := range id.Identities {
		r.rep.Identities = append(r.rep.Identities, i.String())
	}
	if err := id.ChipID.Validate(); err != nil {
		return fmt.Errorf("the device reports chip ID %q: %w", id.ChipID, err)
	}
	if err := id.Identities.Validate(); err != nil {
		return fmt.Errorf("the device reports identities %s: %w", id.Identities, err)
	}
	if id.LogVerifierKey != "" && strings.TrimSpace(id.LogVerifierKey) != r.c.logKey {
		return fmt.Errorf("%w: its ROM holds log key %q, the client pins %q", ErrWrongLog, id.LogVerifierKey, r.c.logKey)
	}
	if r.trust, err = ledger.ParseTrustPEM(id.Trust); err != nil {
		return fmt.Errorf("the device's ROM trust bundle: %w", err)
	}
	r.pass(CheckDevice, fmt.Sprintf("Read chip %s (%s) from the device; its epoch counter is %d", id.ChipID, describeIdentities(id.Identities), id.Epoch))
	return nil
}

// fetch fetches the chip's entries, which LookupChip verifies against a
// checkpoint it proves consistent with the trusted one and against the
// chip index in that checkpoint, and the station registrations. It returns
// the check a failure belongs to.
func (r *recovery) fetch(ctx context.Context) (RecoveryCheck, error) {
	r.trustedSize = r.c.trust.latest().cp.Size
	h, err := r.c.LookupChip(ctx, r.id.ChipID)
	if err != nil {
		return lookupFailure(err), err
	}
	r.history = h
	r.rep.Entries = len(h.Entries)
	if h.Index == nil || h.Index.Checkpoint != h.Checkpoint || h.Index.Present != (len(h.Entries) > 0) {
		return CheckIndex, fmt.Errorf("%w: %w", ErrNotLatest, mismatch("the lookup of chip %s is not backed by a chip index proof at its checkpoint", r.id.ChipID))
	}
	r.latest = h.Latest()
	if r.latest == nil {
		// Not the node's word: the chip index of a verified checkpoint
		// proves the chip absent.
		r.rep.Checkpoint = r.reportCheckpoint(h.Checkpoint, signedNote(r.c, h.Checkpoint))
		return CheckLookup, fmt.Errorf("%w: the chip index in the checkpoint of %d entries proves chip %s absent", ErrNotInLedger, h.Checkpoint.Size, r.id.ChipID)
	}
	e := r.latest.Entry
	r.rep.Epoch, r.rep.LedgerIndex = e.Epoch, r.latest.Receipt.Index
	if r.at, err = e.ProvisionedAt(); err != nil {
		return CheckLookup, fmt.Errorf("%w: entry %d: %w", ErrMismatch, r.latest.Receipt.Index, err)
	}
	r.rep.ProvisionedAt = r.at.UTC()
	r.pass(CheckLookup, fmt.Sprintf("The ledger holds %s for this chip; the latest is epoch %d", plural(len(h.Entries), "entry", "entries"), e.Epoch))

	r.station, err = r.findStation(ctx, e.StationID)
	if err != nil {
		return CheckStation, err
	}
	return "", nil
}

// lookupFailure names the check a LookupChip error belongs to.
func lookupFailure(err error) RecoveryCheck {
	switch {
	case errors.Is(err, ErrBadSignature), errors.Is(err, ErrFork), errors.Is(err, ErrRollback):
		return CheckCheckpoint
	case errors.Is(err, ErrNotWitnessed), errors.Is(err, ErrNoWitnessPolicy):
		return CheckWitnesses
	case indexFailure(err):
		return CheckIndex
	case errors.Is(err, ErrBadProof):
		return CheckInclusion
	}
	return CheckLookup
}

// indexFailure reports whether a LookupChip error is the chip index's: a
// lookup proof that is missing, malformed or does not verify, or that
// contradicts the entries served (a hidden newest entry, a denied chip).
//
// A failed proof wraps the proofs errors. LookupChip's contradictions are
// plain ErrMismatch errors, told from the entry checks' by what they name
// (the entry checks name neither the lookup proof nor the chip index);
// TestRecoverRefusesALyingLedger pins each.
func indexFailure(err error) bool { return errors.Is(err, ErrNotLatest) }

// signedNote returns the signed note of cp among the checkpoints c
// verified, or nil.
func signedNote(c *Client, cp proofs.Checkpoint) []byte {
	c.trust.mu.Lock()
	defer c.trust.mu.Unlock()
	if k, ok := c.trust.known[cp.Size]; ok && k.cp == cp {
		return k.signed
	}
	return nil
}

// reportCheckpoint describes a verified checkpoint for the report.
func (r *recovery) reportCheckpoint(cp proofs.Checkpoint, signed []byte) *RecoveryCheckpoint {
	return &RecoveryCheckpoint{
		Origin: cp.Origin, Size: cp.Size, RootHash: base64.StdEncoding.EncodeToString(cp.Hash[:]),
		Note: string(signed), TrustedSize: r.trustedSize,
	}
}

// findStation returns the registered station with the given ID, from
// opts.LogInfo if it lists it, else from a fresh LogInfo. A station the log
// does not list is ErrUnknownStation.
func (r *recovery) findStation(ctx context.Context, id [32]byte) (*Station, error) {
	if info := r.opts.LogInfo; info != nil {
		if s := stationByID(info, id); s != nil {
			return s, nil
		}
	}
	info, err := r.c.LogInfo(ctx)
	if err != nil {
		return nil, err
	}
	if s := stationByID(info, id); s != nil {
		return s, nil
	}
	return nil, fmt.Errorf("%w: station %x, which the entry names, is not registered in the log", ErrUnknownStation, id)
}

func stationByID(info *LogInfo, id [32]byte) *Station {
	for i := range info.Stations {
		if info.Stations[i].ID == id {
			return &info.Stations[i]
		}
	}
	return nil
}

// checkCheckpoint verifies the receipt's checkpoint again with the pinned
// key, and that the lookup was answered at a tree no smaller than the one
// trusted before: a node answering at an older tree could hide a newer
// entry.
func (r *recovery) checkCheckpoint() (string, error) {
	signed := r.latest.Receipt.Checkpoint
	cp, err := r.c.verifyCheckpoint(signed)
	if err != nil {
		return "", err
	}
	if cp != r.history.Checkpoint {
		return "", mismatch("the receipt's checkpoint is not the lookup's")
	}
	r.rep.Checkpoint = r.reportCheckpoint(cp, signed)
	if cp.Size < r.trustedSize {
		return "", fmt.Errorf("%w: the chip's entries were served at a tree of %d entries, the client already trusted one of %d", ErrRollback, cp.Size, r.trustedSize)
	}
	detail := fmt.Sprintf("The ledger's signature on its checkpoint is valid (log %s, %d entries)", cp.Origin, cp.Size)
	if r.trustedSize > 0 {
		detail += fmt.Sprintf(", and it extends the checkpoint of %d entries this client trusted", r.trustedSize)
	}
	return detail, nil
}

// checkIndex reports what the chip index proved (LookupChip verified the
// lookup proof under the checkpoint's index root) and checks that it is
// about the entry being restored: the chip's latest, at its position, with
// the history of the entries served.
func (r *recovery) checkIndex() (string, error) {
	idx, rc, e := r.history.Index, r.latest.Receipt, r.latest.Entry
	v := idx.Value
	switch {
	case v.Epoch != e.Epoch || v.LeafIndex != rc.Index || v.LeafHash != proofs.LeafHash(rc.Leaf):
		return "", fmt.Errorf("%w: %w", ErrNotLatest, mismatch("the chip index records epoch %d at position %d as chip %s's latest, not the entry of epoch %d at %d", v.Epoch, v.LeafIndex, r.id.ChipID, e.Epoch, rc.Index))
	case len(idx.History) != len(r.history.Entries):
		return "", fmt.Errorf("%w: %w", ErrNotLatest, mismatch("the chip index records %d entries of chip %s, the node served %d", len(idx.History), r.id.ChipID, len(r.history.Entries)))
	}
	return fmt.Sprintf("The chip index in the checkpoint of %d entries proves epoch %d (at position %d) is this chip's latest backup; its history of %s matches the entries served",
		idx.Checkpoint.Size, v.Epoch, v.LeafIndex, plural(len(idx.History), "entry", "entries")), nil
}

// checkWitnesses reports the witnessed checkpoint LookupChip proved the
// lookup's checkpoint a prefix of, and checks its cosignatures again.
func (r *recovery) checkWitnesses() (string, error) {
	h := r.history
	if h.Witnessed == nil {
		return "", fmt.Errorf("%w: the lookup was not checked against a witnessed checkpoint", ErrNotWitnessed)
	}
	w, err := r.c.verifier.VerifyWitnessedCheckpoint(h.WitnessedNote, r.c.witnesses)
	if err != nil || w != *h.Witnessed || w.Size < h.Checkpoint.Size {
		return "", fmt.Errorf("%w: the witnessed checkpoint recorded by the lookup: %v", ErrNotWitnessed, err)
	}
	r.rep.Witnessed = r.reportCheckpoint(w, h.WitnessedNote)
	r.rep.Witnessed.TrustedSize = 0
	_, n, err := r.c.verifier.VerifyCheckpointNote(h.WitnessedNote, r.c.witnesses.Verifiers()...)
	cosigners := 0
	if err == nil {
		cosigners = len(n.Sigs) - 1
	}
	detail := fmt.Sprintf("%s of the witness policy cosigned the checkpoint of %d entries", plural(cosigners, "witness", "witnesses"), w.Size)
	if w.Size > h.Checkpoint.Size {
		detail += fmt.Sprintf(", which extends the lookup's (consistency proof checked); none of the %s in between is for this chip", plural(int(w.Size-h.Checkpoint.Size), "entry", "entries"))
	}
	return detail, nil
}

// checkInclusion verifies the entry's inclusion proof again, offline, as
// the device will.
func (r *recovery) checkInclusion() (string, error) {
	rc := r.latest.Receipt
	cp := r.history.Checkpoint
	if err := proofs.VerifyInclusion(rc.Index, cp.Size, proofs.LeafHash(rc.Leaf), rc.Proof, cp.Hash); err != nil {
		return "", &ProofError{Index: rc.Index, Size: cp.Size, Node: "the receipt", Err: err}
	}
	return fmt.Sprintf("The backup is in the log at position %d (inclusion proof checked)", rc.Index), nil
}

// checkStation verifies that the entry's station was registered before the
// entry, chains to the device's trust, and signed the entry.
func (r *recovery) checkStation() (string, error) {
	s, e := r.station, r.latest.Entry
	cert, _ := x509.ParseCertificate(s.Certificate) // reported even if untrusted
	r.rep.Station = &RecoveryStation{ID: hex.EncodeToString(s.ID[:]), RegistrationIndex: s.RegistrationIndex}
	if cert != nil {
		r.rep.Station.Name, r.rep.Station.Manufacturer = cert.Subject.CommonName, first(cert.Subject.Organization)
	}
	if s.RegistrationIndex >= r.latest.Receipt.Index {
		return "", fmt.Errorf("%w: station %s was registered at position %d, after the entry at %d", ErrUnknownStation, r.rep.Station.Name, s.RegistrationIndex, r.latest.Receipt.Index)
	}
	registeredAt, err := s.Registration.RegisteredAt()
	if err != nil {
		return "", fmt.Errorf("%w: station registration at %d: %w", ErrMismatch, s.RegistrationIndex, err)
	}
	r.rep.Station.RegisteredAt = registeredAt.UTC()
	vs, err := r.trust.VerifyStation(s.Certificate, registeredAt)
	if err != nil {
		return "", fmt.Errorf("%w: station %s when it registered: %w", ErrUntrustedCertificate, r.rep.Station.Name, err)
	}
	if !vs.ValidAt(r.at) {
		return "", fmt.Errorf("%w: station %s: %w: its certificate does not chain to the device's trust at the entry's provisioning time %s",
			ErrUntrustedCertificate, r.rep.Station.Name, ledger.ErrUntrustedCertificate, r.at.UTC().Format(time.RFC3339))
	}
	if err := e.VerifySignature(vs.PublicKey()); err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnknownStation, err)
	}
	return fmt.Sprintf("Registered station %s signed this entry (registered at position %d, before the entry; certified by %s, which this device trusts)",
		r.rep.Station.Name, s.RegistrationIndex, issuerName(vs.Certificate())), nil
}

// checkCertificate verifies the device certificate against the device's
// ROM trust at provisioned_at, and its binding to the device's chip and
// identities.
func (r *recovery) checkCertificate() (string, error) {
	e := r.latest.Entry
	if c, err := x509.ParseCertificate(e.Certificate); err == nil {
		r.rep.Certificate = &RecoveryCertificate{Serial: hex.EncodeToString(c.SerialNumber.Bytes()), Issuer: c.Issuer.String(), Manufacturer: issuerName(c)}
	}
	cert, err := r.trust.VerifyDeviceCertificate(e.Certificate, r.id.ChipID, r.id.Identities, r.at)
	switch {
	case errors.Is(err, ledger.ErrChipIDMismatch), errors.Is(err, ledger.ErrIdentityMismatch), errors.Is(err, ledger.ErrInvalidIdentity):
		return "", fmt.Errorf("%w: the device certificate is not this device's: %w", ErrMismatch, err)
	case err != nil:
		return "", fmt.Errorf("%w: %w", ErrUntrustedCertificate, err)
	}
	return fmt.Sprintf("The device certificate was issued by %s's CA, which this device trusts, for chip %s and %s",
		issuerName(cert), r.id.ChipID, describeIdentities(r.id.Identities)), nil
}

// checkIdentities compares the entry's identities with the device's.
func (r *recovery) checkIdentities() (string, error) {
	e := r.latest.Entry
	if !e.Identities.Equal(r.id.Identities) {
		return "", fmt.Errorf("%w: the entry is for %s, the device is %s", ErrMismatch, e.Identities, r.id.Identities)
	}
	return fmt.Sprintf("The entry is for this device's identities (%s)", describeIdentities(r.id.Identities)), nil
}

// checkEpoch refuses an entry older than the device's epoch counter.
func (r *recovery) checkEpoch() (string, error) {
	epoch, counter := r.latest.Entry.Epoch, r.id.Epoch
	if epoch < counter {
		return "", fmt.Errorf("%w: the ledger's latest entry for chip %s is epoch %d, the device installed epoch %d", ErrStaleBackup, r.id.ChipID, epoch, counter)
	}
	return fmt.Sprintf("The backup's epoch %d is the chip's latest in the ledger and not older than the device's epoch counter (%d)", epoch, counter), nil
}

// restore hands the verified backup, certificate, receipt and lookup proof
// to the device, which verifies the proofs again itself: it trusts only its
// ROM, not this client.
func (r *recovery) restore(ctx context.Context) error {
	receipt, err := r.latest.Receipt.MarshalBinary()
	if err != nil {
		return fmt.Errorf("encode the receipt: %w", err)
	}
	e := r.latest.Entry
	if err := r.dev.RestoreBackup(ctx, e.Backup, e.Certificate, receipt, r.history.LookupProof); err != nil {
		if answerLost(err) {
			return fmt.Errorf("%w: %w", ErrRestoreUnknown, err)
		}
		return fmt.Errorf("%w: %w", ErrDeviceRefused, err)
	}
	return nil
}

// answerLost reports whether a device's error says nothing of what it did:
// the call was cut short, or failed on the way or inside the device,
// rather than refused by the device with a reason.
func answerLost(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		switch ce.Code() {
		case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeCanceled, connect.CodeAborted, connect.CodeInternal, connect.CodeUnknown:
			return true
		}
	}
	return false
}

// describeIdentities names identities as on a label: "IMEI 490154203237518".
func describeIdentities(ids ledger.Identities) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		name := id.Type.String()
		if id.Type == ledger.IdentityIMEI || id.Type == ledger.IdentityMEID {
			name = strings.ToUpper(name)
		}
		parts[i] = name + " " + id.DisplayValue()
	}
	return strings.Join(parts, " and ")
}

// issuerName names a certificate's issuer by its organization, or its
// common name.
func issuerName(c *x509.Certificate) string {
	if o := first(c.Issuer.Organization); o != "" {
		return o
	}
	return c.Issuer.CommonName
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
