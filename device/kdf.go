package device

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/chipledger/chipledger/ledger"
)

// The labels of the keys this package derives (DESIGN.md §3.3, §3.4). A
// label names one purpose; it never contains a 0x00 byte.
const (
	// ChannelKeyLabel is the label of the symmetric device channel key.
	ChannelKeyLabel = "chipledger/device-channel/v1"
	// BackupWrapLabel is the label of the key that seals a backup.
	BackupWrapLabel = "chipledger/backup-wrap/v1"
)

// MinMasterKeyLen is the shortest master key ChannelKey accepts, in bytes:
// the channel keys are 256-bit keys, so the master key must be at least as
// strong.
const MinMasterKeyLen = 32

// DeriveKey returns the 256-bit key derived from key for a purpose label and
// a context by the NIST SP 800-108r1 KDF in counter mode with HMAC-SHA256 as
// the PRF, a 32-bit counter before the fixed input, and one block:
//
//	HMAC-SHA256(key, 0x00000001 ‖ label ‖ 0x00 ‖ context ‖ 0x00000100)
//
// where 0x00000100 is the output length L = 256 bits. The 0x00 separator
// makes (label, context) unambiguous only if label holds no 0x00 byte, so
// DeriveKey rejects such a label, an empty label and an empty key. With a
// valid label and a non-empty key it never fails.
func DeriveKey(key []byte, label string, context []byte) ([32]byte, error) {
	if len(key) == 0 {
		return [32]byte{}, errors.New("derive key: empty key")
	}
	if label == "" || strings.IndexByte(label, 0) >= 0 {
		return [32]byte{}, fmt.Errorf("derive key: label %q must be non-empty and hold no 0x00 byte", label)
	}
	fixed := make([]byte, 0, len(label)+1+len(context)+4)
	fixed = append(fixed, label...)
	fixed = append(fixed, 0)
	fixed = append(fixed, context...)
	fixed = binary.BigEndian.AppendUint32(fixed, 256)
	return [32]byte(kbkdfCounter(key, fixed, 256)), nil
}

// kbkdfCounter is the SP 800-108r1 KDF in counter mode with HMAC-SHA256,
// the 32-bit counter before the fixed input: the first outBits bits of
// K(1) ‖ K(2) ‖ … with K(i) = HMAC-SHA256(key, [i]_32 ‖ fixedInput). The
// fixed input is opaque here (the CAVP vectors give it whole); DeriveKey
// builds it from a label, a context and L. A partial last byte keeps its
// leading bits. It returns nil when outBits is not positive.
func kbkdfCounter(key, fixedInput []byte, outBits int) []byte {
	if outBits <= 0 {
		return nil
	}
	n := (outBits + 7) / 8
	out := make([]byte, 0, n+sha256.Size)
	mac := hmac.New(sha256.New, key)
	var counter [4]byte
	for i := uint32(1); len(out) < n; i++ {
		binary.BigEndian.PutUint32(counter[:], i)
		mac.Reset()
		mac.Write(counter[:])
		mac.Write(fixedInput)
		out = mac.Sum(out)
	}
	out = out[:n]
	if r := outBits % 8; r != 0 {
		out[n-1] &= 0xff << (8 - r)
	}
	return out
}

// ChannelKey returns the symmetric device channel key of the device with
// identities ids (DESIGN.md §3.3):
//
//	DeriveKey(masterKey, ChannelKeyLabel, identities ‖ u32 masterKeyVersion)
//
// where identities is the binary form of ids (ledger.Identities). The
// manufacturer's backend re-derives any device's key from its identities
// alone. masterKey must be at least MinMasterKeyLen bytes, and ids valid
// (the error then wraps ledger.ErrInvalidIdentity).
func ChannelKey(masterKey []byte, ids ledger.Identities, masterKeyVersion uint32) ([32]byte, error) {
	if len(masterKey) < MinMasterKeyLen {
		return [32]byte{}, fmt.Errorf("channel key: master key is %d bytes, want at least %d", len(masterKey), MinMasterKeyLen)
	}
	enc, err := ids.MarshalBinary()
	if err != nil {
		return [32]byte{}, fmt.Errorf("channel key: %w", err)
	}
	context := binary.BigEndian.AppendUint32(enc, masterKeyVersion)
	return DeriveKey(masterKey, ChannelKeyLabel, context)
}
