package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// A Regression is a node serving a poller a smaller checkpoint than it
// served that poller before.
type Regression struct {
	Poller   int
	Node     int
	From, To uint64
	// AcrossRestart says the node was restarted between the two answers;
	// otherwise the same run of the node served both.
	AcrossRestart bool
	// Snapshot says From is the node's checkpoint right before it was
	// killed, not one it served the poller.
	Snapshot bool
	At       time.Time
}

func (r Regression) String() string {
	how := "by the same run of the node"
	switch {
	case r.Snapshot:
		how = "after the node restarted, below its checkpoint right before it was killed"
	case r.AcrossRestart:
		how = "after the node restarted"
	}
	return fmt.Sprintf("poller %d: %s served size %d after %d, %s (%s)", r.Poller, Endpoint(r.Node), r.To, r.From, how, r.At.Format("15:04:05.000"))
}

// A Stream tracks the checkpoints one node served one poller, and the
// regressions among them.
type Stream struct {
	runMax  map[int]uint64 // the largest size served, by run of the node
	overall uint64         // the largest size served by any run
}

// NewStream returns an empty stream.
func NewStream() *Stream { return &Stream{runMax: make(map[int]uint64)} }

// Served records that run run of the node served a checkpoint of size, and
// returns the regression this is, if any: a size smaller than the same run
// served before, or smaller than an earlier run served.
func (s *Stream) Served(run int, size uint64) (Regression, bool) {
	var r Regression
	regressed := false
	if max, ok := s.runMax[run]; ok && size < max {
		r, regressed = Regression{From: max, To: size}, true
	} else if size < s.overall {
		r, regressed = Regression{From: s.overall, To: size, AcrossRestart: true}, true
	}
	s.runMax[run] = max(s.runMax[run], size)
	s.overall = max(s.overall, size)
	return r, regressed
}

// hasEarlier reports whether a run of the node before run served a
// checkpoint on the stream.
func (s *Stream) hasEarlier(run int) bool {
	for r := range s.runMax {
		if r < run {
			return true
		}
	}
	return false
}

// Snapshots are the checkpoint sizes nodes served right before they were
// killed: no later run of a node may serve less than its snapshot (a
// restarted node serves no reads until it has caught up). It is safe for
// concurrent use.
type Snapshots struct {
	verifier *proofs.LogVerifier

	mu     sync.Mutex
	byNode map[int]snapshot
	taken  int
}

type snapshot struct {
	size uint64
	run  int // the node's incarnation that served it
}

// NewSnapshots returns empty snapshots, of checkpoints verified with v.
func NewSnapshots(v *proofs.LogVerifier) *Snapshots {
	return &Snapshots{verifier: v, byNode: make(map[int]snapshot)}
}

// Take asks node i of c, directly, for its checkpoint and records its
// size, if it answers within a moment: the caller is about to kill it.
func (s *Snapshots) Take(ctx context.Context, c *Cluster, i int) {
	n := c.Nodes[i]
	run := n.Proc.Incarnation()
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	resp, err := n.ledger.GetCheckpoint(ctx, connect.NewRequest(&v1.GetCheckpointRequest{}))
	if err != nil {
		return
	}
	cp, err := s.verifier.VerifyCheckpoint(resp.Msg.GetCheckpoint())
	if err != nil {
		return // the pollers see such a node's checkpoints too
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.taken++
	if prev, ok := s.byNode[i]; !ok || cp.Size >= prev.size {
		s.byNode[i] = snapshot{cp.Size, run}
	}
}

// get returns node i's largest snapshot, if any.
func (s *Snapshots) get(i int) (snapshot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn, ok := s.byNode[i]
	return sn, ok
}

// Taken returns how many snapshots were taken.
func (s *Snapshots) Taken() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.taken
}

// Pollers poll every node's checkpoint through the network, as clients
// see it, and record what they are served. Every other poll asks for
// min_size, the largest size any node served a poller so far: the node
// must answer with at least that, or wait, or fail without a verdict.
type Pollers struct {
	c         *Cluster
	verifier  *proofs.LogVerifier
	snapshots *Snapshots
	wg        sync.WaitGroup

	mu          sync.Mutex
	checkpoints map[string]struct{} // signed, as served
	largest     uint64              // the largest size served
	regressions []Regression
	bad         []error // checkpoints that do not verify, answers below min_size, unexpected errors
	stats       PollStats
}

// PollStats count the polls.
type PollStats struct {
	Polls int
	// Failed counts the polls that failed without a verdict (see
	// noVerdict).
	Failed int
	// MinSize counts the polls that asked for a min_size, and
	// MinSizeAnswered those answered (with at least that size).
	MinSize, MinSizeAnswered int
	// AfterRestart counts the answers of a restarted node compared with
	// what an earlier run of it served: the poller's earlier answers, or
	// the node's snapshot right before it was killed.
	AfterRestart int
}

