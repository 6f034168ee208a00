package ledger

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
)

// Kind is the u16 that starts every leaf and says which entry its body holds
// (DESIGN.md §3.2).
type Kind uint16

// The leaf kinds. Any other value is malformed.
const (
	// KindEscrow is an escrow entry (EscrowEntry), appended by a station.
	KindEscrow Kind = 1
	// KindStation is a station registration (StationRegistration).
	KindStation Kind = 2
	// KindIndexRoot is a chip index root (IndexRoot), appended by the
	// ledger itself and never accepted from outside.
	KindIndexRoot Kind = 3
	// KindRevocation is a station revocation (StationRevocation), appended
	// on an operator's request: the station's later entries are refused.
	KindRevocation Kind = 4
)

// String returns "escrow", "station" or "index-root", or Kind(n) for an unknown
// kind.
func (k Kind) String() string {
	switch k {
	case KindEscrow:
		return "escrow"
	case KindStation:
		return "station"
	case KindIndexRoot:
		return "index-root"
	case KindRevocation:
		return "revocation"
	default:
		return fmt.Sprintf("Kind(%d)", uint16(k))
	}
}

// MaxLeafSize is the largest leaf in bytes, so that a leaf always fits the
// u16-length-prefixed entry bundles of the tlog-tiles API.
const MaxLeafSize = 65535

// maxOpaque16 is the longest value of a u16-length-prefixed field.
const maxOpaque16 = 1<<16 - 1

// escrowSignatureContext is the domain separator of the station signature:
// the signed digest is SHA-256(escrowSignatureContext ‖ 0x00 ‖ message).
const escrowSignatureContext = "chipledger/escrow/v1"

// Entry is a log entry of one kind. MarshalLeaf returns its leaf encoding,
// u16 kind ‖ body, after checking every field; ParseEntry is its inverse.
type Entry interface {
	Kind() Kind
	MarshalLeaf() ([]byte, error)
}

// EscrowEntry is a kind-1 leaf: a chip's encrypted key backup with the device
// certificate that binds the chip ID to the identities, signed by the station
// that provisioned it. Its leaf encoding is
//
//	u16 kind = 1
//	opaque chip_id<8..32>                (u8 length)
//	identities                           (u8 byte length, 1 to 4 identities)
//	uint32 epoch                         (1, 2, ...)
//	opaque certificate<1..2^16-1>        (DER device certificate)
//	opaque backup<1..2^16-1>             (backup envelope)
//	opaque station_id[32]                (SHA-256 of the station certificate's DER)
//	uint64 provisioned_at_ms             (Unix milliseconds)
//	opaque station_signature<1..2^16-1>  (ECDSA P-256, ASN.1 DER)
//
// and the whole leaf is at most MaxLeafSize bytes.
type EscrowEntry struct {
	ChipID          ChipID
	Identities      Identities
	Epoch           uint32
	Certificate     []byte
	Backup          []byte
	StationID       [32]byte
	ProvisionedAtMs uint64
	Signature       []byte
}

// Kind returns KindEscrow.
func (e *EscrowEntry) Kind() Kind { return KindEscrow }

// ProvisionedAt returns ProvisionedAtMs as a time. The error wraps
// ErrInvalidEntry if it is beyond the range of time.Time (above 2^63-1).
func (e *EscrowEntry) ProvisionedAt() (time.Time, error) {
	return unixMilli("provisioned_at_ms", e.ProvisionedAtMs)
}

// SignedMessage returns the bytes the station signs: every byte of the leaf
// before the station_signature field (kind through provisioned_at_ms). It
// checks every field but the signature.
func (e *EscrowEntry) SignedMessage() ([]byte, error) {
	if err := e.validateUnsigned(); err != nil {
		return nil, err
	}
	return e.appendUnsigned(make([]byte, 0, e.unsignedSize())), nil
}

