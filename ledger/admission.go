package ledger

import (
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"time"
)

// Admission limits on the opaque fields of entries. The formats allow up to
// 65535 bytes per field and per leaf; the ledger admits less, so that an
// escrow leaf with the largest certificate, the largest backup, four 64-byte
// serials and a signature stays well inside MaxLeafSize. A P-256 device
// certificate is under 1 KiB and a backup of a P-256 device key under 1 KiB;
// the limits leave room for post-quantum keys and signatures later.
const (
	// MaxCertificateSize is the largest device certificate admitted.
	MaxCertificateSize = 16 << 10
	// MaxBackupSize is the largest backup envelope admitted.
	MaxBackupSize = 32 << 10
	// MaxStationCertificateSize is the largest station certificate admitted.
	MaxStationCertificateSize = 16 << 10
)

// CheckEscrowEntry runs the admission checks of DESIGN.md §3.2 that need no
// replicated state, in this order: every field is valid and the leaf fits
// MaxLeafSize; the certificate and backup are within MaxCertificateSize and
// MaxBackupSize (ErrFieldTooLarge); e.StationID is the SHA-256 of station.Raw
// (ErrStationIDMismatch); the station certificate is valid, chains to trust
// and meets the station profile at the entry's provisioned_at; the station
// signature verifies with its key (ErrBadStationSignature); the device
// certificate chains to trust at provisioned_at, meets the device profile and
// binds exactly e.ChipID and e.Identities (see Trust.VerifyDeviceCertificate).
//
// station is the certificate of the registered station whose ID the entry
// names; whether it is registered, and the epoch and duplicate rules
// (DecideEpoch), are for the caller holding the ledger state.
//
// CheckEscrowEntry verifies the station certificate on every call, so it
// costs three ECDSA verifications (station certificate, station signature,
// device certificate). A node admitting many entries verifies each station
// once with Trust.VerifyStation and calls CheckEscrowEntryWithStation, which
// costs two and returns the same errors.
func CheckEscrowEntry(e *EscrowEntry, station *x509.Certificate, trust *Trust) error {
	at, err := checkEscrowFields(e)
	if err != nil {
		return err
	}
	if station == nil {
		return fmt.Errorf("%w: no station certificate for station %x", ErrUntrustedCertificate, e.StationID)
	}
	if id := StationID(station.Raw); id != e.StationID {
		return fmt.Errorf("%w: entry names station %x, certificate %q is station %x", ErrStationIDMismatch, e.StationID, station.Subject, id)
	}
	stationCert, err := trust.VerifyStationCertificate(station.Raw, at)
	if err != nil {
		return err
	}
	stationKey, _ := stationCert.PublicKey.(*ecdsa.PublicKey) // P-256, checked by the profile
	return checkEscrowSignatures(e, stationKey, trust, at)
}

// CheckEscrowEntryWithStation runs the same checks as CheckEscrowEntry, with
// the same errors, for a station verified beforehand by
// trust.VerifyStation. What is verified when:
//
//   - once, when trust was built: every intermediate CA's chain to a root,
//     and the validity window of each chain (see Trust);
//   - once per station, in trust.VerifyStation: the station certificate's
//     signature by its issuing CA, its station profile, and the windows of
//     time in which it chains to a root;
//   - here, per entry: the fields and admission limits; that e.StationID is
//     station's ID (ErrStationIDMismatch); that the entry's provisioned_at
//     lies within one of station's windows, with no signature check
//     (ErrUntrustedCertificate, as for an expired or not yet valid station
//     certificate); the station signature over the entry
//     (ErrBadStationSignature, one ECDSA verification); and the device
//     certificate with trust.VerifyDeviceCertificate at provisioned_at (one
//     ECDSA verification: its issuing CA's signature).
//
// A station verified with another Trust than trust is refused
// (ErrUntrustedCertificate): verify stations again when the Trust changes.
// As for CheckEscrowEntry, registration, epoch and duplicate checks are the
// caller's.
func CheckEscrowEntryWithStation(e *EscrowEntry, station *VerifiedStation, trust *Trust) error {
	at, err := checkEscrowFields(e)
	if err != nil {
		return err
	}
	if station == nil || station.key == nil {
		return fmt.Errorf("%w: no verified station for station %x", ErrUntrustedCertificate, e.StationID)
	}
	if station.trust != trust {
		return fmt.Errorf("%w: station %q was verified with another trust bundle", ErrUntrustedCertificate, station.cert.Subject)
	}
	if station.id != e.StationID {
		return fmt.Errorf("%w: entry names station %x, certificate %q is station %x", ErrStationIDMismatch, e.StationID, station.cert.Subject, station.id)
	}
	if !station.ValidAt(at) {
		return fmt.Errorf("%w: station certificate %q at %s: it chains to a root only %s", ErrUntrustedCertificate, station.cert.Subject, at.UTC().Format(time.RFC3339), validityList(station.Validity()))
	}
	return checkEscrowSignatures(e, station.key, trust, at)
}

