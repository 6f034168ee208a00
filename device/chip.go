package device

import (
	"crypto/rand"
	"fmt"
	"io"
	"sync"

	"github.com/chipledger/chipledger/ledger"
)

// A Chip is the device's secure chip: a chip ID in read-only storage, a
// secret chip key in tamper-resistant storage, and a monotonic epoch
// counter. The chip key never crosses this interface: the chip seals and
// opens backup envelopes (DESIGN.md §3.4) itself, so a TPM or secure element
// can implement it. SoftChip is the software implementation.
//
// Implementations must be safe for concurrent use.
type Chip interface {
	// ID returns the chip ID (8 to 32 bytes).
	ID() ledger.ChipID

	// Seal encrypts plaintext (a data package) into a backup envelope
	// whose header names this chip, ids and epoch, with a fresh salt and
	// nonce from the chip's random source.
	Seal(ids ledger.Identities, epoch uint32, plaintext []byte) (backup []byte, err error)

	// Open decrypts a backup envelope sealed by this chip. It rebuilds
	// the header from the chip's own ID, so a backup of another chip
	// fails (ErrWrongChip), as does any change to the header or
	// ciphertext (ErrDecrypt); malformed input wraps ErrMalformed. It
	// returns the identities and epoch of the header, which the chip
	// authenticated, and the plaintext.
	Open(backup []byte) (ids ledger.Identities, epoch uint32, plaintext []byte, err error)

	// Epoch returns the epoch counter: the highest epoch of keys the
	// device installed or restored, 0 for a new chip.
	Epoch() (uint32, error)

	// AdvanceEpoch raises the epoch counter to e. Raising it to its
	// current value does nothing; lowering it fails with ErrRollback.
	AdvanceEpoch(e uint32) error
}

// SoftChip is a Chip in software, for emulated devices and tests: its chip
// ID and key are random bytes made at "manufacture" and kept in memory (and
// in the device's state file), so it protects nothing against someone who
// can read that memory or file.
type SoftChip struct {
	id   ledger.ChipID
	key  [ChipKeySize]byte
	rand io.Reader

	mu    sync.Mutex
	epoch uint32
}

// NewSoftChip manufactures a SoftChip: a chip ID of ledger.DefaultChipIDLen
// bytes, then a ChipKeySize-byte chip key, read from random (crypto/rand if
// nil), and an epoch counter of 0. The chip's backups take their salt and
// nonce from random too, in that order.
func NewSoftChip(random io.Reader) (*SoftChip, error) {
	if random == nil {
		random = rand.Reader
	}
	c := &SoftChip{id: make(ledger.ChipID, ledger.DefaultChipIDLen), rand: random}
	if _, err := io.ReadFull(random, c.id); err != nil {
		return nil, fmt.Errorf("soft chip: read chip ID: %w", err)
	}
	if _, err := io.ReadFull(random, c.key[:]); err != nil {
		return nil, fmt.Errorf("soft chip: read chip key: %w", err)
	}
	return c, nil
}

// restoreSoftChip rebuilds a SoftChip from its persisted state.
func restoreSoftChip(id ledger.ChipID, key [ChipKeySize]byte, epoch uint32, random io.Reader) (*SoftChip, error) {
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("soft chip: %w", err)
	}
	if random == nil {
		random = rand.Reader
	}
	return &SoftChip{id: append(ledger.ChipID(nil), id...), key: key, epoch: epoch, rand: random}, nil
}

// ID returns the chip ID.
func (c *SoftChip) ID() ledger.ChipID { return append(ledger.ChipID(nil), c.id...) }

// Seal implements Chip.
func (c *SoftChip) Seal(ids ledger.Identities, epoch uint32, plaintext []byte) ([]byte, error) {
	h := BackupHeader{ChipID: c.id, Identities: ids, Epoch: epoch}
	c.mu.Lock() // the random source need not be safe for concurrent use
	_, err := io.ReadFull(c.rand, h.Salt[:])
	if err == nil {
		_, err = io.ReadFull(c.rand, h.Nonce[:])
	}
	c.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("soft chip: read salt and nonce: %w", err)
	}
	return sealBackup(c.key[:], &h, plaintext)
}

// Open implements Chip.
func (c *SoftChip) Open(backup []byte) (ledger.Identities, uint32, []byte, error) {
	h, pkg, err := openBackup(c.key[:], c.id, backup)
	if err != nil {
		return nil, 0, nil, err
	}
	return h.Identities, h.Epoch, pkg, nil
}

// Epoch implements Chip; it never fails.
func (c *SoftChip) Epoch() (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch, nil
}

// AdvanceEpoch implements Chip.
func (c *SoftChip) AdvanceEpoch(e uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e < c.epoch {
		return fmt.Errorf("%w: epoch counter is %d, cannot go back to %d", ErrRollback, c.epoch, e)
	}
	c.epoch = e
	return nil
}

// secret returns the chip's persisted state; only the state file uses it.
func (c *SoftChip) secret() (id ledger.ChipID, key [ChipKeySize]byte, epoch uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ID(), c.key, c.epoch
}