// Digest returns SHA-256("chipledger/escrow/v1" ‖ 0x00 ‖ SignedMessage), the
// value the station signature is over.
func (e *EscrowEntry) Digest() ([32]byte, error) {
	if err := e.validateUnsigned(); err != nil {
		return [32]byte{}, err
	}
	// The hashed bytes are built on the stack for an entry of the usual
	// size (1.5 KiB, with a P-256 device certificate and key backup); a
	// larger one allocates.
	var buf [2048]byte
	b := append(buf[:0], escrowSignatureContext...)
	b = append(b, 0)
	return sha256.Sum256(e.appendUnsigned(b)), nil
}

// Sign sets e.Signature to the station's ECDSA P-256 signature (ASN.1 DER)
// over Digest, made with key (crypto.SHA256 as the signer options, so HSM
// signers work). It refuses a key that is not ECDSA P-256, and checks the
// signature it got before keeping it.
func (e *EscrowEntry) Sign(rand io.Reader, key crypto.Signer) error {
	pub, ok := key.Public().(*ecdsa.PublicKey)
	if !ok || !isP256(pub) {
		return fmt.Errorf("%w: station key is %T, want ECDSA P-256", ErrBadStationSignature, key.Public())
	}
	d, err := e.Digest()
	if err != nil {
		return err
	}
	sig, err := key.Sign(rand, d[:], crypto.SHA256)
	if err != nil {
		return fmt.Errorf("signing escrow entry: %w", err)
	}
	if !ecdsa.VerifyASN1(pub, d[:], sig) {
		return fmt.Errorf("%w: the signer returned a signature that does not verify", ErrBadStationSignature)
	}
	e.Signature = sig
	return nil
}

// VerifySignature checks e.Signature against pub, which must be an ECDSA P-256
// key. The error wraps ErrBadStationSignature, or the error of SignedMessage
// if a field is invalid.
func (e *EscrowEntry) VerifySignature(pub *ecdsa.PublicKey) error {
	if !isP256(pub) {
		return fmt.Errorf("%w: station key is not ECDSA P-256", ErrBadStationSignature)
	}
	d, err := e.Digest()
	if err != nil {
		return err
	}
	if !ecdsa.VerifyASN1(pub, d[:], e.Signature) {
		return fmt.Errorf("%w: escrow entry for chip %s epoch %d", ErrBadStationSignature, e.ChipID, e.Epoch)
	}
	return nil
}

// isP256 reports whether pub is a valid ECDSA P-256 public key (a point on
// the curve), without panicking on a hand-built key with nil coordinates.
func isP256(pub *ecdsa.PublicKey) bool {
	if pub == nil || pub.Curve != elliptic.P256() || pub.X == nil || pub.Y == nil {
		return false
	}
	_, err := pub.Bytes()
	return err == nil
}

// MarshalLeaf returns the leaf encoding of e after checking every field. The
// error wraps ErrInvalidChipID, ErrInvalidIdentity, ErrInvalidEpoch,
// ErrInvalidEntry or ErrLeafTooLarge.
func (e *EscrowEntry) MarshalLeaf() ([]byte, error) {
	size, err := e.validate()
	if err != nil {
		return nil, err
	}
	return appendOpaque16(e.appendUnsigned(make([]byte, 0, size)), e.Signature), nil
}

// validate checks every field and the leaf size as MarshalLeaf does, with
// the same errors, without encoding the leaf, and returns its size.
func (e *EscrowEntry) validate() (int, error) {
	if err := e.validateUnsigned(); err != nil {
		return 0, err
	}
	if err := checkOpaque16("station_signature", e.Signature); err != nil {
		return 0, err
	}
	size := e.unsignedSize() + 2 + len(e.Signature)
	if size > MaxLeafSize {
		return 0, fmt.Errorf("%w: escrow entry is %d bytes, at most %d", ErrLeafTooLarge, size, MaxLeafSize)
	}
	return size, nil
}

// validateUnsigned checks every field that SignedMessage encodes.
func (e *EscrowEntry) validateUnsigned() error {
	if err := e.ChipID.Validate(); err != nil {
		return err
	}
	if err := e.Identities.Validate(); err != nil {
		return err
	}
	if e.Epoch == 0 {
		return fmt.Errorf("%w: epoch 0, epochs start at 1", ErrInvalidEpoch)
	}
	if err := checkOpaque16("certificate", e.Certificate); err != nil {
		return err
	}
	if err := checkOpaque16("backup", e.Backup); err != nil {
		return err
	}
	return nil
}

