package node

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// Config configures a node. ID, DataDir, RaftAddr, APIAddr, Signer and
// Trust are required.
type Config struct {
	// ID names the node in the Raft cluster; it must be stable across
	// restarts.
	ID string
	// DataDir holds raft.db (Raft log and stable store), the Raft snapshots
	// and the ledger store.
	DataDir string
	// RaftAddr is the TCP address Raft listens on, e.g. "10.0.0.1:7000".
	// Port 0 picks a free port (for tests).
	RaftAddr string
	// RaftAdvertise is the address peers dial; default RaftAddr's listener
	// address.
	RaftAdvertise string
	// APIAddr is the address of the HTTP server (Connect API, tiles,
	// health, metrics).
	APIAddr string
	// APIAdvertise is the API address other nodes and clients are sent to;
	// default the listener address.
	APIAdvertise string

	// Bootstrap makes this node found a new cluster of Peers (or of itself
	// alone when Peers is empty). Bootstrapping a node that already has
	// Raft state does nothing.
	Bootstrap bool
	// Peers is the fixed initial member set, this node included, for
	// Bootstrap. Every node of the set is started with the same list.
	Peers []Peer
	// Join lists API addresses of existing members to ask to add this node.
	Join []string

	// Signer signs checkpoints with the log key; its key name is the origin.
	Signer *ledger.LogSigner
	// Trust holds the manufacturer roots device and station certificates
	// must chain to.
	Trust *ledger.Trust

	// Logger receives the node's logs (and Raft's, at warning level and
	// above). Nil discards them.
	Logger *slog.Logger

	// NoSync turns off fsync in the ledger store and the Raft log: only for
	// tests, it loses acknowledged appends on a crash.
	NoSync bool
	// Raft tunes the Raft configuration after the node's defaults are set,
	// e.g. timeouts or snapshot thresholds for tests.
	Raft func(*raft.Config)
	// Listener, if set, is used for the API instead of listening on APIAddr.
	Listener net.Listener

	// TLS secures Raft (mutual TLS) and the API. Nil runs both over plain
	// TCP, which only --dev or an explicit --insecure should do.
	TLS *TLSConfig
	// AdminTokenHash, if set, is the SHA-256 of a bearer token that
	// authorises the admin calls (Join, Leave, TransferLeadership) for
	// clients without an admin certificate. It needs TLS.
	AdminTokenHash []byte
	// MaxAppendsInFlight bounds the appends a node handles at once (the
	// requests it has read and not yet answered); more are refused at once
	// with RESOURCE_EXHAUSTED and a retry hint, before their body is read.
	// Zero means DefaultMaxAppendsInFlight.
	MaxAppendsInFlight int
	// StationRate, if positive, limits each station to that many appends a
	// second on average, in bursts of up to StationBurst (at least 1); more
	// are refused with RESOURCE_EXHAUSTED and when to retry.
	StationRate  float64
	StationBurst int
	// Witnesses, if set, is the log's witness policy
	// (c2sp.org/tlog-policy): the leader submits each new checkpoint, at
	// most once per WitnessInterval, to the policy's witnesses
	// (c2sp.org/tlog-witness) and records the latest one that the policy's
	// quorum cosigned, which every node then serves (GetCheckpoint with
	// witnessed set). Clients that check witness cosignatures use the
	// same policy. Every node of a cluster should have the same one.
	Witnesses *proofs.WitnessPolicy
	// WitnessInterval is the least time between two rounds of witnessing;
	// zero means DefaultWitnessInterval.
	WitnessInterval time.Duration
	// WitnessRefresh is how old the witnessed checkpoint's cosignatures may
	// grow while the log does not: after it, the leader has the same
	// checkpoint cosigned again, so that clients requiring recent
	// cosignatures (client.Options.WitnessMaxAge) keep finding them. Zero
	// means DefaultWitnessRefresh.
	WitnessRefresh time.Duration
	// WitnessHTTPClient carries the add-checkpoint requests; nil means a
	// client with a 10 s timeout.
	WitnessHTTPClient *http.Client
	// HandOverOnClose has a leader hand its leadership to another voter
	// when it is closed (a graceful stop, SIGTERM), so that the cluster
	// does not wait an election timeout without a leader. Off, Close is
	// like a crash for the rest of the cluster.
	HandOverOnClose bool
	// DrainDelay is how long Close keeps serving, with /readyz answering
	// 503, before it closes the API's listener: for load balancers to
	// take the node out of rotation first. Zero closes at once.
	DrainDelay time.Duration
	// StoreFaults, if set, is called before each write of the ledger store
	// and fails it by returning an error: for fault-injection tests (see
	// ledger.Options.Faults).
	StoreFaults func(op string) error
}