// pollInterval paces each poller's requests to one node.
const pollInterval = 100 * time.Millisecond

// StartPollers starts n pollers, each with its own connections, that poll
// every node until stop closes; Wait waits for them to end. Answers of a
// restarted node are also checked against snapshots.
func StartPollers(c *Cluster, v *proofs.LogVerifier, snapshots *Snapshots, n int, stop <-chan struct{}) *Pollers {
	p := &Pollers{c: c, verifier: v, snapshots: snapshots, checkpoints: make(map[string]struct{})}
	for poller := range n {
		hc := h2cClient(time.Second)
		var wg sync.WaitGroup
		for i, node := range c.Nodes {
			api := chipledgerv1connect.NewLedgerServiceClient(hc, "http://"+node.APIProxy)
			wg.Go(func() { p.poll(poller, i, api, stop) })
		}
		p.wg.Go(func() {
			wg.Wait()
			hc.CloseIdleConnections()
		})
	}
	return p
}

// Wait waits until the pollers have ended.
func (p *Pollers) Wait() { p.wg.Wait() }

// poll is one poller's stream of requests to node i.
func (p *Pollers) poll(poller, i int, api chipledgerv1connect.LedgerServiceClient, stop <-chan struct{}) {
	proc := p.c.Nodes[i].Proc
	stream := NewStream()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		var minSize uint64
		if n%2 == 1 {
			p.mu.Lock()
			minSize = p.largest
			p.mu.Unlock()
		}
		// A node restarted while the request was under way may have
		// answered from either run: such an answer is not compared with
		// earlier ones.
		before := proc.Incarnation()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := api.GetCheckpoint(ctx, connect.NewRequest(&v1.GetCheckpointRequest{MinSize: minSize}))
		cancel()
		after := proc.Incarnation()
		p.record(poller, i, stream, minSize, before, after, resp, err)
	}
}

func (p *Pollers) record(poller, i int, stream *Stream, minSize uint64, before, after int, resp *connect.Response[v1.GetCheckpointResponse], err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Polls++
	if minSize > 0 {
		p.stats.MinSize++
	}
	if err != nil {
		if noVerdict(err) {
			p.stats.Failed++
		} else {
			p.bad = append(p.bad, fmt.Errorf("poller %d: %s failed a GetCheckpoint (min_size %d) with an unexpected error: %w", poller, Endpoint(i), minSize, err))
		}
		return
	}
	signed := resp.Msg.GetCheckpoint()
	cp, err := p.verifier.VerifyCheckpoint(signed)
	if err != nil {
		p.bad = append(p.bad, fmt.Errorf("poller %d: %s served a checkpoint that does not verify: %w: %q", poller, Endpoint(i), err, signed))
		return
	}
	p.checkpoints[string(signed)] = struct{}{}
	p.largest = max(p.largest, cp.Size)
	if minSize > 0 {
		if cp.Size < minSize {
			p.bad = append(p.bad, fmt.Errorf("poller %d: %s answered a GetCheckpoint with min_size %d with a checkpoint of size %d (%s)", poller, Endpoint(i), minSize, cp.Size, time.Now().Format("15:04:05.000")))
		} else {
			p.stats.MinSizeAnswered++
		}
	}
	if before != after {
		return
	}
	sn, snapped := p.snapshots.get(i)
	snapped = snapped && sn.run < after
	if stream.hasEarlier(after) || snapped {
		p.stats.AfterRestart++
	}
	if r, ok := stream.Served(after, cp.Size); ok {
		r.Poller, r.Node, r.At = poller, i, time.Now()
		p.regressions = append(p.regressions, r)
	}
	if snapped {
		if cp.Size < sn.size {
			p.regressions = append(p.regressions, Regression{Poller: poller, Node: i, From: sn.size, To: cp.Size, AcrossRestart: true, Snapshot: true, At: time.Now()})
		}
	}
}

// Checkpoints returns the distinct signed checkpoints the pollers were
// served.
func (p *Pollers) Checkpoints() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out [][]byte
	for s := range p.checkpoints {
		out = append(out, []byte(s))
	}
	return out
}

// Regressions returns the regressions the pollers saw.
func (p *Pollers) Regressions() []Regression {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Regression(nil), p.regressions...)
}

// Bad returns the answers that broke a promise: checkpoints that do not
// verify, answers smaller than the min_size asked for, and errors that
// are neither a verdict nor a transient failure.
func (p *Pollers) Bad() []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]error(nil), p.bad...)
}

// Stats returns the polls' counts.
func (p *Pollers) Stats() PollStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}
