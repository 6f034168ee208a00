package loadgen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/chipledger/chipledger/internal/testpki"
)

// GrowthConfig configures the growth benchmark: how append throughput and
// proof latency change as the log grows.
type GrowthConfig struct {
	// Nodes are the cluster sizes, each a fresh in-process cluster grown
	// through every size.
	Nodes []int `json:"nodes"`
	// Sizes are the log sizes (leaves) to measure at, ascending.
	Sizes []uint64 `json:"sizes"`
	// Clients are the concurrent clients of the timed appends, and Appends
	// the appends per client count at each size (of fresh chips).
	Clients []int `json:"clients"`
	Appends int   `json:"appends"`
	// ProofClients concurrent clients ask for ProofRequests inclusion
	// proofs of random leaves in the tree of the current size.
	ProofClients  int `json:"proof_clients"`
	ProofRequests int `json:"proof_requests"`
	// FillChips and FillClients shape the fill (see FillStats).
	FillChips   int `json:"fill_chips"`
	FillClients int `json:"fill_clients"`
}

// GrowthReport is what was measured at one log size.
type GrowthReport struct {
	Nodes int    `json:"nodes"`
	Size  uint64 `json:"size"` // as configured
	// TreeSize is the tree's size when the measurements started.
	TreeSize uint64 `json:"tree_size"`
	// Fill is how the log was grown to this size from the previous one.
	Fill FillStats `json:"fill"`
	// Inclusion is raw inclusion proofs (GetInclusionProof) from
	// InclusionClients clients.
	Inclusion        Stats `json:"inclusion"`
	InclusionClients int   `json:"inclusion_clients"`
	// Appends are the timed appends, one run per client count, after the
	// proofs.
	Appends []GrowthAppend `json:"appends"`
}

// GrowthAppend is one timed append run at a log size.
type GrowthAppend struct {
	Clients int `json:"clients"`
	Stats
}

// RunGrowth runs the growth benchmark. It needs in-process clusters.
func RunGrowth(ctx context.Context, o Options, g GrowthConfig) ([]GrowthReport, error) {
	if o.external() {
		return nil, ErrNeedsInProcess
	}
	o, cleanup, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	defer cleanup()
	if g.FillChips <= 0 {
		g.FillChips = DefaultFillChips
	}
	if g.FillClients <= 0 {
		g.FillClients = 256
	}
	sizes := slices.Sorted(slices.Values(g.Sizes))
	pki, err := o.pki()
	if err != nil {
		return nil, err
	}
	chips, err := newFillChips(ctx, pki, int(min(uint64(g.FillChips), slices.Max(append(sizes, 1)))), o.LeafSize, o.Progress)
	if err != nil {
		return nil, err
	}
	var reports []GrowthReport
	for _, nodes := range g.Nodes {
		r, err := runGrowth(ctx, &o, g, nodes, sizes, chips)
		if err != nil {
			return nil, fmt.Errorf("growth, %s: %w", nodesName(nodes), err)
		}
		reports = append(reports, r...)
	}
	return reports, nil
}

// ErrNeedsInProcess reports a scenario that needs in-process clusters run
// against a running one.
var ErrNeedsInProcess = errors.New("needs in-process clusters")

func runGrowth(ctx context.Context, o *Options, g GrowthConfig, nodes int, sizes []uint64, chips *fillChips) ([]GrowthReport, error) {
	t, err := o.start(ctx, nodes)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	hc := NewHTTPClient()
	defer hc.CloseIdleConnections()
	f, err := chips.filler(ctx, hc, t.addrs, g.FillClients)
	if err != nil {
		return nil, err
	}
	var reports []GrowthReport
	for _, size := range sizes {
		o.Progress.logf("growth, %s: filling the log to %d leaves…", nodesName(nodes), size)
		r := GrowthReport{Nodes: nodes, Size: size, InclusionClients: g.ProofClients}
		if r.Fill, err = f.fill(ctx, size, o.Progress); err != nil {
			return nil, err
		}
		if r.TreeSize, err = caughtUp(ctx, hc, t.addrs, f.leader); err != nil {
			return nil, err
		}
		o.Progress.logf("  filled %d entries in %.1fs (%.0f/s); tree size %d", r.Fill.Entries, r.Fill.Seconds, r.Fill.PerSecond, r.TreeSize)
		r.Inclusion = inclusionLoad(ctx, hc, t.addrs, r.TreeSize, false, g.ProofRequests, g.ProofClients)
		o.Progress.logf("  inclusion proofs: %.0f/s, p50 %.2f ms", r.Inclusion.PerSecond, r.Inclusion.P50Ms)
		for _, clients := range g.Clients {
			leaves, err := freshEntries(ctx, chips.pki, g.Appends, o.LeafSize, o.Progress)
			if err != nil {
				return nil, err
			}
			res := Append(ctx, hc, f.leader, leaves, clients)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			r.Appends = append(r.Appends, GrowthAppend{Clients: clients, Stats: resultStats(res)})
			o.Progress.logf("  %d clients: %.0f appends/s, p50 %.2f ms", clients, res.PerSecond, ms(res.P50))
		}
		reports = append(reports, r)
	}
	return reports, nil
}

// freshEntries makes n escrow entries for chips never used before.
func freshEntries(ctx context.Context, pki *testpki.PKI, n, leafSize int, p Progress) ([][]byte, error) {
	phase := fmt.Sprintf("making %d signed escrow entries", n)
	return Entries(ctx, pki, uint64(time.Now().UnixNano()), n, leafSize, func(done int) { p.count(phase, done, n) })
}

// resultStats converts an append Result.
func resultStats(r Result) Stats {
	s := Stats{
		Ops: r.Appends, Errors: r.Errors, Seconds: r.Duration.Seconds(), PerSecond: r.PerSecond,
		P50Ms: ms(r.P50), P99Ms: ms(r.P99), MaxMs: ms(r.Max),
	}
	if r.FirstError != nil {
		s.FirstErr = r.FirstError.Error()
	}
	return s
}
