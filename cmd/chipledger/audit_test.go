package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/internal/localcluster"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
)

// testLedger is a one-node ledger in this process that trusts the shared
// test PKI, with a client to append to it and the files the commands read.
type testLedger struct {
	t     *testing.T
	pki   *testpki.PKI
	addr  string
	vkey  string
	roots string // the PKI's trust bundle, PEM
	c     *client.Client
}

func startTestLedger(t *testing.T) *testLedger {
	t.Helper()
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := ledger.GenerateLogKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ledger.NewLogSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cl, err := localcluster.Start(context.Background(), localcluster.Options{Nodes: 1, Dir: filepath.Join(dir, "ledger"), Signer: signer, Trust: pki.Trust})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	c, err := client.New(client.Options{Addrs: cl.Addrs(), LogKey: vkey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	l := &testLedger{t: t, pki: pki, addr: cl.Addrs()[0], vkey: vkey, roots: filepath.Join(dir, "roots.pem"), c: c}
	if err := os.WriteFile(l.roots, pki.Trust.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	l.append(pki.StationLeaf())
	return l
}

func (l *testLedger) append(leaf []byte) uint64 {
	l.t.Helper()
	r, err := l.c.Append(context.Background(), leaf)
	if err != nil {
		l.t.Fatal(err)
	}
	return r.Receipt.Index
}

// provision appends chip n's entry at epoch and returns its index.
func (l *testLedger) provision(n uint64, epoch uint32) uint64 {
	l.t.Helper()
	leaf, err := l.pki.EscrowLeaf(testpki.ChipID(n), epoch, 0)
	if err != nil {
		l.t.Fatal(err)
	}
	return l.append(leaf)
}

// exitStatus returns the exit status main would give err.
func exitStatus(err error) int {
	var ec cli.ExitCoder
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ec):
		return ec.ExitCode()
	}
	return 1
}

// startCLI runs the command line with args until ctx or the test ends, and
// returns its standard output as it grows and its result. The test's end
// waits for the command to return.
func startCLI(t *testing.T, ctx context.Context, args ...string) (*syncBuffer, <-chan error) {
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- newApp(stdout, stderr, nil).RunContext(ctx, append([]string{"chipledger"}, args...))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(15 * time.Second):
			t.Errorf("chipledger %s did not stop when canceled", strings.Join(args, " "))
		}
	})
	return stdout, done
}

// awaitLine waits until out holds a line for which ok is true.
func awaitLine(t *testing.T, out *syncBuffer, ok func(line string) bool) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(out.String(), "\n") {
			if line != "" && ok(line) {
				return line
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no such line in the output:\n%s", out.String())
	return ""
}

// size returns the size of the ledger's latest checkpoint, which ends
// with an index root.
func (l *testLedger) size() uint64 {
	l.t.Helper()
	cp, _, err := l.c.Checkpoint(context.Background())
	if err != nil {
		l.t.Fatal(err)
	}
	return cp.Size
}

// indexRoot returns the index root the ledger's last leaf carries.
func (l *testLedger) indexRoot() *ledger.IndexRoot {
	l.t.Helper()
	size := l.size()
	leaves, err := l.c.Entries(context.Background(), size-1, size)
	if err != nil {
		l.t.Fatal(err)
	}
	r, err := ledger.ParseIndexRoot(leaves[0])
	if err != nil {
		l.t.Fatalf("the last leaf of the log: %v", err)
	}
	return r
}

// hasRow reports whether out has a line whose first fields are fields.
func hasRow(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= len(fields) && slices.Equal(f[:len(fields)], fields) {
			return true
		}
	}
	return false
}

func decodeAudit(t *testing.T, line string) auditJSON {
	t.Helper()
	var j auditJSON
	if err := json.Unmarshal([]byte(line), &j); err != nil {
		t.Fatalf("JSON %q: %v", line, err)
	}
	return j
}

