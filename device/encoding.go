package device

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"

	"github.com/chipledger/chipledger/ledger"
)

// readIdentities reads an identity list (DESIGN.md §3.1: a u8 byte length
// and the identities) from the front of s, checked by ledger.ParseIdentities.
// The error wraps ErrMalformed.
func readIdentities(s *cryptobyte.String) (ledger.Identities, error) {
	start := *s
	var body cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&body) {
		return nil, fmt.Errorf("%w: truncated in identities", ErrMalformed)
	}
	ids, err := ledger.ParseIdentities(start[:len(start)-len(*s)])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return ids, nil
}

// addIdentities appends the binary form of ids to b. The error wraps
// ledger.ErrInvalidIdentity.
func addIdentities(b *cryptobyte.Builder, ids ledger.Identities) error {
	enc, err := ids.MarshalBinary()
	if err != nil {
		return err
	}
	b.AddBytes(enc)
	return nil
}

// readChipID reads a u8-length-prefixed chip ID of 8 to 32 bytes and copies
// it. The error wraps ErrMalformed.
func readChipID(s *cryptobyte.String) (ledger.ChipID, error) {
	var c cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&c) {
		return nil, fmt.Errorf("%w: truncated in chip_id", ErrMalformed)
	}
	chip := ledger.ChipID(append([]byte(nil), c...))
	if err := chip.Validate(); err != nil {
		return nil, fmt.Errorf("%w: chip_id: %w", ErrMalformed, err)
	}
	return chip, nil
}
