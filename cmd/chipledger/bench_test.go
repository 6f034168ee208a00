package main

import (
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/chipledger/chipledger/internal/loadgen"
)

// TestBenchQuickReportsEveryScenario runs the whole suite scaled down, as
// CI can, and checks that every scenario group is in the JSON document with
// numbers, that the plot is a PNG, and that nothing is left in the
// temporary directory. It asserts no performance threshold.
func TestBenchQuickReportsEveryScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the quick benchmark suite (about half a minute)")
	}
	clearEnv(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	plot := filepath.Join(t.TempDir(), "bench.png")

	res := runCLI(t, "bench", "--quick", "--json", "--plot", plot)
	if res.err != nil {
		t.Fatalf("bench --quick: %v\n%s", res.err, res.stderr)
	}
	var r loadgen.Report
	if err := json.Unmarshal([]byte(res.stdout), &r); err != nil {
		t.Fatalf("stdout is not one JSON document: %v\n%s", err, res.stdout)
	}

	if !r.Quick || len(r.Skipped) != 0 {
		t.Errorf("quick = %v, skipped = %v; want a quick run that skipped nothing", r.Quick, r.Skipped)
	}
	check := func(what string, s loadgen.Stats) {
		t.Helper()
		if s.Ops == 0 || s.PerSecond <= 0 || s.P50Ms <= 0 || s.P99Ms <= 0 || s.Errors != 0 {
			t.Errorf("%s: %+v, want operations, a rate and latencies, and no errors", what, s)
		}
	}
	if len(r.Append) != 6 {
		t.Errorf("%d append scenarios, want 1 and 3 nodes at 1, 16 and 256 clients", len(r.Append))
	}
	for _, a := range r.Append {
		if a.PerSecond <= 0 || a.P50Ms <= 0 || a.P99Ms <= 0 || a.Errors != 0 {
			t.Errorf("append %+v: want a rate and latencies, and no errors", a)
		}
	}
	if len(r.Proofs) != 1 {
		t.Fatalf("%d proofs scenarios, want 1", len(r.Proofs))
	}
	p := r.Proofs[0]
	check("inclusion proofs", p.Inclusion)
	check("consistency proofs", p.Consistency)
	if p.VerifiedInclusion == nil || p.VerifiedConsistency == nil {
		t.Fatalf("proofs without the client-verified ones: %+v", p)
	}
	check("verified inclusion proofs", *p.VerifiedInclusion)
	check("verified consistency proofs", *p.VerifiedConsistency)
	if p.TreeSize < uint64(p.Entries) {
		t.Errorf("proofs measured at tree size %d, want at least %d", p.TreeSize, p.Entries)
	}
	var modes []string
	for _, rec := range r.Recovery {
		check("recovery with a "+rec.Client+" client", rec.Recover)
		modes = append(modes, rec.Client)
	}
	if !slices.Equal(modes, []string{loadgen.FreshClient, loadgen.SharedClient}) {
		t.Errorf("recovery with clients %v, want fresh and shared", modes)
	}
	if len(r.Provisioning) != 6 {
		t.Errorf("%d provisioning scenarios, want 1 and 3 nodes at 1, 8 and 64 in flight", len(r.Provisioning))
	}
	for _, pr := range r.Provisioning {
		if pr.Succeeded != pr.Devices || pr.PerSecond <= 0 || pr.P50Ms <= 0 || pr.LedgerMs <= 0 {
			t.Errorf("provisioning %+v: want every device provisioned, a rate and step times", pr)
		}
	}
	if len(r.Growth) != 2 {
		t.Fatalf("%d growth sizes, want 2", len(r.Growth))
	}
	for _, g := range r.Growth {
		if g.TreeSize < g.Size || g.Fill.Entries == 0 || g.Fill.PerSecond <= 0 {
			t.Errorf("growth at %d: tree size %d, fill %+v; want the log filled to the size", g.Size, g.TreeSize, g.Fill)
		}
		check("growth inclusion proofs", g.Inclusion)
		if len(g.Appends) != 2 {
			t.Errorf("growth at %d: %d append runs, want 16 and 256 clients", g.Size, len(g.Appends))
		}
		for _, a := range g.Appends {
			check("growth appends", a.Stats)
		}
	}

	f, err := os.Open(plot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("--plot did not write a PNG: %v", err)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("the suite left %v in the temporary directory", left)
	}
}

func TestBenchFlagErrorsSayWhatIsWrong(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--plot", "out.gif"}, ".png, .svg or .pdf"},
		{[]string{"bench", "append", "--plot", "out.gif", "--nodes", "bad"}, ".png, .svg or .pdf"}, // before any work
		{[]string{"bench", "--ledger", "127.0.0.1:1"}, "--ledger needs --ca"},
		{[]string{"bench", "--growth-sizes", "10k,none"}, "--growth-sizes"},
		{[]string{"bench", "provisioning", "--in-flight", "0"}, "--in-flight"},
		{[]string{"bench", "growth", "--clients", "x"}, "--clients"},
		{[]string{"bench", "proofs", "extra"}, "takes no arguments"},
		{[]string{"bench", "growth", "--ledger", "127.0.0.1:1", "--ca", "ca"}, "cannot run against --ledger"},
		{[]string{"bench", "--ledger", "127.0.0.1:1", "--ca", filepath.Join(t.TempDir(), "no-ca")}, "create one with: chipledger ca init --dir"},
	} {
		res := runCLI(t, tc.args...)
		if res.err == nil || !strings.Contains(res.err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one mentioning %q", tc.args, res.err, tc.want)
		}
		if res.err != nil && (strings.Contains(res.err.Error(), "InitCA") || strings.Contains(res.err.Error(), "LoadCA")) {
			t.Errorf("%v: error %v names a Go function", tc.args, res.err)
		}
	}
}

func TestSizeListReadsPlainAndShortSizes(t *testing.T) {
	got, err := sizeList("10000, 100k,1M,2500", "--growth-sizes")
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{10_000, 100_000, 1_000_000, 2500}; !slices.Equal(got, want) {
		t.Errorf("sizeList = %v, want %v", got, want)
	}
}
