package proofs

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

var (
	// ErrMalformedCheckpoint reports a checkpoint body that is not exactly
	// the three lines ParseCheckpoint accepts.
	ErrMalformedCheckpoint = errors.New("proofs: malformed checkpoint")

	// ErrBadSignature reports a signed checkpoint that does not carry a valid
	// signature by the log's key: the note is malformed, the log's signature
	// is missing, or a signature by a known key does not verify.
	ErrBadSignature = errors.New("proofs: missing or invalid checkpoint signature")

	// ErrWrongOrigin reports a correctly signed checkpoint whose origin line
	// is not the name of the log's key.
	ErrWrongOrigin = errors.New("proofs: checkpoint origin does not match the log")

	// ErrBadKey reports a verifier key that note.NewVerifier rejects.
	ErrBadKey = errors.New("proofs: invalid verifier key")
)

// A Checkpoint is a log's commitment to its first Size leaves: Hash is the
// RFC 6962 Merkle tree hash of those leaves (EmptyRoot for Size 0), and
// Origin names the log (c2sp.org/tlog-checkpoint).
type Checkpoint struct {
	Origin string
	Size   uint64
	Hash   [32]byte
}

// Marshal returns the checkpoint body of c as defined by
// c2sp.org/tlog-checkpoint, with no extension lines:
//
//	<origin>\n<decimal size>\n<standard padded base64 of Hash>\n
//
// Marshal does not validate c.Origin; ParseCheckpoint(c.Marshal()) succeeds
// exactly when c.Origin is a non-empty UTF-8 string without control
// characters.
func (c Checkpoint) Marshal() []byte {
	b := make([]byte, 0, len(c.Origin)+1+20+1+44+1)
	b = append(b, c.Origin...)
	b = append(b, '\n')
	b = strconv.AppendUint(b, c.Size, 10)
	b = append(b, '\n')
	b = base64.StdEncoding.AppendEncode(b, c.Hash[:])
	return append(b, '\n')
}

// ParseCheckpoint parses a checkpoint body (the text of the signed note,
// without signatures). It accepts exactly the output of Checkpoint.Marshal:
// exactly three lines, each ending in "\n"; a non-empty origin of valid UTF-8
// without control characters; a decimal size without sign or leading zeros
// ("0" for the empty tree) that fits in a uint64; and the canonical standard
// padded base64 encoding of a 32-byte hash. Extension lines are rejected,
// since a chipledger log never writes any. Every failure wraps
// ErrMalformedCheckpoint.
//
// ParseCheckpoint checks no signature; use LogVerifier.VerifyCheckpoint on
// anything that came from the network.
func ParseCheckpoint(body []byte) (Checkpoint, error) {
	if len(body) == 0 || body[len(body)-1] != '\n' {
		return Checkpoint{}, fmt.Errorf("%w: body does not end in a newline", ErrMalformedCheckpoint)
	}
	lines := bytes.Split(body[:len(body)-1], []byte("\n"))
	if len(lines) < 3 {
		return Checkpoint{}, fmt.Errorf("%w: %d lines, want 3", ErrMalformedCheckpoint, len(lines))
	}
	if len(lines) > 3 {
		return Checkpoint{}, fmt.Errorf("%w: %d extension line(s) after the root hash; this log writes none", ErrMalformedCheckpoint, len(lines)-3)
	}
	origin, err := parseOrigin(lines[0])
	if err != nil {
		return Checkpoint{}, err
	}
	size, err := parseSize(lines[1])
	if err != nil {
		return Checkpoint{}, err
	}
	hash, err := parseRootHash(lines[2])
	if err != nil {
		return Checkpoint{}, err
	}
	return Checkpoint{Origin: origin, Size: size, Hash: hash}, nil
}

func parseOrigin(line []byte) (string, error) {
	if len(line) == 0 {
		return "", fmt.Errorf("%w: empty origin", ErrMalformedCheckpoint)
	}
	if !utf8.Valid(line) {
		return "", fmt.Errorf("%w: origin is not valid UTF-8", ErrMalformedCheckpoint)
	}
	if i := bytes.IndexFunc(line, unicode.IsControl); i >= 0 {
		return "", fmt.Errorf("%w: control character in origin at byte %d", ErrMalformedCheckpoint, i)
	}
	return string(line), nil
}

