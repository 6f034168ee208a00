package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"

	"github.com/chipledger/chipledger/proofs"
)

// A LogSigner signs checkpoints of one log: C2SP tlog-checkpoint bodies as
// C2SP signed notes with an Ed25519 key whose name is the log's origin.
// Ed25519 is deterministic, so every replica holding the key signs a given
// tree to the same bytes.
type LogSigner struct {
	origin string
	signer note.Signer
	vkey   string
}

// GenerateLogKey makes a new log key for origin and returns the note signer
// key (secret, "PRIVATE+KEY+<origin>+…") and verifier key ("<origin>+…").
// The origin must be a valid note key name (note.GenerateKey does not check):
// see CheckOrigin.
func GenerateLogKey(origin string) (skey, vkey string, err error) {
	if err := CheckOrigin(origin); err != nil {
		return "", "", err
	}
	skey, vkey, err = note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return "", "", fmt.Errorf("generate log key for origin %q: %w", origin, err)
	}
	return skey, vkey, nil
}

// CheckOrigin reports whether origin can name a log: it is the name of the
// log key and the first line of every checkpoint, so it must be valid UTF-8,
// not empty, and hold no spaces (nor other Unicode white space, newlines
// included) and no '+', as C2SP signed-note key names require.
func CheckOrigin(origin string) error {
	const want = "want a name without spaces or '+', conventionally a URL without scheme such as ledger.example.com/log"
	switch {
	case origin == "":
		return fmt.Errorf("log origin is empty: %s", want)
	case !utf8.ValidString(origin):
		return fmt.Errorf("log origin %q is not valid UTF-8: %s", origin, want)
	case strings.IndexFunc(origin, unicode.IsSpace) >= 0:
		return fmt.Errorf("log origin %q holds white space: %s", origin, want)
	case strings.Contains(origin, "+"):
		return fmt.Errorf("log origin %q holds a '+', which separates the parts of a key: %s", origin, want)
	}
	return nil
}

// NewLogSigner returns the signer for a note signer key made by
// GenerateLogKey (or note.GenerateKey). The key name is the origin.
func NewLogSigner(skey string) (*LogSigner, error) {
	skey = strings.TrimSpace(skey)
	signer, err := note.NewSigner(skey)
	if err != nil {
		if _, verr := note.NewVerifier(skey); verr == nil {
			return nil, errors.New("this is the public verifier key; a node needs the secret key file written by `chipledger keys --out`")
		}
		return nil, fmt.Errorf("parse log signer key: %w", err)
	}
	vkey, err := verifierKeyOf(skey, signer.Name())
	if err != nil {
		return nil, err
	}
	return &LogSigner{origin: signer.Name(), signer: signer, vkey: vkey}, nil
}

// verifierKeyOf derives the verifier key of an Ed25519 note signer key,
// "PRIVATE+KEY+<name>+<hash>+<base64(0x01 ‖ seed)>".
func verifierKeyOf(skey, name string) (string, error) {
	parts := strings.SplitN(skey, "+", 5) // PRIVATE, KEY, name, hash, key; names hold no "+"
	raw, err := base64.StdEncoding.DecodeString(parts[len(parts)-1])
	if len(parts) != 5 || err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", errors.New("log signer key is not an Ed25519 note key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(name, pub)
}

// Origin returns the log's origin, the checkpoint's first line.
func (s *LogSigner) Origin() string { return s.origin }

// VerifierKey returns the note verifier key clients pin to check checkpoints.
func (s *LogSigner) VerifierKey() string { return s.vkey }

// Sign returns the signed checkpoint of the tree with the given size and root.
func (s *LogSigner) Sign(size uint64, root Hash) ([]byte, error) {
	body := proofs.Checkpoint{Origin: s.origin, Size: size, Hash: root}.Marshal()
	signed, err := note.Sign(&note.Note{Text: string(body)}, s.signer)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint of size %d: %w", size, err)
	}
	return signed, nil
}