// DefaultMaxAppendsInFlight is the default Config.MaxAppendsInFlight: with
// requests of at most 128 KiB, appends hold at most 64 MiB of requests.
const DefaultMaxAppendsInFlight = 512

// Peer is a member of the initial cluster.
type Peer struct {
	ID       string
	RaftAddr string
	APIAddr  string
}

// ErrShuttingDown is returned to appends waiting while the node stops.
var ErrShuttingDown = errors.New("node is shutting down")

// A Node is one running replica.
type Node struct {
	cfg       Config
	log       *slog.Logger
	metrics   *metrics
	fsm       *fsm
	raft      *raft.Raft
	transport *raftTransport
	raftStore *raftboltdb.BoltStore
	batcher   *batcher
	http      *http.Server
	listener  net.Listener
	apiAddr   string
	stations  *stationCache
	peers     *peerClients
	limiter   *stationLimiter // nil: no per-station limit

	startLastIndex uint64                 // the Raft log's last index when the node started
	lag            atomic.Pointer[string] // how the node is behind the cluster, "" if it is not (watchReadiness); nil until known
	hadRaftState   bool                   // the node started with Raft state: a Join is a rejoin
	closing        atomic.Bool            // Close has begun: not ready
	started        atomic.Bool            // Start returned the node: Close drains (DrainDelay)
	caughtUp       atomic.Bool            // applied all it may have served before (watchCatchUp)
	appending      chan struct{}          // a slot per append in flight (MaxAppendsInFlight)

	ctx    context.Context
	cancel context.CancelFunc
	// streams ends the API's streams (WatchCheckpoints) when the server
	// shuts down: they would otherwise hold its graceful shutdown, which
	// waits for every request in flight, until its deadline.
	streams     context.Context
	stopStreams context.CancelFunc
	wg          sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// New starts a node: it opens the ledger and the Raft state, joins or
// bootstraps the cluster as configured, and serves the API. Close stops it.
func New(cfg Config) (*Node, error) { return Start(context.Background(), cfg) }

// Start is New with a context that bounds the start: a node that cannot
// join its cluster (Config.Join) gives up when ctx ends (a SIGTERM, say).
// The node, once started, runs until Close.
func Start(start context.Context, cfg Config) (n *Node, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("node", cfg.ID)
	ctx, cancel := context.WithCancel(context.Background())
	nd := &Node{cfg: cfg, log: logger, metrics: newMetrics(), peers: newPeerClients(cfg.TLS), ctx: ctx, cancel: cancel}
	nd.streams, nd.stopStreams = context.WithCancel(ctx)
	n = nd
	defer func() {
		if err != nil {
			nd.Close() // n is nil on the error returns
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	if n.fsm, err = newFSM(cfg.DataDir, cfg.Signer, cfg.NoSync, cfg.StoreFaults, logger, n.metrics); err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	n.stations = newStationCache(n.fsm, cfg.Trust)
	n.limiter = newStationLimiter(cfg.StationRate, cfg.StationBurst)
	n.appending = make(chan struct{}, cmp.Or(cfg.MaxAppendsInFlight, DefaultMaxAppendsInFlight))

	if n.listener = cfg.Listener; n.listener == nil {
		if n.listener, err = net.Listen("tcp", cfg.APIAddr); err != nil {
			return nil, fmt.Errorf("listen for the API on %s: %w", cfg.APIAddr, err)
		}
	}
	n.apiAddr = cfg.APIAdvertise
	if n.apiAddr == "" {
		n.apiAddr = n.listener.Addr().String()
	}
	if tcp, ok := n.listener.Addr().(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() {
		// Calls to other nodes leave from the API's address, as Raft's
		// do from Raft's: on a multi-homed host they take the cluster's
		// network (and a test's per-address faults apply to them).
		n.peers.dialFrom(tcp.IP)
	}

	if err := n.startRaft(); err != nil {
		return nil, err
	}
	n.batcher = newBatcher(n.raft, n.metrics, ctx.Done())
	n.batcher.faulted = n.fsm.faultSignal
	n.goRun(n.batcher.run)
	n.goRun(n.watchLeadership)
	n.goRun(n.flushIdle)
	n.goRun(n.watchStoreFaults)
	n.goRun(n.watchCatchUp)
	n.goRun(n.watchReadiness)
	n.goRun(n.witnessCheckpoints)
	n.startHTTP()

	if len(cfg.Join) > 0 {
		if err := n.join(start); err != nil {
			return nil, err
		}
	}
	n.started.Store(true) // from now on Close drains
	n.log.Info("node started", "raft", n.transport.LocalAddr(), "api", n.apiAddr, "tree_size", n.fsm.checkpoint().Size)
	return n, nil
}

func (c *Config) validate() error {
	var missing []string
	for name, v := range map[string]string{"ID": c.ID, "DataDir": c.DataDir, "RaftAddr": c.RaftAddr} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if c.APIAddr == "" && c.Listener == nil {
		missing = append(missing, "APIAddr")
	}
	if c.Signer == nil {
		missing = append(missing, "Signer")
	}
	if c.Trust == nil {
		missing = append(missing, "Trust")
	}
	if len(missing) > 0 {
		return fmt.Errorf("node configuration is missing %s", strings.Join(missing, ", "))
	}
	if len(c.ID) > maxMemberField {
		return fmt.Errorf("node ID of %d bytes: at most %d", len(c.ID), maxMemberField)
	}
	for _, p := range c.Peers {
		if err := checkMember(p.ID, p.RaftAddr, p.APIAddr); err != nil {
			return fmt.Errorf("peer %s: %w", p.ID, err)
		}
	}
	if c.Bootstrap && len(c.Join) > 0 {
		return errors.New("a node either bootstraps a cluster or joins one, not both")
	}
	if len(c.AdminTokenHash) != 0 && len(c.AdminTokenHash) != 32 {
		return errors.New("the admin token hash must be a SHA-256 (32 bytes)")
	}
	if len(c.AdminTokenHash) != 0 && c.TLS == nil {
		// Over plain TCP the token would cross the network in the clear,
		// and a joining node could not present it.
		return errors.New("the admin token is for clusters with TLS: without TLS every admin call is open (run with TLS, or without the token)")
	}
	if c.WitnessInterval < 0 || c.WitnessRefresh < 0 {
		return fmt.Errorf("WitnessInterval (%s) and WitnessRefresh (%s) cannot be negative", c.WitnessInterval, c.WitnessRefresh)
	}
	if c.MaxAppendsInFlight < 0 || c.StationRate < 0 || c.StationBurst < 0 {
		return fmt.Errorf("MaxAppendsInFlight (%d), StationRate (%g) and StationBurst (%d) cannot be negative", c.MaxAppendsInFlight, c.StationRate, c.StationBurst)
	}
	return nil
}

func (n *Node) goRun(fn func(context.Context)) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn(n.ctx)
	}()
}

func (n *Node) startRaft() error {
	cfg := n.cfg
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(cfg.ID)
	conf.HeartbeatTimeout = 500 * time.Millisecond
	conf.ElectionTimeout = 500 * time.Millisecond
	conf.LeaderLeaseTimeout = 250 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.MaxAppendEntries = 64
	conf.BatchApplyCh = true
	conf.SnapshotThreshold = 8192
	conf.TrailingLogs = 10240
	conf.Logger = newHCLogger(n.log)
	if cfg.Raft != nil {
		cfg.Raft(conf)
	}

	var err error
	n.raftStore, err = openRaftStore(filepath.Join(cfg.DataDir, "raft.db"), cfg.NoSync)
	if err != nil {
		return fmt.Errorf("open raft log: %w", err)
	}
	logs, err := raft.NewLogCache(1024, n.raftStore)
	if err != nil {
		return err
	}
	n.fsm.logs = logs
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "raft-snapshots"), 2, conf.Logger)
	if err != nil {
		return fmt.Errorf("open raft snapshots: %w", err)
	}
	var advertise net.Addr
	if cfg.RaftAdvertise != "" {
		if advertise, err = net.ResolveTCPAddr("tcp", cfg.RaftAdvertise); err != nil {
			return fmt.Errorf("raft advertise address %q: %w", cfg.RaftAdvertise, err)
		}
	}
	stream, err := newStreamLayer(cfg.RaftAddr, advertise, cfg.TLS)
	if err != nil {
		return fmt.Errorf("listen for raft on %s: %w", cfg.RaftAddr, err)
	}
	n.transport = newRaftTransport(raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: 5,
		Timeout: 10 * time.Second,
		Logger:  conf.Logger,
	}))
	// Every checkpoint this node served before it stopped is over an entry
	// of its Raft log: it serves none until it has applied that far (see
	// watchCatchUp).
	if n.startLastIndex, err = logs.LastIndex(); err != nil {
		return fmt.Errorf("read raft log: %w", err)
	}
	n.fsm.counted.Store(n.startLastIndex)
	if n.fsm.marker == 0 && n.startLastIndex > 0 {
		n.log.Info("the ledger store is empty: rebuilding it from the Raft snapshot and log; reads wait until it has caught up", "raft_entries", n.startLastIndex)
	}
	if n.hadRaftState, err = raft.HasExistingState(logs, n.raftStore, snaps); err != nil {
		return fmt.Errorf("read raft state: %w", err)
	}
	if cfg.Bootstrap {
		if err := n.bootstrap(conf, logs, snaps); err != nil {
			return err
		}
	}
	n.raft, err = raft.NewRaft(conf, n.fsm, logs, n.raftStore, snaps, n.transport)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	n.fsm.noteStarted(n.raft.AppliedIndex())
	return nil
}