// unsignedSize is the length of SignedMessage for a valid e.
func (e *EscrowEntry) unsignedSize() int {
	n := 2 + 1 + len(e.ChipID) + 1 + 4 + 2 + len(e.Certificate) + 2 + len(e.Backup) + 32 + 8
	for _, id := range e.Identities {
		n += 2 + len(id.Value)
	}
	return n
}

// appendUnsigned appends the SignedMessage encoding of e, whose fields
// validateUnsigned accepted, to b.
func (e *EscrowEntry) appendUnsigned(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(KindEscrow))
	b = append(b, byte(len(e.ChipID)))
	b = append(b, e.ChipID...)
	b = appendIdentities(b, e.Identities)
	b = binary.BigEndian.AppendUint32(b, e.Epoch)
	b = appendOpaque16(b, e.Certificate)
	b = appendOpaque16(b, e.Backup)
	b = append(b, e.StationID[:]...)
	return binary.BigEndian.AppendUint64(b, e.ProvisionedAtMs)
}

// StationRegistration is a kind-2 leaf: a station's certificate, which the
// ledger must hold before it accepts escrow entries signed by that station.
// Its leaf encoding is
//
//	u16 kind = 2
//	opaque station_certificate<1..2^16-1>  (DER)
//	uint64 registered_at_ms                (Unix milliseconds)
type StationRegistration struct {
	Certificate    []byte
	RegisteredAtMs uint64
}

// Kind returns KindStation.
func (r *StationRegistration) Kind() Kind { return KindStation }

// RegisteredAt returns RegisteredAtMs as a time. The error wraps
// ErrInvalidEntry if it is beyond the range of time.Time.
func (r *StationRegistration) RegisteredAt() (time.Time, error) {
	return unixMilli("registered_at_ms", r.RegisteredAtMs)
}

// StationID returns the SHA-256 of the station certificate, the station_id
// that escrow entries signed by this station carry.
func (r *StationRegistration) StationID() [32]byte {
	return StationID(r.Certificate)
}

// MarshalLeaf returns the leaf encoding of r. The error wraps ErrInvalidEntry
// for an empty certificate, or ErrLeafTooLarge.
func (r *StationRegistration) MarshalLeaf() ([]byte, error) {
	if err := checkOpaque16("station_certificate", r.Certificate); err != nil {
		return nil, err
	}
	size := 2 + 2 + len(r.Certificate) + 8
	if size > MaxLeafSize {
		return nil, fmt.Errorf("%w: station registration is %d bytes, at most %d", ErrLeafTooLarge, size, MaxLeafSize)
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, size))
	b.AddUint16(uint16(KindStation))
	addOpaque16(b, r.Certificate)
	b.AddUint64(r.RegisteredAtMs)
	return b.Bytes()
}

// IndexRoot is a kind-3 leaf: the root of the verifiable chip index over the
// leaves before it (DESIGN.md §3.7). Only the ledger appends it. Its leaf
// encoding is
//
//	u16 kind = 3
//	uint64 covered_size      (this leaf's own index)
//	uint64 chip_count
//	opaque index_root[32]
type IndexRoot struct {
	CoveredSize uint64
	ChipCount   uint64
	Root        [32]byte
}

// indexRootLeafSize is the size of every kind-3 leaf.
const indexRootLeafSize = 2 + 8 + 8 + 32

// Kind returns KindIndexRoot.
func (r *IndexRoot) Kind() Kind { return KindIndexRoot }

// MarshalLeaf returns the leaf encoding of r; every value is valid.
func (r *IndexRoot) MarshalLeaf() ([]byte, error) {
	b := cryptobyte.NewBuilder(make([]byte, 0, indexRootLeafSize))
	b.AddUint16(uint16(KindIndexRoot))
	b.AddUint64(r.CoveredSize)
	b.AddUint64(r.ChipCount)
	b.AddBytes(r.Root[:])
	return b.Bytes()
}

