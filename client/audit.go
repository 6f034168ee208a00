package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// AuditOptions configure an Auditor. Addrs and State are required.
type AuditOptions struct {
	// Addrs are the nodes' API addresses, as for Options.Addrs. Each node
	// is audited separately: its checkpoint is verified and proven
	// consistent with every other node's and with the audited one.
	Addrs []string

	// State is what the auditor knows from earlier runs (NewAuditState for
	// a first run, ParseAuditState to resume). It pins the log's verifier
	// key and the auditor's manufacturer roots. The Auditor updates it.
	State *AuditState

	// HTTPClient, Logger: as in Options.
	HTTPClient *http.Client
	Logger     *slog.Logger

	// Retry bounds the retries of each call to a node before the auditor
	// gives up on that node for the round; the zero value is
	// DefaultAuditRetryPolicy.
	Retry RetryPolicy

	// Workers is how many goroutines re-validate entries; 0 means
	// GOMAXPROCS.
	Workers int

	// Save, if set, stores the state: during a scan every SaveEvery
	// entries (but taking at most about 5% of the time, for large states),
	// after a round that found something, and at the end of Audit (Follow
	// saves at least every SaveInterval, and when it ends). A killed
	// auditor resumes from the last save. An error stops Audit; in Follow
	// it is the round's error, which fn sees and may return to stop.
	Save func(*AuditState) error
	// SaveEvery is the number of entries between saves during a scan;
	// 0 means 10,000.
	SaveEvery uint64
	// SaveInterval is the longest Follow goes without saving new
	// progress; 0 means 30 seconds.
	SaveInterval time.Duration

	// Progress, if set, is called as a scan starts and after each batch of
	// entries re-validated, from the goroutine running Audit.
	Progress func(AuditProgress)

	// Witnesses, if set, is the log's witness policy (as in
	// Options.Witnesses): each round then also asks every node for its
	// latest witnessed checkpoint, checks its cosignatures against the
	// policy, and proves it consistent with the audited checkpoint and
	// every other one seen, like the nodes' own. So the history the
	// witnesses cosigned, which clients with the policy rely on, is the
	// history this auditor re-validates; a witnessed checkpoint that is
	// not is a fork finding, one without the quorum's cosignatures a
	// bad-checkpoint finding.
	Witnesses *proofs.WitnessPolicy
}

// DefaultAuditRetryPolicy gives a node a few seconds to answer each call:
// an auditor asks every node, and moves on from one that is down.
var DefaultAuditRetryPolicy = RetryPolicy{
	MaxAttempts:    3,
	MaxElapsed:     5 * time.Second,
	AttemptTimeout: 12 * time.Second,
	InitialBackoff: 100 * time.Millisecond,
	MaxBackoff:     time.Second,
}

// AuditProgress is how far a scan has come.
type AuditProgress struct {
	Start   uint64 // leaves audited when the scan started
	Audited uint64 // leaves audited now
	Target  uint64 // the size of the checkpoint the scan audits up to
}

// auditChunk is how many entries one proven fetch returns: the range is
// proven with one inclusion and one consistency proof.
const auditChunk = 5000

// An Auditor audits a log for third parties who trust neither its nodes
// nor its operator (DESIGN.md §1): each round it fetches the checkpoint of
// every node, verifies each with the pinned key, proves every pair of them
// (and the last audited one) consistent, and re-validates every entry it
// has not audited yet, in order, up to the largest checkpoint that extends
// the audited one, with its own manufacturer roots (AuditState.Check). As
// it goes, it replays the chip index and checks every index-root leaf
// against it, and it checks that every checkpoint on the audited log ends
// with an index root.
// What it finds wrong is a Finding, recorded in the state, never an error:
// errors are reserved for an audit that could not run (no node answers, a
// save fails, the context ends).
//
// An Auditor is not safe for concurrent use.
type Auditor struct {
	o       AuditOptions
	state   *AuditState
	nodes   []*Client // one per address, as in o.Addrs
	http    *http.Client
	ownHTTP bool
	log     *slog.Logger
	saver   saver
}