// bootstrap founds the cluster unless this node already has Raft state.
func (n *Node) bootstrap(conf *raft.Config, logs raft.LogStore, snaps raft.SnapshotStore) error {
	existing, err := raft.HasExistingState(logs, n.raftStore, snaps)
	if err != nil || existing {
		return err
	}
	var servers []raft.Server
	for _, p := range n.cfg.Peers {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
	}
	if len(servers) == 0 {
		servers = []raft.Server{{Suffrage: raft.Voter, ID: conf.LocalID, Address: n.transport.LocalAddr()}}
	}
	n.log.Info("bootstrapping cluster", "members", len(servers))
	err = raft.BootstrapCluster(conf, logs, n.raftStore, snaps, n.transport, raft.Configuration{Servers: servers})
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("bootstrap cluster: %w", err)
	}
	return nil
}

// watchLeadership keeps the Raft state metric current and, whenever this
// node becomes leader, records the API addresses of the members it knows
// (itself and the configured peers) in the replicated state.
func (n *Node) watchLeadership(ctx context.Context) {
	obs := make(chan raft.Observation, 16)
	observer := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RaftState)
		return ok
	})
	n.raft.RegisterObserver(observer)
	defer n.raft.DeregisterObserver(observer)
	n.metrics.setRaftState(strings.ToLower(n.raft.State().String()))
	for {
		if n.raft.State() == raft.Leader {
			n.recordMembers()
			n.startLog()
		}
		select {
		case o := <-obs:
			state := o.Data.(raft.RaftState)
			n.metrics.setRaftState(strings.ToLower(state.String()))
			n.log.Info("raft state changed", "state", state.String())
		case <-ctx.Done():
			return
		}
	}
}