func TestAuditCommandOnACleanLogExitsZero(t *testing.T) {
	l := startTestLedger(t)
	l.provision(1, 1)
	l.provision(2, 1)
	l.provision(1, 2)
	state := filepath.Join(t.TempDir(), "audit.state")
	args := []string{"audit", "--ledger", l.addr, "--log-key", l.vkey, "--roots", l.roots, "--state", state}

	// The genesis index root, the station and 3 entries, each closed by
	// an index root.
	size, root := l.size(), l.indexRoot()
	if size != 9 {
		t.Fatalf("the log has %d leaves, want 9", size)
	}
	r := runCLI(t, args...)
	if r.err != nil {
		t.Fatalf("audit: %v\n%s", r.err, r.stderr)
	}
	for _, want := range []string{l.addr, "ok", "audited      9 entries (9 in this run", "stations     1", "chips        2",
		fmt.Sprintf("index roots  5 checked against the auditor's chip index (2 chips, root %x)", root.Root), "findings     none"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output does not show %q:\n%s", want, r.stdout)
		}
	}
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("no state file: %v", err)
	}

	// The rerun audits the new entry and its index root, with the chip
	// index it kept in the state, and says so in JSON.
	l.provision(3, 1)
	root = l.indexRoot()
	r = runCLI(t, append(args, "--json")...)
	if r.err != nil {
		t.Fatalf("audit --json: %v", r.err)
	}
	j := decodeAudit(t, strings.TrimSpace(r.stdout))
	if j.Audited != 11 || j.NewEntries != 2 || j.Checkpoint.Size != 11 || j.Log != testOrigin || j.Chips != 3 || j.Stations != 1 {
		t.Errorf("report %+v", j)
	}
	if j.IndexRoots != 6 || j.IndexChips != 3 || uint64(j.IndexChips) != root.ChipCount || j.IndexRoot != hex.EncodeToString(root.Root[:]) {
		t.Errorf("chip index: %d roots, %d chips, root %s; the log's last index root %+v", j.IndexRoots, j.IndexChips, j.IndexRoot, root)
	}
	if j.Findings == nil || len(*j.Findings) != 0 || j.FindingCount != 0 || j.NewFindings != nil {
		t.Errorf("findings %v, new %v, count %d; want an empty list", j.Findings, j.NewFindings, j.FindingCount)
	}
	if len(j.Nodes) != 1 || j.Nodes[0].Node != l.addr || j.Nodes[0].Status != "ok" || j.Nodes[0].Size != 11 {
		t.Errorf("nodes %+v", j.Nodes)
	}
	if !strings.Contains(j.Checkpoint.Note, testOrigin) || j.Checkpoint.Root == "" {
		t.Errorf("checkpoint %+v", j.Checkpoint)
	}
}

