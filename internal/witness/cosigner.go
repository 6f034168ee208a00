package witness

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
)

// Signature type bytes of c2sp.org/signed-note.
const (
	algEd25519       = 0x01
	algCosignatureV1 = 0x04
)

// ErrBadSignerKey reports a signer key NewCosigner does not accept.
var ErrBadSignerKey = errors.New("witness: invalid cosigner key")

// A TimestampSigner is a cosignature signer whose caller chooses the
// timestamp. A Witness whose signer implements it stamps each cosignature
// with its Config.Now instead of letting the signer read the clock.
type TimestampSigner interface {
	note.Signer // whose Sign stamps the signature with the current time
	// SignAt returns the signature of msg with timestamp t.
	SignAt(t time.Time, msg []byte) ([]byte, error)
}

// A Cosigner makes Ed25519 cosignature/v1 signatures
// (c2sp.org/tlog-cosignature, signature type 0x04) of checkpoints. It is a
// note.Signer and a TimestampSigner.
//
// For a checkpoint note text T (its lines including the last newline,
// without signatures) and a time of t POSIX seconds, the signature is
//
//	t as 8 big-endian bytes ‖ Ed25519("cosignature/v1\ntime <t in decimal>\n" ‖ T)
//
// and its key ID is SHA-256(name ‖ "\n" ‖ 0x04 ‖ public key)[:4], which differs
// from the ID of the same key used as an ordinary 0x01 note key.
type Cosigner struct {
	name string
	hash uint32
	key  ed25519.PrivateKey
}

// NewCosigner returns the Cosigner for the note signer key skey,
// "PRIVATE+KEY+<name>+<hex key ID>+<base64 of type ‖ 32-byte Ed25519 seed>",
// as note.GenerateKey writes it (type 0x01); a key of type 0x04 is accepted
// too. The key ID in skey must be that of its public key with its type. An
// error wraps ErrBadSignerKey and does not include the key.
func NewCosigner(skey string) (*Cosigner, error) {
	// The base64 key may itself contain '+'.
	fields := strings.SplitN(skey, "+", 5)
	if len(fields) != 5 || fields[0] != "PRIVATE" || fields[1] != "KEY" {
		return nil, fmt.Errorf("%w: not of the form PRIVATE+KEY+<name>+<key ID>+<key>", ErrBadSignerKey)
	}
	name, id, b64 := fields[2], fields[3], fields[4]
	if !validKeyName(name) {
		return nil, fmt.Errorf("%w: key name %q is empty or holds a space or a '+'", ErrBadSignerKey, name)
	}
	wantHash, err := strconv.ParseUint(id, 16, 32)
	if err != nil || len(id) != 8 {
		return nil, fmt.Errorf("%w: key ID %q is not 8 hex digits", ErrBadSignerKey, id)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != algEd25519 && raw[0] != algCosignatureV1 {
		return nil, fmt.Errorf("%w: key is not the base64 of 0x01 or 0x04 and a 32-byte Ed25519 seed", ErrBadSignerKey)
	}
	key := ed25519.NewKeyFromSeed(raw[1:])
	pub := key.Public().(ed25519.PublicKey)
	if keyHash(name, raw[0], pub) != uint32(wantHash) {
		return nil, fmt.Errorf("%w: key ID %s does not match the key", ErrBadSignerKey, id)
	}
	return &Cosigner{name: name, hash: keyHash(name, algCosignatureV1, pub), key: key}, nil
}

// Name returns the cosigner's key name.
func (c *Cosigner) Name() string { return c.name }

// KeyHash returns the cosignature/v1 key ID.
func (c *Cosigner) KeyHash() uint32 { return c.hash }

// VerifierKey returns the cosigner's verifier key,
// "<name>+<hex key ID>+<base64 of 0x04 ‖ public key>", which logs and
// their clients configure to check its cosignatures.
func (c *Cosigner) VerifierKey() string {
	pub := c.key.Public().(ed25519.PublicKey)
	return fmt.Sprintf("%s+%08x+%s", c.name, c.hash, base64.StdEncoding.EncodeToString(append([]byte{algCosignatureV1}, pub...)))
}

// Sign returns the cosignature of the checkpoint text msg, stamped with the
// current time.
func (c *Cosigner) Sign(msg []byte) ([]byte, error) { return c.SignAt(time.Now(), msg) }

// SignAt returns the cosignature of the checkpoint text msg stamped with t,
// truncated to whole seconds. It fails if t is before the Unix epoch or msg
// does not end in a newline.
func (c *Cosigner) SignAt(t time.Time, msg []byte) ([]byte, error) {
	ts := t.Unix()
	if ts < 0 {
		return nil, fmt.Errorf("witness: cosignature time %v is before 1970", t)
	}
	if len(msg) == 0 || msg[len(msg)-1] != '\n' {
		return nil, errors.New("witness: cosigned text does not end in a newline")
	}
	m := make([]byte, 0, len("cosignature/v1\ntime \n")+20+len(msg))
	m = append(m, "cosignature/v1\ntime "...)
	m = strconv.AppendInt(m, ts, 10)
	m = append(m, '\n')
	m = append(m, msg...)
	sig := binary.BigEndian.AppendUint64(make([]byte, 0, 8+ed25519.SignatureSize), uint64(ts))
	return append(sig, ed25519.Sign(c.key, m)...), nil
}

// keyHash is the c2sp.org/signed-note key ID of a key with type alg.
func keyHash(name string, alg byte, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', alg})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// validKeyName reports whether name is a valid note key name: non-empty
// UTF-8 with no Unicode space and no '+'.
func validKeyName(name string) bool {
	return name != "" && utf8.ValidString(name) && !strings.ContainsFunc(name, unicode.IsSpace) && !strings.Contains(name, "+")
}
