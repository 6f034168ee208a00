package ledger

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
)

// Chip ID lengths (DESIGN.md §3.1). A chip ID is read from the chip's ROM; its
// length depends on the chip family, so the formats carry it with a u8 length.
const (
	// MinChipIDLen is the shortest valid chip ID, in bytes.
	MinChipIDLen = 8
	// MaxChipIDLen is the longest valid chip ID, in bytes.
	MaxChipIDLen = 32
	// DefaultChipIDLen is the chip ID length of the emulated chip.
	DefaultChipIDLen = 16
)

// ChipID is the public, per-chip identifier read from the chip: 8 to 32
// opaque bytes. Its text form is lower-case hexadecimal.
type ChipID []byte

// ParseChipID parses the hexadecimal text form of a chip ID. It accepts upper-
// and lower-case digits, and nothing else (no prefix, separators or spaces).
// The error wraps ErrInvalidChipID.
func ParseChipID(s string) (ChipID, error) {
	if len(s)%2 != 0 {
		return nil, fmt.Errorf("%w: %q has an odd number of hex digits", ErrInvalidChipID, s)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not hexadecimal", ErrInvalidChipID, s)
	}
	c := ChipID(b)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// String returns the lower-case hexadecimal form of c.
func (c ChipID) String() string {
	return hex.EncodeToString(c)
}

// LogValue logs c in its text form (slog would print a []byte as a string
// of raw bytes).
func (c ChipID) LogValue() slog.Value {
	return slog.StringValue(c.String())
}

// Validate reports whether c has a valid length (MinChipIDLen to
// MaxChipIDLen bytes). The error wraps ErrInvalidChipID.
func (c ChipID) Validate() error {
	if len(c) < MinChipIDLen || len(c) > MaxChipIDLen {
		return fmt.Errorf("%w: %d bytes, want %d to %d", ErrInvalidChipID, len(c), MinChipIDLen, MaxChipIDLen)
	}
	return nil
}

// Equal reports whether c and o are the same bytes.
func (c ChipID) Equal(o ChipID) bool {
	return bytes.Equal(c, o)
}