func TestAuditCommandExitsNonZeroOnFindings(t *testing.T) {
	l := startTestLedger(t)
	l.provision(1, 1)
	other, err := testpki.New()
	if err != nil {
		t.Fatal(err)
	}
	roots := filepath.Join(t.TempDir(), "other.pem")
	if err := os.WriteFile(roots, other.Trust.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	// Audited with another manufacturer's roots, the station (leaf 1) and
	// its entry (leaf 3) are untrusted, and the index root after the entry
	// (leaf 4) counts a chip the auditor's index, without the entry, does
	// not have.
	state := filepath.Join(t.TempDir(), "audit.state")
	args := []string{"audit", "--ledger", l.addr, "--log-key", l.vkey, "--roots", roots, "--state", state}
	r := runCLI(t, append(args, "--json")...)
	if exitStatus(r.err) != exitFindings {
		t.Fatalf("exit status %d (%v), want %d", exitStatus(r.err), r.err, exitFindings)
	}
	j := decodeAudit(t, strings.TrimSpace(r.stdout))
	want := []struct {
		kind  client.FindingKind
		index uint64
	}{{client.FindingUntrustedCertificate, 1}, {client.FindingUntrustedCertificate, 3}, {client.FindingIndexRootMismatch, 4}}
	if j.Findings == nil || len(*j.Findings) != len(want) || j.FindingCount != uint64(len(want)) {
		t.Fatalf("findings %+v", j.Findings)
	}
	for i, f := range *j.Findings {
		if f.Kind != want[i].kind || f.Index == nil || *f.Index != want[i].index || f.Checkpoint == "" {
			t.Errorf("finding %d: %+v, want %s at %d", i, f, want[i].kind, want[i].index)
		}
	}
	if f := (*j.Findings)[2]; f.Expected == nil || f.Found == nil || f.Expected.ChipCount != 0 || f.Found.ChipCount != 1 {
		t.Errorf("index-root-mismatch evidence: expected %+v, found %+v", f.Expected, f.Found)
	}

	// A rerun reports the same findings, as a table, and fails again.
	r = runCLI(t, args...)
	if exitStatus(r.err) != exitFindings || !strings.Contains(r.err.Error(), "3 findings") {
		t.Fatalf("rerun: exit status %d (%v)", exitStatus(r.err), r.err)
	}
	if !strings.Contains(r.stdout, "findings     3 (0 new)") || !hasRow(r.stdout, "KIND", "INDEX") {
		t.Errorf("output does not show the findings:\n%s", r.stdout)
	}
	for _, w := range want {
		if !hasRow(r.stdout, string(w.kind), fmt.Sprint(w.index), l.addr) {
			t.Errorf("output does not show %s at %d:\n%s", w.kind, w.index, r.stdout)
		}
	}
}

// An audit that cannot run (no node answers) while its state holds
// findings still lists them and exits 3: the findings, not the outage, are
// what the auditor must not miss.
func TestAnAuditThatCannotRunStillReportsItsFindings(t *testing.T) {
	l := startTestLedger(t)
	l.provision(1, 1)
	other, err := testpki.New()
	if err != nil {
		t.Fatal(err)
	}
	roots := filepath.Join(t.TempDir(), "other.pem")
	if err := os.WriteFile(roots, other.Trust.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "audit.state")
	args := []string{"audit", "--log-key", l.vkey, "--roots", roots, "--state", state}
	if r := runCLI(t, append(args, "--ledger", l.addr)...); exitStatus(r.err) != exitFindings {
		t.Fatalf("first run: exit status %d (%v), want %d", exitStatus(r.err), r.err, exitFindings)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	for _, format := range []string{"table", "json"} {
		t.Run(format, func(t *testing.T) {
			a := append(args, "--ledger", down)
			if format == "json" {
				a = append(a, "--json")
			}
			r := runCLI(t, a...)
			if exitStatus(r.err) != exitFindings || !strings.Contains(r.err.Error(), "3 findings") || !strings.Contains(r.err.Error(), "no node answered") {
				t.Fatalf("exit status %d (%v), want %d, naming the findings and the failure", exitStatus(r.err), r.err, exitFindings)
			}
			if format == "json" {
				j := decodeAudit(t, strings.TrimSpace(r.stdout))
				if j.Findings == nil || len(*j.Findings) != 3 || !strings.Contains(j.Error, "no node answered") {
					t.Fatalf("report %+v", j)
				}
				return
			}
			if !hasRow(r.stdout, string(client.FindingUntrustedCertificate), "1") || !strings.Contains(r.stdout, down) || !strings.Contains(r.stdout, "3 in the state (0 new in this run)") {
				t.Errorf("output does not list the findings and the node:\n%s", r.stdout)
			}
		})
	}
}

func TestAuditCommandRefusesBadInput(t *testing.T) {
	l := startTestLedger(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "audit.state")
	base := []string{"audit", "--ledger", l.addr, "--log-key", l.vkey}
	if r := runCLI(t, append(base, "--roots", l.roots, "--state", state)...); r.err != nil {
		t.Fatal(r.err)
	}
	_, otherKey, _ := ledger.GenerateLogKey(testOrigin)
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("not a state"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want string
		code int
	}{
		{"no roots", append(base, "--state", state), "--roots", 2},
		{"roots that are no PEM", append(base, "--roots", state, "--state", state), "--roots", 1},
		{"a state of another log", []string{"audit", "--ledger", l.addr, "--log-key", otherKey, "--roots", l.roots, "--state", state}, "another log", 1},
		{"a corrupt state", append(base, "--roots", l.roots, "--state", garbage), "bad audit state", 1},
		{"an argument", append(base, "--roots", l.roots, "--state", state, "now"), "takes no arguments", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.args...)
			if r.err == nil || !strings.Contains(r.err.Error(), tc.want) || exitStatus(r.err) != tc.code {
				t.Fatalf("got %v (exit status %d), want an error about %q with status %d", r.err, exitStatus(r.err), tc.want, tc.code)
			}
		})
	}
}

