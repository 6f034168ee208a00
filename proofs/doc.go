// Package proofs verifies what a chipledger log hands out: signed checkpoints
// (C2SP signed notes), inclusion and consistency proofs, and receipts, the
// offline proof that an entry is in the log.
//
// It is for anyone who does not trust a chipledger server: it depends only on
// the standard library, golang.org/x/mod/sumdb/note and
// github.com/transparency-dev/merkle, and imports nothing of the server.
package proofs
