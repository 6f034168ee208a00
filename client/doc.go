// Package client is the Go SDK for the chipledger API, for stations that
// append escrow entries, devices and repair shops that look up a chip's
// backup, and auditors that follow the log, none of which needs to trust the
// nodes it talks to.
//
// A Client is given the nodes' addresses and the log's verifier key, which it
// pins. It verifies every answer before returning it: each checkpoint's
// signature; each receipt, inclusion proof and range of entries against a
// verified checkpoint; and that every checkpoint it sees extends, or is a
// prefix of, the largest one it has accepted (its trusted checkpoint),
// with consistency proofs from the nodes. A failed check is an error
// (ErrBadSignature, ErrFork, ErrRollback, ErrBadProof, ErrMismatch), never a
// warning, and nothing unverified reaches the caller. Callers that must
// remember the log across runs, devices and auditors, save Trusted and pass
// it back as Options.Trusted.
//
// Appends go to the node that last acted as leader, and move to the node a
// Chipledger-Leader header names (on an UNAVAILABLE error, or on an answer);
// appends and reads are retried with backoff across nodes while errors are
// transient. Retrying
// an append is safe: the ledger answers an exact retry with the original
// index.
//
// The package is not a server, a Raft client or an admin tool: it imports
// only the ledger's entry formats, proofs, and the API's generated code.
package client
