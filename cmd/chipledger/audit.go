package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// exitFindings is the exit code of an audit that found something wrong;
// 1 is an audit that could not run, 2 a usage error.
const exitFindings = 3

// auditCommand is `chipledger audit`.
func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "audit the ledger: checkpoints consistent across nodes and over time, every entry re-validated",
		UsageText: `chipledger audit --ledger ADDR[,ADDR...] --log-key KEY --roots trust.pem --state audit.state [--json]
chipledger audit ... --follow [--interval 1m]                 # keep auditing as the log grows`,
		Description: `Audits the log without trusting its nodes. Each round fetches the checkpoint
of every node given with --ledger, verifies it with the log key, and proves
every pair of them, and the checkpoint audited last time, consistent: two
checkpoints that do not extend one another are a fork; a node serving a tree
smaller than the audited one that is not a prefix of it is a rollback (a
smaller prefix is a lagging node, which is fine).

It then fetches every entry not audited yet, proven against the largest
checkpoint that extends the audited one, and re-validates it with its own copy
of the manufacturer roots (--roots): the leaf parses strictly; a station's
certificate chains to the roots; an escrow entry's station registered before
it, its station signature, its device certificate and the chip and identities
it binds, and each chip's epochs running 1, 2, 3, ...

As it goes, it replays the verifiable chip index over the entries it finds
valid (each chip's latest entry and history root) and checks every index-root
leaf against it: the log must start with the genesis index root, and the index
root at leaf i must cover the i leaves before it with the auditor's own chip
count and root (index-root-mismatch). Every checkpoint on the audited log must
end with such a leaf (checkpoint-not-at-index-root).

--state keeps the audited checkpoint, the count of entries audited, the
stations, each chip's last epoch and its entry in the chip index, where the
index roots are, and the findings, so a rerun continues where the last one
stopped (it is saved every 10,000 entries, and at the end), checks the next
index roots against the same index, and reports the same findings. Use one
state file per log and set of roots.

Exit status: 0 when nothing was found, 3 when the state holds findings (they
are listed, even when this run could not reach a node), 1 when the audit could
not run, 2 for a usage error.`,
		Flags: append(ledgerFlags(),
			&cli.StringFlag{Name: "roots", Required: true, EnvVars: env("roots"),
				Usage: "the manufacturer trust `PEM` bundle to check certificates with: the auditor's own copy, not the nodes'"},
			&cli.StringFlag{Name: "state", Required: true, EnvVars: env("audit-state"),
				Usage: "audit state `FILE`: created by the first run, continued by the next"},
			&cli.BoolFlag{Name: "follow", Usage: "keep auditing as the log grows, until interrupted"},
			&cli.DurationFlag{Name: "interval", Value: time.Minute,
				Usage: "with --follow, audit at least this often, even if no node streams a new checkpoint"},
			&cli.IntFlag{Name: "workers", Usage: "goroutines re-validating entries", DefaultText: "one per CPU"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON (with --follow, one object per round)"},
			&cli.StringFlag{Name: "witness-policy", EnvVars: env("witness-policy"), TakesFile: true,
				Usage: "a c2sp.org/tlog-policy `FILE` (the nodes'): also check each node's witnessed checkpoint against the policy and prove it consistent with the audited log"},
		),
		Action: runAudit,
	}
}