// watchCatchUp marks the node caught up once it cannot serve a checkpoint
// smaller than one it served before it stopped. Its store is durable only
// in groups, so after a crash it restarts behind what it had applied; every
// entry it had applied is in its Raft log, and committed. It is caught up
// when its state machine has applied every command of its log as it was at
// the start; or, as a follower, every command through a commit index that
// covers an entry of the leader's own term (a new leader's commit index
// can lag what the old one committed, until it commits an entry of its
// term; a tail of the log that never committed was never applied); or once
// the leader has sent it a snapshot (sent only to a node behind the
// leader's log, so it holds everything the node had). Progress is the
// state machine's own (fsm.applied): Raft's AppliedIndex counts entries
// merely queued for it. Until then the node answers reads UNAVAILABLE, and
// clients go to another node.
func (n *Node) watchCatchUp(ctx context.Context) {
	start := time.Now()
	target, err := lastCommand(n.fsm.logs, n.startLastIndex, n.fsm.applied.Load())
	if err != nil {
		n.log.Warn("cannot read the raft log to find what to catch up to; waiting for the state machine to pass its last index", "index", n.startLastIndex, "err", err)
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		applied := n.fsm.applied.Load()
		caught := applied >= target || n.fsm.restoredLive.Load()
		if !caught && n.raft.State() == raft.Follower && n.raft.LastContact().After(start) {
			if commit := n.raft.CommitIndex(); commit > 0 && termAt(n.fsm.logs, commit) == n.raft.CurrentTerm() {
				last, err := lastCommand(n.fsm.logs, commit, applied)
				caught = err == nil && applied >= last
			}
		}
		if caught {
			n.caughtUp.Store(true)
			if n.startLastIndex > 0 {
				n.log.Info("caught up after the start; serving reads", "applied", applied, "took", time.Since(start).Round(time.Millisecond))
			}
			return
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// readyInterval is how often a node checks whether it has caught up with
// the cluster (watchReadiness).
const readyInterval = 100 * time.Millisecond

// watchReadiness decides, every readyInterval, whether the node has caught
// up with the cluster, for /readyz: whether its state machine has applied
// every command committed one interval earlier, as the leader knows it
// (a follower learns the leader's commit index from its heartbeats). The
// interval's slack keeps a node that applies as it should from flapping
// under load; a stalled state machine, or a follower whose log is behind
// the leader's (one waiting for a snapshot), is not ready.
func (n *Node) watchReadiness(ctx context.Context) {
	var target uint64 // the cluster's commit index one interval ago
	t := time.NewTicker(readyInterval)
	defer t.Stop()
	removed := false
	for {
		lag := n.lagBehind(target)
		if n.removedFromCluster() {
			lag = "this node is no longer a member of the cluster"
			if !removed {
				n.log.Warn("this node is no longer a member of the cluster (removed with admin leave?): it takes no part in Raft and falls behind; stop it, and wipe its data directory before it joins again")
			}
			removed = true
		} else {
			removed = false
		}
		n.lag.Store(&lag)
		if n.raft.State() == raft.Leader {
			target = n.raft.CommitIndex()
		} else {
			target = n.transport.leaderCommit.Load()
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// removedFromCluster reports whether the Raft configuration this node
// knows lists members but not this node (one removed by Leave). A node that
// has not received a configuration yet (joining) is not removed.
func (n *Node) removedFromCluster() bool {
	cf := n.raft.GetConfiguration()
	if cf.Error() != nil || len(cf.Configuration().Servers) == 0 {
		return false
	}
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) == n.cfg.ID {
			return false
		}
	}
	return true
}

// lagBehind says how the node is behind commit index target, or "" if it
// is not.
func (n *Node) lagBehind(target uint64) string {
	if target == 0 {
		return "has not heard the leader's commit index yet"
	}
	if last := n.raft.LastIndex(); last < target {
		return fmt.Sprintf("its Raft log is %d entries behind the leader's commit index %d", target-last, target)
	}
	applied := n.fsm.applied.Load()
	if applied >= target {
		return ""
	}
	// Entries that are not commands never reach the state machine: it is
	// behind if a command lies between what it applied and the target. A
	// long gap is read as behind rather than scanned.
	if target-applied > 64 {
		return fmt.Sprintf("its state machine is %d entries behind the commit index %d", target-applied, target)
	}
	if last, err := lastCommand(n.fsm.logs, target, applied); err != nil || last > applied {
		return fmt.Sprintf("its state machine has applied through entry %d, not %d", applied, max(last, applied+1))
	}
	return ""
}

// lastCommand returns the index of the last command entry of the Raft log
// at or before i and after floor, or 0 if there is none: the last entry the
// state machine must have applied to hold everything through i (no-ops
// and configuration entries never reach it). An entry no longer in the log
// was compacted into a snapshot, which the state machine holds. If the log
// cannot be read, it returns i (wait for the state machine to pass it) and
// the error.
func lastCommand(logs raft.LogStore, i, floor uint64) (uint64, error) {
	for j := i; j > floor; j-- {
		var l raft.Log
		if err := logs.GetLog(j, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				return 0, nil
			}
			return i, fmt.Errorf("read raft entry %d: %w", j, err)
		}
		if l.Type == raft.LogCommand {
			return j, nil
		}
	}
	return 0, nil
}

// termAt returns the term of the Raft log entry at i, or 0 if the log does
// not hold it.
func termAt(logs raft.LogStore, i uint64) uint64 {
	var l raft.Log
	if err := logs.GetLog(i, &l); err != nil {
		return 0
	}
	return l.Term
}

// watchStoreFaults hands leadership to another node when this one's
// ledger store fails: a leader whose state machine cannot apply would
// stall the cluster's appends.
func (n *Node) watchStoreFaults(ctx context.Context) {
	for {
		select {
		case <-n.fsm.faulted:
			if n.IsLeader() {
				n.log.Warn("ledger store failing; handing leadership to another node")
				if err := n.raft.LeadershipTransfer().Error(); err != nil {
					n.log.Warn("leadership transfer", "err", err)
				}
			}
		case <-ctx.Done():
			return
		}
	}
}

// flushIdle makes the ledger's last appends durable when no new batch
// arrives to do it (see fsm.flushDue).
func (n *Node) flushIdle(ctx context.Context) {
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			if err := n.fsm.flushDue(now); err != nil {
				n.log.Error("flush ledger", "err", err)
			}
		case <-ctx.Done():
			return
		}
	}
}

// recordMembers makes sure the replicated member table has this node's API
// address and those of the configured peers.
func (n *Node) recordMembers() {
	known, err := n.fsm.members()
	if err != nil {
		n.log.Warn("read member table", "err", err)
		return
	}
	want := map[string]string{n.cfg.ID: n.apiAddr}
	for _, p := range n.cfg.Peers {
		if p.APIAddr != "" && p.ID != n.cfg.ID {
			want[p.ID] = p.APIAddr
		}
	}
	for id, addr := range want {
		if known[id] == addr {
			continue
		}
		if err := n.applyMember(n.ctx, id, addr); err != nil {
			n.log.Warn("record member address", "member", id, "err", err)
		}
	}
}

// startLog appends the genesis index root to a new, empty log, so that it
// has a checkpoint before its first entry.
func (n *Node) startLog() {
	if n.fsm.checkpoint().Size > 0 {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	if _, err := n.apply(ctx, encodeGenesis()); err != nil {
		n.log.Warn("start the log", "err", err)
	}
}

func (n *Node) applyMember(ctx context.Context, id, apiAddr string) error {
	data, err := encodeMember(id, apiAddr)
	if err != nil {
		return err
	}
	_, err = n.apply(ctx, data)
	return err
}

// apply proposes a command (not a batch of appends: the batcher does
// those) and waits for the state machine's result, for as long as ctx
// allows. While the state machine cannot write its store it answers at
// once with ErrStoreFault (UNAVAILABLE), rather than hold the caller until
// the disk recovers; a command proposed before the fault may still apply
// then, and each is idempotent, so a retry is safe. An error the state
// machine returns as the result is returned as the error.
func (n *Node) apply(ctx context.Context, data []byte) (any, error) {
	faulted, err := n.fsm.faultSignal()
	if err != nil {
		return nil, err
	}
	f := n.raft.Apply(data, maxWait)
	done := make(chan error, 1)
	go func() { done <- f.Error() }() // ends when Raft resolves f, at the latest at shutdown
	select {
	case err := <-done:
		if err != nil {
			return nil, err
		}
	case <-faulted:
		if _, err := n.fsm.faultSignal(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: it failed while this command waited (and has recovered: retry)", ErrStoreFault)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err, ok := f.Response().(error); ok {
		return nil, err
	}
	return f.Response(), nil
}

// Close stops the node: the API first, then appends in flight, then Raft,
// then the stores. It is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		n.closing.Store(true) // /readyz answers 503 from now on
		if d := n.cfg.DrainDelay; d > 0 && n.http != nil && n.started.Load() {
			n.log.Info("draining before the API closes: /readyz answers 503", "for", d)
			time.Sleep(d)
		}
		if n.cfg.HandOverOnClose {
			n.handOver()
		}
		if n.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := n.http.Shutdown(ctx)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				// Appends that cannot finish (no quorum, say): their
				// connections close, and their callers retry elsewhere.
				n.log.Warn("requests still in flight after 2s; closing their connections")
				err = n.http.Close()
			}
			errs = append(errs, ignoreClosed(err))
		} else if n.listener != nil {
			n.listener.Close()
		}
		n.cancel()
		if n.fsm != nil {
			// A state machine waiting for its disk gives up, so that the
			// appends waiting on it (and their goroutines) finish.
			close(n.fsm.stop)
		}
		n.wg.Wait()
		if n.raft != nil {
			errs = append(errs, n.raft.Shutdown().Error())
		}
		if n.transport != nil {
			errs = append(errs, n.transport.Close())
		}
		if n.raftStore != nil {
			errs = append(errs, n.raftStore.Close())
		}
		if n.fsm != nil {
			errs = append(errs, n.fsm.close())
		}
		n.peers.close()
		n.closeErr = errors.Join(errs...)
		n.log.Info("node stopped")
	})
	return n.closeErr
}