// PeekKind returns the kind of a leaf without parsing its body. It checks the
// leaf size and that the kind is known; the error wraps ErrMalformed.
func PeekKind(leaf []byte) (Kind, error) {
	if len(leaf) > MaxLeafSize {
		return 0, fmt.Errorf("%w: %w: leaf is %d bytes, at most %d", ErrMalformed, ErrLeafTooLarge, len(leaf), MaxLeafSize)
	}
	s := cryptobyte.String(leaf)
	var k uint16
	if !s.ReadUint16(&k) {
		return 0, fmt.Errorf("%w: leaf of %d bytes has no kind", ErrMalformed, len(leaf))
	}
	switch Kind(k) {
	case KindEscrow, KindStation, KindIndexRoot, KindRevocation:
		return Kind(k), nil
	default:
		return 0, fmt.Errorf("%w: %w: kind %d", ErrMalformed, ErrUnknownKind, k)
	}
}

// ParseEntry parses a leaf of any kind: it returns an *EscrowEntry, a
// *StationRegistration or an *IndexRoot. The leaf must be exactly the one
// encoding of the entry; the error wraps ErrMalformed, and a more specific
// error (ErrUnknownKind, ErrInvalidChipID, ErrInvalidIdentity,
// ErrInvalidEpoch, ErrInvalidEntry, ErrLeafTooLarge) where one applies.
// The entry does not alias leaf.
func ParseEntry(leaf []byte) (Entry, error) {
	k, err := PeekKind(leaf)
	if err != nil {
		return nil, err
	}
	switch k {
	case KindEscrow:
		return ParseEscrowEntry(leaf)
	case KindStation:
		return ParseStationRegistration(leaf)
	case KindRevocation:
		return ParseStationRevocation(leaf)
	default: // KindIndexRoot; PeekKind rejects the others
		return ParseIndexRoot(leaf)
	}
}

// ParseEscrowEntry parses a kind-1 leaf. A leaf of another known kind wraps
// ErrWrongKind; otherwise errors are as for ParseEntry.
func ParseEscrowEntry(leaf []byte) (*EscrowEntry, error) {
	e, err := ParseEscrowEntryNoCopy(leaf)
	if err != nil {
		return nil, err
	}
	e.ChipID = ChipID(bytes.Clone(e.ChipID))
	e.Certificate = bytes.Clone(e.Certificate)
	e.Backup = bytes.Clone(e.Backup)
	e.Signature = bytes.Clone(e.Signature)
	return e, nil
}

// ParseEscrowEntryNoCopy is ParseEscrowEntry, with the same checks and
// errors, except that the entry's chip ID, certificate, backup and signature
// are slices of leaf instead of copies: leaf must not change while the entry
// is in use (appending to a field never writes to leaf). It is for the
// append path, which checks every leaf and keeps nothing of its entry.
func ParseEscrowEntryNoCopy(leaf []byte) (*EscrowEntry, error) {
	s, err := readKind(leaf, KindEscrow)
	if err != nil {
		return nil, err
	}
	e, err := parseEscrowBody(s)
	if err != nil {
		return nil, fmt.Errorf("escrow entry: %w", err)
	}
	return e, nil
}

// parseEscrowBody parses the body of a kind-1 leaf; the entry's byte fields
// alias s.
func parseEscrowBody(s cryptobyte.String) (*EscrowEntry, error) {
	e := new(EscrowEntry)
	var err error
	if e.ChipID, err = readChipID(&s); err != nil {
		return nil, err
	}
	if e.Identities, err = readIdentities(&s); err != nil {
		return nil, err
	}
	if e.Epoch, err = readEpoch(&s); err != nil {
		return nil, err
	}
	if e.Certificate, err = readOpaque16(&s, "certificate"); err != nil {
		return nil, err
	}
	if e.Backup, err = readOpaque16(&s, "backup"); err != nil {
		return nil, err
	}
	if !s.CopyBytes(e.StationID[:]) {
		return nil, fmt.Errorf("%w: truncated in station_id", ErrMalformed)
	}
	if !s.ReadUint64(&e.ProvisionedAtMs) {
		return nil, fmt.Errorf("%w: truncated in provisioned_at_ms", ErrMalformed)
	}
	if e.Signature, err = readOpaque16(&s, "station_signature"); err != nil {
		return nil, err
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(s))
	}
	return e, nil
}