// NewAuditor returns an auditor of the nodes at o.Addrs. It makes no
// request.
func NewAuditor(o AuditOptions) (*Auditor, error) {
	if len(o.Addrs) == 0 {
		return nil, errors.New("client: audit: no node addresses")
	}
	if o.State == nil {
		return nil, errors.New("client: audit: no state (use NewAuditState for a first audit)")
	}
	if o.Retry == (RetryPolicy{}) {
		o.Retry = DefaultAuditRetryPolicy
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	a := &Auditor{o: o, state: o.State, http: o.HTTPClient, log: o.Logger}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.http == nil {
		a.http, a.ownHTTP = defaultHTTPClient(), true
	}
	a.saver = saver{save: o.Save, every: o.SaveEvery, interval: o.SaveInterval}
	if a.saver.every == 0 {
		a.saver.every = 10_000
	}
	if a.saver.interval == 0 {
		a.saver.interval = 30 * time.Second
	}
	a.saver.mark(a.state)
	for _, addr := range o.Addrs {
		c, err := a.client(addr, nil)
		if err != nil {
			a.Close()
			return nil, err
		}
		a.nodes = append(a.nodes, c)
	}
	return a, nil
}

// client returns a client of one node, trusting trusted.
func (a *Auditor) client(addr string, trusted []byte) (*Client, error) {
	return New(Options{Addrs: []string{addr}, LogKey: a.state.logKey, Trusted: trusted,
		HTTPClient: a.http, Logger: a.log, Retry: a.o.Retry})
}

// State returns the auditor's state. It changes while Audit or Follow
// runs.
func (a *Auditor) State() *AuditState { return a.state }

// Close ends the calls in flight and closes the connections the auditor
// opened.
func (a *Auditor) Close() error {
	for _, c := range a.nodes {
		c.Close()
	}
	if a.ownHTTP {
		a.http.CloseIdleConnections()
	}
	return nil
}

// A NodeStatus is how a node's checkpoint relates to the audited one.
type NodeStatus string

// The node statuses.
const (
	NodeOK            NodeStatus = "ok"             // it serves the audited checkpoint
	NodeLagging       NodeStatus = "lagging"        // a proven prefix of the audited checkpoint
	NodeAhead         NodeStatus = "ahead"          // proven to extend the audited checkpoint
	NodeInconsistent  NodeStatus = "inconsistent"   // a fork or rollback finding names it
	NodeUnproven      NodeStatus = "unproven"       // no node could prove how it relates
	NodeUnreachable   NodeStatus = "unreachable"    // it did not answer
	NodeBadCheckpoint NodeStatus = "bad-checkpoint" // its checkpoint does not verify
)

// A NodeView is what one node showed in an audit round.
type NodeView struct {
	Node       string
	Status     NodeStatus
	Checkpoint proofs.Checkpoint // verified; zero if none
	Note       []byte            // the signed note it served
	Err        error             // why it is unreachable or unproven
}

// An AuditReport is the result of one audit round.
type AuditReport struct {
	Nodes []NodeView
	// Checkpoint and Note are the audited checkpoint after the round.
	Checkpoint proofs.Checkpoint
	Note       []byte
	// From and To delimit the leaves re-validated in this round, [From, To).
	From, To uint64
	// Findings are the new findings of this round (the state holds all),
	// at most MaxAuditFindings of them: FindingsOmitted counts the others,
	// so that a log full of bad entries cannot grow a round's report
	// without bound.
	Findings        []Finding
	FindingsOmitted int
	// Witnessed, with AuditOptions.Witnesses, is the largest witnessed
	// checkpoint a node served in the round that is proven consistent with
	// the audited one; zero if none.
	Witnessed proofs.Checkpoint
	// Elapsed is the time of the round, Scan that of re-validating the
	// leaves.
	Elapsed, Scan time.Duration
}

// Rate returns the leaves re-validated per second in the round's scan.
func (r *AuditReport) Rate() float64 {
	if r.Scan <= 0 {
		return 0
	}
	return float64(r.To-r.From) / r.Scan.Seconds()
}

// Audit runs one audit round (see Auditor) and saves the state. If ctx
// ends during the scan, it saves what was audited and returns the report
// so far with ctx's error; a later Audit continues from there. If the save
// fails, its error is returned too, joined to the round's.
func (a *Auditor) Audit(ctx context.Context) (*AuditReport, error) {
	r, err := a.round(ctx)
	if serr := a.saver.force(a.state); serr != nil {
		err = errors.Join(err, serr)
	}
	return r, err
}

// Follow audits the log as it grows, until ctx ends: a round at once, then
// one each time a node streams a new checkpoint (WatchCheckpoints), and at
// least every interval. fn sees the report or error of each round; a round
// that fails (no node answers) is retried at the next one. Follow returns
// ctx's error, or fn's, after saving the state.
func (a *Auditor) Follow(ctx context.Context, interval time.Duration, fn func(*AuditReport, error) error) error {
	if interval <= 0 {
		interval = time.Minute
	}
	wake := make(chan struct{}, 1)
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { a.watch(wctx, interval, wake) })
	defer func() { stop(); wg.Wait() }()
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		r, err := a.round(ctx)
		if ctx.Err() != nil {
			return errors.Join(context.Cause(ctx), a.saver.force(a.state))
		}
		if err == nil {
			err = a.saver.afterRound(a.state, len(r.Findings) > 0)
		}
		if ferr := fn(r, err); ferr != nil {
			return errors.Join(ferr, a.saver.force(a.state))
		}
		timer.Reset(interval)
		select {
		case <-ctx.Done():
			return errors.Join(context.Cause(ctx), a.saver.force(a.state))
		case <-wake:
		case <-timer.C:
		}
	}
}

