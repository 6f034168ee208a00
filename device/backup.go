package device

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"fmt"

	"golang.org/x/crypto/cryptobyte"

	"github.com/chipledger/chipledger/ledger"
)

// The backup envelope's constants (DESIGN.md §3.4).
const (
	// BackupSuite is the only suite: the wrap key is DeriveKey(chip key,
	// BackupWrapLabel, SHA-256(header)) and the package is sealed with
	// AES-256-GCM under it, the header as additional data.
	BackupSuite = 1
	// SaltSize is the length of a backup's salt, in bytes.
	SaltSize = 32
	// NonceSize is the length of a backup's AES-GCM nonce, in bytes.
	NonceSize = 12
	// ChipKeySize is the length of a SoftChip's secret key, in bytes.
	ChipKeySize = 32
	// MaxBackupSize is the largest backup envelope, in bytes: the largest
	// the ledger admits (ledger.MaxBackupSize).
	MaxBackupSize = ledger.MaxBackupSize

	backupMagic = "CLB1"
	gcmTagSize  = 16
)

// A BackupHeader is the authenticated, unencrypted front of a backup
// envelope. Its binary form is
//
//	"CLB1"                       4-byte magic
//	uint8 suite = 1
//	opaque chip_id<8..32>        (u8 length)
//	identities                   (u8 byte length, 1 to 4 identities)
//	uint32 epoch                 (1, 2, ...)
//	opaque salt[32]
//	opaque nonce[12]
//
// and the envelope is header ‖ AES-256-GCM(K_wrap, nonce, package, aad =
// header) with K_wrap = DeriveKey(chip key, BackupWrapLabel,
// SHA-256(header)). Anyone can read a header (ParseBackupHeader); only the
// chip can open the rest, and only if the header is the one it sealed.
type BackupHeader struct {
	ChipID     ledger.ChipID
	Identities ledger.Identities
	Epoch      uint32
	Salt       [SaltSize]byte
	Nonce      [NonceSize]byte
}

// MarshalBinary returns the binary form of h after checking its chip ID,
// identities and epoch. The error wraps ErrMalformed.
func (h *BackupHeader) MarshalBinary() ([]byte, error) {
	if err := h.ChipID.Validate(); err != nil {
		return nil, fmt.Errorf("backup header: %w: %w", ErrMalformed, err)
	}
	if h.Epoch == 0 {
		return nil, fmt.Errorf("backup header: %w: epoch 0, epochs start at 1", ErrMalformed)
	}
	var b cryptobyte.Builder
	b.AddBytes([]byte(backupMagic))
	b.AddUint8(BackupSuite)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(h.ChipID) })
	if err := addIdentities(&b, h.Identities); err != nil {
		return nil, fmt.Errorf("backup header: %w: %w", ErrMalformed, err)
	}
	b.AddUint32(h.Epoch)
	b.AddBytes(h.Salt[:])
	b.AddBytes(h.Nonce[:])
	return b.Bytes()
}