// ParseStationRegistration parses a kind-2 leaf. Errors are as for
// ParseEscrowEntry.
func ParseStationRegistration(leaf []byte) (*StationRegistration, error) {
	s, err := readKind(leaf, KindStation)
	if err != nil {
		return nil, err
	}
	r := new(StationRegistration)
	if r.Certificate, err = readOpaque16(&s, "station_certificate"); err != nil {
		return nil, fmt.Errorf("station registration: %w", err)
	}
	r.Certificate = bytes.Clone(r.Certificate)
	if !s.ReadUint64(&r.RegisteredAtMs) {
		return nil, fmt.Errorf("station registration: %w: truncated in registered_at_ms", ErrMalformed)
	}
	if !s.Empty() {
		return nil, fmt.Errorf("station registration: %w: %d trailing bytes", ErrMalformed, len(s))
	}
	return r, nil
}

// ParseIndexRoot parses a kind-3 leaf. Errors are as for ParseEscrowEntry.
func ParseIndexRoot(leaf []byte) (*IndexRoot, error) {
	s, err := readKind(leaf, KindIndexRoot)
	if err != nil {
		return nil, err
	}
	r := new(IndexRoot)
	if !s.ReadUint64(&r.CoveredSize) || !s.ReadUint64(&r.ChipCount) || !s.CopyBytes(r.Root[:]) || !s.Empty() {
		return nil, fmt.Errorf("index root: %w: %d bytes, want %d", ErrMalformed, len(leaf), indexRootLeafSize)
	}
	return r, nil
}

// StationRevocation is a kind-4 leaf: from its index on, the ledger refuses
// the station's escrow entries (those before it stay valid). Layout:
//
//	u16 kind (4) ‖ station_id[32] ‖ u64 revoked_at_ms ‖ opaque reason<0..255>
//
// The reason is UTF-8 without control characters.
type StationRevocation struct {
	StationID   [32]byte
	RevokedAtMs uint64
	Reason      string
}

// MaxRevocationReason is the longest revocation reason in bytes.
const MaxRevocationReason = 255

// Kind returns KindRevocation.
func (r *StationRevocation) Kind() Kind { return KindRevocation }

// MarshalLeaf returns the leaf encoding of r, after checking the reason.
func (r *StationRevocation) MarshalLeaf() ([]byte, error) {
	if err := checkReason(r.Reason); err != nil {
		return nil, err
	}
	b := cryptobyte.NewBuilder(nil)
	b.AddUint16(uint16(KindRevocation))
	b.AddBytes(r.StationID[:])
	b.AddUint64(r.RevokedAtMs)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(r.Reason)) })
	return b.Bytes()
}

func checkReason(reason string) error {
	if len(reason) > MaxRevocationReason || !utf8.ValidString(reason) {
		return fmt.Errorf("revocation: %w: reason must be at most %d bytes of UTF-8", ErrInvalidEntry, MaxRevocationReason)
	}
	for _, c := range reason {
		if unicode.IsControl(c) {
			return fmt.Errorf("revocation: %w: reason holds a control character", ErrInvalidEntry)
		}
	}
	return nil
}

// ParseStationRevocation parses a kind-4 leaf.
func ParseStationRevocation(leaf []byte) (*StationRevocation, error) {
	s, err := readKind(leaf, KindRevocation)
	if err != nil {
		return nil, err
	}
	r := new(StationRevocation)
	var reason cryptobyte.String
	if !s.CopyBytes(r.StationID[:]) || !s.ReadUint64(&r.RevokedAtMs) || !s.ReadUint8LengthPrefixed(&reason) || !s.Empty() {
		return nil, fmt.Errorf("revocation: %w: truncated or trailing bytes", ErrMalformed)
	}
	r.Reason = string(reason)
	if err := checkReason(r.Reason); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return r, nil
}

