package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

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
func GenerateLogKey(origin string) (skey, vkey string, err error) {
	skey, vkey, err = note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return "", "", fmt.Errorf("generate log key for origin %q: %w", origin, err)
	}
	return skey, vkey, nil
}

// NewLogSigner returns the signer for a note signer key made by
// GenerateLogKey (or note.GenerateKey). The key name is the origin.
func NewLogSigner(skey string) (*LogSigner, error) {
	skey = strings.TrimSpace(skey)
	signer, err := note.NewSigner(skey)
	if err != nil {
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