// ParseBackupHeader splits a backup envelope into its header and its
// ciphertext (which aliases backup), so that anyone can read the chip ID,
// identities and epoch without the chip key. It is strict: a backup above
// MaxBackupSize, a wrong magic, an unknown suite, an invalid chip ID,
// identities or epoch, a truncated field, or a ciphertext too short to hold
// the GCM tag and a package are errors wrapping ErrMalformed. It checks no
// authentication: only the chip can.
func ParseBackupHeader(backup []byte) (BackupHeader, []byte, error) {
	if len(backup) > MaxBackupSize {
		return BackupHeader{}, nil, fmt.Errorf("backup: %w: %d bytes, at most %d", ErrMalformed, len(backup), MaxBackupSize)
	}
	s := cryptobyte.String(backup)
	var magic []byte
	var suite uint8
	if !s.ReadBytes(&magic, len(backupMagic)) || string(magic) != backupMagic {
		return BackupHeader{}, nil, fmt.Errorf("backup: %w: does not start with %q", ErrMalformed, backupMagic)
	}
	if !s.ReadUint8(&suite) {
		return BackupHeader{}, nil, fmt.Errorf("backup: %w: truncated in suite", ErrMalformed)
	}
	if suite != BackupSuite {
		return BackupHeader{}, nil, fmt.Errorf("backup: %w: unknown suite %d, want %d", ErrMalformed, suite, BackupSuite)
	}
	var h BackupHeader
	var err error
	if h.ChipID, err = readChipID(&s); err != nil {
		return BackupHeader{}, nil, fmt.Errorf("backup: %w", err)
	}
	if h.Identities, err = readIdentities(&s); err != nil {
		return BackupHeader{}, nil, fmt.Errorf("backup: %w", err)
	}
	if !s.ReadUint32(&h.Epoch) || !s.CopyBytes(h.Salt[:]) || !s.CopyBytes(h.Nonce[:]) {
		return BackupHeader{}, nil, fmt.Errorf("backup: %w: truncated header", ErrMalformed)
	}
	if h.Epoch == 0 {
		return BackupHeader{}, nil, fmt.Errorf("backup: %w: epoch 0, epochs start at 1", ErrMalformed)
	}
	if len(s) <= gcmTagSize {
		return BackupHeader{}, nil, fmt.Errorf("backup: %w: %d bytes of ciphertext, want more than the %d-byte tag", ErrMalformed, len(s), gcmTagSize)
	}
	return h, []byte(s), nil
}

// sealBackup returns the backup envelope of pkg under chipKey with header h.
// It is what a chip computes; the key never leaves the SoftChip that calls
// it.
func sealBackup(chipKey []byte, h *BackupHeader, pkg []byte) ([]byte, error) {
	header, err := h.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if len(pkg) == 0 {
		return nil, fmt.Errorf("backup: %w: empty package", ErrMalformed)
	}
	if size := len(header) + len(pkg) + gcmTagSize; size > MaxBackupSize {
		return nil, fmt.Errorf("backup: %w: would be %d bytes, at most %d", ErrMalformed, size, MaxBackupSize)
	}
	aead, err := wrapAEAD(chipKey, header)
	if err != nil {
		return nil, err
	}
	return aead.Seal(header, h.Nonce[:], pkg, header), nil
}

// openBackup opens a backup envelope with the key of the chip chip. It
// rebuilds the header with chip as the chip ID, so a backup of another chip
// fails (ErrWrongChip when its header says so, ErrDecrypt otherwise), as
// does any change to the header or ciphertext (ErrDecrypt). It returns the
// header and the package bytes.
func openBackup(chipKey []byte, chip ledger.ChipID, backup []byte) (BackupHeader, []byte, error) {
	h, ciphertext, err := ParseBackupHeader(backup)
	if err != nil {
		return BackupHeader{}, nil, err
	}
	if !h.ChipID.Equal(chip) {
		return BackupHeader{}, nil, fmt.Errorf("backup: %w: it is for chip %s, this is chip %s", ErrWrongChip, h.ChipID, chip)
	}
	h.ChipID = chip
	header, err := h.MarshalBinary()
	if err != nil {
		return BackupHeader{}, nil, err
	}
	aead, err := wrapAEAD(chipKey, header)
	if err != nil {
		return BackupHeader{}, nil, err
	}
	pkg, err := aead.Open(nil, h.Nonce[:], ciphertext, header)
	if err != nil {
		return BackupHeader{}, nil, fmt.Errorf("backup of chip %s epoch %d: %w", chip, h.Epoch, ErrDecrypt)
	}
	return h, pkg, nil
}

// wrapAEAD returns AES-256-GCM under K_wrap = DeriveKey(chipKey,
// BackupWrapLabel, SHA-256(header)).
func wrapAEAD(chipKey, header []byte) (cipher.AEAD, error) {
	digest := sha256.Sum256(header)
	key, err := DeriveKey(chipKey, BackupWrapLabel, digest[:])
	if err != nil {
		return nil, fmt.Errorf("backup wrap key: %w", err)
	}
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("backup cipher: %w", err)
	}
	return cipher.NewGCM(block)
}