func runAudit(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	vkey, err := verifierKey(c.String("log-key"))
	if err != nil {
		return err
	}
	trust, err := readRoots(c.String("roots"))
	if err != nil {
		return err
	}
	path := c.String("state")
	if err := checkFileDir("state", path); err != nil {
		return err
	}
	state, err := client.ReadAuditStateFile(path, vkey, trust)
	if errors.Is(err, fs.ErrNotExist) {
		state, err = client.NewAuditState(vkey, trust)
	}
	if err != nil {
		return err
	}
	hc, err := ledgerHTTPClient(c)
	if err != nil {
		return err
	}
	var witnesses *proofs.WitnessPolicy
	if path := c.String("witness-policy"); path != "" {
		if witnesses, err = readWitnessPolicy(path); err != nil {
			return fmt.Errorf("--witness-policy: %w", err)
		}
	}
	progress := newScanProgress(c.App.ErrWriter)
	// saveErr is the last save's: after an interruption, whether the state
	// file holds what was audited.
	var saveErr error
	a, err := client.NewAuditor(client.AuditOptions{
		Addrs:      ledgerAddrs(c),
		HTTPClient: hc,
		State:      state,
		Logger:     logger(c),
		Workers:    c.Int("workers"),
		Witnesses:  witnesses,
		Save:       func(s *client.AuditState) error { saveErr = s.WriteFile(path); return saveErr },
		Progress:   progress.update,
	})
	if err != nil {
		return err
	}
	defer a.Close()
	out := auditPrinter{w: c.App.Writer, json: c.Bool("json"), state: state}

	if c.Bool("follow") {
		err := a.Follow(c.Context, c.Duration("interval"), func(r *client.AuditReport, err error) error {
			progress.done()
			if err != nil {
				logger(c).Warn("audit round failed; retrying at the next one", "err", err)
			}
			return out.round(r, err)
		})
		progress.done()
		switch {
		case err != nil && !errors.Is(err, context.Canceled):
			return err
		case saveErr != nil:
			return fmt.Errorf("interrupted after auditing %d entries, but saving the state failed (a rerun starts from its last save): %w", state.Audited(), saveErr)
		}
		return findingsExit(state)
	}

	r, err := a.Audit(c.Context)
	progress.done()
	switch {
	case err == nil:
	case errors.Is(err, context.Canceled) && saveErr != nil:
		return fmt.Errorf("interrupted after auditing %d of %d entries, but saving the state failed (a rerun starts from its last save): %w",
			state.Audited(), r.Checkpoint.Size, saveErr)
	case errors.Is(err, context.Canceled):
		return cli.Exit(fmt.Sprintf("interrupted after auditing %d of %d entries; the state is saved in %s, run again to continue",
			state.Audited(), r.Checkpoint.Size, path), 1)
	case state.FindingCount() > 0:
		// The round failed, but the findings the state holds must not go
		// unseen behind an outage: list them, and exit as for findings.
		if perr := out.failed(r, err); perr != nil {
			return errors.Join(err, perr)
		}
		return cli.Exit(fmt.Sprintf("%d findings: a node or the log misbehaved (and this run failed: %v)", state.FindingCount(), err), exitFindings)
	default:
		return err
	}
	if err := out.report(r); err != nil {
		return err
	}
	return findingsExit(state)
}

// readRoots reads the --roots bundle.
func readRoots(path string) (*ledger.Trust, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--roots: %w", err)
	}
	trust, err := ledger.ParseTrustPEM(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("--roots %s: %w", path, err)
	}
	return trust, nil
}

// findingsExit is the command's result for a state: exit status 3 if it
// holds findings.
func findingsExit(s *client.AuditState) error {
	if n := s.FindingCount(); n > 0 {
		return cli.Exit(fmt.Sprintf("%d findings: a node or the log misbehaved", n), exitFindings)
	}
	return nil
}

// scanProgress draws a progress bar for each scan.
type scanProgress struct {
	w      io.Writer
	bar    *progressbar.ProgressBar
	target uint64
}

func newScanProgress(w io.Writer) *scanProgress { return &scanProgress{w: w} }

func (p *scanProgress) update(a client.AuditProgress) {
	if p.bar == nil || p.target != a.Target {
		p.done()
		p.bar, p.target = newProgress(p.w, int(a.Target-a.Start), "auditing", "entries"), a.Target
	}
	p.bar.Set(int(a.Audited - a.Start))
}

func (p *scanProgress) done() {
	if p.bar != nil {
		p.bar.Finish()
		p.bar = nil
	}
}

// auditPrinter prints audit reports, as text or JSON.
type auditPrinter struct {
	w     io.Writer
	json  bool
	state *client.AuditState
}