// handOver has a leader hand its leadership to another voter, waiting at
// most a few seconds: the transfer takes an election's time with a voter
// that is up, and fails fast without one.
func (n *Node) handOver() {
	if n.raft == nil || !n.IsLeader() {
		return
	}
	cf := n.raft.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	others := 0
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) != n.cfg.ID && s.Suffrage == raft.Voter {
			others++
		}
	}
	if others == 0 {
		return
	}
	f := n.raft.LeadershipTransfer()
	done := make(chan error, 1)
	go func() { done <- f.Error() }() // ends when Raft resolves f, at the latest at shutdown
	t := time.NewTimer(3 * time.Second)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			n.log.Warn("could not hand leadership over before stopping", "err", err)
			return
		}
		_, id := n.raft.LeaderWithID()
		n.log.Info("handed leadership over before stopping", "to", id)
	case <-t.C:
		n.log.Warn("leadership handover did not finish in 3s; stopping anyway")
	}
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// ID returns the node's Raft ID.
func (n *Node) ID() string { return n.cfg.ID }

// APIAddr returns the address clients reach the node's API at.
func (n *Node) APIAddr() string { return n.apiAddr }

// RaftAddr returns the address peers reach the node's Raft transport at.
func (n *Node) RaftAddr() string { return string(n.transport.LocalAddr()) }

