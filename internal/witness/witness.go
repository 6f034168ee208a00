package witness

import (
	"github.com/chipledger/chipledger/internal/filelock"
	"path/filepath"

	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/mod/sumdb/note"

	"github.com/chipledger/chipledger/proofs"
)

// Reasons the witness refuses a checkpoint, each answered with the status
// code statusFor gives it; *ConflictError is the other.
var (
	errUnknownLog   = errors.New("checkpoint origin is not a log this witness follows")
	errUnverified   = errors.New("checkpoint carries no valid signature by the log's key")
	errOldTooLarge  = errors.New("old size is larger than the checkpoint's size")
	errRootConflict = errors.New("checkpoint has the size of the latest cosigned checkpoint but another root hash")
	errInconsistent = errors.New("consistency proof does not verify")
)

// Config configures a Witness.
type Config struct {
	// Signer cosigns: a cosignature/v1 signer,
	// transparency-dev/formats/note.NewSignerForCosignatureV1(skey), which
	// stamps each cosignature with the current time.
	Signer note.Signer
	// Logs are the logs this witness follows: each a log's note verifier
	// key (vkey, Ed25519 0x01); its key name is the log's origin. Several
	// keys may share an origin (a key rotation); a checkpoint signed by any
	// of them is accepted.
	Logs []string
	// StateDir holds one file per origin with the latest cosigned size and
	// root. It is created (mode 0700) if missing. Each file is replaced
	// atomically and fsynced before the cosignature is returned.
	StateDir string
	// Logger receives a line per cosignature and per refusal; nil discards
	// them.
	Logger *slog.Logger
}

// A Witness cosigns the checkpoints of the logs it follows, each only if it
// is consistent with the last one it cosigned for that log. It is safe for
// concurrent use.
type Witness struct {
	signer note.Signer
	log    *slog.Logger
	logs   map[string]*logState // by origin; fixed after New
	lock   *filelock.Lock       // of StateDir, held until Close
}

// ErrStateDirInUse is returned by New for a state directory another
// Witness holds: two witnesses checking requests against copies of one
// state could each cosign a different fork under one key.
var ErrStateDirInUse = errors.New("witness: the state directory is in use by another witness")

// logState is what a Witness knows of one log.
type logState struct {
	verifiers note.Verifiers
	path      string // state file

	// mu makes each check against latest and the store that follows
	// atomic, so that concurrent requests cannot roll latest back.
	mu       sync.Mutex
	latest   tree // emptyTree() until cosigned
	cosigned bool
}

// New returns a Witness for cfg, with the state each log had when a
// Witness last ran on cfg.StateDir. It holds the directory (a lock file,
// .lock) until Close: another New on it fails with ErrStateDirInUse. It
// fails if cfg lacks a Signer, a StateDir or a log, if a log key is invalid
// or listed twice, or if a state file cannot be read or parsed.
func New(cfg Config) (*Witness, error) {
	if cfg.Signer == nil {
		return nil, errors.New("witness: no signer configured")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("witness: no state directory configured")
	}
	if len(cfg.Logs) == 0 {
		return nil, errors.New("witness: no logs configured")
	}
	w := &Witness{signer: cfg.Signer, log: cfg.Logger, logs: make(map[string]*logState)}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	verifiers, err := logVerifiers(cfg.Logs)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("witness: create state directory: %w", err)
	}
	lock, err := filelock.TryLock(filepath.Join(cfg.StateDir, ".lock"))
	if errors.Is(err, filelock.ErrLocked) {
		return nil, fmt.Errorf("%w: %s (stop the other witness first)", ErrStateDirInUse, cfg.StateDir)
	}
	if err != nil {
		return nil, fmt.Errorf("witness: %w", err)
	}
	w.lock = lock
	for origin, vs := range verifiers {
		lg := &logState{verifiers: note.VerifierList(vs...), path: stateFile(cfg.StateDir, origin), latest: emptyTree()}
		t, ok, err := loadState(lg.path, origin)
		if err != nil {
			lock.Unlock()
			return nil, fmt.Errorf("witness: %w", err)
		}
		if ok {
			lg.latest, lg.cosigned = t, true
		}
		w.logs[origin] = lg
	}
	return w, nil
}

// Close releases the state directory. The Witness must not be used after.
func (w *Witness) Close() error { return w.lock.Unlock() }

// logVerifiers parses the log keys and groups them by origin.
func logVerifiers(vkeys []string) (map[string][]note.Verifier, error) {
	type id struct {
		name string
		hash uint32
	}
	seen := make(map[id]bool)
	byOrigin := make(map[string][]note.Verifier)
	for _, vkey := range vkeys {
		lv, err := proofs.NewLogVerifier(vkey)
		if err != nil {
			return nil, fmt.Errorf("witness: log key: %w", err)
		}
		v := lv.Verifier()
		if seen[id{v.Name(), v.KeyHash()}] {
			return nil, fmt.Errorf("witness: log key %q listed twice", vkey)
		}
		seen[id{v.Name(), v.KeyHash()}] = true
		byOrigin[v.Name()] = append(byOrigin[v.Name()], v)
	}
	return byOrigin, nil
}

