// Package node runs one replica of a chipledger log: a hashicorp/raft member
// whose state machine applies batches of leaves to a ledger.Store, signs a
// checkpoint for every applied batch, and serves the Connect API, the C2SP
// tlog-tiles read API, health and metrics on one port.
//
// Only this package knows Raft. Clients talk to it through the API; the
// ledger package holds everything that does not depend on replication.
package node
