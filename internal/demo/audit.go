package demo

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/ledger"
)

// auditAll audits the whole log from every node, as a third party with its
// own copy of the manufacturer roots would.
func auditAll(ctx context.Context, p *printer, s *Summary, addrs []string, vkey string, trust *ledger.Trust, dir string) error {
	p.step("An auditor checks the whole log")
	state, err := client.NewAuditState(vkey, trust)
	if err != nil {
		return err
	}
	statePath := filepath.Join(dir, "audit.state")
	a, err := client.NewAuditor(client.AuditOptions{Addrs: addrs, State: state, Save: func(st *client.AuditState) error {
		return st.WriteFile(statePath)
	}})
	if err != nil {
		return err
	}
	defer a.Close()
	start := time.Now()
	rep, err := a.Audit(ctx)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	for _, n := range rep.Nodes {
		p.line("node %s: checkpoint of size %d verified, %s", n.Node, n.Checkpoint.Size, n.Status)
	}
	s.AuditedLeaves = rep.To
	s.AuditFindings = int(state.FindingCount())
	p.line("%d leaves re-validated in %s: formats, station registrations and signatures, certificate chains and bindings, epochs 1, 2, 3, …",
		rep.To-rep.From, time.Since(start).Round(time.Millisecond))
	if s.AuditFindings > 0 {
		for _, f := range state.Findings() {
			p.line("finding: %s: %s", f.Kind, f.Message)
		}
		return fmt.Errorf("the audit found %d problems", s.AuditFindings)
	}
	p.line("no findings: the nodes agree, the log is consistent, every entry is well-formed and properly signed")
	return nil
}