// watch signals wake when any node streams a new checkpoint. It trusts
// nothing of its own: the rounds it starts do the checking.
func (a *Auditor) watch(ctx context.Context, pause time.Duration, wake chan<- struct{}) {
	signal := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	for ctx.Err() == nil {
		c, err := New(Options{Addrs: a.o.Addrs, LogKey: a.state.logKey, HTTPClient: a.http, Logger: a.log, Retry: a.o.Retry})
		if err != nil {
			return
		}
		err = c.WatchCheckpoints(ctx, func(proofs.Checkpoint, []byte) error { signal(); return nil })
		c.Close()
		if ctx.Err() != nil {
			return
		}
		// A watch that fails verification (a fork, say) is for a round to
		// record; one the nodes do not serve leaves the polling.
		a.log.Debug("checkpoint watch ended; polling", "err", err)
		signal()
		if sleep(ctx, pause) != nil {
			return
		}
	}
}

// round runs one audit round, without the final save.
func (a *Auditor) round(ctx context.Context) (*AuditReport, error) {
	began := time.Now()
	r := &AuditReport{}
	seen, witnessed := a.gather(ctx)
	if err := context.Cause(ctx); err != nil {
		return r, err
	}
	rel := a.relate(ctx, seen, witnessed, r)
	r.Nodes = rel.nodes
	r.Witnessed = rel.witnessed
	if rel.target != nil {
		if err := a.state.Extend(rel.target.note, rel.toTarget); err != nil {
			return r, fmt.Errorf("client: audit: %w", err) // cannot happen: the proof was verified
		}
	}
	r.Checkpoint, r.Note = a.state.Checkpoint()
	r.From, r.To = a.state.Audited(), a.state.Audited()
	if rel.reachable == 0 {
		return r, fmt.Errorf("client: audit: no node answered: %w", rel.lastErr)
	}
	scanStart := time.Now()
	err := a.scan(ctx, r, rel.servers)
	r.To, r.Scan = a.state.Audited(), time.Since(scanStart)
	a.checkIndexRoots(rel, r)
	r.Elapsed = time.Since(began)
	return r, err
}

// checkIndexRoots checks that every checkpoint seen in the round that is
// on the audited log (the audited one, and those proven consistent with it)
// and whose leaves are audited ends with an index root covering the
// leaves before it: the log signs no other sizes (DESIGN.md §3.7). A
// checkpoint beyond the audited leaves is checked in the round whose scan
// reaches it.
func (a *Auditor) checkIndexRoots(rel *relations, r *AuditReport) {
	audited := -1
	switch {
	case rel.target != nil:
		audited = slices.Index(rel.views, rel.target)
	case a.state.note != nil && len(rel.views) > 0 && rel.views[0].audited:
		audited = 0
	}
	if audited < 0 {
		return
	}
	for k, v := range rel.views {
		if k != audited && rel.rel(k, audited) != consistent {
			continue
		}
		if f, bad := a.state.checkpointFinding(v.note, v.cp.Size, a.servedBy(v)); bad {
			a.found(r, f)
		}
	}
}

// A nodeCheckpoint is the checkpoint one node served.
type nodeCheckpoint struct {
	note []byte
	cp   proofs.Checkpoint
	err  error // fetching it failed
	bad  error // it does not verify
}

// gather fetches and verifies every node's checkpoint, concurrently. If no
// node shows a tree as large as the audited one, it asks each again for
// that size (a node waits a bounded time for it), so a node that has
// committed but not yet applied it is not taken for one that lost it.
//
// With a witness policy it also fetches every node's witnessed checkpoint
// (see fetchWitnessed).
func (a *Auditor) gather(ctx context.Context) (out, witnessed []nodeCheckpoint) {
	out = make([]nodeCheckpoint, len(a.nodes))
	var wg sync.WaitGroup
	if a.o.Witnesses != nil {
		witnessed = make([]nodeCheckpoint, len(a.nodes))
		wg.Go(func() { a.fetchWitnessed(ctx, witnessed) })
	}
	defer wg.Wait()
	a.fetchCheckpoints(ctx, out, 0, func(int) bool { return true })
	audited := a.state.cp.Size
	if a.state.note == nil || slices.ContainsFunc(out, func(n nodeCheckpoint) bool { return n.verified() && n.cp.Size >= audited }) {
		return out, witnessed
	}
	again := make([]nodeCheckpoint, len(a.nodes))
	a.fetchCheckpoints(ctx, again, audited, func(i int) bool { return out[i].verified() })
	for i, n := range again {
		if n.verified() && n.cp.Size >= audited {
			out[i] = n
		}
	}
	return out, witnessed
}

