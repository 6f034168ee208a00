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
	At            time.Time
}

func (r Regression) String() string {
	how := "by the same run of the node"
	if r.AcrossRestart {
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

// Pollers poll every node's checkpoint through the network, as clients
// see it, and record what they are served.
type Pollers struct {
	c        *Cluster
	verifier *proofs.LogVerifier
	wg       sync.WaitGroup

	mu          sync.Mutex
	checkpoints map[string]struct{} // signed, as served
	regressions []Regression
	bad         []error // checkpoints that do not verify
	polls       int
	failed      int
}

// pollInterval paces each poller's requests to one node.
const pollInterval = 100 * time.Millisecond

// StartPollers starts n pollers, each with its own connections, that poll
// every node until stop closes; Wait waits for them to end.
func StartPollers(c *Cluster, v *proofs.LogVerifier, n int, stop <-chan struct{}) *Pollers {
	p := &Pollers{c: c, verifier: v, checkpoints: make(map[string]struct{})}
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
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		// A node restarted while the request was under way may have
		// answered from either run: such an answer is not compared.
		before := proc.Incarnation()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := api.GetCheckpoint(ctx, connect.NewRequest(&v1.GetCheckpointRequest{}))
		cancel()
		after := proc.Incarnation()
		p.record(poller, i, stream, before, after, resp, err)
	}
}

func (p *Pollers) record(poller, i int, stream *Stream, before, after int, resp *connect.Response[v1.GetCheckpointResponse], err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.polls++
	if err != nil {
		p.failed++
		return
	}
	signed := resp.Msg.GetCheckpoint()
	cp, err := p.verifier.VerifyCheckpoint(signed)
	if err != nil {
		p.bad = append(p.bad, fmt.Errorf("poller %d: %s served a checkpoint that does not verify: %w: %q", poller, Endpoint(i), err, signed))
		return
	}
	p.checkpoints[string(signed)] = struct{}{}
	if before != after {
		return
	}
	if r, ok := stream.Served(after, cp.Size); ok {
		r.Poller, r.Node, r.At = poller, i, time.Now()
		p.regressions = append(p.regressions, r)
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

// Bad returns the checkpoints that did not verify.
func (p *Pollers) Bad() []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]error(nil), p.bad...)
}

// Stats returns how many polls were made and how many failed.
func (p *Pollers) Stats() (polls, failed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.polls, p.failed
}
