package client_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"google.golang.org/protobuf/proto"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// provisionedAt is the time of every entry a leafMaker makes, so logs are
// reproducible apart from the random serials and signatures.
var provisionedAt = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// A leafMaker makes valid escrow leaves of the shared test PKI quickly:
// every chip gets its own certificate, but all share one device key, and
// the station signs without checking its signature again.
type leafMaker struct {
	pki    *testpki.PKI
	devKey *ecdsa.PrivateKey
}

var sharedLeafMaker = sync.OnceValues(func() (*leafMaker, error) {
	pki, err := sharedPKI()
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return &leafMaker{pki: pki, devKey: key}, err
})

func newLeafMaker(t testing.TB) *leafMaker {
	t.Helper()
	m, err := sharedLeafMaker()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// entry returns a valid escrow entry for chip n at epoch, signed by the
// PKI's station.
func (m *leafMaker) entry(n uint64, epoch uint32) (*ledger.EscrowEntry, error) {
	chip := testpki.ChipID(n)
	ids := testpki.Identities(chip)
	tmpl, err := ledger.DeviceCertificateTemplate(testpki.Manufacturer, chip, ids, provisionedAt, rand.Reader)
	if err != nil {
		return nil, err
	}
	cert, err := ledger.IssueDeviceCertificate(rand.Reader, tmpl, &m.devKey.PublicKey, m.pki.DeviceCA, m.pki.DeviceCAKey)
	if err != nil {
		return nil, err
	}
	e := &ledger.EscrowEntry{ChipID: chip, Identities: ids, Epoch: epoch, Certificate: cert,
		Backup: fmt.Appendf(nil, "backup of %s at epoch %d", chip, epoch), StationID: m.pki.StationID(),
		ProvisionedAtMs: uint64(provisionedAt.UnixMilli())}
	return e, signEntry(e, m.pki.StationKey)
}

// signEntry sets e's station signature, made with key.
func signEntry(e *ledger.EscrowEntry, key *ecdsa.PrivateKey) error {
	d, err := e.Digest()
	if err != nil {
		return err
	}
	e.Signature, err = ecdsa.SignASN1(rand.Reader, key, d[:])
	return err
}

func (m *leafMaker) mustEntry(t testing.TB, n uint64, epoch uint32) *ledger.EscrowEntry {
	t.Helper()
	e, err := m.entry(n, epoch)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (m *leafMaker) leaf(t testing.TB, n uint64, epoch uint32) []byte {
	t.Helper()
	return marshal(t, m.mustEntry(t, n, epoch))
}

func marshal(t testing.TB, e ledger.Entry) []byte {
	t.Helper()
	leaf, err := e.MarshalLeaf()
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// A provisioning is one escrow entry of a generated log: chip and epoch.
type provisioning struct {
	chip  uint64
	epoch uint32
}

// provisionings returns n provisionings of chips first..., in log order,
// in which every tenth chip is provisioned again (epoch 2) a little later
// and every twentieth a third time (epoch 3).
func provisionings(first uint64, n int) []provisioning {
	var out []provisioning
	for k := uint64(0); len(out) < n; k++ {
		out = append(out, provisioning{first + k, 1})
		if k%10 == 9 {
			out = append(out, provisioning{first + k - 5, 2})
		}
		if k%20 == 19 {
			out = append(out, provisioning{first + k - 15, 3})
		}
	}
	return out[:n]
}

// leaves returns the escrow leaves of ps, made on every CPU.
func (m *leafMaker) leaves(ps []provisioning) ([][]byte, error) {
	out := make([][]byte, len(ps))
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(ps); i += workers {
				e, err := m.entry(ps[i].chip, ps[i].epoch)
				if err == nil {
					out[i], err = e.MarshalLeaf()
				}
				errs[i] = err
			}
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// cleanLog returns a valid log of n leaves: the station's registration,
// then n-1 escrow entries (see provisionings).
func (m *leafMaker) cleanLog(n int) ([][]byte, error) {
	leaves, err := m.leaves(provisionings(0, n-1))
	return append([][]byte{m.pki.StationLeaf()}, leaves...), err
}

func (m *leafMaker) mustCleanLog(t testing.TB, n int) [][]byte {
	t.Helper()
	leaves, err := m.cleanLog(n)
	if err != nil {
		t.Fatal(err)
	}
	return leaves
}

// startFakeNode serves a fake node holding leaves, whatever they are,
// signing checkpoints with signer.
func startFakeNode(t testing.TB, signer *ledger.LogSigner, leaves [][]byte) (*fakeLog, string) {
	f := &fakeLog{signer: signer, tree: testonly.New(rfc6962.DefaultHasher)}
	f.add(leaves...)
	return f, serve(t, f)
}

// add appends leaves to the fake log.
func (f *fakeLog) add(leaves ...[]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, leaf := range leaves {
		f.leaves = append(f.leaves, leaf)
		f.tree.AppendData(leaf)
	}
}

// fastRetry gives up on a node quickly, so tests of nodes that do not
// answer do not wait.
var fastRetry = client.RetryPolicy{MaxAttempts: 2, MaxElapsed: 200 * time.Millisecond,
	AttemptTimeout: 10 * time.Second, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}

// newAuditor returns an auditor of addrs with state, closed when the test
// ends; o's other fields are kept.
func newAuditor(t testing.TB, state *client.AuditState, o client.AuditOptions, addrs ...string) *client.Auditor {
	t.Helper()
	o.Addrs, o.State = addrs, state
	if o.Logger == nil {
		o.Logger = testLogger()
	}
	if o.Retry == (client.RetryPolicy{}) {
		o.Retry = fastRetry
	}
	a, err := client.NewAuditor(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func newState(t testing.TB, vkey string, trust *ledger.Trust) *client.AuditState {
	t.Helper()
	s, err := client.NewAuditState(vkey, trust)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// saveTo saves the state to path.
func saveTo(path string) func(*client.AuditState) error {
	return func(s *client.AuditState) error { return s.WriteFile(path) }
}

func readState(t testing.TB, path, vkey string, trust *ledger.Trust) *client.AuditState {
	t.Helper()
	s, err := client.ReadAuditStateFile(path, vkey, trust)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func encode(t testing.TB, s *client.AuditState) []byte {
	t.Helper()
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func audit(t testing.TB, a *client.Auditor) *client.AuditReport {
	t.Helper()
	r, err := a.Audit(context.Background())
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	return r
}

// noFindings fails the test if r or the state holds findings.
func noFindings(t *testing.T, r *client.AuditReport, s *client.AuditState) {
	t.Helper()
	for _, f := range s.Findings() {
		t.Errorf("finding: %s at %v: %s", f.Kind, f.Index, f.Message)
	}
	if len(r.Findings) > 0 {
		t.Errorf("%d new findings", len(r.Findings))
	}
}

func TestAuditOfACleanLogFindsNothingAndResumesIncrementally(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	f, addr := startFakeNode(t, signer, m.mustCleanLog(t, 3000))
	vkey, trust := signer.VerifierKey(), m.pki.Trust
	path := filepath.Join(t.TempDir(), "audit.state")

	state := newState(t, vkey, trust)
	r := audit(t, newAuditor(t, state, client.AuditOptions{Save: saveTo(path)}, addr))
	noFindings(t, r, state)
	if r.From != 0 || r.To != 3000 || r.Checkpoint.Size != 3000 || state.Audited() != 3000 {
		t.Fatalf("audited [%d, %d) of a checkpoint of %d", r.From, r.To, r.Checkpoint.Size)
	}
	if len(r.Nodes) != 1 || r.Nodes[0].Status != client.NodeOK || r.Nodes[0].Checkpoint.Size != 3000 {
		t.Errorf("node views %+v", r.Nodes)
	}
	wantChips := 0
	for _, p := range provisionings(0, 2999) {
		if p.epoch == 1 {
			wantChips++
		}
	}
	if state.Chips() != wantChips || len(state.Stations()) != 1 || state.Stations()[0].Err != nil {
		t.Errorf("%d chips (want %d), stations %+v", state.Chips(), wantChips, state.Stations())
	}
	if epoch, _, ok := state.LastEpoch(testpki.ChipID(4)); !ok || epoch != 3 {
		t.Errorf("chip 4 is at epoch %d, want 3", epoch)
	}

	// The file holds exactly the state, and a rerun audits nothing new.
	saved, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(saved, encode(t, state)) {
		t.Fatal("the state file is not the final state")
	}
	again := readState(t, path, vkey, trust)
	r = audit(t, newAuditor(t, again, client.AuditOptions{Save: saveTo(path)}, addr))
	noFindings(t, r, again)
	if r.From != 3000 || r.To != 3000 {
		t.Errorf("the rerun audited [%d, %d), want nothing", r.From, r.To)
	}
	if resaved, _ := os.ReadFile(path); !bytes.Equal(resaved, saved) {
		t.Error("a rerun that audited nothing changed the state file")
	}

	// An appended batch (new chips, and chip 4 at epoch 4) is audited alone.
	more, err := m.leaves(append(provisionings(1_000_000, 499), provisioning{4, 4}))
	if err != nil {
		t.Fatal(err)
	}
	f.add(more...)
	r = audit(t, newAuditor(t, again, client.AuditOptions{Save: saveTo(path)}, addr))
	noFindings(t, r, again)
	if r.From != 3000 || r.To != 3500 || again.Audited() != 3500 {
		t.Errorf("the appended batch: audited [%d, %d), %d in all", r.From, r.To, again.Audited())
	}
	if epoch, index, _ := again.LastEpoch(testpki.ChipID(4)); epoch != 4 || index != 3499 {
		t.Errorf("chip 4 at epoch %d from index %d, want 4 from 3499", epoch, index)
	}
	if got := readState(t, path, vkey, trust); got.Audited() != 3500 {
		t.Errorf("the state file holds %d audited leaves", got.Audited())
	}
}

// logWithFindings returns a log of n valid leaves with three bad ones
// inserted: an epoch reuse, a bad signature and an unknown kind.
func logWithFindings(t testing.TB, m *leafMaker, n int) [][]byte {
	t.Helper()
	leaves := m.mustCleanLog(t, n-3)
	bad := m.mustEntry(t, 3_000_000, 1)
	if err := signEntry(bad, m.devKey); err != nil {
		t.Fatal(err)
	}
	leaves = slices.Insert(leaves, n/5, m.leaf(t, 0, 1))
	leaves = slices.Insert(leaves, n/2, marshal(t, bad))
	leaves = slices.Insert(leaves, n-100, []byte{0, 9, 1, 2, 3})
	return leaves
}

func TestAuditInterruptedAndResumedEqualsOneShot(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	_, addr := startFakeNode(t, signer, logWithFindings(t, m, 12_000))
	vkey, trust := signer.VerifierKey(), m.pki.Trust

	oneShot := newState(t, vkey, trust)
	audit(t, newAuditor(t, oneShot, client.AuditOptions{}, addr))
	want := encode(t, oneShot)
	if n := len(oneShot.Findings()); n != 3 {
		t.Fatalf("%d findings in the one-shot audit, want 3", n)
	}

	// Interrupted: the context ends after a first batch; the state saved
	// then is resumed by a new auditor.
	path := filepath.Join(t.TempDir(), "audit.state")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var snapshots [][]byte
	o := client.AuditOptions{SaveEvery: 5000,
		Save: func(s *client.AuditState) error {
			b, err := s.MarshalBinary()
			snapshots = append(snapshots, b)
			if err != nil {
				return err
			}
			return s.WriteFile(path)
		},
		Progress: func(p client.AuditProgress) {
			if p.Audited >= 10_000 {
				cancel()
			}
		}}
	_, err := newAuditor(t, newState(t, vkey, trust), o, addr).Audit(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted audit: %v, want context.Canceled", err)
	}
	resumed := readState(t, path, vkey, trust)
	if resumed.Audited() != 10_000 {
		t.Fatalf("interrupted at %d leaves, want 10000", resumed.Audited())
	}
	r := audit(t, newAuditor(t, resumed, client.AuditOptions{}, addr))
	if r.From != 10_000 {
		t.Errorf("the rerun started at %d, want 10000", r.From)
	}
	if !bytes.Equal(encode(t, resumed), want) {
		t.Error("the resumed audit ends in another state than the one-shot audit")
	}

	// Killed: only the periodic save in the middle of the scan survived.
	var mid *client.AuditState
	for _, b := range snapshots {
		if s, err := client.ParseAuditState(b, vkey, trust); err == nil && s.Audited() == 5000 {
			mid = s
		}
	}
	if mid == nil {
		t.Fatalf("no periodic save at 5000 leaves among %d saves", len(snapshots))
	}
	audit(t, newAuditor(t, mid, client.AuditOptions{}, addr))
	if !bytes.Equal(encode(t, mid), want) {
		t.Error("the audit resumed after a kill ends in another state than the one-shot audit")
	}
}

// wantFinding is a finding a test expects: its kind and leaf index.
type wantFinding struct {
	kind  client.FindingKind
	index uint64
}

func TestAuditFindsInvalidEntries(t *testing.T) {
	m := newLeafMaker(t)
	other, err := testpki.New() // another manufacturer, not in the auditor's roots
	if err != nil {
		t.Fatal(err)
	}
	station := m.pki.StationLeaf()
	valid := func(n uint64, epoch uint32) []byte { return m.leaf(t, n, epoch) }
	resigned := func(e *ledger.EscrowEntry, key *ecdsa.PrivateKey) []byte {
		if err := signEntry(e, key); err != nil {
			t.Fatal(err)
		}
		return marshal(t, e)
	}
	for _, tc := range []struct {
		name   string
		leaves func() [][]byte
		want   []wantFinding
	}{{
		name: "certificate for another chip",
		leaves: func() [][]byte {
			e := m.mustEntry(t, 1, 1)
			e.Certificate = m.mustEntry(t, 2, 1).Certificate
			return [][]byte{station, valid(10, 1), resigned(e, m.pki.StationKey)}
		},
		want: []wantFinding{{client.FindingBindingMismatch, 2}},
	}, {
		name:   "epoch reused",
		leaves: func() [][]byte { return [][]byte{station, valid(1, 1), valid(2, 1), valid(1, 1)} },
		want:   []wantFinding{{client.FindingEpochReuse, 3}},
	}, {
		name:   "epoch skipped",
		leaves: func() [][]byte { return [][]byte{station, valid(1, 1), valid(1, 3), valid(1, 4), valid(2, 2)} },
		want:   []wantFinding{{client.FindingEpochGap, 2}, {client.FindingEpochGap, 4}},
	}, {
		name: "unregistered station",
		leaves: func() [][]byte {
			e := m.mustEntry(t, 1, 1)
			e.StationID = other.StationID()
			return [][]byte{station, resigned(e, other.StationKey)}
		},
		want: []wantFinding{{client.FindingUnknownStation, 1}},
	}, {
		name:   "entry before its station's registration",
		leaves: func() [][]byte { return [][]byte{valid(1, 1), station, valid(2, 1)} },
		want:   []wantFinding{{client.FindingUnknownStation, 0}},
	}, {
		name:   "bad station signature",
		leaves: func() [][]byte { return [][]byte{station, resigned(m.mustEntry(t, 1, 1), m.devKey), valid(2, 1)} },
		want:   []wantFinding{{client.FindingBadSignature, 1}},
	}, {
		name: "device certificate of another manufacturer",
		leaves: func() [][]byte {
			e, err := other.EscrowEntry(testpki.ChipID(1), 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			e.StationID = m.pki.StationID()
			return [][]byte{station, resigned(e, m.pki.StationKey)}
		},
		want: []wantFinding{{client.FindingUntrustedCertificate, 1}},
	}, {
		name: "station of another manufacturer",
		leaves: func() [][]byte {
			e, err := other.EscrowEntry(testpki.ChipID(1), 1, 0)
			if err != nil {
				t.Fatal(err)
			}
			return [][]byte{station, other.StationLeaf(), marshal(t, e)}
		},
		want: []wantFinding{{client.FindingUntrustedCertificate, 1}, {client.FindingUntrustedCertificate, 2}},
	}, {
		name: "station registered twice",
		leaves: func() [][]byte {
			again := marshal(t, &ledger.StationRegistration{Certificate: m.pki.Station.Raw, RegisteredAtMs: 1_800_000_000_000})
			return [][]byte{station, valid(1, 1), again, valid(2, 1)}
		},
		want: []wantFinding{{client.FindingDuplicateStation, 2}},
	}, {
		name:   "unknown kind",
		leaves: func() [][]byte { return [][]byte{station, {0, 4, 1, 2, 3}, valid(1, 1)} },
		want:   []wantFinding{{client.FindingUnknownKind, 1}},
	}, {
		name: "malformed leaves",
		leaves: func() [][]byte {
			leaf := valid(1, 1)
			return [][]byte{station, leaf[:len(leaf)-1], append(slices.Clone(leaf), 0), {0}, valid(2, 1)}
		},
		want: []wantFinding{{client.FindingInvalidEntry, 1}, {client.FindingInvalidEntry, 2}, {client.FindingInvalidEntry, 3}},
	}, {
		name: "index roots pass through",
		leaves: func() [][]byte {
			root := marshal(t, &ledger.IndexRoot{CoveredSize: 0})
			return [][]byte{root, station, valid(1, 1), marshal(t, &ledger.IndexRoot{CoveredSize: 3, ChipCount: 1, Root: [32]byte{7}})}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			signer := newSigner(t)
			leaves := tc.leaves()
			_, addr := startFakeNode(t, signer, leaves)
			state := newState(t, signer.VerifierKey(), m.pki.Trust)
			r := audit(t, newAuditor(t, state, client.AuditOptions{}, addr))
			checkEntryFindings(t, r.Findings, tc.want, leaves, addr, signer.VerifierKey())
			if !slices.Equal(kindsOf(state.Findings()), kindsOf(r.Findings)) {
				t.Error("the state does not hold the round's findings")
			}
			if r.To != uint64(len(leaves)) {
				t.Errorf("audited %d leaves of %d", r.To, len(leaves))
			}
		})
	}
}

func kindsOf(fs []client.Finding) []client.FindingKind {
	var out []client.FindingKind
	for _, f := range fs {
		out = append(out, f.Kind)
	}
	return out
}

// checkEntryFindings checks that got are the findings of want, in order,
// each with its evidence: the node, the leaf's index and hash, and the
// signed checkpoint of the whole log that commits to it.
func checkEntryFindings(t *testing.T, got []client.Finding, want []wantFinding, leaves [][]byte, node, vkey string) {
	t.Helper()
	v, err := proofs.NewLogVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		for _, f := range got {
			t.Logf("got %s at %d: %s", f.Kind, deref(f.Index), f.Message)
		}
		t.Fatalf("%d findings, want %d", len(got), len(want))
	}
	for i, f := range got {
		if f.Kind != want[i].kind || f.Index == nil || *f.Index != want[i].index {
			t.Errorf("finding %d: %s at %d (%s), want %s at %d", i, f.Kind, deref(f.Index), f.Message, want[i].kind, want[i].index)
			continue
		}
		h := proofs.LeafHash(leaves[*f.Index])
		cp, err := v.VerifyCheckpoint([]byte(f.Checkpoint))
		switch {
		case f.Node != node:
			t.Errorf("finding %d names node %q, want %q", i, f.Node, node)
		case f.LeafHash != hex.EncodeToString(h[:]):
			t.Errorf("finding %d: leaf hash %s is not the leaf's", i, f.LeafHash)
		case err != nil || cp.Size != uint64(len(leaves)):
			t.Errorf("finding %d: evidence checkpoint of size %d: %v", i, cp.Size, err)
		case f.Message == "":
			t.Errorf("finding %d says nothing", i)
		}
	}
}

func deref(p *uint64) int64 {
	if p == nil {
		return -1
	}
	return int64(*p)
}

// divergent returns a copy of leaves whose leaves from index at on are
// replaced by n others.
func divergent(t testing.TB, m *leafMaker, leaves [][]byte, at, n int) [][]byte {
	t.Helper()
	other, err := m.leaves(provisionings(5_000_000, n))
	if err != nil {
		t.Fatal(err)
	}
	return append(slices.Clone(leaves[:at]), other...)
}

// findingsOf returns the findings of kind k.
func findingsOf(fs []client.Finding, k client.FindingKind) []client.Finding {
	var out []client.Finding
	for _, f := range fs {
		if f.Kind == k {
			out = append(out, f)
		}
	}
	return out
}

// checkNotes checks that a finding carries the two signed notes, in
// either order.
func checkNotes(t *testing.T, f client.Finding, a, b []byte) {
	t.Helper()
	got := []string{f.Checkpoint, f.Other}
	if !slices.Contains(got, string(a)) || !slices.Contains(got, string(b)) || f.Checkpoint == f.Other {
		t.Errorf("%s finding carries notes %q and %q, want both checkpoints", f.Kind, f.Checkpoint, f.Other)
	}
}

func signedNote(t testing.TB, f *fakeLog) []byte {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	note, err := f.signer.Sign(f.tree.Size(), ledger.Hash(f.tree.Hash()))
	if err != nil {
		t.Fatal(err)
	}
	return note
}

func TestAuditFindsAForkBetweenTwoNodes(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	leaves := m.mustCleanLog(t, 200)
	a, addrA := startFakeNode(t, signer, leaves)

	t.Run("same size", func(t *testing.T) {
		b, addrB := startFakeNode(t, signer, divergent(t, m, leaves, 100, 100))
		state := newState(t, signer.VerifierKey(), m.pki.Trust)
		r := audit(t, newAuditor(t, state, client.AuditOptions{}, addrA, addrB))
		forks := findingsOf(r.Findings, client.FindingFork)
		if len(forks) != 1 {
			t.Fatalf("findings %+v, want one fork", r.Findings)
		}
		checkNotes(t, forks[0], signedNote(t, a), signedNote(t, b))
		if forks[0].Node != addrB || forks[0].Proof != nil {
			t.Errorf("fork names node %q with proof %v", forks[0].Node, forks[0].Proof)
		}
		// The audit goes on with the first node's tree.
		if r.To != 200 || r.Nodes[0].Status != client.NodeOK || r.Nodes[1].Status != client.NodeInconsistent {
			t.Errorf("audited %d leaves; node statuses %s, %s", r.To, r.Nodes[0].Status, r.Nodes[1].Status)
		}
	})
	t.Run("different sizes", func(t *testing.T) {
		b, addrB := startFakeNode(t, signer, divergent(t, m, leaves, 100, 50))
		state := newState(t, signer.VerifierKey(), m.pki.Trust)
		r := audit(t, newAuditor(t, state, client.AuditOptions{}, addrB, addrA))
		forks := findingsOf(r.Findings, client.FindingFork)
		if len(forks) != 1 {
			t.Fatalf("findings %+v, want one fork", r.Findings)
		}
		checkNotes(t, forks[0], signedNote(t, a), signedNote(t, b))
		if len(forks[0].Proof) == 0 || forks[0].Node != addrA {
			t.Errorf("fork names node %q with proof %v; want the larger tree's node and its failed proof", forks[0].Node, forks[0].Proof)
		}
		// A second round finds the same fork, and records it once.
		r = audit(t, newAuditor(t, state, client.AuditOptions{}, addrB, addrA))
		if len(r.Findings) != 0 || len(state.Findings()) != 1 {
			t.Errorf("second round: %d new findings, %d in all", len(r.Findings), len(state.Findings()))
		}
	})
}

func TestAuditFindsARollbackButNotALaggingNode(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	leaves := m.mustCleanLog(t, 200)
	a, addrA := startFakeNode(t, signer, leaves)
	vkey, trust := signer.VerifierKey(), m.pki.Trust
	path := filepath.Join(t.TempDir(), "audit.state")
	noFindings(t, audit(t, newAuditor(t, newState(t, vkey, trust), client.AuditOptions{Save: saveTo(path)}, addrA)), readState(t, path, vkey, trust))

	_, addrLagging := startFakeNode(t, signer, leaves[:120])
	b, addrB := startFakeNode(t, signer, divergent(t, m, leaves, 100, 50))

	t.Run("lagging", func(t *testing.T) {
		state := readState(t, path, vkey, trust)
		r := audit(t, newAuditor(t, state, client.AuditOptions{}, addrA, addrLagging))
		noFindings(t, r, state)
		if r.Nodes[1].Status != client.NodeLagging || r.Nodes[1].Checkpoint.Size != 120 {
			t.Errorf("lagging node: %+v", r.Nodes[1])
		}
	})
	t.Run("proof from another node fails", func(t *testing.T) {
		state := readState(t, path, vkey, trust)
		r := audit(t, newAuditor(t, state, client.AuditOptions{}, addrA, addrB))
		rollbacks := findingsOf(r.Findings, client.FindingRollback)
		if len(rollbacks) != 1 || len(r.Findings) != 1 {
			t.Fatalf("findings %+v, want one rollback", r.Findings)
		}
		f := rollbacks[0]
		checkNotes(t, f, signedNote(t, a), signedNote(t, b))
		if f.Node != addrB || f.Checkpoint != string(signedNote(t, a)) || len(f.Proof) == 0 {
			t.Errorf("rollback names node %q, audited note first: %v, proof %v", f.Node, f.Checkpoint == string(signedNote(t, a)), f.Proof)
		}
		if r.Nodes[1].Status != client.NodeInconsistent {
			t.Errorf("rolled-back node is %s", r.Nodes[1].Status)
		}
	})
	t.Run("no node shows the audited tree", func(t *testing.T) {
		state := readState(t, path, vkey, trust)
		r := audit(t, newAuditor(t, state, client.AuditOptions{}, addrB))
		rollbacks := findingsOf(r.Findings, client.FindingRollback)
		if len(rollbacks) != 1 {
			t.Fatalf("findings %+v, want one rollback", r.Findings)
		}
		checkNotes(t, rollbacks[0], signedNote(t, a), signedNote(t, b))
		if rollbacks[0].Node != addrB {
			t.Errorf("rollback names node %q", rollbacks[0].Node)
		}
		if cp, _ := state.Checkpoint(); cp.Size != 200 {
			t.Errorf("the audited checkpoint moved to %d", cp.Size)
		}
	})
}

func TestAuditStateFileRoundTripsAndRefusesOthers(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	_, addr := startFakeNode(t, signer, logWithFindings(t, m, 300))
	vkey, trust := signer.VerifierKey(), m.pki.Trust
	state := newState(t, vkey, trust)
	audit(t, newAuditor(t, state, client.AuditOptions{}, addr))
	b := encode(t, state)

	parsed, err := client.ParseAuditState(b, vkey, trust)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(encode(t, parsed), b) || len(parsed.Findings()) != 3 || parsed.Audited() != 300 {
		t.Fatalf("the parsed state differs: %d findings, %d audited", len(parsed.Findings()), parsed.Audited())
	}

	other, err := testpki.New()
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ledgerKey(testOrigin)
	for name, parse := range map[string]func() error{
		"another log key": func() error { _, err := client.ParseAuditState(b, otherKey, trust); return err },
		"other roots":     func() error { _, err := client.ParseAuditState(b, vkey, other.Trust); return err },
		"a flipped byte": func() error {
			bad := slices.Clone(b)
			bad[len(bad)/2] ^= 1
			_, err := client.ParseAuditState(bad, vkey, trust)
			return err
		},
		"truncated": func() error { _, err := client.ParseAuditState(b[:len(b)-1], vkey, trust); return err },
	} {
		if err := parse(); !errors.Is(err, client.ErrBadAuditState) {
			t.Errorf("%s: %v, want ErrBadAuditState", name, err)
		}
	}
	if _, err := client.ReadAuditStateFile(filepath.Join(t.TempDir(), "none"), vkey, trust); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestAuditStateExtendsOnlyAlongAProof(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	f, _ := startFakeNode(t, signer, m.mustCleanLog(t, 10))
	first := signedNote(t, f)
	f.add(m.leaf(t, 99, 1))
	second := signedNote(t, f)
	state := newState(t, signer.VerifierKey(), m.pki.Trust)
	if err := state.Extend(first, nil); err != nil {
		t.Fatal(err)
	}
	if err := state.Extend(second, nil); !errors.Is(err, client.ErrFork) {
		t.Errorf("without a proof: %v, want ErrFork", err)
	}
	p, err := f.tree.ConsistencyProof(10, 11)
	if err != nil {
		t.Fatal(err)
	}
	proof := make([][32]byte, len(p))
	for i := range p {
		proof[i] = [32]byte(p[i])
	}
	if err := state.Extend(second, proof); err != nil {
		t.Fatal(err)
	}
	if err := state.Extend(first, nil); err == nil {
		t.Error("the state moved back to a smaller checkpoint")
	}
	if _, err := state.Check(make([][]byte, 12), client.CheckOptions{}); err == nil {
		t.Error("Check took leaves beyond the audited checkpoint")
	}
}

// tamperLeaf changes a byte of the second leaf a GetEntries answer holds.
func tamperLeaf(_ context.Context, proc string, _, resp proto.Message) error {
	if r, ok := resp.(*v1.GetEntriesResponse); ok && len(r.Leaves) > 1 {
		r.Leaves[1] = slices.Clone(r.Leaves[1])
		r.Leaves[1][len(r.Leaves[1])-1] ^= 1
	}
	return nil
}

func TestAuditFindsALyingProxyInFrontOfARealNode(t *testing.T) {
	l := startLog(t, 1, nil)
	c := l.client()
	l.registerStation(c)
	for n := range uint64(5) {
		l.appendEscrow(c, n)
	}
	node := l.cluster.Addrs()[0]
	p, proxy := startProxy(t, node)
	state := newState(t, l.vkey, l.pki.Trust)

	// A proxy that alters entries is caught by the range proof; the real
	// node serves them instead.
	p.setTamper(tamperLeaf)
	r := audit(t, newAuditor(t, state, client.AuditOptions{}, proxy, node))
	bad := findingsOf(r.Findings, client.FindingBadProof)
	if len(bad) != 1 || bad[0].Node != proxy || len(r.Findings) != 1 {
		t.Fatalf("findings %+v, want one bad proof from the proxy", r.Findings)
	}
	if r.To != 6 {
		t.Errorf("audited %d leaves, want 6", r.To)
	}

	// A proxy whose consistency proofs fail, while the node's verify.
	leaf, err := l.pki.EscrowLeaf(testpki.ChipID(0), 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(context.Background(), leaf); err != nil {
		t.Fatal(err)
	}
	p.setTamper(func(_ context.Context, _ string, _, resp proto.Message) error {
		if r, ok := resp.(*v1.GetConsistencyProofResponse); ok && len(r.ConsistencyProof) > 0 {
			r.ConsistencyProof[0] = make([]byte, 32)
		}
		return nil
	})
	r = audit(t, newAuditor(t, state, client.AuditOptions{}, proxy, node))
	bad = findingsOf(r.Findings, client.FindingBadProof)
	if len(bad) != 1 || bad[0].Node != proxy || len(bad[0].Proof) == 0 || len(r.Findings) != 1 {
		t.Fatalf("findings %+v, want one bad consistency proof from the proxy", r.Findings)
	}
	if r.To != 7 {
		t.Errorf("audited %d leaves, want 7", r.To)
	}

	// A proxy that serves a checkpoint signed with another key.
	forger, _, err := ledgerKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := forger.Sign(7, [32]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	p.setTamper(func(_ context.Context, _ string, _, resp proto.Message) error {
		if r, ok := resp.(*v1.GetCheckpointResponse); ok {
			r.Checkpoint = forged
		}
		return nil
	})
	r = audit(t, newAuditor(t, state, client.AuditOptions{}, proxy, node))
	bad = findingsOf(r.Findings, client.FindingBadCheckpoint)
	if len(bad) != 1 || bad[0].Checkpoint != string(forged) || r.Nodes[0].Status != client.NodeBadCheckpoint || r.Nodes[1].Status != client.NodeOK {
		t.Fatalf("findings %+v, nodes %+v; want the forged checkpoint", r.Findings, r.Nodes)
	}
	if got := len(state.Findings()); got != 3 {
		t.Errorf("%d findings recorded, want 3", got)
	}
}

func TestAuditOfARealClusterProvesEveryNode(t *testing.T) {
	l := startLog(t, 3, nil)
	c := l.client()
	l.registerStation(c)
	for n := range uint64(10) {
		l.appendEscrow(c, n)
	}
	for epoch := uint32(2); epoch <= 3; epoch++ {
		leaf, err := l.pki.EscrowLeaf(testpki.ChipID(3), epoch, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Append(context.Background(), leaf); err != nil {
			t.Fatal(err)
		}
	}
	state := newState(t, l.vkey, l.pki.Trust)
	r := audit(t, newAuditor(t, state, client.AuditOptions{Retry: client.DefaultAuditRetryPolicy}, l.cluster.Addrs()...))
	noFindings(t, r, state)
	if r.To != 13 || state.Chips() != 10 {
		t.Errorf("audited %d leaves and %d chips, want 13 and 10", r.To, state.Chips())
	}
	for _, n := range r.Nodes {
		if n.Status != client.NodeOK && n.Status != client.NodeLagging {
			t.Errorf("node %s is %s: %v", n.Node, n.Status, n.Err)
		}
	}
}

func TestAuditFollowAuditsTheLogAsItGrows(t *testing.T) {
	l := startLog(t, 1, nil)
	c := l.client()
	l.registerStation(c)
	state := newState(t, l.vkey, l.pki.Trust)
	path := filepath.Join(t.TempDir(), "audit.state")
	a := newAuditor(t, state, client.AuditOptions{Save: saveTo(path)}, l.cluster.Addrs()...)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reports := make(chan *client.AuditReport, 100)
	done := make(chan error, 1)
	go func() {
		done <- a.Follow(ctx, time.Hour, func(r *client.AuditReport, err error) error {
			if err != nil {
				t.Errorf("round: %v", err)
			}
			reports <- r
			return nil
		})
	}()
	awaitAudited := func(size uint64) {
		t.Helper()
		for {
			select {
			case r := <-reports:
				if len(r.Findings) > 0 {
					t.Errorf("findings: %+v", r.Findings)
				}
				if r.To >= size {
					return
				}
			case <-ctx.Done():
				t.Fatalf("the follower did not audit %d leaves", size)
			}
		}
	}
	awaitAudited(1)
	for n := range uint64(3) {
		res := l.appendEscrow(c, n) // the watch, not the hourly poll, starts the rounds
		awaitAudited(res.Checkpoint.Size)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("follow ended with %v", err)
	}
	if got := readState(t, path, l.vkey, l.pki.Trust); got.Audited() != 4 {
		t.Errorf("the saved state audited %d leaves, want 4", got.Audited())
	}
}

// bigLog is a valid log generated once per test binary for the large-log
// test and the benchmark.
var bigLog = struct {
	sync.Mutex
	leaves [][]byte
}{}

func largeLog(t testing.TB, m *leafMaker, n int) [][]byte {
	t.Helper()
	bigLog.Lock()
	defer bigLog.Unlock()
	if len(bigLog.leaves) < n {
		start := time.Now()
		leaves, err := m.cleanLog(n)
		if err != nil {
			t.Fatal(err)
		}
		bigLog.leaves = leaves
		t.Logf("generated %d valid leaves in %s", n, time.Since(start).Round(time.Millisecond))
	}
	return bigLog.leaves[:n]
}

func TestAuditOfALargeLogCompletesAndResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("generates and audits 100,000 entries")
	}
	const n = 100_000
	m := newLeafMaker(t)
	signer := newSigner(t)
	_, addr := startFakeNode(t, signer, largeLog(t, m, n))
	vkey, trust := signer.VerifierKey(), m.pki.Trust
	path := filepath.Join(t.TempDir(), "audit.state")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var saves int
	var saveTime time.Duration
	save := func(s *client.AuditState) error {
		start := time.Now()
		saves++
		defer func() { saveTime += time.Since(start) }()
		return s.WriteFile(path)
	}
	o := client.AuditOptions{Save: save, Progress: func(p client.AuditProgress) {
		if p.Audited >= n/2 {
			cancel()
		}
	}}
	start := time.Now()
	first, err := newAuditor(t, newState(t, vkey, trust), o, addr).Audit(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v", err)
	}
	state := readState(t, path, vkey, trust)
	r := audit(t, newAuditor(t, state, client.AuditOptions{Save: save}, addr))
	elapsed := time.Since(start)
	noFindings(t, r, state)
	if first.To != n/2 || r.From != n/2 || r.To != n || state.Audited() != n {
		t.Fatalf("first run to %d, second [%d, %d)", first.To, r.From, r.To)
	}
	info, _ := os.Stat(path)
	t.Logf("audited %d entries in two runs in %s (%.0f entries/s in the scans: %.0f and %.0f); %d saves of up to %d bytes took %s",
		n, elapsed.Round(time.Millisecond), float64(n)/(first.Scan+r.Scan).Seconds(), first.Rate(), r.Rate(), saves, info.Size(), saveTime.Round(time.Millisecond))
}

// An auditor re-validates every entry of the log with its own copy of the
// manufacturer roots, proves every node's checkpoint consistent, and keeps
// its state in a file, so the next run audits only what is new.
func ExampleAuditor_Audit() {
	addrs, logKey, pki, stop := startExampleLedger()
	defer stop()
	ctx := context.Background()
	c, err := client.New(client.Options{Addrs: addrs, LogKey: logKey})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Append(ctx, pki.StationLeaf()); err != nil {
		log.Fatal(err)
	}
	for n := range uint64(3) {
		leaf, err := pki.EscrowLeaf(testpki.ChipID(n), 1, 0)
		if err == nil {
			_, err = c.Append(ctx, leaf)
		}
		if err != nil {
			log.Fatal(err)
		}
	}

	dir, err := os.MkdirTemp("", "chipledger-audit")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "audit.state")
	roots := pki.Trust // the auditor's own copy of the manufacturer roots
	for run := 1; run <= 2; run++ {
		state, err := client.ReadAuditStateFile(path, logKey, roots)
		if errors.Is(err, fs.ErrNotExist) {
			state, err = client.NewAuditState(logKey, roots)
		}
		if err != nil {
			log.Fatal(err)
		}
		a, err := client.NewAuditor(client.AuditOptions{Addrs: addrs, State: state,
			Save: func(s *client.AuditState) error { return s.WriteFile(path) }})
		if err != nil {
			log.Fatal(err)
		}
		r, err := a.Audit(ctx)
		a.Close()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("run %d: node %s, audited leaves [%d, %d) of %d, %d findings\n",
			run, r.Nodes[0].Status, r.From, r.To, r.Checkpoint.Size, state.FindingCount())
	}
	// Output:
	// run 1: node ok, audited leaves [0, 4) of 4, 0 findings
	// run 2: node ok, audited leaves [4, 4) of 4, 0 findings
}