// fetchWitnessed fetches every node's latest witnessed checkpoint into out,
// concurrently, and verifies it: the log's signature and the policy's
// quorum of cosignatures.
func (a *Auditor) fetchWitnessed(ctx context.Context, out []nodeCheckpoint) {
	var wg sync.WaitGroup
	for i, c := range a.nodes {
		wg.Go(func() {
			n := &out[i]
			err := c.do(ctx, "get witnessed checkpoint", toAny, func(ctx context.Context, ep *endpoint) error {
				resp, err := ep.api.GetCheckpoint(ctx, connect.NewRequest(&v1.GetCheckpointRequest{Witnessed: true}))
				if err == nil {
					n.note = resp.Msg.GetCheckpoint()
				}
				return err
			})
			if n.err = err; err == nil {
				n.cp, n.bad = a.state.verifier.VerifyWitnessedCheckpoint(n.note, a.o.Witnesses)
			}
		})
	}
	wg.Wait()
}

func (n nodeCheckpoint) verified() bool { return n.err == nil && n.bad == nil }

// fetchCheckpoints fetches the checkpoints of the nodes ask selects into
// out, with at least minSize leaves.
func (a *Auditor) fetchCheckpoints(ctx context.Context, out []nodeCheckpoint, minSize uint64, ask func(int) bool) {
	var wg sync.WaitGroup
	for i, c := range a.nodes {
		if !ask(i) {
			continue
		}
		wg.Go(func() {
			n := &out[i]
			if n.note, n.err = c.rawCheckpoint(ctx, minSize); n.err == nil {
				n.cp, n.bad = a.state.verifier.VerifyCheckpoint(n.note)
			}
		})
	}
	wg.Wait()
}

// rawCheckpoint returns the node's signed checkpoint, unverified.
func (c *Client) rawCheckpoint(ctx context.Context, minSize uint64) ([]byte, error) {
	var signed []byte
	err := c.do(ctx, "get checkpoint", toAny, func(ctx context.Context, ep *endpoint) (err error) {
		signed, err = ep.checkpoint(ctx, minSize)
		return err
	})
	return signed, err
}

// rawConsistency returns the node's consistency proof from size1 to size2,
// unverified.
func (c *Client) rawConsistency(ctx context.Context, size1, size2 uint64) ([][32]byte, error) {
	var proof [][32]byte
	err := c.do(ctx, "get consistency proof", toAny, func(ctx context.Context, ep *endpoint) (err error) {
		proof, err = ep.consistencyProof(ctx, size1, size2)
		return err
	})
	return proof, err
}

// A view is a distinct checkpoint (size and root) seen in a round, and who
// showed it: nodes, and the state if it is the audited one.
type view struct {
	cp   proofs.Checkpoint
	note []byte
	// nodes served it as their latest checkpoint: they hold its tree and
	// are asked for its proofs.
	nodes   []int
	audited bool
	// witnessedBy served it as their witnessed checkpoint, with the
	// policy's quorum of cosignatures. That shows nothing about the trees
	// they hold (a cosigned note is public, any node can serve it), so
	// they count neither as provers of it nor as nodes that show it.
	witnessedBy []int
}

// witnessed reports whether a node served v cosigned by the witnesses.
func (v *view) witnessed() bool { return len(v.witnessedBy) > 0 }

// name says who showed v, for messages.
func (a *Auditor) name(v *view) string {
	var who []string
	if v.audited {
		who = append(who, "the audited checkpoint")
	}
	for _, i := range v.nodes {
		who = append(who, a.o.Addrs[i])
	}
	for _, i := range v.witnessedBy {
		who = append(who, "cosigned by the witnesses as served by "+a.o.Addrs[i])
	}
	return fmt.Sprintf("size %d (%s)", v.cp.Size, strings.Join(who, ", "))
}

// A relation is what the auditor proved about two views.
type relation int

const (
	unproven relation = iota
	consistent
	inconsistent
)

// relations is the outcome of relating a round's checkpoints.
type relations struct {
	views     []*view
	nodeView  []int // each node's view, or -1
	pair      map[[2]int]relation
	proof     map[[2]int][][32]byte // a verified proof from the smaller to the larger
	target    *view                 // the checkpoint to audit up to, if it moves the state
	toTarget  [][32]byte            // the proof from the audited checkpoint to target
	servers   []int                 // nodes that can serve target's leaves
	nodes     []NodeView
	witnessed proofs.Checkpoint // the largest witnessed view consistent with the audited one
	reachable int
	lastErr   error
}

func (rel *relations) rel(i, j int) relation {
	if i == j {
		return consistent
	}
	return rel.pair[[2]int{min(i, j), max(i, j)}]
}