// PeekEscrow reads the chip ID and epoch of a kind-1 leaf without parsing the
// rest: it is the cheap read the chip index needs for every appended leaf.
// The returned chip aliases leaf. It checks the kind, the chip ID length, the
// framing of the identity list (not its contents) and that the epoch is not
// 0, so on a leaf that ParseEscrowEntry accepts it returns the same chip ID
// and epoch; on other leaves it may succeed where ParseEscrowEntry fails.
// The error wraps ErrMalformed (or ErrWrongKind).
func PeekEscrow(leaf []byte) (chip ChipID, epoch uint32, err error) {
	s, err := readKind(leaf, KindEscrow)
	if err != nil {
		return nil, 0, err
	}
	var c cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&c) {
		return nil, 0, fmt.Errorf("escrow entry: %w: truncated in chip_id", ErrMalformed)
	}
	if len(c) < MinChipIDLen || len(c) > MaxChipIDLen {
		return nil, 0, fmt.Errorf("escrow entry: %w: %w: chip_id is %d bytes, want %d to %d", ErrMalformed, ErrInvalidChipID, len(c), MinChipIDLen, MaxChipIDLen)
	}
	if !skipIdentities(&s) {
		return nil, 0, fmt.Errorf("escrow entry: %w: truncated in identities", ErrMalformed)
	}
	if epoch, err = readEpoch(&s); err != nil {
		return nil, 0, fmt.Errorf("escrow entry: %w", err)
	}
	return ChipID(c), epoch, nil
}

// readKind checks the leaf size and kind and returns the body.
func readKind(leaf []byte, want Kind) (cryptobyte.String, error) {
	k, err := PeekKind(leaf)
	if err != nil {
		return nil, err
	}
	if k != want {
		return nil, fmt.Errorf("%w: leaf is a %s entry, want %s", ErrWrongKind, k, want)
	}
	return cryptobyte.String(leaf[2:]), nil
}

// readChipID reads a u8-length-prefixed chip ID, a slice of s.
func readChipID(s *cryptobyte.String) (ChipID, error) {
	var c cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&c) {
		return nil, fmt.Errorf("%w: truncated in chip_id", ErrMalformed)
	}
	chip := ChipID(c[:len(c):len(c)])
	if err := chip.Validate(); err != nil {
		return nil, fmt.Errorf("%w: chip_id: %w", ErrMalformed, err)
	}
	return chip, nil
}

// readEpoch reads a u32 epoch, which must not be 0.
func readEpoch(s *cryptobyte.String) (uint32, error) {
	var epoch uint32
	if !s.ReadUint32(&epoch) {
		return 0, fmt.Errorf("%w: truncated in epoch", ErrMalformed)
	}
	if epoch == 0 {
		return 0, fmt.Errorf("%w: %w: epoch 0, epochs start at 1", ErrMalformed, ErrInvalidEpoch)
	}
	return epoch, nil
}

// readOpaque16 reads a u16-length-prefixed field that must not be empty: a
// slice of s, whose capacity ends with it.
func readOpaque16(s *cryptobyte.String, field string) ([]byte, error) {
	var v cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&v) {
		return nil, fmt.Errorf("%w: truncated in %s", ErrMalformed, field)
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("%w: %w: %s is empty", ErrMalformed, ErrInvalidEntry, field)
	}
	return v[:len(v):len(v)], nil
}

// checkOpaque16 checks that a u16-length-prefixed field is 1 to 65535 bytes.
func checkOpaque16(field string, v []byte) error {
	if len(v) == 0 || len(v) > maxOpaque16 {
		return fmt.Errorf("%w: %s is %d bytes, want 1 to %d", ErrInvalidEntry, field, len(v), maxOpaque16)
	}
	return nil
}

func addOpaque16(b *cryptobyte.Builder, v []byte) {
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(v) })
}

// appendOpaque16 appends v, at most 65535 bytes, with its u16 length.
func appendOpaque16(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// unixMilli converts a u64 millisecond timestamp to a UTC time.
func unixMilli(field string, ms uint64) (time.Time, error) {
	if ms > math.MaxInt64 {
		return time.Time{}, fmt.Errorf("%w: %s %d is beyond the range of time", ErrInvalidEntry, field, ms)
	}
	return time.UnixMilli(int64(ms)).UTC(), nil
}
