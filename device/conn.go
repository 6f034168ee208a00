package device

import (
	"context"

	"github.com/chipledger/chipledger/ledger"
)

// A Conn is a connection to one device: what a station drives the
// provisioning handshake through (DESIGN.md §5) and a recovering client
// restores a backup through. *Device implements it in process; the client
// of NewAgentClient implements it over the network. Errors wrap the errors
// of this package (ErrMalformed, ErrWrongChip, ...) either way.
type Conn interface {
	// ChipInfo reads the chip ID, the identities, the epoch counter and
	// what the device's memory holds.
	ChipInfo(ctx context.Context) (*Info, error)

	// StorePackage stores a data package (its binary form) as the
	// pending package and returns the backup envelope the chip sealed it
	// into. The package must be for the device's identities and its next
	// epoch (the epoch counter plus one).
	StorePackage(ctx context.Context, pkg []byte) (backup []byte, err error)

	// CheckBackup checks that backup decrypts, with the chip key, to
	// exactly the pending package: the round trip a station proves
	// before it publishes anything.
	CheckBackup(ctx context.Context, backup []byte) error

	// StoreCertificate verifies a device certificate (DER) against the
	// manufacturer trust in the device's ROM, its binding to the chip ID
	// and identities, and that it certifies the pending package's key,
	// then stores it with the pending package.
	StoreCertificate(ctx context.Context, cert []byte) error

	// StoreReceipt verifies a receipt (proofs.Receipt encoding) for the
	// pending package's escrow entry against the log key in ROM and, if
	// it holds, installs the pending package as the device's keys and
	// advances the epoch counter.
	StoreReceipt(ctx context.Context, receipt []byte) error

	// RestoreBackup restores the keys of a backup fetched from the
	// ledger, with the device certificate of its entry, optionally (nil)
	// the receipt proving the entry is in the log, and, required, the
	// chip's lookup proof (proofs.LookupProof encoding): the device
	// verifies with the log key in its ROM that the chip index of a signed
	// checkpoint names this entry as its chip's latest (DESIGN.md §3.7).
	// It refuses a backup older than the epoch counter or than the epoch
	// the chip index names.
	RestoreBackup(ctx context.Context, backup, cert, receipt, lookupProof []byte) error

	// Wipe erases the device's writable memory: keys, certificate,
	// receipt and any pending package. The chip (its ID, key and epoch
	// counter) and the ROM stay.
	Wipe(ctx context.Context) error

	// Status reports ChipInfo and, when the device holds keys, public
	// facts about them.
	Status(ctx context.Context) (*Status, error)
}

// Info is what a device tells about itself: its chip, its identities, and
// what its memory holds.
type Info struct {
	// ChipID is the chip ID from the chip's ROM.
	ChipID ledger.ChipID
	// Identities are the identities burned into the device.
	Identities ledger.Identities
	// Epoch is the chip's epoch counter: the highest epoch of keys the
	// device installed or restored, 0 if it never had any. A station
	// provisions epoch Epoch+1.
	Epoch uint32
	// HasKeys reports whether the device holds installed keys (with their
	// certificate).
	HasKeys bool
	// HasReceipt reports whether the device holds the receipt of its keys'
	// escrow entry.
	HasReceipt bool
	// PendingEpoch is the epoch of the package being provisioned, 0 when
	// no provisioning is in progress.
	PendingEpoch uint32
	// PendingCertified reports whether the pending package's certificate
	// is stored, so the receipt is the next step.
	PendingCertified bool
}

// Status is Info with the device's ROM and public facts about its keys.
type Status struct {
	Info
	// LogVerifierKey is the log's note verifier key in ROM.
	LogVerifierKey string
	// Trust is the manufacturer trust bundle in ROM (PEM).
	Trust []byte
	// Keys describes the installed keys; nil when HasKeys is false.
	Keys *KeySummary
}

// KeySummary describes a device's installed keys without revealing them.
type KeySummary struct {
	// Epoch, MasterKeyVersion and KeyOrigin are those of the package.
	Epoch            uint32
	MasterKeyVersion uint32
	KeyOrigin        KeyOrigin
	// DevicePublicKey is the device key pair's public key (PKIX DER).
	DevicePublicKey []byte
	// ChannelKeyCheck identifies the channel key without revealing it:
	// the first 8 bytes of DeriveKey(channel key, KeyCheckLabel, nil).
	ChannelKeyCheck []byte
	// Certificate is the device certificate (DER).
	Certificate []byte
	// Receipt is the receipt of the keys' escrow entry, nil if the device
	// has none (keys restored without one).
	Receipt []byte
}

// KeyCheckLabel is the label of ChannelKeyCheck.
const KeyCheckLabel = "chipledger/key-check/v1"

// ChannelKeyCheck returns the key check value of a channel key, as
// KeySummary.ChannelKeyCheck reports it.
func ChannelKeyCheck(channelKey [32]byte) []byte {
	k, _ := DeriveKey(channelKey[:], KeyCheckLabel, nil) // a valid label and key
	return k[:8]
}