func TestAuditCommandFollowsTheLog(t *testing.T) {
	l := startTestLedger(t)
	state := filepath.Join(t.TempDir(), "audit.state")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, done := startCLI(t, ctx, "audit", "--ledger", l.addr, "--log-key", l.vkey, "--roots", l.roots, "--state", state,
		"--follow", "--interval", "1h", "--json")
	audited := func(n uint64) func(string) bool {
		return func(line string) bool {
			j := decodeAudit(t, line)
			return j.Audited == n && j.NewFindings != nil && len(*j.NewFindings) == 0 && j.Findings == nil
		}
	}
	awaitLine(t, out, audited(l.size())) // the genesis root, the station and its root
	l.provision(1, 1)
	l.provision(1, 2)
	size := l.size()
	line := awaitLine(t, out, audited(size))
	if j := decodeAudit(t, line); size != 7 || j.IndexRoots != 4 || j.IndexChips != 1 || j.IndexRoot != hex.EncodeToString(l.indexRoot().Root[:]) {
		t.Errorf("audited %d leaves, want 7: %s", size, line)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("audit --follow ended with %v, want a clean exit", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("audit --follow did not stop")
	}
}

// TestAuditCommandFollowSaysTheStateWasNotSaved interrupts --follow when
// its last save fails: it must not exit as if the state were saved.
func TestAuditCommandFollowSaysTheStateWasNotSaved(t *testing.T) {
	l := startTestLedger(t)
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "audit.state")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, done := startCLI(t, ctx, "audit", "--ledger", l.addr, "--log-key", l.vkey, "--roots", l.roots, "--state", state,
		"--follow", "--interval", "1h", "--json")
	first := l.size()
	awaitLine(t, out, func(line string) bool { return decodeAudit(t, line).Audited == first })
	// The directory goes away (a disk unmounted, say): the next save, of
	// the round below when --follow ends, fails.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	l.provision(1, 1)
	size := l.size()
	awaitLine(t, out, func(line string) bool { return decodeAudit(t, line).Audited == size })
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "saving the state failed") || !strings.Contains(err.Error(), state) {
			t.Fatalf("audit --follow ended with %v, want an error saying the state could not be saved", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("audit --follow did not stop")
	}
}

func TestAuditCommandChecksTheStateFileFirst(t *testing.T) {
	l := startTestLedger(t)
	state := filepath.Join(t.TempDir(), "nonexistent", "audit.state")
	r := runCLI(t, "audit", "--ledger", l.addr, "--log-key", l.vkey, "--roots", l.roots, "--state", state)
	if r.err == nil || exitStatus(r.err) != 2 || !strings.Contains(r.err.Error(), "--state "+state) || !strings.Contains(r.err.Error(), "does not exist") {
		t.Errorf("--state in a missing directory: %v (exit %d), want a usage error saying the directory does not exist", r.err, exitStatus(r.err))
	}
	if r.stdout != "" {
		t.Errorf("the audit ran: %q", r.stdout)
	}
}

func TestSavingTheAuditStateSaysSoOnce(t *testing.T) {
	l := startTestLedger(t)
	trust, err := readRoots(l.roots)
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := verifierKey(l.vkey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := client.NewAuditState(vkey, trust)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nonexistent", "audit.state")
	err = s.WriteFile(path)
	// The auditor says it was saving the state ("client: audit: save
	// state: ..."); WriteFile's error names the file and what failed.
	if err == nil || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "client:") {
		t.Errorf("WriteFile(%s): %v, want an error naming the file, without a client: prefix for the auditor's to repeat", path, err)
	}
}
