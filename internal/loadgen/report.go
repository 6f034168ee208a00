package loadgen

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTables prints the report as one table per scenario group, each under
// a heading that says what was measured, then the skipped scenarios.
func (r *Report) WriteTables(w io.Writer) error {
	where := "in-process clusters on loopback, fsync on"
	if len(r.Ledger) > 0 {
		where = "the running cluster at " + strings.Join(r.Ledger, ",")
	}
	quick := ""
	if r.Quick {
		quick = ", --quick sizes"
	}
	fmt.Fprintf(w, "chipledger bench: %s, %d CPUs%s, %.0fs\n", where, r.CPUs, quick, r.Seconds)
	sections := []struct {
		present bool
		title   string
		write   func(io.Writer) error
	}{
		{len(r.Append) > 0, fmt.Sprintf("append: %d-byte escrow entries sent to the leader, each timed from request to receipt", r.LeafSize),
			func(w io.Writer) error { return WriteAppendTable(w, r.Append) }},
		{len(r.Proofs) > 0, "proofs: raw Connect calls at random sizes, and client-verified (Go SDK) proofs",
			func(w io.Writer) error { return writeProofTable(w, r.Proofs) }},
		{len(r.Recovery) > 0, "recovery: client.Recover of wiped devices, one at a time, every check included",
			func(w io.Writer) error { return writeRecoveryTable(w, r.Recovery) }},
		{len(r.Provisioning) > 0, "provisioning: one station, in-process emulated devices; mean step times in ms",
			func(w io.Writer) error { return writeProvisionTable(w, r.Provisioning) }},
		{len(r.Growth) > 0, growthTitle(r.Growth),
			func(w io.Writer) error { return writeGrowthTable(w, r.Growth) }},
	}
	for _, s := range sections {
		if !s.present {
			continue
		}
		fmt.Fprintf(w, "\n== %s\n", s.title)
		if err := s.write(w); err != nil {
			return err
		}
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintln(w)
		for _, s := range r.Skipped {
			fmt.Fprintf(w, "skipped %s: %s\n", s.Scenario, s.Reason)
		}
	}
	return nil
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
}

func nodesColumn(nodes int) string {
	if nodes == 0 {
		return "ext"
	}
	return fmt.Sprint(nodes)
}

// statsColumns are the rate, latency and error columns of a Stats.
func statsColumns(s Stats) string {
	return fmt.Sprintf("%.0f\t%.2f\t%.2f\t%.2f\t%d\t", s.PerSecond, s.P50Ms, s.P99Ms, s.MaxMs, s.Errors)
}

func writeProofTable(w io.Writer, reports []ProofReport) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "nodes\ttree size\tclients\tproof\trequests\tproofs/s\tp50 ms\tp99 ms\tmax ms\terrors\t")
	for _, r := range reports {
		rows := []struct {
			name string
			s    *Stats
		}{
			{"inclusion, raw", &r.Inclusion}, {"consistency, raw", &r.Consistency},
			{"inclusion, verified", r.VerifiedInclusion}, {"consistency, verified", r.VerifiedConsistency},
		}
		for _, row := range rows {
			if row.s == nil {
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%s\n", nodesColumn(r.Nodes), r.TreeSize, r.Clients, row.name, row.s.Ops+row.s.Errors, statsColumns(*row.s))
		}
	}
	return tw.Flush()
}

func writeRecoveryTable(w io.Writer, reports []RecoveryReport) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "nodes\tclient\tdevices\trecoveries/s\tp50 ms\tp99 ms\tmax ms\terrors\tdevice ms\tledger ms\tverify ms\trestore ms\t")
	for _, r := range reports {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s%.2f\t%.2f\t%.2f\t%.2f\t\n", nodesColumn(r.Nodes), r.Client, r.Devices, statsColumns(r.Recover),
			r.DeviceMs, r.LedgerMs, r.VerifyMs, r.RestoreMs)
	}
	return tw.Flush()
}

func writeProvisionTable(w io.Writer, reports []ProvisionReport) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "nodes\tin flight\tdevices\tdevices/s\tp50 ms\tp99 ms\tfailed\tkey pair\tpackage\tcertificate\tsign\tledger\treceipt\t")
	for _, r := range reports {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n",
			nodesColumn(r.Nodes), r.InFlight, r.Devices, r.PerSecond, r.P50Ms, r.P99Ms, r.Failed,
			r.KeyPairMs, r.PackageMs, r.CertificateMs, r.SignMs, r.LedgerMs, r.ReceiptMs)
	}
	return tw.Flush()
}

func growthTitle(reports []GrowthReport) string {
	chips, clients := 0, 0
	if len(reports) > 0 {
		chips, clients = reports[0].Fill.Chips, reports[0].Fill.Clients
	}
	return fmt.Sprintf("growth: at each log size, inclusion proofs of random leaves at the current size, then timed appends of fresh chips;\n"+
		"   the fill between sizes appends pre-signed entries of %d chips epoch after epoch from %d clients (rate: entries/s, signing included)", chips, clients)
}

func writeGrowthTable(w io.Writer, reports []GrowthReport) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "nodes\tlog size\ttree size\tmeasure\tops\trate/s\tp50 ms\tp99 ms\tmax ms\terrors\t")
	for _, r := range reports {
		lead := fmt.Sprintf("%s\t%d\t%d", nodesColumn(r.Nodes), r.Size, r.TreeSize)
		fmt.Fprintf(tw, "%s\tfill\t%d\t%.0f\t\t\t\t\t\n", lead, r.Fill.Entries, r.Fill.PerSecond)
		fmt.Fprintf(tw, "%s\tinclusion ×%d\t%d\t%s\n", lead, r.InclusionClients, r.Inclusion.Ops+r.Inclusion.Errors, statsColumns(r.Inclusion))
		for _, a := range r.Appends {
			fmt.Fprintf(tw, "%s\tappend ×%d\t%d\t%s\n", lead, a.Clients, a.Ops+a.Errors, statsColumns(a.Stats))
		}
	}
	return tw.Flush()
}
