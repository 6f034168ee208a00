package loadgen

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"
)

// A Group is one group of scenarios of the suite.
type Group string

// The groups, in the order RunSuite runs them.
const (
	GroupAppend       Group = "append"
	GroupProofs       Group = "proofs"
	GroupRecovery     Group = "recovery"
	GroupProvisioning Group = "provisioning"
	GroupGrowth       Group = "growth"
)

// Groups lists every group in order.
var Groups = []Group{GroupAppend, GroupProofs, GroupRecovery, GroupProvisioning, GroupGrowth}

// Config sizes every scenario of the suite.
type Config struct {
	// Quick marks the scaled-down sizes of DefaultConfig(true).
	Quick        bool                `json:"quick"`
	Append       []AppendScenario    `json:"append"`
	Proofs       []ProofScenario     `json:"proofs"`
	Recovery     []RecoveryScenario  `json:"recovery"`
	Provisioning []ProvisionScenario `json:"provisioning"`
	Growth       GrowthConfig        `json:"growth"`
}

// DefaultConfig returns the suite's default sizes, which take a few
// minutes on two cores (the growth fill to a million leaves most of them),
// or with quick a scaled-down suite that takes well under a minute.
func DefaultConfig(quick bool) Config {
	c := Config{
		Quick:    quick,
		Proofs:   []ProofScenario{{Nodes: 3, Entries: 20000, Clients: 16, Requests: 20000, Verified: 5000}},
		Recovery: []RecoveryScenario{{Nodes: 3, Devices: 200}},
		Growth: GrowthConfig{
			Nodes: []int{1}, Sizes: []uint64{10_000, 100_000, 1_000_000},
			Clients: []int{16, 256}, Appends: 10000,
			ProofClients: 16, ProofRequests: 10000,
			FillChips: DefaultFillChips, FillClients: 256,
		},
	}
	appends := map[int]int{1: 1000, 16: 10000, 256: 30000}
	devices := map[int]int{1: 200, 8: 1000, 64: 2000}
	if quick {
		appends = map[int]int{1: 100, 16: 1000, 256: 2000}
		devices = map[int]int{1: 20, 8: 80, 64: 200}
		c.Proofs = []ProofScenario{{Nodes: 3, Entries: 2000, Clients: 16, Requests: 2000, Verified: 500}}
		c.Recovery = []RecoveryScenario{{Nodes: 3, Devices: 20}}
		c.Growth.Sizes = []uint64{1000, 10_000}
		c.Growth.Appends, c.Growth.ProofRequests, c.Growth.FillChips = 1000, 2000, 4096
	}
	for _, nodes := range []int{1, 3} {
		for _, clients := range []int{1, 16, 256} {
			c.Append = append(c.Append, AppendScenario{Nodes: nodes, Clients: clients, Appends: appends[clients]})
		}
		for _, inFlight := range []int{1, 8, 64} {
			c.Provisioning = append(c.Provisioning, ProvisionScenario{Nodes: nodes, InFlight: inFlight, Devices: devices[inFlight]})
		}
	}
	return c
}

// ForRunningCluster returns the configuration for a running cluster: the
// scenarios that differ only in their number of nodes run once, with Nodes
// 0.
func (c Config) ForRunningCluster() Config {
	c.Append = onRunningCluster(c.Append, func(s *AppendScenario) *int { return &s.Nodes })
	c.Proofs = onRunningCluster(c.Proofs, func(s *ProofScenario) *int { return &s.Nodes })
	c.Recovery = onRunningCluster(c.Recovery, func(s *RecoveryScenario) *int { return &s.Nodes })
	c.Provisioning = onRunningCluster(c.Provisioning, func(s *ProvisionScenario) *int { return &s.Nodes })
	return c
}

func onRunningCluster[S comparable](in []S, nodes func(*S) *int) []S {
	var out []S
	for _, s := range in {
		*nodes(&s) = 0
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// Report is the outcome of a suite run: every scenario and number, and the
// scenarios skipped with why.
type Report struct {
	// Ledger is the running cluster measured; empty for in-process
	// clusters.
	Ledger   []string  `json:"ledger,omitempty"`
	Quick    bool      `json:"quick"`
	LeafSize int       `json:"leaf_size"`
	CPUs     int       `json:"cpus"` // GOMAXPROCS of the load generator (and of in-process nodes)
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`

	Append       []AppendReport    `json:"append,omitempty"`
	Proofs       []ProofReport     `json:"proofs,omitempty"`
	Recovery     []RecoveryReport  `json:"recovery,omitempty"`
	Provisioning []ProvisionReport `json:"provisioning,omitempty"`
	Growth       []GrowthReport    `json:"growth,omitempty"`
	Skipped      []Skipped         `json:"skipped,omitempty"`
}

// Skipped is a scenario that did not run.
type Skipped struct {
	Scenario string `json:"scenario"`
	Reason   string `json:"reason"`
}

// RunSuite runs the given groups (every group if none) with cfg's sizes.
// Against a running cluster the caller passes cfg.ForRunningCluster(); the
// growth group is skipped there, and without o.LogKey so are the groups
// and proofs that verify. A group that fails ends the run with its error
// and the report so far.
func RunSuite(ctx context.Context, o Options, cfg Config, groups ...Group) (*Report, error) {
	if len(groups) == 0 {
		groups = Groups
	}
	o, cleanup, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	defer cleanup()
	r := &Report{Ledger: o.Ledger, Quick: cfg.Quick, LeafSize: o.LeafSize, CPUs: runtime.GOMAXPROCS(0), Started: time.Now().UTC()}
	defer func() { r.Seconds = time.Since(r.Started).Seconds() }()
	skip := func(scenario, reason string) {
		r.Skipped = append(r.Skipped, Skipped{scenario, reason})
		o.Progress.logf("skipped %s: %s", scenario, reason)
	}
	noLogKey := "verifying needs the running cluster's log key (--log-key)"
	for _, g := range groups {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		switch {
		case g == GroupGrowth && o.external():
			skip(string(g), "it fills fresh in-process clusters to a million entries; not done to a running cluster")
			continue
		case (g == GroupRecovery || g == GroupProvisioning) && o.external() && o.LogKey == "":
			skip(string(g), noLogKey)
			continue
		case g == GroupProofs && o.external() && o.LogKey == "":
			skip("proofs (client-verified)", noLogKey)
		}
		var err error
		switch g {
		case GroupAppend:
			r.Append, err = runSuiteAppend(ctx, &o, cfg.Append)
		case GroupProofs:
			r.Proofs, err = RunProofs(ctx, o, cfg.Proofs)
		case GroupRecovery:
			r.Recovery, err = RunRecovery(ctx, o, cfg.Recovery)
		case GroupProvisioning:
			r.Provisioning, err = RunProvisioning(ctx, o, cfg.Provisioning)
		case GroupGrowth:
			r.Growth, err = RunGrowth(ctx, o, cfg.Growth)
		default:
			err = fmt.Errorf("no scenario group %q", g)
		}
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

func runSuiteAppend(ctx context.Context, o *Options, scenarios []AppendScenario) ([]AppendReport, error) {
	pki, err := o.pki()
	if err != nil {
		return nil, err
	}
	return RunAppend(ctx, AppendOptions{Ledger: o.Ledger, PKI: pki, LeafSize: o.LeafSize, Dir: o.Dir, Logger: o.Logger, Progress: o.Progress}, scenarios)
}
