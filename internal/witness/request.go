package witness

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
)

const (
	// MaxProofHashes is the largest number of consistency-proof lines an
	// add-checkpoint request may carry (c2sp.org/tlog-witness). A proof
	// between trees of at most 2^64-1 leaves never needs more.
	MaxProofHashes = 63

	// MaxRequestSize is the largest add-checkpoint body, in bytes, that the
	// witness reads; a longer one is answered 413. The old-size line and 63
	// proof lines take under 3 KiB, which leaves room for a checkpoint with
	// the 100 signatures note.Open accepts.
	MaxRequestSize = 1 << 20
)

// ErrMalformedRequest reports an add-checkpoint body that is not exactly
// the layout Request documents.
var ErrMalformedRequest = errors.New("witness: malformed add-checkpoint request")

// A Request is the body of an add-checkpoint request (c2sp.org/tlog-witness):
//
//	old <OldSize, decimal, no leading zeros>\n
//	<standard padded base64 of a Proof hash>\n      (0 to MaxProofHashes lines)
//	\n
//	<Checkpoint, a signed note, which ends in \n>
//
// OldSize is the size of the latest checkpoint the submitter believes the
// witness cosigned for the log (0 if none), and Proof is the RFC 6962
// consistency proof from that size to the checkpoint's size.
type Request struct {
	OldSize    uint64
	Proof      [][32]byte
	Checkpoint []byte
}

// MarshalRequest returns the body of the add-checkpoint request r. It fails,
// wrapping ErrMalformedRequest, when ParseRequest would not accept the
// result: r has more than MaxProofHashes proof hashes, or r.Checkpoint is
// empty or does not end in a newline. ParseRequest(MarshalRequest(r))
// returns r.
func MarshalRequest(r Request) ([]byte, error) {
	if len(r.Proof) > MaxProofHashes {
		return nil, fmt.Errorf("%w: %d proof hashes, at most %d allowed", ErrMalformedRequest, len(r.Proof), MaxProofHashes)
	}
	if err := checkCheckpointShape(r.Checkpoint); err != nil {
		return nil, err
	}
	b := make([]byte, 0, len("old \n")+20+len(r.Proof)*45+1+len(r.Checkpoint))
	b = append(b, "old "...)
	b = strconv.AppendUint(b, r.OldSize, 10)
	b = append(b, '\n')
	for _, h := range r.Proof {
		b = base64.StdEncoding.AppendEncode(b, h[:])
		b = append(b, '\n')
	}
	b = append(b, '\n')
	return append(b, r.Checkpoint...), nil
}

// ParseRequest parses an add-checkpoint body. It accepts exactly the
// output of MarshalRequest: an "old " line with a decimal size without sign
// or leading zeros that fits in a uint64; at most MaxProofHashes lines, each
// the canonical standard padded base64 of 32 bytes; an empty line; and a
// non-empty checkpoint ending in a newline, which ParseRequest does not
// otherwise check (the witness opens it as a signed note). Every failure
// wraps ErrMalformedRequest.
//
// The returned Checkpoint aliases body; Proof is nil when there are no
// proof lines.
func ParseRequest(body []byte) (Request, error) {
	var r Request
	line, rest, ok := bytes.Cut(body, []byte("\n"))
	if !ok {
		return Request{}, fmt.Errorf("%w: no newline after the first line %.40q", ErrMalformedRequest, body)
	}
	num, ok := bytes.CutPrefix(line, []byte("old "))
	if !ok {
		return Request{}, fmt.Errorf("%w: first line %.40q does not start with \"old \"", ErrMalformedRequest, line)
	}
	old, err := parseDecimal(num)
	if err != nil {
		return Request{}, fmt.Errorf("%w: old size: %w", ErrMalformedRequest, err)
	}
	r.OldSize = old
	for {
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return Request{}, fmt.Errorf("%w: no empty line before the checkpoint", ErrMalformedRequest)
		}
		if len(line) == 0 {
			break
		}
		if len(r.Proof) == MaxProofHashes {
			return Request{}, fmt.Errorf("%w: more than %d proof lines", ErrMalformedRequest, MaxProofHashes)
		}
		h, err := parseHash(line)
		if err != nil {
			return Request{}, fmt.Errorf("%w: proof line %d: %w", ErrMalformedRequest, len(r.Proof)+1, err)
		}
		r.Proof = append(r.Proof, h)
	}
	if err := checkCheckpointShape(rest); err != nil {
		return Request{}, err
	}
	r.Checkpoint = rest
	return r, nil
}

// checkCheckpointShape checks only what the request layout needs of the
// checkpoint: that it is there and that its last line is complete.
func checkCheckpointShape(cp []byte) error {
	if len(cp) == 0 {
		return fmt.Errorf("%w: no checkpoint after the empty line", ErrMalformedRequest)
	}
	if cp[len(cp)-1] != '\n' {
		return fmt.Errorf("%w: checkpoint does not end in a newline", ErrMalformedRequest)
	}
	return nil
}

// parseDecimal parses a canonical decimal uint64: digits only, no leading
// zeros except "0" itself.
func parseDecimal(s []byte) (uint64, error) {
	if len(s) == 0 {
		return 0, errors.New("empty number")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%.40q is not a decimal number", s)
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%.40q has a leading zero", s)
	}
	n, err := strconv.ParseUint(string(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%.40q does not fit in 64 bits", s)
	}
	return n, nil
}

// parseHash parses the canonical standard padded base64 encoding of a
// 32-byte hash.
func parseHash(s []byte) ([32]byte, error) {
	// buf has room for DecodedLen(44) = 33 bytes, which Decode may write.
	// Decode skips '\r' and tolerates non-zero padding bits, so canonical
	// form is checked by re-encoding.
	var buf [33]byte
	if len(s) == base64.StdEncoding.EncodedLen(32) {
		n, err := base64.StdEncoding.Decode(buf[:], s)
		if err == nil && n == 32 && bytes.Equal(base64.StdEncoding.AppendEncode(nil, buf[:32]), s) {
			return [32]byte(buf[:32]), nil
		}
	}
	return [32]byte{}, fmt.Errorf("%.60q is not the canonical base64 of 32 bytes", s)
}
