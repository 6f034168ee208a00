package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"text/tabwriter"
	"time"

	"github.com/chipledger/chipledger/internal/localcluster"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
)

// AppendScenario is one measured configuration of the append benchmark.
type AppendScenario struct {
	Nodes   int `json:"nodes"` // 0: an external cluster
	Clients int `json:"clients"`
	Appends int `json:"appends"`
}

// AppendReport is the outcome of one scenario.
type AppendReport struct {
	AppendScenario
	PerSecond float64 `json:"appends_per_second"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	Errors    int     `json:"errors"`
	FirstErr  string  `json:"first_error,omitempty"`
	// Cores and CPUPerAppendUs, for an in-process cluster, are the cores
	// the cluster and the load kept busy and their CPU time per
	// acknowledged append, in µs (absent against a running cluster, whose
	// CPU this process does not see).
	Cores          float64 `json:"cores,omitempty"`
	CPUPerAppendUs float64 `json:"cpu_us_per_append,omitempty"`
}

// AppendOptions configure RunAppend.
type AppendOptions struct {
	// Ledger lists the API addresses of a running cluster; empty runs each
	// scenario on a fresh in-process cluster of Scenario.Nodes nodes.
	Ledger []string
	// PKI makes the entries; for a running cluster it must be built on the
	// manufacturer CA the cluster trusts (testpki.FromCA).
	PKI *testpki.PKI
	// LeafSize is the size of each escrow entry (1,536 bytes by default).
	LeafSize int
	// Dir holds the in-process clusters' data (removed per scenario).
	Dir    string
	Logger *slog.Logger
	// Progress receives the progress of making entries and a line per
	// scenario.
	Progress Progress
}

// RunAppend runs the scenarios: it makes every entry first (outside the
// timed phase), then, per scenario, registers the station and appends the
// scenario's entries from its clients to the leader.
func RunAppend(ctx context.Context, o AppendOptions, scenarios []AppendScenario) ([]AppendReport, error) {
	if o.LeafSize == 0 {
		o.LeafSize = 1536
	}
	need := 0
	for _, s := range scenarios {
		need += s.Appends
	}
	if len(o.Ledger) == 0 {
		// Each in-process cluster starts empty, so the scenarios share entries.
		need = 0
		for _, s := range scenarios {
			need = max(need, s.Appends)
		}
	}
	start := time.Now()
	// A running cluster keeps every entry: start from fresh chip numbers.
	first := uint64(time.Now().UnixNano())
	phase := fmt.Sprintf("making %d signed %d-byte escrow entries", need, o.LeafSize)
	leaves, err := Entries(ctx, o.PKI, first, need, o.LeafSize, func(done int) { o.Progress.count(phase, done, need) })
	if err != nil {
		return nil, fmt.Errorf("make entries: %w", err)
	}
	o.Progress.logf("made %d signed %d-byte escrow entries in %s", need, o.LeafSize, time.Since(start).Round(time.Millisecond))
	station, err := registration(o.PKI)
	if err != nil {
		return nil, err
	}

	var reports []AppendReport
	next := 0
	for _, s := range scenarios {
		addrs := o.Ledger
		var cluster *localcluster.Cluster
		var batch [][]byte
		if len(addrs) == 0 {
			skey, _, err := ledger.GenerateLogKey("bench.chipledger.local/log")
			if err != nil {
				return nil, err
			}
			signer, err := ledger.NewLogSigner(skey)
			if err != nil {
				return nil, err
			}
			dir, err := os.MkdirTemp(o.Dir, "bench-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
			cluster, err = localcluster.Start(ctx, localcluster.Options{Nodes: s.Nodes, Dir: dir, Signer: signer, Trust: o.PKI.Trust, Logger: o.Logger})
			if err != nil {
				return nil, err
			}
			addrs = cluster.Addrs()
			batch = leaves[:s.Appends]
		} else {
			batch = leaves[next : next+s.Appends]
			next += s.Appends
		}
		r, err := runScenario(ctx, addrs, station, batch, s.Clients)
		if cluster != nil {
			cluster.Close()
		}
		if err != nil {
			return nil, err
		}
		o.Progress.logf("append, %s, %d client(s): %d appends, %.0f/s, p50 %.2f ms, p99 %.2f ms", nodesName(s.Nodes), s.Clients, s.Appends, r.PerSecond, ms(r.P50), ms(r.P99))
		rep := AppendReport{
			AppendScenario: s, PerSecond: r.PerSecond, Errors: r.Errors,
			P50Ms: ms(r.P50), P99Ms: ms(r.P99), MaxMs: ms(r.Max),
		}
		if r.FirstError != nil {
			rep.FirstErr = r.FirstError.Error()
		}
		if cluster != nil && r.CPU > 0 {
			rep.Cores = math.Round(r.Cores()*100) / 100
			rep.CPUPerAppendUs = float64(r.CPUPerAppend().Microseconds())
		}
		reports = append(reports, rep)
	}
	return reports, nil
}

// runScenario registers the station, then appends leaves to the leader from
// the given number of clients.
func runScenario(ctx context.Context, addrs []string, station []byte, leaves [][]byte, clients int) (Result, error) {
	httpClient := NewHTTPClient()
	defer httpClient.CloseIdleConnections()
	// Register the station (a duplicate if it already is).
	leader, err := register(ctx, httpClient, addrs, station)
	if err != nil {
		return Result{}, err
	}
	return Append(ctx, httpClient, leader, leaves, clients), nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// WriteAppendTable prints reports as a table.
func WriteAppendTable(w io.Writer, reports []AppendReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "nodes\tclients\tappends\tappends/s\tp50 ms\tp99 ms\tmax ms\terrors\tcores\tCPU µs/append\t")
	for _, r := range reports {
		nodes := fmt.Sprint(r.Nodes)
		if r.Nodes == 0 {
			nodes = "ext"
		}
		cores, cpu := "-", "-"
		if r.CPUPerAppendUs > 0 {
			cores, cpu = fmt.Sprintf("%.2f", r.Cores), fmt.Sprintf("%.0f", r.CPUPerAppendUs)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%d\t%s\t%s\t\n", nodes, r.Clients, r.Appends, r.PerSecond, r.P50Ms, r.P99Ms, r.MaxMs, r.Errors, cores, cpu)
	}
	return tw.Flush()
}

// WriteJSON prints v as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
