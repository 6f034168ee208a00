package device

import "errors"

// Errors returned by a Device (directly or through a Conn) and by the format
// parsers. They are wrapped with context, so test for them with errors.Is.
// The agent carries them over the wire, so errors.Is works the same on the
// errors of an AgentClient.
var (
	// ErrMalformed reports input that is not the one valid encoding of what
	// was expected: a data package, a backup envelope, a certificate, a
	// receipt or its leaf, or a lookup proof (also a missing one).
	ErrMalformed = errors.New("malformed input")

	// ErrWrongChip reports a backup, certificate or receipt made for another
	// chip than this device's.
	ErrWrongChip = errors.New("made for another chip")

	// ErrWrongIdentity reports a package, backup, certificate or receipt for
	// other identities than the ones burned into this device.
	ErrWrongIdentity = errors.New("made for other identities")

	// ErrDecrypt reports a backup for this chip that does not decrypt with
	// its chip key: the header or ciphertext was altered, or another key
	// sealed it.
	ErrDecrypt = errors.New("backup does not decrypt with this chip's key")

	// ErrUntrusted reports a certificate that does not chain to the
	// manufacturer trust in the device's ROM or breaks the device
	// certificate profile, or a receipt or lookup proof that does not
	// verify against the log key in ROM (for a lookup proof: for this
	// device's chip ID).
	ErrUntrusted = errors.New("not trusted by the device")

	// ErrWrongEpoch reports a package whose epoch is not the device's next
	// epoch (its epoch counter plus one).
	ErrWrongEpoch = errors.New("not the device's next epoch")

	// ErrRollback reports a backup older than the device's epoch counter,
	// or than the epoch the chip index of a verified lookup proof names as
	// the chip's latest: restoring it would reinstall superseded keys.
	ErrRollback = errors.New("backup is older than the device's epoch")

	// ErrNoPending reports an operation of the provisioning handshake that
	// needs a step the device has not seen: a backup check, certificate or
	// receipt without a pending package, or a receipt before the
	// certificate.
	ErrNoPending = errors.New("no provisioning step to continue")

	// ErrMismatch reports a backup, certificate or receipt that is valid
	// for this device but does not match the pending package: another
	// package, key, epoch or certificate. On restore it also reports a
	// verified lookup proof that does not vouch for the backup: the chip
	// index holds no entry for the chip or names an older epoch, its entry
	// holds another backup or certificate, or the receipt is of another
	// leaf.
	ErrMismatch = errors.New("does not match the pending package")

	// ErrNoKeys reports a request for the live keys of a device that has
	// none (never provisioned, or wiped).
	ErrNoKeys = errors.New("device holds no keys")
)
