package loadgen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/client"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// DefaultFillChips is the size of the chip set a log is filled with (see
// FillStats) unless a configuration says otherwise.
const DefaultFillChips = 16384

// ProofScenario is one configuration of the proofs benchmark.
type ProofScenario struct {
	Nodes int `json:"nodes"` // 0: a running cluster
	// Entries is the log size (leaves) to fill to before measuring; a
	// running cluster is topped up to it.
	Entries int `json:"entries"`
	// Clients is the number of concurrent clients, spread over the nodes.
	Clients int `json:"clients"`
	// Requests is the raw proofs of each kind, Verified the client-verified
	// ones.
	Requests int `json:"requests"`
	Verified int `json:"verified"`
}

// ProofReport is the outcome of a proofs scenario: proofs served per
// second and their latency, raw (one Connect call, nothing checked) and
// verified by the Go SDK.
type ProofReport struct {
	ProofScenario
	TreeSize uint64    `json:"tree_size"`
	Fill     FillStats `json:"fill"`
	// Inclusion is GetInclusionProof for a random index in a random tree
	// size up to the current one; Consistency GetConsistencyProof between
	// random sizes size1 <= size2 <= the current one.
	Inclusion   Stats `json:"inclusion"`
	Consistency Stats `json:"consistency"`
	// VerifiedInclusion is client.InclusionProof of a random leaf in the
	// client's trusted checkpoint (one call and the proof checked);
	// VerifiedConsistency is client.ConsistencyProof of a random older
	// checkpoint (the latest checkpoint fetched and both checked, then a
	// consistency proof fetched and checked: two calls). Nil when skipped
	// (a running cluster without its log key).
	VerifiedInclusion   *Stats `json:"verified_inclusion,omitempty"`
	VerifiedConsistency *Stats `json:"verified_consistency,omitempty"`
}

// RunProofs runs the proofs scenarios: each fills a cluster to its size
// (outside the timed phase), then measures each kind of proof in turn.
func RunProofs(ctx context.Context, o Options, scenarios []ProofScenario) ([]ProofReport, error) {
	o, cleanup, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	defer cleanup()
	var reports []ProofReport
	for _, s := range scenarios {
		r, err := runProofs(ctx, &o, s)
		if err != nil {
			return nil, fmt.Errorf("proofs, %s: %w", nodesName(s.Nodes), err)
		}
		reports = append(reports, *r)
	}
	return reports, nil
}

func runProofs(ctx context.Context, o *Options, s ProofScenario) (*ProofReport, error) {
	t, err := o.start(ctx, s.Nodes)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	hc := NewHTTPClient()
	defer hc.CloseIdleConnections()
	pki, err := o.pki()
	if err != nil {
		return nil, err
	}
	size, err := sizeOf(ctx, hc, t.addrs)
	if err != nil {
		return nil, err
	}
	// A running cluster is topped up to the size, and by at least a little
	// so that there are older checkpoints to prove consistency from.
	want := max(uint64(s.Entries), size+min(1000, uint64(s.Entries)))
	chips, err := newFillChips(ctx, pki, max(1, min(DefaultFillChips, int(want-size))), o.LeafSize, o.Progress)
	if err != nil {
		return nil, err
	}
	f, err := chips.filler(ctx, hc, t.addrs, 256)
	if err != nil {
		return nil, err
	}
	o.Progress.logf("proofs, %s: filling the log to %d leaves…", nodesName(s.Nodes), want)
	r := &ProofReport{ProofScenario: s}
	if r.Fill, err = f.fill(ctx, want, o.Progress); err != nil {
		return nil, err
	}
	if r.TreeSize, err = caughtUp(ctx, hc, t.addrs, f.leader); err != nil {
		return nil, err
	}
	o.Progress.logf("  filled %d entries in %.1fs (%.0f/s); tree size %d", r.Fill.Entries, r.Fill.Seconds, r.Fill.PerSecond, r.TreeSize)

	r.Inclusion = inclusionLoad(ctx, hc, t.addrs, r.TreeSize, true, s.Requests, s.Clients)
	o.Progress.logf("  inclusion proofs: %.0f/s", r.Inclusion.PerSecond)
	r.Consistency = consistencyLoad(ctx, hc, t.addrs, r.TreeSize, s.Requests, s.Clients)
	o.Progress.logf("  consistency proofs: %.0f/s", r.Consistency.PerSecond)
	if t.logKey == "" {
		o.Progress.logf("  client-verified proofs skipped: no log key")
		return r, nil
	}
	v := verifiedLoad{addrs: t.addrs, logKey: t.logKey, hc: hc, leader: f.leader}
	if r.VerifiedInclusion, err = v.inclusion(ctx, r.TreeSize, s.Verified, s.Clients); err != nil {
		return nil, err
	}
	o.Progress.logf("  verified inclusion proofs: %.0f/s", r.VerifiedInclusion.PerSecond)
	if r.VerifiedConsistency, err = v.consistency(ctx, f.checkpoints, s.Verified, s.Clients); err != nil {
		return nil, err
	}
	o.Progress.logf("  verified consistency proofs: %.0f/s", r.VerifiedConsistency.PerSecond)
	return r, nil
}

// sizeOf returns the tree size of the cluster's leader.
func sizeOf(ctx context.Context, hc *http.Client, addrs []string) (uint64, error) {
	leader, err := Leader(ctx, hc, addrs)
	if err != nil {
		return 0, err
	}
	return treeSize(ctx, hc, leader)
}

