package chaos

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/internal/subproc"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/internal/witness/witnesstest"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

var (
	flagDuration = flag.Duration("chaos.duration", 0, "how long to inject faults (default $"+EnvDuration+", else 90s)")
	flagSeed     = flag.String("chaos.seed", "", "seed of the fault plan, to replay a run (default $"+EnvSeed+", else from the clock)")
	flagRate     = flag.Float64("chaos.rate", 0, "appends per second, all clients together (default 100)")
	flagClients  = flag.Int("chaos.clients", 0, "appending clients (default 8)")
	flagDir      = flag.String("chaos.dir", "", "keep the nodes' data and logs in this directory (default $"+EnvDir+", else a temporary one)")
	flagBin      = flag.String("chaos.bin", "", "run this chipledger binary instead of building one (default $"+EnvBin+")")
)

// loadFlags returns the -chaos.rate and -chaos.clients flags given, for the
// replay hint: they have no environment variable.
func loadFlags() string {
	var b strings.Builder
	if *flagRate > 0 {
		fmt.Fprintf(&b, " -chaos.rate=%g", *flagRate)
	}
	if *flagClients > 0 {
		fmt.Fprintf(&b, " -chaos.clients=%d", *flagClients)
	}
	if b.Len() == 0 {
		return ""
	}
	return ", with the flags" + b.String()
}

// config reads the run's Config from the environment, then the flags.
func config(t *testing.T) Config {
	t.Helper()
	cfg, err := ConfigFromEnv(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	if *flagDuration > 0 {
		cfg.Duration = *flagDuration
	}
	if *flagSeed != "" {
		if cfg.Seed, err = strconv.ParseInt(*flagSeed, 10, 64); err != nil {
			t.Fatalf("-chaos.seed %q: want an integer", *flagSeed)
		}
	}
	if *flagRate > 0 {
		cfg.Rate = *flagRate
	}
	if *flagClients > 0 {
		cfg.Clients = *flagClients
	}
	if *flagDir != "" {
		cfg.Dir = *flagDir
	}
	if *flagBin != "" {
		cfg.Bin = *flagBin
	}
	return cfg
}

// Time the run needs besides the faults: building, starting, making the
// entries, finishing the appends, converging and checking (see
// checkTimeout).
const (
	setupTimeout    = time.Minute
	drainTimeout    = 60 * time.Second
	convergeTimeout = 60 * time.Second
)

// checkTimeout bounds the checks, which read the whole log and prove every
// checkpoint seen consistent with the final one: longer runs have more.
func checkTimeout(faults time.Duration) time.Duration { return time.Minute + faults/5 }

// TestClusterSurvivesFaults runs a five-node cluster of `chipledger node`
// processes while clients append and poll checkpoints through a faulty
// network, and nodes are killed and restarted, for -chaos.duration
// ($CHIPLEDGER_CHAOS_DURATION, 90s by default). Then it repairs
// everything, waits for the nodes to converge and checks that the log kept
// every promise: acknowledged appends are in it once at their index,
// refused ones are not, replicas are identical, every checkpoint anyone saw
// is a prefix of the final one and ends on an index root, the index roots
// are those of the chip index, an auditor of every node finds nothing,
// no node served a poller a smaller checkpoint than it served it before (or
// than it had right before it was killed, or than the min_size asked for),
// and no node logged an error it should not have. A run of 90 s or more
// must also have killed nodes, the leader among them, restarted them,
// resent an append that had landed and proven checkpoints consistent. A
// failure prints the seed that replays the plan ($CHIPLEDGER_CHAOS_SEED or
// -chaos.seed).
func TestClusterSurvivesFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster under faults for minutes; skipped with -short")
	}
	r := setUp(t, config(t))
	r.underFaults()
	r.checkObservations()
	final := r.converge()
	r.checkLog(final)
	r.checkWitnessed(final)
	r.audit(final)
	r.checkNodeLogs()
	r.summarise(final)
}

