// Package proofs verifies what a chipledger log hands out: signed checkpoints
// (C2SP signed notes) and their witness cosignatures, inclusion and
// consistency proofs, and receipts, the offline proof that an entry is in the
// log.
//
// It is for anyone who does not trust a chipledger server: it depends only on
// the standard library, golang.org/x/mod/sumdb/note,
// github.com/transparency-dev/merkle and github.com/transparency-dev/formats
// (for witness policies and cosignature/v1), and imports nothing of the
// server.
package proofs