// auditJSON is the JSON form of an audit report.
type auditJSON struct {
	Log        string         `json:"log"`
	Checkpoint checkpointJSON `json:"checkpoint"`
	Nodes      []nodeJSON     `json:"nodes"`
	// Audited is the number of entries audited in all; NewEntries those
	// of this run (or round).
	Audited          uint64  `json:"audited"`
	NewEntries       uint64  `json:"new_entries"`
	EntriesPerSecond float64 `json:"entries_per_second"`
	Stations         int     `json:"stations"`
	Chips            int     `json:"chips"`
	// IndexRoots is the number of index-root leaves audited, each checked
	// against the auditor's chip index; IndexChips and IndexRoot (hex) are
	// that index's size and root over the audited leaves.
	IndexRoots   uint64 `json:"index_roots"`
	IndexChips   int    `json:"index_chips"`
	IndexRoot    string `json:"index_root"`
	FindingCount uint64 `json:"finding_count"`
	// Witnessed, with --witness-policy, is the largest witnessed
	// checkpoint proven consistent with the audited one in the round.
	Witnessed *checkpointSizeJSON `json:"witnessed,omitempty"`
	// Findings are all the findings recorded (one-shot audit);
	// NewFindings those of the round (--follow).
	Findings    *[]client.Finding `json:"findings,omitempty"`
	NewFindings *[]client.Finding `json:"new_findings,omitempty"`
	Error       string            `json:"error,omitempty"`
}

type checkpointJSON struct {
	Size uint64 `json:"size"`
	Root string `json:"root"`
	Note string `json:"note"`
}

type checkpointSizeJSON struct {
	Size uint64 `json:"size"`
	Root string `json:"root"`
}

type nodeJSON struct {
	Node   string `json:"node"`
	Status string `json:"status"`
	Size   uint64 `json:"size"`
	Error  string `json:"error,omitempty"`
}

func (p *auditPrinter) toJSON(r *client.AuditReport) auditJSON {
	cp, note := p.state.Checkpoint()
	root, chips := p.state.IndexRoot()
	j := auditJSON{
		Log:              cp.Origin,
		Checkpoint:       checkpointJSON{Size: cp.Size, Root: base64.StdEncoding.EncodeToString(cp.Hash[:]), Note: string(note)},
		Nodes:            []nodeJSON{},
		Audited:          p.state.Audited(),
		NewEntries:       r.To - r.From,
		EntriesPerSecond: r.Rate(),
		Stations:         len(p.state.Stations()),
		Chips:            p.state.Chips(),
		IndexRoots:       p.state.IndexRoots(),
		IndexChips:       chips,
		IndexRoot:        hex.EncodeToString(root[:]),
		FindingCount:     p.state.FindingCount(),
	}
	if w := r.Witnessed; w.Size > 0 {
		j.Witnessed = &checkpointSizeJSON{Size: w.Size, Root: base64.StdEncoding.EncodeToString(w.Hash[:])}
	}
	for _, n := range r.Nodes {
		nj := nodeJSON{Node: n.Node, Status: string(n.Status), Size: n.Checkpoint.Size}
		if n.Err != nil {
			nj.Error = n.Err.Error()
		}
		j.Nodes = append(j.Nodes, nj)
	}
	return j
}