func parseSize(line []byte) (uint64, error) {
	for _, c := range line {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: size %q is not a decimal number", ErrMalformedCheckpoint, line)
		}
	}
	if len(line) == 0 || len(line) > 1 && line[0] == '0' {
		return 0, fmt.Errorf("%w: size %q is empty or has a leading zero", ErrMalformedCheckpoint, line)
	}
	size, err := strconv.ParseUint(string(line), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: size %q does not fit in 64 bits", ErrMalformedCheckpoint, line)
	}
	return size, nil
}

func parseRootHash(line []byte) ([32]byte, error) {
	var hash [32]byte
	// DecodeString skips '\r' and '\n' and tolerates non-zero padding bits,
	// so canonical form is checked by re-encoding.
	h, err := base64.StdEncoding.DecodeString(string(line))
	if err != nil || len(h) != len(hash) || base64.StdEncoding.EncodeToString(h) != string(line) {
		return hash, fmt.Errorf("%w: root hash %q is not the canonical base64 of 32 bytes", ErrMalformedCheckpoint, line)
	}
	copy(hash[:], h)
	return hash, nil
}

// A LogVerifier verifies checkpoints signed by one log: an Ed25519 key in
// c2sp.org/signed-note form whose key name is the log's origin.
type LogVerifier struct {
	v note.Verifier
}

// NewLogVerifier returns a LogVerifier for the note verifier key vkey,
// "<name>+<hex key hash>+<base64 of 0x01 ‖ Ed25519 public key>". The key name
// is the origin every checkpoint of the log must carry. An error wraps
// ErrBadKey.
func NewLogVerifier(vkey string) (*LogVerifier, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrBadKey, vkey, err)
	}
	return &LogVerifier{v: v}, nil
}

// Origin returns the log's origin, the name of its key.
func (v *LogVerifier) Origin() string { return v.v.Name() }

// Verifier returns the log's note verifier, for use with note.Open or
// transparency-dev/formats/log.ParseCheckpoint.
func (v *LogVerifier) Verifier() note.Verifier { return v.v }

// VerifyCheckpoint verifies a signed checkpoint (a signed note whose text is
// a checkpoint body) and returns the checkpoint. It is
// VerifyCheckpointNote without extra verifiers; signatures by other keys are
// ignored.
func (v *LogVerifier) VerifyCheckpoint(signed []byte) (Checkpoint, error) {
	c, _, err := v.VerifyCheckpointNote(signed)
	return c, err
}

// VerifyCheckpointNote verifies a signed checkpoint and returns the
// checkpoint and the opened note.
//
// The note is opened with note.Open using the log's verifier and others
// (for example witness cosigners). It must carry a valid signature by the
// log's key, and every signature by a key in others must also verify;
// signatures by unknown keys are ignored and listed in the note's
// UnverifiedSigs. A malformed note, a missing log signature or an invalid
// signature is an error wrapping ErrBadSignature and, where there is one,
// the note package's error (such as *note.InvalidSignatureError). The note
// text must then parse with ParseCheckpoint (ErrMalformedCheckpoint) and
// its origin must equal the log's key name (ErrWrongOrigin).
//
// The returned note's Sigs hold every verified signature, the log's and
// those of others, so a caller can count witness cosignatures against a
// quorum.
func (v *LogVerifier) VerifyCheckpointNote(signed []byte, others ...note.Verifier) (Checkpoint, *note.Note, error) {
	n, err := note.Open(signed, note.VerifierList(append([]note.Verifier{v.v}, others...)...))
	if err != nil {
		return Checkpoint{}, nil, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	if !v.signed(n) {
		return Checkpoint{}, nil, fmt.Errorf("%w: no signature by %s+%08x", ErrBadSignature, v.v.Name(), v.v.KeyHash())
	}
	c, err := ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, nil, err
	}
	if c.Origin != v.Origin() {
		return Checkpoint{}, nil, fmt.Errorf("%w: origin %q, log key %q", ErrWrongOrigin, c.Origin, v.Origin())
	}
	return c, n, nil
}

// signed reports whether the log's own signature is among n's verified
// signatures; note.Open succeeds when any one known key signed.
func (v *LogVerifier) signed(n *note.Note) bool {
	for _, s := range n.Sigs {
		if s.Name == v.v.Name() && s.Hash == v.v.KeyHash() {
			return true
		}
	}
	return false
}