// IsLeader reports whether the node is the Raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Checkpoint returns the node's latest signed checkpoint.
func (n *Node) Checkpoint() Checkpoint { return *n.fsm.checkpoint() }

// leaderAPI returns the API address of the current leader, if known.
func (n *Node) leaderAPI() (id, addr string) {
	id, addr, _ = n.leaderAPIOrErr()
	return id, addr
}

// leaderAPIOrErr is leaderAPI, with the error that kept this node from
// reading its member table (a failing ledger store, say), if any.
func (n *Node) leaderAPIOrErr() (id, addr string, err error) {
	_, lid := n.raft.LeaderWithID()
	if lid == "" {
		return "", "", nil
	}
	if string(lid) == n.cfg.ID {
		return n.cfg.ID, n.apiAddr, nil
	}
	members, err := n.fsm.members()
	if err != nil {
		return string(lid), "", err
	}
	return string(lid), members[string(lid)], nil
}

// newHCLogger sends Raft's logs, warnings and above, to the node's logger,
// at their level and with their fields.
func newHCLogger(l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "raft",
		Level:      hclog.Warn,
		Output:     slogWriter{l},
		JSONFormat: true,
	})
}

// slogWriter reads hclog's JSON lines and logs each with slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	var rec map[string]any
	if err := json.Unmarshal(p, &rec); err != nil {
		w.l.Warn(strings.TrimSpace(string(p)), "component", "raft")
		return len(p), nil
	}
	level := slog.LevelWarn
	switch rec["@level"] {
	case "error":
		level = slog.LevelError
	case "info":
		level = slog.LevelInfo
	case "debug", "trace":
		level = slog.LevelDebug
	}
	msg, _ := rec["@message"].(string)
	attrs := []slog.Attr{slog.String("component", "raft")}
	for k, v := range rec {
		if !strings.HasPrefix(k, "@") {
			attrs = append(attrs, slog.Any(k, v))
		}
	}
	slices.SortFunc(attrs[1:], func(a, b slog.Attr) int { return strings.Compare(a.Key, b.Key) })
	w.l.LogAttrs(context.Background(), level, msg, attrs...)
	return len(p), nil
}

var _ io.Writer = slogWriter{}

// openRaftStore opens the Raft log and stable store (raft-boltdb) at path.
func openRaftStore(path string, noSync bool) (*raftboltdb.BoltStore, error) {
	return raftboltdb.New(raftboltdb.Options{
		Path:   path,
		NoSync: noSync,
		// The freelist is rebuilt on open instead of written on every
		// commit: one page write less per Raft entry.
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType},
	})
}