// relate proves every pair of distinct checkpoints seen consistent, records
// the findings, chooses the checkpoint to audit up to and the nodes that
// can serve it.
//
// Witnessed checkpoints (one per node, or none) are views like the nodes'
// latest ones: proven consistent with every other, or a fork.
func (a *Auditor) relate(ctx context.Context, seen, witnessed []nodeCheckpoint, r *AuditReport) *relations {
	rel := &relations{pair: make(map[[2]int]relation), proof: make(map[[2]int][][32]byte)}
	if a.state.note != nil {
		rel.views = append(rel.views, &view{cp: a.state.cp, note: a.state.note, audited: true})
	}
	for i, n := range seen {
		rel.nodeView = append(rel.nodeView, -1)
		switch {
		case n.err != nil:
			rel.lastErr = n.err
			continue
		case n.bad != nil:
			a.found(r, Finding{Kind: FindingBadCheckpoint, Node: a.o.Addrs[i], Checkpoint: string(n.note),
				Message: fmt.Sprintf("the checkpoint does not verify with the log key: %v", n.bad)})
		default:
			rel.nodeView[i] = rel.addView(n, i, false)
		}
		rel.reachable++
	}
	for i, w := range witnessed {
		switch {
		case w.err != nil:
			// No policy on the node, or nothing witnessed yet: nothing
			// to check.
			a.log.Debug("no witnessed checkpoint", "node", a.o.Addrs[i], "err", w.err)
		case w.bad != nil:
			a.found(r, Finding{Kind: FindingBadCheckpoint, Node: a.o.Addrs[i], Checkpoint: string(w.note),
				Message: fmt.Sprintf("the witnessed checkpoint does not verify with the log key and the witness policy: %v", w.bad)})
		default:
			rel.addView(w, i, true)
		}
	}
	for i := range rel.views {
		for j := i + 1; j < len(rel.views); j++ {
			a.provePair(ctx, rel, i, j, r)
		}
	}
	a.checkAuditedShown(rel, r)
	a.chooseTarget(rel)
	rel.nodes = a.nodeViews(rel, seen)
	rel.witnessed = a.largestWitnessed(rel)
	return rel
}

// largestWitnessed returns the largest witnessed view proven consistent
// with the audited checkpoint after the round, or zero.
func (a *Auditor) largestWitnessed(rel *relations) proofs.Checkpoint {
	audited := -1
	switch {
	case rel.target != nil:
		audited = slices.Index(rel.views, rel.target)
	case a.state.note != nil && len(rel.views) > 0 && rel.views[0].audited:
		audited = 0
	}
	var best proofs.Checkpoint
	for k, v := range rel.views {
		if v.witnessed() && audited >= 0 && rel.rel(k, audited) == consistent && v.cp.Size >= best.Size {
			best = v.cp
		}
	}
	return best
}

// addView adds node i's checkpoint, its latest or (witnessed) its
// witnessed one, to the view with its size and root, or to a new one, and
// returns the view's index.
func (rel *relations) addView(n nodeCheckpoint, node int, witnessed bool) int {
	k := slices.IndexFunc(rel.views, func(v *view) bool { return v.cp == n.cp })
	if k < 0 {
		k = len(rel.views)
		rel.views = append(rel.views, &view{cp: n.cp, note: n.note})
	}
	v := rel.views[k]
	if witnessed {
		v.witnessedBy = append(v.witnessedBy, node)
	} else {
		v.nodes = append(v.nodes, node)
	}
	return k
}

// provePair relates views i and j: two roots for one size are a fork; for
// two sizes, the nodes that hold the larger tree (those that served it
// first) are asked for a consistency proof until one verifies. If every
// answer fails, the two are a fork, or a rollback when the smaller one is
// a node's and the larger the audited one; a node whose proof fails while
// another's verifies gave a bad proof.
func (a *Auditor) provePair(ctx context.Context, rel *relations, i, j int, r *AuditReport) {
	key := [2]int{i, j}
	small, large := rel.views[i], rel.views[j]
	if small.cp.Size > large.cp.Size {
		small, large = large, small
	}
	if small.cp.Size == large.cp.Size {
		rel.pair[key] = inconsistent
		a.found(r, Finding{Kind: FindingFork, Node: a.servedBy(rel.views[j]), Checkpoint: string(rel.views[i].note),
			Other: string(rel.views[j].note), Message: fmt.Sprintf("two roots for one size: %s and %s", a.name(rel.views[i]), a.name(rel.views[j]))})
		return
	}
	if small.cp.Size == 0 {
		rel.settle(key, proofs.VerifyConsistency(0, large.cp.Size, nil, small.cp.Hash, large.cp.Hash), nil)
		if rel.pair[key] == inconsistent {
			a.found(r, Finding{Kind: FindingFork, Node: a.servedBy(small), Checkpoint: string(small.note), Other: string(large.note),
				Message: fmt.Sprintf("the empty tree of %s does not have the empty root", a.name(small))})
		}
		return
	}
	var failed []proofFailure
	for _, k := range a.provers(rel, large) {
		proof, err := a.nodes[k].rawConsistency(ctx, small.cp.Size, large.cp.Size)
		if err != nil && !errors.Is(err, errMalformedProof) && !errors.Is(err, ErrMismatch) {
			a.log.Debug("no consistency proof", "node", a.o.Addrs[k], "from", small.cp.Size, "to", large.cp.Size, "err", err)
			continue
		}
		if err == nil {
			err = proofs.VerifyConsistency(small.cp.Size, large.cp.Size, proof, small.cp.Hash, large.cp.Hash)
		}
		if err == nil {
			rel.settle(key, nil, proof)
			for _, f := range failed {
				a.found(r, Finding{Kind: FindingBadProof, Node: a.o.Addrs[f.node], Checkpoint: string(small.note), Other: string(large.note),
					Proof: proofBytes(f.proof), Message: fmt.Sprintf("its consistency proof from %s to %s fails, another node's verifies: %v", a.name(small), a.name(large), f.err)})
			}
			return
		}
		failed = append(failed, proofFailure{node: k, proof: proof, err: err})
	}
	if len(failed) == 0 {
		return // unproven: no node holding the larger tree answered
	}
	rel.pair[key] = inconsistent
	f := failed[0]
	finding := Finding{Kind: FindingFork, Node: a.servedBy(large), Checkpoint: string(small.note), Other: string(large.note), Proof: proofBytes(f.proof),
		Message: fmt.Sprintf("%s and %s do not extend one another: the consistency proof from %s fails: %v", a.name(small), a.name(large), a.o.Addrs[f.node], f.err)}
	if large.audited && !small.audited {
		finding.Kind, finding.Node, finding.Checkpoint, finding.Other = FindingRollback, a.servedBy(small), string(large.note), string(small.note)
		finding.Message = fmt.Sprintf("%s is smaller than the audited checkpoint and not a prefix of it: the consistency proof from %s fails: %v", a.name(small), a.o.Addrs[f.node], f.err)
	}
	a.found(r, finding)
}