// Latest returns the size and root hash of the latest checkpoint the
// witness cosigned for origin; ok is false if it never cosigned one or does
// not follow origin.
func (w *Witness) Latest(origin string) (size uint64, root [32]byte, ok bool) {
	lg := w.logs[origin]
	if lg == nil {
		return 0, [32]byte{}, false
	}
	lg.mu.Lock()
	defer lg.mu.Unlock()
	if !lg.cosigned {
		return 0, [32]byte{}, false
	}
	return lg.latest.size, lg.latest.root, true
}

// add handles one parsed add-checkpoint request: it verifies the
// checkpoint, checks it against the log's latest cosigned tree, cosigns it,
// stores it, and returns the cosignature lines. The returned error says
// which check failed; statusFor maps it to an HTTP status.
func (w *Witness) add(req Request) ([]byte, error) {
	origin, _, _ := bytes.Cut(req.Checkpoint, []byte("\n"))
	lg := w.logs[string(origin)]
	if lg == nil {
		return nil, fmt.Errorf("%w: %.100q", errUnknownLog, origin)
	}
	text, c, err := openCheckpoint(req.Checkpoint, lg.verifiers)
	if err != nil {
		return nil, fmt.Errorf("origin %q: %w", origin, err)
	}
	next := tree{size: c.Size, root: c.Hash}

	lg.mu.Lock()
	defer lg.mu.Unlock()
	if err := checkUpdate(lg.latest, req.OldSize, req.Proof, next); err != nil {
		return nil, fmt.Errorf("origin %q: %w", origin, err)
	}
	sigs, err := w.cosign(text)
	if err != nil {
		return nil, fmt.Errorf("origin %q size %d: %w", origin, next.size, err)
	}
	if !lg.cosigned || next != lg.latest {
		// If storing fails, latest stays: the cosignature is not returned,
		// so the witness has promised nothing about next. The file may
		// already hold next (if only the directory sync failed), which is
		// safe to restart from: next passed checkUpdate.
		if err := storeState(lg.path, c.Origin, next); err != nil {
			return nil, err
		}
		lg.latest, lg.cosigned = next, true
	}
	w.log.Info("cosigned checkpoint", "origin", c.Origin, "old_size", req.OldSize, "size", next.size, "root", fmt.Sprintf("%x", next.root))
	return sigs, nil
}

// openCheckpoint opens the signed checkpoint cp with the log's verifiers
// and parses its text. A note that is malformed, or whose text is not a
// checkpoint of the log, wraps ErrMalformedRequest; a note without a valid
// signature by a log key, or with a log-key signature that does not verify,
// wraps errUnverified.
func openCheckpoint(cp []byte, verifiers note.Verifiers) (string, proofs.Checkpoint, error) {
	n, err := note.Open(cp, verifiers)
	_, unverified := errors.AsType[*note.UnverifiedNoteError](err)
	_, invalid := errors.AsType[*note.InvalidSignatureError](err)
	switch {
	case unverified || invalid:
		return "", proofs.Checkpoint{}, fmt.Errorf("%w: %w", errUnverified, err)
	case err != nil:
		return "", proofs.Checkpoint{}, fmt.Errorf("%w: checkpoint: %w", ErrMalformedRequest, err)
	}
	c, err := proofs.ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return "", proofs.Checkpoint{}, fmt.Errorf("%w: %w", ErrMalformedRequest, err)
	}
	// The text's first line selected the verifiers, whose names are the
	// origin, so this holds unless the caller passed the wrong ones.
	if c.Origin != n.Sigs[0].Name {
		return "", proofs.Checkpoint{}, fmt.Errorf("%w: checkpoint origin %q signed by %q", ErrMalformedRequest, c.Origin, n.Sigs[0].Name)
	}
	return n.Text, c, nil
}

// checkUpdate decides, by c2sp.org/tlog-witness, whether a witness whose
// latest cosigned tree for a log is latest may cosign the log's checkpoint
// of tree next, given the request's old size and consistency proof. In the
// order the spec lists them: old beyond next is errOldTooLarge; old other
// than latest's size is a *ConflictError with that size; next of latest's
// size with another root is errRootConflict; a proof that does not show
// latest is a prefix of next (proofs.VerifyConsistency, which requires an
// empty proof from size 0 or between equal sizes) is errInconsistent.
func checkUpdate(latest tree, old uint64, proof [][32]byte, next tree) error {
	switch {
	case old > next.size:
		return fmt.Errorf("%w: old size %d, checkpoint size %d", errOldTooLarge, old, next.size)
	case old != latest.size:
		return fmt.Errorf("old size %d: %w", old, &ConflictError{Size: latest.size})
	case old == next.size && next.root != latest.root:
		return fmt.Errorf("%w: size %d, cosigned root %x, checkpoint root %x", errRootConflict, old, latest.root, next.root)
	}
	if err := proofs.VerifyConsistency(old, next.size, proof, latest.root, next.root); err != nil {
		return fmt.Errorf("%w: %w", errInconsistent, err)
	}
	return nil
}

// cosign signs the checkpoint text with the witness's signer and returns
// only the signature lines, each "— <name> <base64>\n".
func (w *Witness) cosign(text string) ([]byte, error) {
	signed, err := note.Sign(&note.Note{Text: text}, w.signer)
	if err != nil {
		return nil, fmt.Errorf("cosign: %w", err)
	}
	// note.Sign returns the text, a blank line, then the signature lines.
	return signed[len(text)+1:], nil
}
