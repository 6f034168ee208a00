// Package ledger is the chipledger log itself, without networking: the wire
// formats of chip IDs, identities and log entries (DESIGN.md §3), the admission
// checks that need no replicated state, the bbolt-backed Merkle tree with its
// chip index, checkpoint signing and C2SP tlog-tiles rendering.
//
// It is not a server and knows nothing of Raft: the node package drives a
// Store from its state machine, and clients use the formats to read entries.
package ledger