type proofFailure struct {
	node  int
	proof [][32]byte
	err   error
}

// settle records the outcome of a proof between a pair of views.
func (rel *relations) settle(key [2]int, err error, proof [][32]byte) {
	if err != nil {
		rel.pair[key] = inconsistent
		return
	}
	rel.pair[key] = consistent
	rel.proof[key] = proof
}

// provers returns the nodes that hold a tree at least as large as v's:
// those that served v first, then the others in order.
func (a *Auditor) provers(rel *relations, v *view) []int {
	out := slices.Clone(v.nodes)
	for k, vi := range rel.nodeView {
		if vi >= 0 && rel.views[vi].cp.Size >= v.cp.Size && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// servedBy names the first node that served v (as its latest checkpoint,
// else as its witnessed one), or "" for the audited checkpoint alone.
func (a *Auditor) servedBy(v *view) string {
	switch {
	case len(v.nodes) > 0:
		return a.o.Addrs[v.nodes[0]]
	case len(v.witnessedBy) > 0:
		return a.o.Addrs[v.witnessedBy[0]]
	}
	return ""
}

// checkAuditedShown records a rollback for every smaller checkpoint when no
// node can show the audited tree at all, though most of the nodes answered:
// the log committed to those leaves, and a majority of its replicas lost
// them. With fewer nodes answering, it cannot tell, and finds nothing.
func (a *Auditor) checkAuditedShown(rel *relations, r *AuditReport) {
	if len(rel.views) == 0 || !rel.views[0].audited || rel.reachable <= len(a.nodes)/2 {
		return
	}
	audited := rel.views[0]
	if len(a.provers(rel, audited)) > 0 {
		return
	}
	for k, v := range rel.views[1:] {
		if rel.rel(0, k+1) != unproven {
			continue
		}
		rel.pair[[2]int{0, k + 1}] = inconsistent
		a.found(r, Finding{Kind: FindingRollback, Node: a.servedBy(v), Checkpoint: string(audited.note), Other: string(v.note),
			Message: fmt.Sprintf("no node can show the audited tree of size %d (%d of %d nodes answered); %s", audited.cp.Size, rel.reachable, len(a.nodes), a.name(v))})
	}
}

// chooseTarget picks the largest checkpoint proven to extend the audited
// one (any, on a first audit; on a tie, the one the earliest node served),
// and the nodes that can serve its leaves: those showing it or a tree
// proven to extend it.
func (a *Auditor) chooseTarget(rel *relations) {
	best := -1
	for k, v := range rel.views {
		if a.state.note != nil && rel.rel(0, k) != consistent {
			continue
		}
		if best < 0 || v.cp.Size > rel.views[best].cp.Size {
			best = k
		}
	}
	if best < 0 {
		return
	}
	t := rel.views[best]
	if !t.audited {
		rel.target = t
		if a.state.note != nil {
			rel.toTarget = rel.proof[[2]int{0, best}]
		}
	}
	for node, vi := range rel.nodeView {
		if vi >= 0 && rel.views[vi].cp.Size >= t.cp.Size && rel.rel(best, vi) == consistent {
			rel.servers = append(rel.servers, node)
		}
	}
	slices.SortStableFunc(rel.servers, func(x, y int) int { // t's own nodes first
		return boolRank(!slices.Contains(t.nodes, x)) - boolRank(!slices.Contains(t.nodes, y))
	})
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// nodeViews describes each node's checkpoint relative to the audited one.
func (a *Auditor) nodeViews(rel *relations, seen []nodeCheckpoint) []NodeView {
	audited := -1 // the view of the audited checkpoint after the round
	switch {
	case rel.target != nil:
		audited = slices.Index(rel.views, rel.target)
	case a.state.note != nil:
		audited = 0
	}
	out := make([]NodeView, len(seen))
	for i, n := range seen {
		nv := NodeView{Node: a.o.Addrs[i], Note: n.note, Err: n.err}
		switch vi := rel.nodeView[i]; {
		case n.err != nil:
			nv.Status = NodeUnreachable
		case n.bad != nil:
			nv.Status, nv.Err = NodeBadCheckpoint, n.bad
		default:
			nv.Checkpoint = n.cp
			nv.Status = a.status(rel, vi, audited)
		}
		out[i] = nv
	}
	return out
}

func (a *Auditor) status(rel *relations, vi, audited int) NodeStatus {
	if audited < 0 {
		return NodeUnproven
	}
	switch rel.rel(vi, audited) {
	case consistent:
		switch size, top := rel.views[vi].cp.Size, rel.views[audited].cp.Size; {
		case size < top:
			return NodeLagging
		case size > top:
			return NodeAhead
		}
		return NodeOK
	case inconsistent:
		return NodeInconsistent
	}
	return NodeUnproven
}

// found records a finding about checkpoints or nodes once, and adds it to
// the report if it is new.
func (a *Auditor) found(r *AuditReport, f Finding) {
	if a.state.recordOnce(f) {
		r.add(f)
		a.log.Warn("audit finding", "kind", f.Kind, "node", f.Node, "msg", f.Message)
	}
}

// add adds new findings to the round's report, up to MaxAuditFindings.
func (r *AuditReport) add(fs ...Finding) {
	n := min(len(fs), MaxAuditFindings-len(r.Findings))
	r.Findings = append(r.Findings, fs[:max(n, 0)]...)
	r.FindingsOmitted += len(fs) - max(n, 0)
}

// NewFindings is the number of new findings of the round, those in
// Findings and those omitted.
func (r *AuditReport) NewFindings() int { return len(r.Findings) + r.FindingsOmitted }

func proofBytes(p [][32]byte) [][]byte {
	if len(p) == 0 {
		return nil
	}
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i][:]
	}
	return out
}

// A chunk is a proven run of leaves fetched for a scan, or what stopped a
// node from serving them.
type chunk struct {
	leaves   [][]byte
	node     string
	findings []Finding
	err      error
}

// scan re-validates the leaves from Audited() up to the audited
// checkpoint's size, fetched from servers (one after another if a node
// fails) one chunk ahead of the checks.
func (a *Auditor) scan(ctx context.Context, r *AuditReport, servers []int) error {
	start, target := a.state.Audited(), a.state.cp.Size
	if start >= target {
		return nil
	}
	if len(servers) == 0 {
		return fmt.Errorf("client: audit: no node can serve leaves [%d, %d) of the audited checkpoint", start, target)
	}
	a.progress(start, start, target)
	_, note := a.state.Checkpoint()
	fctx, cancel := context.WithCancel(ctx)
	chunks := make(chan chunk, 1)
	var wg sync.WaitGroup
	wg.Go(func() { a.fetch(fctx, servers, note, start, target, chunks) })
	defer func() {
		cancel()
		for range chunks {
		}
		wg.Wait()
	}()
	for ch := range chunks {
		for _, f := range ch.findings {
			a.found(r, f)
		}
		if ch.err != nil {
			return ch.err
		}
		if len(ch.leaves) == 0 {
			continue
		}
		fs, err := a.state.Check(ch.leaves, CheckOptions{Node: ch.node, Workers: a.o.Workers})
		if err != nil {
			return err
		}
		for _, f := range fs {
			a.log.Warn("audit finding", "kind", f.Kind, "index", *f.Index, "msg", f.Message)
		}
		r.add(fs...)
		a.progress(start, a.state.Audited(), target)
		if err := context.Cause(ctx); err != nil {
			return err
		}
		if err := a.saver.during(a.state); err != nil {
			return err
		}
	}
	return context.Cause(ctx)
}

func (a *Auditor) progress(start, audited, target uint64) {
	if a.o.Progress != nil {
		a.o.Progress(AuditProgress{Start: start, Audited: audited, Target: target})
	}
}

// fetch sends the leaves [from, to) of the audited checkpoint, note, to out
// in chunks, each proven with Entries against it, from the first of
// servers that serves them. A node whose answer fails verification is a
// finding, and the next node takes over, as after transport errors.
func (a *Auditor) fetch(ctx context.Context, servers []int, note []byte, from, to uint64, out chan<- chunk) {
	defer close(out)
	send := func(c chunk) bool {
		select {
		case out <- c:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var lastErr error
	for _, k := range servers {
		addr := a.o.Addrs[k]
		c, err := a.client(addr, note)
		if err != nil {
			send(chunk{err: err})
			return
		}
		bad := uint64(0) // with a proof error: the leaf found to fail on its own, +1
		for from < to {
			end := min(to, (from/auditChunk+1)*auditChunk)
			var leaves [][]byte
			if leaves, err = c.Entries(ctx, from, end); err != nil {
				var pe *ProofError
				if errors.As(err, &pe) {
					if i, ok := firstBadLeaf(ctx, c, from, end); ok {
						bad = i + 1
					}
				}
				break
			}
			if !send(chunk{leaves: leaves, node: addr}) {
				c.Close()
				return
			}
			from = end
		}
		c.Close()
		if from == to || ctx.Err() != nil {
			return
		}
		lastErr = err
		a.log.Warn("node cannot serve the audited leaves", "node", addr, "from", from, "err", err)
		f, ok := a.servingFinding(addr, from, string(note), err)
		if ok && bad > 0 {
			i := bad - 1
			f.Index = &i
			f.Message = fmt.Sprintf("leaf %d as it serves it does not verify against the audited checkpoint (nor does the range from %d): %v", i, from, err)
		}
		if ok && !send(chunk{findings: []Finding{f}}) {
			return
		}
	}
	send(chunk{err: fmt.Errorf("client: audit: no node served leaves [%d, %d): %w", from, to, lastErr)})
}

// firstBadLeaf narrows a range [from, end) whose proof from c failed down
// to one leaf, asking c for halves, and returns it if that leaf's own
// proof fails too (a node serving a corrupted leaf). A node whose answers
// depend on the range asked may mislead the narrowing: then no leaf is
// named (ok false). On the node's other errors it names none either.
func firstBadLeaf(ctx context.Context, c *Client, from, end uint64) (uint64, bool) {
	var pe *ProofError
	for end-from > 1 {
		mid := from + (end-from)/2
		_, err := c.Entries(ctx, from, mid)
		switch {
		case errors.As(err, &pe):
			end = mid
		case err == nil:
			from = mid
		default:
			return 0, false
		}
	}
	_, err := c.Entries(ctx, from, end)
	return from, errors.As(err, &pe)
}

// servingFinding turns a verification error of Entries into a finding.
func (a *Auditor) servingFinding(addr string, from uint64, note string, err error) (Finding, bool) {
	f := Finding{Node: addr, Checkpoint: note, Message: err.Error()}
	var fe *ForkError
	var pe *ProofError
	switch {
	case errors.As(err, &pe):
		f.Kind, f.Message = FindingBadProof, fmt.Sprintf("the leaves it serves from index %d do not verify against the audited checkpoint: %v", pe.Index, pe.Err)
	case errors.As(err, &fe):
		f.Kind, f.Checkpoint, f.Other, f.Proof = FindingFork, string(fe.Old), string(fe.New), proofBytes(fe.Proof)
	case errors.Is(err, ErrRollback):
		f.Kind = FindingRollback
	case errors.Is(err, ErrMismatch):
		f.Kind = FindingBadProof
	case errors.Is(err, ErrBadSignature):
		f.Kind = FindingBadCheckpoint
	default:
		return f, false
	}
	idx := from
	f.Index = &idx
	return f, true
}

// saver decides when to save the state.
type saver struct {
	save     func(*AuditState) error
	every    uint64
	interval time.Duration

	audited  uint64 // at the last save
	findings uint64
	note     string
	at       time.Time
	cost     time.Duration // of the last save
}

// mark records s as saved.
func (sv *saver) mark(s *AuditState) {
	sv.audited, sv.findings, sv.note = s.audited, s.FindingCount(), string(s.note)
}

func (sv *saver) dirty(s *AuditState) bool {
	return s.audited != sv.audited || s.FindingCount() != sv.findings || string(s.note) != sv.note
}

// force saves s if it changed since the last save.
func (sv *saver) force(s *AuditState) error {
	if sv.save == nil || !sv.dirty(s) {
		return nil
	}
	start := time.Now()
	if err := sv.save(s); err != nil {
		return fmt.Errorf("client: audit: save state: %w", err)
	}
	sv.at, sv.cost = time.Now(), time.Since(start)
	sv.mark(s)
	return nil
}

// during saves s during a scan every `every` entries, but no sooner than
// 20 times the last save took, so saves of a large state stay near 5% of
// the scan.
func (sv *saver) during(s *AuditState) error {
	if s.audited-sv.audited < sv.every || time.Since(sv.at) < 20*sv.cost {
		return nil
	}
	return sv.force(s)
}

// afterRound saves s after a Follow round that found something, or when
// the last save is older than the interval.
func (sv *saver) afterRound(s *AuditState, found bool) error {
	if found || time.Since(sv.at) >= sv.interval {
		return sv.force(s)
	}
	return sv.during(s)
}