// report prints the result of a one-shot audit, with every finding the
// state holds.
func (p *auditPrinter) report(r *client.AuditReport) error {
	all := p.state.Findings()
	if all == nil {
		all = []client.Finding{}
	}
	if p.json {
		j := p.toJSON(r)
		j.Findings = &all
		return writeJSONLine(p.w, j)
	}
	cp, _ := p.state.Checkpoint()
	p.nodes(r)
	tw := tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "log\t%s\n", cp.Origin)
	fmt.Fprintf(tw, "checkpoint\t%d leaves, root %s\n", cp.Size, base64.StdEncoding.EncodeToString(cp.Hash[:]))
	fmt.Fprintf(tw, "audited\t%d entries (%d in this run, %.0f/s)\n", p.state.Audited(), r.To-r.From, r.Rate())
	fmt.Fprintf(tw, "stations\t%d\n", len(p.state.Stations()))
	fmt.Fprintf(tw, "chips\t%d\n", p.state.Chips())
	root, chips := p.state.IndexRoot()
	fmt.Fprintf(tw, "index roots\t%d checked against the auditor's chip index (%d chips, root %x)\n", p.state.IndexRoots(), chips, root)
	if w := r.Witnessed; w.Size > 0 {
		fmt.Fprintf(tw, "witnessed\t%d leaves, cosigned by the witness policy's quorum, proven consistent with the audited log\n", w.Size)
	}
	if n := p.state.FindingCount(); n == 0 {
		fmt.Fprintf(tw, "findings\tnone\n")
	} else {
		fmt.Fprintf(tw, "findings\t%d (%d new)\n", n, r.NewFindings())
	}
	tw.Flush()
	p.findings(all)
	return nil
}

// failed prints the report of a one-shot audit that failed (err) while
// the state holds findings: the nodes it tried and every finding.
func (p *auditPrinter) failed(r *client.AuditReport, err error) error {
	if p.json {
		all := p.state.Findings()
		j := p.toJSON(r)
		j.Findings = &all
		j.Error = err.Error()
		return writeJSONLine(p.w, j)
	}
	p.nodes(r)
	fmt.Fprintf(p.w, "audit failed: %v\nfindings: %d in the state (%d new in this run)\n", err, p.state.FindingCount(), r.NewFindings())
	p.findings(p.state.Findings())
	return nil
}

// round prints the result of a --follow round, with its new findings.
func (p *auditPrinter) round(r *client.AuditReport, err error) error {
	if p.json {
		j := p.toJSON(r)
		fs := r.Findings
		if fs == nil {
			fs = []client.Finding{}
		}
		j.NewFindings = &fs
		if err != nil {
			j.Error = err.Error()
		}
		return writeJSONLine(p.w, j)
	}
	ok := 0
	for _, n := range r.Nodes {
		if n.Status == client.NodeOK || n.Status == client.NodeLagging {
			ok++
		}
	}
	cp, _ := p.state.Checkpoint()
	fmt.Fprintf(p.w, "%s  checkpoint %d  audited %d (+%d, %.0f/s)  nodes %d/%d consistent  findings %d new, %d in all\n",
		time.Now().UTC().Format(time.RFC3339), cp.Size, p.state.Audited(), r.To-r.From, r.Rate(), ok, len(r.Nodes), r.NewFindings(), p.state.FindingCount())
	if err != nil {
		fmt.Fprintf(p.w, "  round failed: %v\n", err)
	}
	p.findings(r.Findings)
	return nil
}

func (p *auditPrinter) nodes(r *client.AuditReport) {
	tw := tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "NODE\tSTATUS\tSIZE\n")
	for _, n := range r.Nodes {
		size := "-"
		if n.Status != client.NodeUnreachable && n.Status != client.NodeBadCheckpoint {
			size = fmt.Sprint(n.Checkpoint.Size)
		}
		line := fmt.Sprintf("%s\t%s\t%s", n.Node, n.Status, size)
		if n.Err != nil {
			line += "\t" + n.Err.Error()
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	fmt.Fprintln(p.w)
}

// findings prints findings as a table.
func (p *auditPrinter) findings(fs []client.Finding) {
	if len(fs) == 0 {
		return
	}
	fmt.Fprintln(p.w)
	tw := tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "KIND\tINDEX\tNODE\tMESSAGE\n")
	for _, f := range fs {
		index := "-"
		if f.Index != nil {
			index = fmt.Sprint(*f.Index)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Kind, index, f.Node, f.Message)
	}
	tw.Flush()
	if n := p.state.FindingCount() - uint64(len(p.state.Findings())); n > 0 && len(fs) == len(p.state.Findings()) {
		fmt.Fprintf(p.w, "... and %d more, counted but not kept (the state keeps %d)\n", n, client.MaxAuditFindings)
	}
}

// writeJSONLine writes v as one line of JSON.
func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