// checkEscrowFields runs the checks of an escrow entry that need no
// certificate and returns its provisioned_at.
func checkEscrowFields(e *EscrowEntry) (time.Time, error) {
	if e == nil {
		return time.Time{}, fmt.Errorf("%w: no escrow entry", ErrInvalidEntry)
	}
	if _, err := e.validate(); err != nil {
		return time.Time{}, err
	}
	if len(e.Certificate) > MaxCertificateSize {
		return time.Time{}, fmt.Errorf("%w: device certificate is %d bytes, at most %d", ErrFieldTooLarge, len(e.Certificate), MaxCertificateSize)
	}
	if len(e.Backup) > MaxBackupSize {
		return time.Time{}, fmt.Errorf("%w: backup is %d bytes, at most %d", ErrFieldTooLarge, len(e.Backup), MaxBackupSize)
	}
	return e.ProvisionedAt()
}

// checkEscrowSignatures verifies the station signature with stationKey and
// the device certificate at time at.
func checkEscrowSignatures(e *EscrowEntry, stationKey *ecdsa.PublicKey, trust *Trust, at time.Time) error {
	if err := e.VerifySignature(stationKey); err != nil {
		return err
	}
	if _, err := trust.VerifyDeviceCertificate(e.Certificate, e.ChipID, e.Identities, at); err != nil {
		return err
	}
	return nil
}

// CheckStationRegistration runs the admission checks of a station
// registration: the leaf is valid, the certificate is within
// MaxStationCertificateSize (ErrFieldTooLarge), and it chains to trust and
// meets the station profile at registered_at (Trust.VerifyStationCertificate).
// It returns the parsed station certificate.
func CheckStationRegistration(r *StationRegistration, trust *Trust) (*x509.Certificate, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: no station registration", ErrInvalidEntry)
	}
	if _, err := r.MarshalLeaf(); err != nil {
		return nil, err
	}
	if len(r.Certificate) > MaxStationCertificateSize {
		return nil, fmt.Errorf("%w: station certificate is %d bytes, at most %d", ErrFieldTooLarge, len(r.Certificate), MaxStationCertificateSize)
	}
	at, err := r.RegisteredAt()
	if err != nil {
		return nil, err
	}
	return trust.VerifyStationCertificate(r.Certificate, at)
}

// ChipEpoch is one escrow entry in a chip's history: its epoch, its leaf index
// and its leaf hash.
type ChipEpoch struct {
	Epoch    uint32
	Index    uint64
	LeafHash [32]byte
}

// DecideEpoch applies the epoch and duplicate rules of DESIGN.md §3.2 to an
// escrow entry for a chip with the given history, and returns:
//
//   - duplicate == true and the index of the logged leaf when the history
//     holds this epoch with this leaf hash (a retry: the caller appends
//     nothing and answers with existing);
//   - duplicate == false and a nil error when epoch is exactly one more than
//     the last epoch in history (1 for an empty history): the caller appends;
//   - ErrEpochReused for an epoch the chip already used with another leaf,
//     or an epoch before the first one history holds;
//   - ErrEpochGap for an epoch beyond the next one;
//   - ErrInvalidEpoch for epoch 0.
//
// history is the chip's escrow entries in log order: either all of them or a
// run that ends with the latest, such as just the latest entry from the chip
// index (then only a retry of the latest entry is recognised as a duplicate).
// Its epochs must be consecutive (ErrInvalidHistory otherwise). DecideEpoch is
// a pure function, so every replica decides alike.
func DecideEpoch(history []ChipEpoch, epoch uint32, leafHash [32]byte) (existing uint64, duplicate bool, err error) {
	if epoch == 0 {
		return 0, false, fmt.Errorf("%w: epoch 0, epochs start at 1", ErrInvalidEpoch)
	}
	for i, h := range history {
		if h.Epoch == 0 {
			return 0, false, fmt.Errorf("%w: history holds epoch 0", ErrInvalidHistory)
		}
		if i > 0 && h.Epoch != history[i-1].Epoch+1 {
			return 0, false, fmt.Errorf("%w: epoch %d follows epoch %d", ErrInvalidHistory, h.Epoch, history[i-1].Epoch)
		}
	}
	if len(history) == 0 {
		if epoch != 1 {
			return 0, false, fmt.Errorf("%w: chip has no entries, so its first epoch must be 1, not %d", ErrEpochGap, epoch)
		}
		return 0, false, nil
	}
	first, last := history[0].Epoch, history[len(history)-1].Epoch
	switch {
	case epoch < first:
		return 0, false, fmt.Errorf("%w: epoch %d is older than the chip's latest epoch %d", ErrEpochReused, epoch, last)
	case epoch <= last:
		h := history[epoch-first]
		if h.LeafHash != leafHash {
			return 0, false, fmt.Errorf("%w: epoch %d is logged at index %d with leaf hash %x", ErrEpochReused, epoch, h.Index, h.LeafHash)
		}
		return h.Index, true, nil
	case epoch == last+1:
		return 0, false, nil
	default:
		return 0, false, fmt.Errorf("%w: epoch %d after the chip's latest epoch %d, want %d", ErrEpochGap, epoch, last, last+1)
	}
}
