package proofs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformedReceipt reports a receipt encoding that ParseReceipt rejects,
// or a Receipt that MarshalBinary cannot encode.
var ErrMalformedReceipt = errors.New("proofs: malformed receipt")

// MaxProofHashes is the largest number of hashes in a receipt's inclusion
// proof; no tree of at most 2^64-1 leaves needs more.
const MaxProofHashes = 64

const (
	receiptMagic = "CLR1"
	maxOpaque16  = 1<<16 - 1
)

// A Receipt is the offline proof that a leaf is in the log: the leaf, its
// index, its inclusion proof, and the signed checkpoint the proof leads to
// (DESIGN.md §3.6).
//
// Its binary encoding (all integers big-endian) is
//
//	"CLR1"                              4-byte magic and version
//	opaque leaf<1..2^16-1>              u16 length ‖ leaf
//	uint64 index
//	uint8  count                        0..64
//	opaque proof[count][32]             count hashes, leaf level first
//	opaque checkpoint<1..2^16-1>        u16 length ‖ signed note
//
// and nothing may follow. Each Receipt has exactly one encoding.
type Receipt struct {
	Leaf       []byte     // the leaf bytes, 1 to 65,535 of them
	Index      uint64     // the leaf's index in the log
	Proof      [][32]byte // inclusion proof of Leaf at Index against the checkpoint
	Checkpoint []byte     // signed checkpoint note, 1 to 65,535 bytes
}

// MarshalBinary returns the encoding of r documented on Receipt. It fails,
// wrapping ErrMalformedReceipt, if Leaf or Checkpoint is empty or longer
// than 65,535 bytes, or Proof has more than MaxProofHashes hashes.
func (r *Receipt) MarshalBinary() ([]byte, error) {
	switch {
	case len(r.Leaf) == 0 || len(r.Leaf) > maxOpaque16:
		return nil, fmt.Errorf("%w: leaf is %d bytes, want 1 to %d", ErrMalformedReceipt, len(r.Leaf), maxOpaque16)
	case len(r.Proof) > MaxProofHashes:
		return nil, fmt.Errorf("%w: proof has %d hashes, at most %d allowed", ErrMalformedReceipt, len(r.Proof), MaxProofHashes)
	case len(r.Checkpoint) == 0 || len(r.Checkpoint) > maxOpaque16:
		return nil, fmt.Errorf("%w: checkpoint is %d bytes, want 1 to %d", ErrMalformedReceipt, len(r.Checkpoint), maxOpaque16)
	}
	b := make([]byte, 0, len(receiptMagic)+2+len(r.Leaf)+8+1+32*len(r.Proof)+2+len(r.Checkpoint))
	b = append(b, receiptMagic...)
	b = appendOpaque16(b, r.Leaf)
	b = binary.BigEndian.AppendUint64(b, r.Index)
	b = append(b, uint8(len(r.Proof)))
	for _, h := range r.Proof {
		b = append(b, h[:]...)
	}
	b = appendOpaque16(b, r.Checkpoint)
	return b, nil
}

// ParseReceipt parses the encoding documented on Receipt. It is strict:
// a wrong magic, a zero or overlong length, a proof count above
// MaxProofHashes, a truncated field or any trailing byte is an error
// wrapping ErrMalformedReceipt. On success MarshalBinary returns b exactly.
// The returned Receipt does not alias b; a receipt without proof hashes has
// a nil Proof.
//
// ParseReceipt verifies nothing; call Receipt.Verify.
func ParseReceipt(b []byte) (*Receipt, error) {
	s := reader{b}
	if magic, ok := s.bytes(len(receiptMagic)); !ok || string(magic) != receiptMagic {
		return nil, fmt.Errorf("%w: does not start with %q", ErrMalformedReceipt, receiptMagic)
	}
	leaf, err := s.opaque16("leaf")
	if err != nil {
		return nil, err
	}
	index, ok := s.uint64()
	if !ok {
		return nil, fmt.Errorf("%w: truncated index", ErrMalformedReceipt)
	}
	count, ok := s.uint8()
	if !ok {
		return nil, fmt.Errorf("%w: truncated proof count", ErrMalformedReceipt)
	}
	if count > MaxProofHashes {
		return nil, fmt.Errorf("%w: proof count %d above %d", ErrMalformedReceipt, count, MaxProofHashes)
	}
	var hashes [][32]byte
	for i := range int(count) {
		h, ok := s.bytes(32)
		if !ok {
			return nil, fmt.Errorf("%w: truncated proof hash %d of %d", ErrMalformedReceipt, i, count)
		}
		hashes = append(hashes, [32]byte(h))
	}
	checkpoint, err := s.opaque16("checkpoint")
	if err != nil {
		return nil, err
	}
	if len(s.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformedReceipt, len(s.b))
	}
	return &Receipt{
		Leaf:       bytes.Clone(leaf),
		Index:      index,
		Proof:      hashes,
		Checkpoint: bytes.Clone(checkpoint),
	}, nil
}

// Verify checks r against the log whose key v holds, with no network: the
// checkpoint must verify (LogVerifier.VerifyCheckpoint: ErrBadSignature,
// ErrMalformedCheckpoint, ErrWrongOrigin), and the proof must show that
// LeafHash(r.Leaf) is leaf r.Index of the checkpoint's tree
// (VerifyInclusion: ErrInclusion, also when r.Index >= the checkpoint's
// size). It returns the verified checkpoint.
func (r *Receipt) Verify(v *LogVerifier) (Checkpoint, error) {
	c, err := v.VerifyCheckpoint(r.Checkpoint)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("receipt: %w", err)
	}
	if err := VerifyInclusion(r.Index, c.Size, LeafHash(r.Leaf), r.Proof, c.Hash); err != nil {
		return Checkpoint{}, fmt.Errorf("receipt: %w", err)
	}
	return c, nil
}

func appendOpaque16(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// A reader consumes big-endian fields from the front of b. Each method
// reports false, consuming nothing, if b is too short.
type reader struct{ b []byte }

func (r *reader) bytes(n int) ([]byte, bool) {
	if len(r.b) < n {
		return nil, false
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v, true
}

func (r *reader) uint8() (uint8, bool) {
	v, ok := r.bytes(1)
	if !ok {
		return 0, false
	}
	return v[0], true
}

func (r *reader) uint16() (uint16, bool) {
	v, ok := r.bytes(2)
	if !ok {
		return 0, false
	}
	return binary.BigEndian.Uint16(v), true
}

func (r *reader) uint64() (uint64, bool) {
	v, ok := r.bytes(8)
	if !ok {
		return 0, false
	}
	return binary.BigEndian.Uint64(v), true
}

// opaque16 reads a u16 length and that many bytes, which must be at least
// one; what names the field in errors.
func (r *reader) opaque16(what string) ([]byte, error) {
	n, ok := r.uint16()
	if !ok {
		return nil, fmt.Errorf("%w: truncated %s length", ErrMalformedReceipt, what)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: empty %s", ErrMalformedReceipt, what)
	}
	v, ok := r.bytes(int(n))
	if !ok {
		return nil, fmt.Errorf("%w: %s length %d, only %d bytes left", ErrMalformedReceipt, what, n, len(r.b))
	}
	return v, nil
}