// A run is one run of TestClusterSurvivesFaults.
type run struct {
	t        *testing.T
	cfg      Config
	started  time.Time
	pki      *testpki.PKI
	logKey   string // the verifier key
	verifier *proofs.LogVerifier
	c        *Cluster
	w        *Workload
	clients  []*client.Client
	station  *client.AppendResult

	// The fault phase's records.
	pollers   *Pollers
	snapshots *Snapshots
	faults    map[string]int
	tally     Tally

	// The checks' counts.
	witnesses      *witnesstest.Set
	witnessedSize  uint64
	logReport      LogReport
	lookups        int
	consistency    ConsistencyReport
	acrossRestarts int
	auditReport    *client.AuditReport
	auditState     *client.AuditState
	nodeLogs       map[string]int // allowed ERROR lines, by allow-list entry
}

func (r *run) logf(format string, args ...any) {
	r.t.Helper()
	r.t.Logf("%s: %s", time.Since(r.started).Round(100*time.Millisecond), fmt.Sprintf(format, args...))
}

// setUp builds the binary, writes the log key and the trust bundle, starts
// the cluster, makes the entries and registers the station.
func setUp(t *testing.T, cfg Config) *run {
	t.Logf("seed %d, %s of faults, %d nodes, %d clients at %.0f appends/s", cfg.Seed, cfg.Duration, cfg.Nodes, cfg.Clients, cfg.Rate)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		keep := ""
		if cfg.Dir == "" {
			keep = fmt.Sprintf("; set %s to keep the nodes' logs", EnvDir)
		}
		t.Logf("FAILED with seed %d: replay with %s=%d (or -chaos.seed=%d) and %s=%s%s%s", cfg.Seed, EnvSeed, cfg.Seed, cfg.Seed, EnvDuration, cfg.Duration, loadFlags(), keep)
	})
	need := setupTimeout + cfg.Duration + drainTimeout + convergeTimeout + checkTimeout(cfg.Duration)
	if deadline, ok := t.Deadline(); ok && time.Until(deadline) < need {
		t.Fatalf("the run may need %s and the test has %s: pass -timeout %s", need, time.Until(deadline).Round(time.Second), (need + time.Minute).Round(time.Minute))
	}
	r := &run{t: t, cfg: cfg, started: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()

	dir := t.TempDir()
	if cfg.Dir != "" {
		if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if dir, err = os.MkdirTemp(cfg.Dir, fmt.Sprintf("seed%d-", cfg.Seed)); err != nil {
			t.Fatal(err)
		}
		t.Logf("the nodes' data and logs are in %s", dir)
	}
	bin := cfg.Bin
	if bin == "" {
		var err error
		if bin, err = subproc.Build(ctx, t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	logKeyFile, trustFile := r.writeKeys(dir)
	// Three witnesses, two of which must cosign, run in this process and
	// are reached without the faulty network: the leaders of every term
	// have checkpoints cosigned throughout the faults.
	r.witnesses = witnesstest.Start(t, r.logKey, 3, 2)
	policy := filepath.Join(dir, "witness-policy")
	if err := os.WriteFile(policy, r.witnesses.PolicyText, 0o644); err != nil {
		t.Fatal(err)
	}
	r.startCluster(ClusterOptions{Bin: bin, Dir: dir, Nodes: cfg.Nodes, LogKey: logKeyFile, Trust: trustFile,
		WitnessPolicy: policy, WitnessInterval: 200 * time.Millisecond})

	var err error
	if r.w, err = NewWorkload(r.pki, cfg.Entries()); err != nil {
		t.Fatal(err)
	}
	r.logf("made %d escrow entries", len(r.w.Leaves))
	if _, err := r.c.WaitLeader(ctx); err != nil {
		for _, n := range r.c.Nodes {
			for _, u := range n.Proc.Unexpected() {
				t.Error(u)
			}
		}
		t.Fatalf("no leader: %v", err)
	}
	r.clients = r.newClients()
	if r.station, err = r.clients[0].Append(ctx, r.pki.StationLeaf()); err != nil {
		t.Fatalf("register the station: %v", err)
	}
	r.w.Observe(r.station.Receipt.Checkpoint)
	r.logf("cluster up, station registered at index %d", r.station.Receipt.Index)
	return r
}

// writeKeys makes the PKI and the log key, and writes the files the nodes
// read.
func (r *run) writeKeys(dir string) (logKeyFile, trustFile string) {
	t := r.t
	var err error
	if r.pki, err = testpki.New(); err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := ledger.GenerateLogKey("chaos.chipledger.example/log")
	if err != nil {
		t.Fatal(err)
	}
	if r.verifier, err = proofs.NewLogVerifier(vkey); err != nil {
		t.Fatal(err)
	}
	r.logKey = vkey
	logKeyFile, trustFile = filepath.Join(dir, "log.key"), filepath.Join(dir, "trust.pem")
	if err := os.WriteFile(logKeyFile, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(trustFile, r.pki.Trust.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return logKeyFile, trustFile
}

// startCluster starts the cluster, to be killed when the test ends, with
// the tail of each node's output printed if it failed.
func (r *run) startCluster(o ClusterOptions) {
	t := r.t
	c, err := StartCluster(o)
	t.Cleanup(func() {
		c.Close()
		if !t.Failed() {
			return
		}
		for _, n := range c.Nodes {
			if n.Proc != nil {
				t.Logf("--- last lines of %s's output (%s):\n%s", n.ID, n.Proc.LogPath(), n.Proc.Tail(60))
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		t.Logf("%s: raft %s (proxy %s), api %s (proxy %s)", n.ID, n.RaftAddr, n.RaftProxy, n.APIAddr, n.APIProxy)
	}
	r.c = c
}

// newClients makes the appending clients, each knowing every node through
// the network and starting at another one. Half of them give up soon, and
// send their ambiguous appends again later.
func (r *run) newClients() []*client.Client {
	clients := make([]*client.Client, r.cfg.Clients)
	for i := range clients {
		addrs := r.c.APIProxies()
		addrs = append(addrs[i%len(addrs):], addrs[:i%len(addrs)]...)
		retry := PatientRetry
		if i%2 == 1 {
			retry = ImpatientRetry
		}
		var err error
		if clients[i], err = client.New(client.Options{Addrs: addrs, LogKey: r.logKey, Retry: retry}); err != nil {
			r.t.Fatal(err)
		}
		r.t.Cleanup(func() { clients[i].Close() })
	}
	return clients
}

// underFaults appends and polls while the plan's faults happen, then
// repairs the cluster and lets the appends in flight end.
func (r *run) underFaults() {
	t := r.t
	plan := Plan(r.cfg.Seed, r.cfg.Duration, r.cfg.Nodes)
	r.logf("the plan has %d steps", len(plan))
	stopAppends, stopPolls := make(chan struct{}), make(chan struct{})
	appendsDone := make(chan struct{})
	go func() {
		defer close(appendsDone)
		r.w.Run(r.clients, r.cfg.Rate, stopAppends)
	}()
	r.snapshots = NewSnapshots(r.verifier)
	r.pollers = StartPollers(r.c, r.verifier, r.snapshots, r.cfg.Pollers, stopPolls)
	in := NewInjector(r.c, r.snapshots, func(format string, args ...any) {
		acked, failed := r.w.Progress()
		r.logf("[acked %d, failed %d] %s", acked, failed, fmt.Sprintf(format, args...))
	})
	if err := in.Run(context.Background(), plan, r.cfg.Duration); err != nil {
		t.Error(err)
	}
	r.logf("faults over; repairing")
	if err := in.Finish(); err != nil {
		t.Fatal(err)
	}
	r.faults = in.Counts()
	close(stopAppends)
	select {
	case <-appendsDone:
	case <-time.After(drainTimeout):
		t.Fatalf("the appends in flight did not end within %s", drainTimeout)
	}
	close(stopPolls)
	r.pollers.Wait()
	r.tally = r.w.Tally()
	r.logf("appends done: %s", r.tally)
}

// converge waits until every node serves one checkpoint, holding every
// acknowledged append, and checks that no node process died by itself.
func (r *run) converge() Converged {
	t := r.t
	ctx, cancel := context.WithTimeout(context.Background(), convergeTimeout)
	defer cancel()
	minSize := r.station.Receipt.Index + 1
	for _, a := range r.w.Attempts() {
		if a.Outcome == Acked {
			minSize = max(minSize, a.Index+1)
		}
	}
	final, err := r.c.Converge(ctx, minSize, time.Second, r.verifier)
	if err != nil {
		t.Fatal(err)
	}
	r.logf("all %d nodes serve checkpoint size %d", len(r.c.Nodes), final.Checkpoint.Size)
	for _, n := range r.c.Nodes {
		for _, u := range n.Proc.Unexpected() {
			t.Errorf("node process exited unexpectedly: %s", u)
		}
	}
	return final
}

// checkWitnessed checks that the leaders went on having checkpoints
// cosigned through the faults: every node serves the final checkpoint with
// the cosignatures of the policy's quorum, and every witness holds exactly
// the final tree, so none was ever shown another history that it took.
func (r *run) checkWitnessed(final Converged) {
	t := r.t
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout(0))
	defer cancel()
	for _, n := range r.c.Nodes {
		resp, err := n.Ledger().GetCheckpoint(ctx, connect.NewRequest(&v1.GetCheckpointRequest{Witnessed: true, MinSize: final.Checkpoint.Size}))
		if err != nil {
			t.Errorf("%s: the witnessed checkpoint of the final size %d: %v", n.ID, final.Checkpoint.Size, err)
			continue
		}
		cp, err := r.verifier.VerifyWitnessedCheckpoint(resp.Msg.GetCheckpoint(), r.witnesses.Policy)
		if err != nil {
			t.Errorf("%s: witnessed checkpoint: %v", n.ID, err)
			continue
		}
		if cp != final.Checkpoint {
			t.Errorf("%s: witnessed checkpoint %+v, the final one is %+v", n.ID, cp, final.Checkpoint)
		}
	}
	for i, w := range r.witnesses.Witnesses {
		size, root, ok := w.Latest(final.Checkpoint.Origin)
		if !ok || size > final.Checkpoint.Size || (size == final.Checkpoint.Size && root != final.Checkpoint.Hash) {
			t.Errorf("witness %d holds size %d root %x (ok %v); the final tree has %d leaves, root %x", i, size, root, ok, final.Checkpoint.Size, final.Checkpoint.Hash)
			continue
		}
		if size == final.Checkpoint.Size {
			continue
		}
		// A witness that missed the last rounds must hold a prefix of
		// the final tree.
		resp, err := r.c.Nodes[0].Ledger().GetConsistencyProof(ctx, connect.NewRequest(&v1.GetConsistencyProofRequest{Size1: size, Size2: final.Checkpoint.Size}))
		if err != nil {
			t.Errorf("consistency proof from witness %d's size %d: %v", i, size, err)
			continue
		}
		var proof [][32]byte
		for _, h := range resp.Msg.GetConsistencyProof() {
			if len(h) != 32 {
				t.Fatalf("a consistency proof hash of %d bytes", len(h))
			}
			proof = append(proof, [32]byte(h))
		}
		if err := proofs.VerifyConsistency(size, final.Checkpoint.Size, proof, root, final.Checkpoint.Hash); err != nil {
			t.Errorf("witness %d holds a tree of size %d that is not a prefix of the final one: %v", i, size, err)
		}
	}
	r.witnessedSize = final.Checkpoint.Size
	r.logf("every node serves the final checkpoint cosigned by the witnesses")
}

// checkLog checks the final log against the appends' outcomes, and every
// checkpoint the clients and pollers saw against it.
func (r *run) checkLog(final Converged) {
	t := r.t
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout(r.cfg.Duration))
	defer cancel()
	checker, err := client.New(client.Options{Addrs: r.c.APIAddrs(), LogKey: r.logKey, Trusted: final.Signed})
	if err != nil {
		t.Fatal(err)
	}
	defer checker.Close()
	leaves, err := checker.Entries(ctx, 0, final.Checkpoint.Size)
	if err != nil {
		t.Fatalf("read the log: %v", err)
	}
	var findings *Findings
	r.logReport, findings = CheckLog(leaves, r.w, r.pki.StationLeaf(), r.station.Receipt.Index)
	report(t, "log", findings)

	inLog := chipsInLog(leaves)
	r.lookups, findings = CheckLookups(ctx, checker, r.w, lookupSample(r.cfg.Seed, r.w), func(i int) []uint64 { return inLog[string(r.w.Chips[i])] })
	report(t, "chip lookups", findings)

	r.consistency, findings = CheckConsistency(ctx, r.directNodes(), r.verifier, final.Checkpoint, r.observed())
	report(t, "checkpoint consistency", findings)
	report(t, "checkpoint sizes", CheckSizes(leaves, r.consistency.SizeList))
}

// audit runs one round of the auditor (client.Auditor, as `chipledger
// audit` drives it) over every node, directly, from a fresh state: it
// proves the nodes' checkpoints consistent, re-validates every entry with
// the manufacturer roots and replays the chip index against the index
// roots. Its findings fail the test, and so does an audit that does not
// reach the final checkpoint.
func (r *run) audit(final Converged) {
	t := r.t
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout(r.cfg.Duration))
	defer cancel()
	state, err := client.NewAuditState(r.logKey, r.pki.Trust)
	if err != nil {
		t.Fatal(err)
	}
	a, err := client.NewAuditor(client.AuditOptions{Addrs: r.c.APIAddrs(), State: state})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	rep, err := a.Audit(ctx)
	r.auditReport, r.auditState = rep, state
	if err != nil {
		t.Errorf("the audit could not run: %v", err)
		return
	}
	const most = 10
	for i, f := range state.Findings() {
		if i < most {
			t.Errorf("audit finding: %s at %s (index %v): %s", f.Kind, f.Node, indexOf(f.Index), f.Message)
		}
	}
	if n := state.FindingCount(); n > most {
		t.Errorf("… %d audit findings in all", n)
	}
	if cp, _ := state.Checkpoint(); cp.Size != final.Checkpoint.Size || state.Audited() != final.Checkpoint.Size {
		t.Errorf("the audit reached checkpoint size %d and audited %d leaves; the nodes converged on %d", cp.Size, state.Audited(), final.Checkpoint.Size)
	}
}

func indexOf(p *uint64) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatUint(*p, 10)
}

// checkObservations fails the test for what clients and pollers saw go
// wrong during the run: answers the client SDK refused (forks, rollbacks,
// bad proofs), errors that are neither a verdict on the entry nor a
// transient failure (see noVerdict), read-backs without the acknowledged
// entry, checkpoints that do not verify, answers below the min_size asked
// for, and regressions.
func (r *run) checkObservations() {
	t := r.t
	const most = 10
	refused := 0
	for _, a := range r.w.Attempts() {
		if a.Verification {
			if refused++; refused <= most {
				t.Errorf("the client SDK refused a node's answer: %v", a.Err)
			}
		}
	}
	for _, a := range r.w.ExtraAttempts() {
		if a.Verification {
			if refused++; refused <= most {
				t.Errorf("the client SDK refused a node's answer: %v", a.Err)
			}
		}
	}
	if refused > most {
		t.Errorf("… %d answers refused in all", refused)
	}
	unexpected := 0
	for _, a := range append(r.w.Attempts(), r.w.ExtraAttempts()...) {
		if a.Unexpected != nil {
			if unexpected++; unexpected <= most {
				t.Errorf("an append failed with an error that is neither a verdict nor a transient failure: %v", a.Unexpected)
			}
		}
	}
	if unexpected > most {
		t.Errorf("… %d appends failed so in all", unexpected)
	}
	reads := r.w.Reads()
	for i, err := range append(reads.Wrong, reads.Unexpected...) {
		if i < most {
			t.Error(err)
		}
	}
	bad := r.pollers.Bad()
	for i, err := range bad {
		if i < most {
			t.Error(err)
		}
	}
	if len(bad) > most {
		t.Errorf("… %d bad poll answers in all", len(bad))
	}
	r.checkRegressions()
}

// observed returns every signed checkpoint a client or poller verified.
func (r *run) observed() [][]byte {
	observed := append(r.w.Checkpoints(), r.pollers.Checkpoints()...)
	for _, c := range r.clients {
		if _, signed := c.Trusted(); signed != nil {
			observed = append(observed, signed)
		}
	}
	return observed
}

func (r *run) directNodes() []chipledgerv1connect.LedgerServiceClient {
	var nodes []chipledgerv1connect.LedgerServiceClient
	for _, n := range r.c.Nodes {
		nodes = append(nodes, n.Ledger())
	}
	return nodes
}

// checkRegressions fails the test for every node that served a poller a
// smaller checkpoint than it served it before, in the same run of the node
// or across a restart (a restarted node serves no reads until it has
// caught up with what it served before it was killed).
func (r *run) checkRegressions() {
	for _, reg := range r.pollers.Regressions() {
		r.t.Errorf("checkpoint regression: %s", reg)
		if reg.AcrossRestart {
			r.acrossRestarts++
		}
	}
}

// summarise prints the run's counts.
func (r *run) summarise(final Converged) {
	t := r.t
	reads := r.w.Reads()
	ps := r.pollers.Stats()
	refused, dropped := r.c.Net.Stats()
	lr, x := r.logReport, r.logReport.Extras
	t.Logf("RESULT seed=%d duration=%s elapsed=%s", r.cfg.Seed, r.cfg.Duration, time.Since(r.started).Round(100*time.Millisecond))
	t.Logf("RESULT appends: %s", r.tally)
	t.Logf("RESULT exactly-once: %d (duplicates %d + resent and already in the log %d)", r.tally.ExactlyOnce(), r.tally.Duplicates, r.tally.ResentLanded)
	t.Logf("RESULT extras: %d conflicting pairs (first landed %d, rival landed %d, neither %d); %d concurrent copies (both acked %d); %d epoch-2 entries (%d in the log)",
		x.Conflicts, x.FirstLanded, x.RivalLanded, x.NeitherLanded, x.Copies, x.CopiesBothAcked, x.NextEpochs, x.NextEpochsLanded)
	t.Logf("RESULT read-backs: %d ok, %d wrong, %d unexpected errors, %d unavailable", reads.OK, len(reads.Wrong), len(reads.Unexpected), reads.Unavailable)
	t.Logf("RESULT faults: %s; the network refused %d connections and closed %d", FormatCounts(r.faults), refused, dropped)
	t.Logf("RESULT checkpoints: %d observed, %d sizes, %d proven prefixes of the final tree", r.consistency.Observed, r.consistency.Sizes, r.consistency.Proven)
	t.Logf("RESULT polls: %d (%d failed without a verdict); %d with min_size (%d answered); %d kill snapshots; %d answers of restarted nodes compared with earlier runs, %d smaller",
		ps.Polls, ps.Failed, ps.MinSize, ps.MinSizeAnswered, r.snapshots.Taken(), ps.AfterRestart, r.acrossRestarts)
	t.Logf("RESULT final log: size %d: %d escrow entries, %d station, %d index roots; %d chip lookups; %d appends ambiguous at the end, %d of them in the log",
		final.Checkpoint.Size, lr.Escrow, lr.Stations, lr.IndexRoots, r.lookups, r.tally.Ambiguous, lr.AmbiguousLanded)
	if s := r.auditState; s != nil {
		var nodes []string
		if r.auditReport != nil {
			for _, n := range r.auditReport.Nodes {
				nodes = append(nodes, fmt.Sprintf("%s %s", n.Node, n.Status))
			}
		}
		t.Logf("RESULT audit: %d leaves audited, %d index roots checked, %d findings; nodes: %s", s.Audited(), s.IndexRoots(), s.FindingCount(), strings.Join(nodes, ", "))
	}
	t.Logf("RESULT witnesses: every node serves the final checkpoint (size %d) cosigned by the quorum", r.witnessedSize)
	t.Logf("RESULT node logs: allowed ERROR lines: %s", FormatCounts(r.nodeLogs))
	if r.tally.Acked == 0 {
		t.Error("no append was acknowledged: the run checked nothing")
	}
	if reads.OK == 0 {
		t.Error("no read-back succeeded: the run checked no read")
	}
	if r.cfg.Duration >= DefaultDuration {
		r.requireExercised()
	}
}

// requireExercised fails a run of DefaultDuration or more in which the
// faults did not do what a run is for: nodes killed, the leader among
// them, and restarted; an append resent or retried after it had landed;
// checkpoints proven consistent with the final one.
func (r *run) requireExercised() {
	t := r.t
	for _, kind := range []string{"kill", "kill:leader", "restart"} {
		if r.faults[kind] == 0 {
			t.Errorf("the run of %s carried out no %s step: the faults did not exercise the cluster (%s)", r.cfg.Duration, kind, FormatCounts(r.faults))
		}
	}
	if r.tally.ExactlyOnce() == 0 {
		t.Errorf("the run of %s never took the exactly-once path: no append was recognised as already in the log (%s)", r.cfg.Duration, r.tally)
	}
	if r.consistency.Proven == 0 {
		t.Errorf("the run of %s proved no observed checkpoint a prefix of the final one", r.cfg.Duration)
	}
}

// report fails the test with findings, if any.
func report(t *testing.T, what string, f *Findings) {
	t.Helper()
	if f.Total() == 0 {
		return
	}
	var b strings.Builder
	for _, err := range f.Errs() {
		fmt.Fprintf(&b, "\n  %v", err)
	}
	if f.Total() > len(f.Errs()) {
		fmt.Fprintf(&b, "\n  … and %d more", f.Total()-len(f.Errs()))
	}
	t.Errorf("%s: %d findings:%s", what, f.Total(), b.String())
}

// chipsInLog returns the indexes of each chip's escrow entries among
// leaves, in log order.
func chipsInLog(leaves [][]byte) map[string][]uint64 {
	in := make(map[string][]uint64)
	for i, leaf := range leaves {
		if kind, _ := ledger.PeekKind(leaf); kind == ledger.KindEscrow {
			if chip, _, err := ledger.PeekEscrow(leaf); err == nil {
				in[string(chip)] = append(in[string(chip)], uint64(i))
			}
		}
	}
	return in
}

// lookupSample picks the chips to look up: every ambiguous or refused
// append, every chip with an extra, up to 300 other acknowledged ones and
// 20 unsent ones, drawn from seed.
func lookupSample(seed int64, w *Workload) []int {
	var acked, unsent, sample []int
	for i, a := range w.Attempts() {
		if _, ok := w.ExtraOf(i); ok && a.Outcome != Unsent {
			sample = append(sample, i)
			continue
		}
		switch a.Outcome {
		case Acked:
			acked = append(acked, i)
		case Unsent:
			unsent = append(unsent, i)
		default:
			sample = append(sample, i)
		}
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	rng.Shuffle(len(acked), func(i, j int) { acked[i], acked[j] = acked[j], acked[i] })
	sample = append(sample, acked[:min(len(acked), 300)]...)
	sample = append(sample, unsent[:min(len(unsent), 20)]...)
	slices.Sort(sample)
	return sample
}

// checkNodeLogs fails the test for every ERROR line of a node's output
// that allowedErrors does not expect under the faults, and for panics.
func (r *run) checkNodeLogs() {
	const most = 10
	r.nodeLogs = make(map[string]int)
	for _, n := range r.c.Nodes {
		bad := ScanNodeLog(n.Proc.Output(), r.nodeLogs)
		for i, line := range bad {
			if i < most {
				r.t.Errorf("%s logged an unexpected error (%s): %s", n.ID, n.Proc.LogPath(), line)
			}
		}
		if len(bad) > most {
			r.t.Errorf("… %s logged %d unexpected errors in all", n.ID, len(bad))
		}
	}
}
