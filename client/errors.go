package client

import (
	"errors"
	"fmt"
)

// The verification errors. Every answer the client cannot verify fails the
// call with one of them, never with a partial or unverified result, and a
// call that fails verification is not retried on another node: the caller
// learns that a node misbehaved. Test with errors.Is.
var (
	// ErrBadSignature reports a checkpoint that is not a checkpoint of the
	// pinned log: malformed, for another origin, or not signed by the
	// pinned key. The error also wraps the proofs error that says which
	// (proofs.ErrBadSignature, proofs.ErrMalformedCheckpoint or
	// proofs.ErrWrongOrigin).
	ErrBadSignature = errors.New("client: checkpoint not signed by the log")

	// ErrFork reports two checkpoints, both signed by the log, that the
	// client cannot show to extend one another. The error is a *ForkError
	// holding both.
	ErrFork = errors.New("client: checkpoints do not extend one another")

	// ErrRollback reports a node that serves a tree smaller than one it or
	// another node already showed, and cannot prove that its tree is a
	// prefix of the larger one: it lost or is hiding leaves.
	ErrRollback = errors.New("client: node cannot show a tree it already committed to")

	// ErrBadProof reports an inclusion or range proof that does not lead to
	// the verified checkpoint's root. The error is a *ProofError.
	ErrBadProof = errors.New("client: proof does not verify")

	// ErrMismatch reports a verified answer to another question than the
	// one asked: a receipt for another leaf, an entry of another chip or
	// epoch, entries missing from a chip's history, another log's key.
	ErrMismatch = errors.New("client: node answered with something other than was asked")
)

// ErrClosed is returned by calls on a closed Client, and by calls in flight
// when it is closed.
var ErrClosed = errors.New("client: closed")

// isVerificationError reports whether err is one of the verification
// errors, which are never retried.
func isVerificationError(err error) bool {
	for _, target := range []error{ErrBadSignature, ErrFork, ErrRollback, ErrBadProof, ErrMismatch} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// A NodeError is a failed call and the node whose answer failed it: an
// error from the API (connect.CodeOf returns its code, so callers can tell
// INVALID_ARGUMENT from FAILED_PRECONDITION or ALREADY_EXISTS), a transport
// error after the retries ran out, or ErrBadSignature, ErrRollback or
// ErrMismatch. *ForkError and *ProofError name the node themselves and are
// returned unwrapped.
type NodeError struct {
	Op   string // what the client was doing: "append", "lookup chip", …
	Node string // the node's address, as configured or as a leader hint named it
	Err  error
}

func (e *NodeError) Error() string {
	return fmt.Sprintf("client: %s at %s: %v", e.Op, e.Node, e.Err)
}

func (e *NodeError) Unwrap() error { return e.Err }

// A ForkError is the evidence that the log, or a node speaking for it,
// showed the client two views of history: two checkpoints validly signed by
// the log's key that the client could not prove to extend one another.
//
// When both checkpoints have the same size, Proof is nil and the two signed
// notes alone prove the fork to anyone who holds the log's verifier key: a
// log signs one root per size. Otherwise Proof is the consistency proof the
// node offered, which failed; a bad proof may be the node's fault rather
// than the log's, but either way the client does not accept the new view.
// Callers that audit the log should keep Old and New.
type ForkError struct {
	Old   []byte     // the signed checkpoint the client had accepted
	New   []byte     // the signed checkpoint the node served
	Proof [][32]byte // the consistency proof that failed, or nil
	Node  string     // the node that served New
	Err   error      // why the proof failed (wraps proofs.ErrConsistency), or nil
}

func (e *ForkError) Error() string {
	if e.Proof == nil && e.Err == nil {
		return fmt.Sprintf("client: log fork: %s served a checkpoint with the same size as an accepted one and another root", e.Node)
	}
	return fmt.Sprintf("client: log fork: %s served a checkpoint it cannot prove consistent with an accepted one: %v", e.Node, e.Err)
}

// Is reports whether target is ErrFork.
func (e *ForkError) Is(target error) bool { return target == ErrFork }

func (e *ForkError) Unwrap() error { return e.Err }

// A ProofError is an inclusion proof, or the proof of a range of entries,
// that does not verify against a verified checkpoint.
type ProofError struct {
	Index uint64 // the leaf's index; for a range of entries, its first
	Size  uint64 // the size of the tree the proof was checked against
	Node  string // the node that gave the proof
	Err   error  // why it failed (wraps proofs.ErrInclusion or proofs.ErrConsistency), or a malformed proof
}

func (e *ProofError) Error() string {
	return fmt.Sprintf("client: bad proof for leaf %d in tree of size %d from %s: %v", e.Index, e.Size, e.Node, e.Err)
}

// Is reports whether target is ErrBadProof.
func (e *ProofError) Is(target error) bool { return target == ErrBadProof }

func (e *ProofError) Unwrap() error { return e.Err }

// ErrNotLatest reports a ledger node whose answer the chip index
// (DESIGN.md §3.7) does not back: it hid the chip's newest entry, denied
// that the chip has one, served no lookup proof, or served one that does not
// verify against its signed checkpoint. The error also wraps ErrMismatch
// (the proof verifies but contradicts the entries served) or ErrBadProof
// (the proof itself fails; it then wraps proofs.ErrLookup or
// proofs.ErrMalformedLookup too).
var ErrNotLatest = errors.New("client: the ledger did not prove this is the chip's latest entry")

// notLatest wraps err, a mismatch or a bad lookup proof, in ErrNotLatest.
func notLatest(err error) error { return fmt.Errorf("%w: %w", ErrNotLatest, err) }

// mismatch returns an ErrMismatch error.
func mismatch(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMismatch, fmt.Sprintf(format, args...))
}
