// Package chaos runs a chipledger cluster of real `chipledger node`
// processes under faults and checks that it keeps its promises: every
// acknowledged append is in the log once, at the index its receipt gives;
// no valid entry is refused, and refused appends are not in it; of two
// conflicting entries for one chip and epoch, sent at once, at most one
// is in it, and a leaf sent twice at once lands once; replicas end
// identical; every checkpoint anyone was shown is a prefix of the final log
// and ends on an index root, and the index roots are those of the chip
// index (an auditor checks the whole log too); no node serves a smaller
// checkpoint than it served before, or than the min_size asked for; no
// node answers a valid request with an error that is neither a verdict
// nor a transient failure, or logs an unexpected error. The nodes run with a
// witness policy of three witnesses (two must cosign), whose leaders go on
// having checkpoints cosigned through the faults: at the end every node
// serves the final checkpoint with the quorum's cosignatures, and every
// witness holds a prefix of the final tree.
//
// The faults come from a plan drawn from a seed (Plan): SIGKILL and restart
// of nodes (the leader more often), partitions of the leader from the
// majority, isolation of one node, delayed links and dropped connections.
// Network faults are injected by a TCP proxy (Network) in front of every
// node's Raft and API listener. Each node binds its own loopback address
// (127.0.0.11, 127.0.0.12, …) and dials its peers from it, so the proxy
// knows which node every Raft connection comes from and can fault one
// direction of one pair; connections from any other address are clients.
//
// TestClusterSurvivesFaults drives it. `go test ./internal/chaos/` runs 90
// seconds of faults, about two minutes in all; -short skips it. To run
// longer or replay a run:
//
//	CHIPLEDGER_CHAOS_DURATION=20m  (or -chaos.duration)  how long to inject faults
//	CHIPLEDGER_CHAOS_SEED=N        (or -chaos.seed)      the plan's seed, printed by every run
//	CHIPLEDGER_CHAOS_DIR=DIR       (or -chaos.dir)       keep the nodes' data and logs
//	CHIPLEDGER_CHAOS_BIN=FILE      (or -chaos.bin)       run this binary instead of building one
//	-chaos.rate, -chaos.clients                          the append load
//
// e.g. `CHIPLEDGER_CHAOS_DURATION=20m go test -timeout 30m -run
// TestClusterSurvivesFaults -v ./internal/chaos/`. A seed replays the same
// plan; which node is the leader when a step runs, and so which node a
// "kill the leader" step kills, depends on the run.
//
// The package is test machinery, not a benchmark, and needs Linux's whole
// 127.0.0.0/8 loopback.
package chaos