// ledgerClients returns one Connect client per worker, spread over the
// nodes.
func ledgerClients(hc *http.Client, addrs []string, workers int) []chipledgerv1connect.LedgerServiceClient {
	out := make([]chipledgerv1connect.LedgerServiceClient, max(workers, 1))
	for w := range out {
		out[w] = chipledgerv1connect.NewLedgerServiceClient(hc, "http://"+addrs[w%len(addrs)])
	}
	return out
}

// workerRands returns a random source per worker.
func workerRands(workers int) []*rand.Rand {
	out := make([]*rand.Rand, max(workers, 1))
	seed := rand.Uint64()
	for w := range out {
		out[w] = rand.New(rand.NewPCG(seed, uint64(w)))
	}
	return out
}

// inclusionLoad asks for n inclusion proofs from clients concurrent
// clients: of a random leaf in a random tree size up to size when
// randomSize is set, else in the tree of exactly size leaves.
func inclusionLoad(ctx context.Context, hc *http.Client, addrs []string, size uint64, randomSize bool, n, clients int) Stats {
	lcs, rngs := ledgerClients(hc, addrs, clients), workerRands(clients)
	return measure(ctx, n, clients, func(ctx context.Context, w, _ int) error {
		sz := size
		if randomSize {
			sz = 1 + rngs[w].Uint64N(size)
		}
		_, err := lcs[w].GetInclusionProof(ctx, connect.NewRequest(&v1.GetInclusionProofRequest{Index: rngs[w].Uint64N(sz), TreeSize: sz}))
		return err
	})
}

// consistencyLoad asks for n consistency proofs between random sizes
// 1 <= size1 <= size2 <= size from clients concurrent clients.
func consistencyLoad(ctx context.Context, hc *http.Client, addrs []string, size uint64, n, clients int) Stats {
	lcs, rngs := ledgerClients(hc, addrs, clients), workerRands(clients)
	return measure(ctx, n, clients, func(ctx context.Context, w, _ int) error {
		size2 := 1 + rngs[w].Uint64N(size)
		size1 := 1 + rngs[w].Uint64N(size2)
		_, err := lcs[w].GetConsistencyProof(ctx, connect.NewRequest(&v1.GetConsistencyProofRequest{Size1: size1, Size2: size2}))
		return err
	})
}

// verifiedLoad measures proofs fetched and checked by the Go SDK, one
// client.Client per concurrent client, each starting at another node.
type verifiedLoad struct {
	addrs  []string
	logKey string
	hc     *http.Client // for the raw reads of the setup
	leader string
}

// verifiedSamples is how many leaves the verified inclusion proofs choose
// from.
const verifiedSamples = 256

// inclusion proves n random leaves of the tree.
func (v verifiedLoad) inclusion(ctx context.Context, size uint64, n, clients int) (*Stats, error) {
	type sample struct {
		index uint64
		leaf  []byte
	}
	lc := chipledgerv1connect.NewLedgerServiceClient(v.hc, "http://"+v.leader)
	samples := make([]sample, min(verifiedSamples, size))
	for i := range samples {
		idx := rand.Uint64N(size)
		resp, err := lc.GetEntries(ctx, connect.NewRequest(&v1.GetEntriesRequest{Start: idx, End: idx + 1}))
		if err != nil {
			return nil, fmt.Errorf("read leaf %d: %w", idx, err)
		}
		samples[i] = sample{idx, resp.Msg.GetLeaves()[0]}
	}
	cls, err := v.clients(ctx, clients)
	if err != nil {
		return nil, err
	}
	defer closeAll(cls)
	st := measure(ctx, n, clients, func(ctx context.Context, w, i int) error {
		s := samples[i%len(samples)]
		_, err := cls[w].InclusionProof(ctx, s.index, s.leaf)
		return err
	})
	return &st, nil
}

// consistency proves n of the older checkpoints consistent with the latest.
func (v verifiedLoad) consistency(ctx context.Context, checkpoints [][]byte, n, clients int) (*Stats, error) {
	if len(checkpoints) == 0 {
		return nil, fmt.Errorf("no older checkpoints to prove consistency from")
	}
	cls, err := v.clients(ctx, clients)
	if err != nil {
		return nil, err
	}
	defer closeAll(cls)
	st := measure(ctx, n, clients, func(ctx context.Context, w, i int) error {
		_, err := cls[w].ConsistencyProof(ctx, checkpoints[i%len(checkpoints)])
		return err
	})
	return &st, nil
}

// clients returns n SDK clients, each trusting the latest checkpoint
// already (fetched outside the timed phase), the first node of each in
// turn.
func (v verifiedLoad) clients(ctx context.Context, n int) ([]*client.Client, error) {
	var out []*client.Client
	for w := range max(n, 1) {
		addrs := append(append([]string(nil), v.addrs[w%len(v.addrs):]...), v.addrs[:w%len(v.addrs)]...)
		c, err := client.New(client.Options{Addrs: addrs, LogKey: v.logKey})
		if err == nil {
			_, _, err = c.Checkpoint(ctx)
		}
		if err != nil {
			closeAll(out)
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func closeAll(cls []*client.Client) {
	for _, c := range cls {
		c.Close()
	}
}

// nodesName names a cluster size in progress lines.
func nodesName(nodes int) string {
	switch nodes {
	case 0:
		return "running cluster"
	case 1:
		return "1 node"
	}
	return fmt.Sprintf("%d nodes", nodes)
}
