package ledger

import "errors"

// Errors returned by the formats and admission checks of this package. They
// are always wrapped with context (which field, which value), so test for them
// with errors.Is. A parse failure wraps ErrMalformed and, where one applies, the
// more specific error below it (for example ErrInvalidChipID), so a caller can
// ask either "is this input broken at all?" or "what exactly is wrong?".
var (
	// ErrMalformed reports bytes or text that are not the one valid encoding
	// of a value: truncated input, trailing bytes, a length out of range, an
	// unknown kind or type.
	ErrMalformed = errors.New("malformed encoding")

	// ErrInvalidChipID reports a chip ID that is not 8 to 32 bytes, or text
	// that is not its hexadecimal form.
	ErrInvalidChipID = errors.New("invalid chip ID")

	// ErrInvalidIdentity reports an identity or identity list that breaks the
	// rules of DESIGN.md §3.1 (an IMEI with a wrong check digit, an IMEISV, a
	// lower-case MEID in binary form, a serial with control characters, a
	// duplicate, too few or too many entries, ...).
	ErrInvalidIdentity = errors.New("invalid identity")

	// ErrUnknownKind reports a leaf whose u16 kind is not one this package
	// knows (KindEscrow, KindStation, KindIndexRoot).
	ErrUnknownKind = errors.New("unknown leaf kind")

	// ErrWrongKind reports a valid leaf of another kind than the caller asked
	// for, for example a station registration given to ParseEscrowEntry.
	ErrWrongKind = errors.New("wrong leaf kind")

	// ErrInvalidEntry reports an entry field whose value is out of range:
	// an empty certificate, backup or signature, or a timestamp beyond the
	// range of time.Time.
	ErrInvalidEntry = errors.New("invalid entry")

	// ErrInvalidEpoch reports epoch 0; epochs start at 1.
	ErrInvalidEpoch = errors.New("invalid epoch")

	// ErrLeafTooLarge reports a leaf that would exceed MaxLeafSize bytes.
	ErrLeafTooLarge = errors.New("leaf too large")

	// ErrFieldTooLarge reports a certificate or backup above the admission
	// limits (MaxCertificateSize, MaxBackupSize, MaxStationCertificateSize).
	ErrFieldTooLarge = errors.New("field exceeds admission limit")

	// ErrChipIDMismatch reports a device certificate whose
	// hardwareModuleName binds another chip ID than the entry's.
	ErrChipIDMismatch = errors.New("certificate binds another chip ID")

	// ErrIdentityMismatch reports a device certificate whose subject
	// serialNumber or IMEI URNs do not match the entry's identities exactly.
	ErrIdentityMismatch = errors.New("certificate binds other identities")

	// ErrUntrustedCertificate reports a certificate that does not chain to a
	// configured manufacturer root at the time it is checked at (expired,
	// not yet valid, unknown issuer, bad signature, unhandled critical
	// extension).
	ErrUntrustedCertificate = errors.New("certificate not trusted")

	// ErrCertificateProfile reports a certificate that chains but breaks the
	// device or station certificate profile of DESIGN.md §3.5 (wrong key
	// type, missing policy, critical or malformed SAN, not CA:FALSE, ...), or
	// bytes that are not an X.509 certificate at all.
	ErrCertificateProfile = errors.New("certificate violates profile")

	// ErrInvalidTrust reports a trust bundle that is empty, not PEM, or holds
	// a certificate that is not a CA.
	ErrInvalidTrust = errors.New("invalid trust bundle")

	// ErrStationIDMismatch reports an escrow entry whose station_id is not the
	// SHA-256 of the station certificate it is checked against.
	ErrStationIDMismatch = errors.New("station ID does not match station certificate")

	// ErrBadStationSignature reports a station signature that does not verify,
	// or a station key that is not ECDSA P-256.
	ErrBadStationSignature = errors.New("bad station signature")

	// ErrEpochGap reports an escrow entry whose epoch is not exactly one more
	// than the chip's last logged epoch (1 for a chip never seen).
	ErrEpochGap = errors.New("epoch is not the next epoch of the chip")

	// ErrEpochReused reports an escrow entry for an epoch the chip already
	// used, with a different leaf than the one logged for it.
	ErrEpochReused = errors.New("epoch already used by another leaf")

	// ErrInvalidHistory reports a chip history handed to DecideEpoch that is
	// not a run of consecutive epochs; it means the caller's state is corrupt.
	ErrInvalidHistory = errors.New("chip history is not consecutive")
)
