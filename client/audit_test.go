package client_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
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

// An indexModel lays a log out as the ledger does (DESIGN.md §3.7): a
// genesis index root at 0, then batches of leaves, each closed by an index
// root over every leaf before it. It keeps its own chip index of the
// escrow entries the ledger admits, each chip's history root computed with
// proofs.HistoryRoot over all its leaf hashes, apart from the auditor's.
type indexModel struct {
	t       testing.TB
	leaves  [][]byte // the whole log
	at      []uint64 // the index in leaves of each leaf added, in order
	rootIdx []uint64 // the indexes of the index roots
	cmap    *ledger.ChipMap
	chips   map[string][]proofs.HistoryEntry // each chip's admitted entries
}

// indexed returns the model of a log holding leaves in batches of batch
// (see add).
func indexed(t testing.TB, batch int, leaves [][]byte, rejected ...int) *indexModel {
	t.Helper()
	m := &indexModel{t: t, cmap: ledger.NewChipMap(), chips: make(map[string][]proofs.HistoryEntry)}
	m.add(batch, leaves, rejected...)
	return m
}

// add appends leaves in batches of batch leaves (one batch if batch is 0),
// each closed by an index root, after the genesis root if the log is
// empty, and returns the leaves it appended to the log. The model admits
// to its chip index each escrow entry that parses and has the chip's next
// epoch, except those at the positions rejected (among leaves), which the
// ledger refuses for what the model does not check: signatures,
// certificates, stations.
func (m *indexModel) add(batch int, leaves [][]byte, rejected ...int) [][]byte {
	from := len(m.leaves)
	if from == 0 {
		m.closeBatch()
	}
	if batch <= 0 {
		batch = max(1, len(leaves))
	}
	for lo := 0; lo < len(leaves); lo += batch {
		var pairs []ledger.MapPair
		for k := lo; k < min(len(leaves), lo+batch); k++ {
			idx := uint64(len(m.leaves))
			m.at = append(m.at, idx)
			m.leaves = append(m.leaves, leaves[k])
			e, err := ledger.ParseEscrowEntry(leaves[k])
			if err != nil || slices.Contains(rejected, k) || int(e.Epoch) != len(m.chips[string(e.ChipID)])+1 {
				continue
			}
			m.chips[string(e.ChipID)] = append(m.chips[string(e.ChipID)], proofs.HistoryEntry{Index: idx, LeafHash: proofs.LeafHash(leaves[k])})
			v := m.value(e.ChipID)
			pairs = append(pairs, ledger.MapPair{Key: proofs.MapKey(e.ChipID), ValueHash: proofs.ValueHash(*v)})
		}
		m.cmap.Update(pairs)
		m.closeBatch()
	}
	return m.leaves[from:]
}

// value returns the chip's value in the model's index, nil if it has none.
func (m *indexModel) value(chip ledger.ChipID) *proofs.IndexValue {
	h := m.chips[string(chip)]
	if len(h) == 0 {
		return nil
	}
	hashes := make([][32]byte, len(h))
	for i, e := range h {
		hashes[i] = e.LeafHash
	}
	last := h[len(h)-1]
	return &proofs.IndexValue{Epoch: uint32(len(h)), LeafIndex: last.Index, LeafHash: last.LeafHash, HistoryRoot: proofs.HistoryRoot(hashes)}
}

// closeBatch appends the index root over the log.
func (m *indexModel) closeBatch() {
	size := uint64(len(m.leaves))
	m.rootIdx = append(m.rootIdx, size)
	m.leaves = append(m.leaves, marshal(m.t, &ledger.IndexRoot{CoveredSize: size, ChipCount: uint64(m.cmap.Len()), Root: m.cmap.Root()}))
}

// size returns the log's size.
func (m *indexModel) size() uint64 { return uint64(len(m.leaves)) }

// root returns the index root leaf at index i, parsed.
func (m *indexModel) root(i uint64) *ledger.IndexRoot {
	m.t.Helper()
	r, err := ledger.ParseIndexRoot(m.leaves[i])
	if err != nil {
		m.t.Fatal(err)
	}
	return r
}

// escrowCount returns the number of escrow entries among leaves.
func escrowCount(leaves [][]byte) int {
	n := 0
	for _, l := range leaves {
		if k, err := ledger.PeekKind(l); err == nil && k == ledger.KindEscrow {
			n++
		}
	}
	return n
}

// checkIndex checks that the state's chip index and index-root count are
// the model's.
func checkIndex(t *testing.T, s *client.AuditState, m *indexModel) {
	t.Helper()
	root, chips := s.IndexRoot()
	if root != m.cmap.Root() || chips != m.cmap.Len() {
		t.Errorf("the auditor's chip index has %d chips, root %x; the log's %d chips, root %x", chips, root, m.cmap.Len(), m.cmap.Root())
	}
	if s.IndexRoots() != uint64(len(m.rootIdx)) {
		t.Errorf("%d index roots audited, the log has %d", s.IndexRoots(), len(m.rootIdx))
	}
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

// unreachableAddr returns a loopback address nothing listens on: a node
// that does not answer.
func unreachableAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
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
	log := indexed(t, 100, m.mustCleanLog(t, 3000))
	size := log.size() // 3000 leaves, 30 index roots and the genesis root
	f, addr := startFakeNode(t, signer, log.leaves)
	vkey, trust := signer.VerifierKey(), m.pki.Trust
	path := filepath.Join(t.TempDir(), "audit.state")

	state := newState(t, vkey, trust)
	r := audit(t, newAuditor(t, state, client.AuditOptions{Save: saveTo(path)}, addr))
	noFindings(t, r, state)
	if r.From != 0 || r.To != size || r.Checkpoint.Size != size || state.Audited() != size {
		t.Fatalf("audited [%d, %d) of a checkpoint of %d, want all %d leaves", r.From, r.To, r.Checkpoint.Size, size)
	}
	if len(r.Nodes) != 1 || r.Nodes[0].Status != client.NodeOK || r.Nodes[0].Checkpoint.Size != size {
		t.Errorf("node views %+v", r.Nodes)
	}
	checkIndex(t, state, log)
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
	checkIndex(t, again, log)
	r = audit(t, newAuditor(t, again, client.AuditOptions{Save: saveTo(path)}, addr))
	noFindings(t, r, again)
	if r.From != size || r.To != size {
		t.Errorf("the rerun audited [%d, %d), want nothing", r.From, r.To)
	}
	if resaved, _ := os.ReadFile(path); !bytes.Equal(resaved, saved) {
		t.Error("a rerun that audited nothing changed the state file")
	}

	// Appended batches (new chips, and chip 4 at epoch 4) are audited
	// alone, against the chip index the state file rebuilt.
	more, err := m.leaves(append(provisionings(1_000_000, 499), provisioning{4, 4}))
	if err != nil {
		t.Fatal(err)
	}
	f.add(log.add(100, more)...)
	r = audit(t, newAuditor(t, again, client.AuditOptions{Save: saveTo(path)}, addr))
	noFindings(t, r, again)
	if r.From != size || r.To != log.size() || again.Audited() != log.size() {
		t.Errorf("the appended batches: audited [%d, %d), %d in all; want [%d, %d)", r.From, r.To, again.Audited(), size, log.size())
	}
	last := log.at[len(log.at)-1]
	if epoch, index, _ := again.LastEpoch(testpki.ChipID(4)); epoch != 4 || index != last {
		t.Errorf("chip 4 at epoch %d from index %d, want 4 from %d", epoch, index, last)
	}
	checkIndex(t, again, log)
	if got := readState(t, path, vkey, trust); got.Audited() != log.size() {
		t.Errorf("the state file holds %d audited leaves", got.Audited())
	}
}

// logWithFindings returns the model of a log of n leaves, valid but for
// three: an epoch reuse, a bad signature and an unknown kind, in batches of
// 100 with their index roots.
func logWithFindings(t testing.TB, m *leafMaker, n int) *indexModel {
	t.Helper()
	leaves := m.mustCleanLog(t, n-3)
	bad := m.mustEntry(t, 3_000_000, 1)
	if err := signEntry(bad, m.devKey); err != nil {
		t.Fatal(err)
	}
	leaves = slices.Insert(leaves, n/5, m.leaf(t, 0, 1))
	leaves = slices.Insert(leaves, n/2, marshal(t, bad))
	leaves = slices.Insert(leaves, n-100, []byte{0, 9, 1, 2, 3})
	return indexed(t, 100, leaves, n/2)
}

func TestAuditInterruptedAndResumedEqualsOneShot(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	log := logWithFindings(t, m, 12_000)
	// And an index root past the interruption that does not count the
	// last chip of its batch: the resumed audit must check it against the
	// same chip index as the one-shot audit.
	lie := log.rootIdx[len(log.rootIdx)-10]
	r := log.root(lie)
	r.ChipCount--
	log.leaves[lie] = marshal(t, r)
	_, addr := startFakeNode(t, signer, log.leaves)
	vkey, trust := signer.VerifierKey(), m.pki.Trust

	oneShot := newState(t, vkey, trust)
	audit(t, newAuditor(t, oneShot, client.AuditOptions{}, addr))
	want := encode(t, oneShot)
	mismatches := findingsOf(oneShot.Findings(), client.FindingIndexRootMismatch)
	if n := len(oneShot.Findings()); n != 4 || len(mismatches) != 1 {
		t.Fatalf("findings %v in the one-shot audit, want 3 and the index root", kindsOf(oneShot.Findings()))
	}
	if f := mismatches[0]; f.Index == nil || *f.Index != lie {
		t.Fatalf("index-root-mismatch at %d, want %d", deref(f.Index), lie)
	}
	checkIndex(t, oneShot, log)

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
	if resumed.Audited() != 10_000 || lie < 10_000 {
		t.Fatalf("interrupted at %d leaves, want 10000 (before the index root at %d)", resumed.Audited(), lie)
	}
	rr := audit(t, newAuditor(t, resumed, client.AuditOptions{}, addr))
	if rr.From != 10_000 {
		t.Errorf("the rerun started at %d, want 10000", rr.From)
	}
	if kinds := kindsOf(rr.Findings); len(kinds) != 2 || !slices.Contains(kinds, client.FindingUnknownKind) || !slices.Contains(kinds, client.FindingIndexRootMismatch) {
		t.Errorf("the rerun found %v, want the unknown kind and the index root", kinds)
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

// TestAuditInterruptedSaysTheSaveFailed checks that an audit whose context
// ends and whose final save then fails returns both errors: the caller must
// not tell the user the state is saved.
func TestAuditInterruptedSaysTheSaveFailed(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	log := indexed(t, 0, m.mustCleanLog(t, 20))
	_, addr := startFakeNode(t, signer, log.leaves)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	full := errors.New("no space left on device")
	o := client.AuditOptions{
		Save:     func(*client.AuditState) error { return full },
		Progress: func(client.AuditProgress) { cancel() },
	}
	_, err := newAuditor(t, newState(t, signer.VerifierKey(), m.pki.Trust), o, addr).Audit(ctx)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, full) {
		t.Errorf("interrupted audit whose save fails: %v, want context.Canceled and the save's error", err)
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
		name: "entry of a revoked station",
		leaves: func() [][]byte {
			rev := marshal(t, &ledger.StationRevocation{StationID: m.pki.StationID(), RevokedAtMs: 1_800_000_000_000, Reason: "compromised"})
			return [][]byte{station, valid(1, 1), rev, valid(2, 1), valid(1, 2)}
		},
		want: []wantFinding{{client.FindingRevokedStation, 3}, {client.FindingRevokedStation, 4}},
	}, {
		name: "revocation of an unregistered station, and a second revocation",
		leaves: func() [][]byte {
			revOther := marshal(t, &ledger.StationRevocation{StationID: other.StationID(), RevokedAtMs: 1})
			rev := marshal(t, &ledger.StationRevocation{StationID: m.pki.StationID(), RevokedAtMs: 2})
			again := marshal(t, &ledger.StationRevocation{StationID: m.pki.StationID(), RevokedAtMs: 3})
			return [][]byte{revOther, station, valid(1, 1), rev, again}
		},
		want: []wantFinding{{client.FindingRevokedStation, 0}, {client.FindingRevokedStation, 4}},
	}, {
		name:   "unknown kind",
		leaves: func() [][]byte { return [][]byte{station, {0, 5, 1, 2, 3}, valid(1, 1)} },
		want:   []wantFinding{{client.FindingUnknownKind, 1}},
	}, {
		name: "malformed leaves",
		leaves: func() [][]byte {
			leaf := valid(1, 1)
			return [][]byte{station, leaf[:len(leaf)-1], append(slices.Clone(leaf), 0), {0}, valid(2, 1)}
		},
		want: []wantFinding{{client.FindingInvalidEntry, 1}, {client.FindingInvalidEntry, 2}, {client.FindingInvalidEntry, 3}},
	}, {
		// The bad entry is left out of the chip index, and so is the next
		// one, which the ledger would have refused as skipping an epoch:
		// the fault is reported once.
		name: "an entry after one left out of the index",
		leaves: func() [][]byte {
			return [][]byte{station, valid(1, 1), resigned(m.mustEntry(t, 1, 2), m.devKey), valid(1, 3), valid(2, 1)}
		},
		want: []wantFinding{{client.FindingBadSignature, 2}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			signer := newSigner(t)
			// The leaves in one batch after the genesis root, closed by the
			// index root the ledger would have appended: the entries with
			// findings are not in the index.
			var rejected []int
			for _, w := range tc.want {
				rejected = append(rejected, int(w.index))
			}
			log := indexed(t, 0, tc.leaves(), rejected...)
			want := slices.Clone(tc.want)
			for i := range want {
				want[i].index = log.at[want[i].index]
			}
			_, addr := startFakeNode(t, signer, log.leaves)
			state := newState(t, signer.VerifierKey(), m.pki.Trust)
			r := audit(t, newAuditor(t, state, client.AuditOptions{}, addr))
			checkEntryFindings(t, r.Findings, want, log.leaves, addr, signer.VerifierKey())
			if !slices.Equal(kindsOf(state.Findings()), kindsOf(r.Findings)) {
				t.Error("the state does not hold the round's findings")
			}
			if r.To != log.size() {
				t.Errorf("audited %d leaves of %d", r.To, log.size())
			}
			checkIndex(t, state, log)
		})
	}
}

// TestAuditReportsEachEpochFaultOnce feeds the auditor logs in which one
// chip's history has faults, each leaf in a batch of its own closed by the
// index root the ledger would have appended (the model admits what the
// ledger admits), so that an auditor whose chip index strays from the
// ledger's reports every later index root. Each fault
// is one finding at its leaf, naming the chip: the entries after it that
// continue the chip's history, either from the faulty entry (as a log that
// accepted it would) or from the last one the ledger admitted, are not
// findings, and a later fault of its own is.
func TestAuditReportsEachEpochFaultOnce(t *testing.T) {
	m := newLeafMaker(t)
	second, err := testpki.FromCA(m.pki.Root, m.pki.RootKey, m.pki.DeviceCA, m.pki.DeviceCAKey) // another station, trusted
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.New() // a station of another manufacturer, never registered
	if err != nil {
		t.Fatal(err)
	}
	station := m.pki.StationLeaf()
	valid := func(epoch uint32) []byte { return m.leaf(t, 1, epoch) }
	// by returns an entry of chip 1 at epoch signed by the station of p.
	by := func(p *testpki.PKI, epoch uint32) []byte {
		e := m.mustEntry(t, 1, epoch)
		e.StationID = p.StationID()
		if err := signEntry(e, p.StationKey); err != nil {
			t.Fatal(err)
		}
		return marshal(t, e)
	}
	revoke := marshal(t, &ledger.StationRevocation{StationID: m.pki.StationID(), RevokedAtMs: 1_800_000_000_000, Reason: "compromised"})
	for _, tc := range []struct {
		name   string
		leaves func() [][]byte
		// rejected are the leaves the ledger refuses for what the model
		// does not check (stations, signatures); the model refuses those
		// whose epoch is not the chip's next one itself.
		rejected []int
		want     []wantFinding
		epoch    uint32 // the chip's last epoch after the log
	}{{
		name:   "skipped epoch 1, 3, 4",
		leaves: func() [][]byte { return [][]byte{station, valid(1), valid(3), valid(4)} },
		want:   []wantFinding{{client.FindingEpochGap, 2}},
		epoch:  4,
	}, {
		name:   "repeated epoch 1, 2, 2, 3",
		leaves: func() [][]byte { return [][]byte{station, valid(1), valid(2), valid(2), valid(3)} },
		want:   []wantFinding{{client.FindingEpochReuse, 3}},
		epoch:  3,
	}, {
		name:   "regressing epoch 1, 2, 1",
		leaves: func() [][]byte { return [][]byte{station, valid(1), valid(2), valid(1)} },
		want:   []wantFinding{{client.FindingEpochReuse, 3}},
		epoch:  2,
	}, {
		name:   "skipped epoch, then the missing one 1, 3, 2",
		leaves: func() [][]byte { return [][]byte{station, valid(1), valid(3), valid(2)} },
		want:   []wantFinding{{client.FindingEpochGap, 2}},
		epoch:  2,
	}, {
		// The ledger would admit the 2 (the 3 and 4 skip from 1).
		name:   "a skip, then back to the admitted history 1, 3, 4, 2",
		leaves: func() [][]byte { return [][]byte{station, valid(1), valid(3), valid(4), valid(2)} },
		want:   []wantFinding{{client.FindingEpochGap, 2}},
		epoch:  2,
	}, {
		name:   "a skip, then a real reuse 1, 3, 4, 4",
		leaves: func() [][]byte { return [][]byte{station, valid(1), valid(3), valid(4), valid(4)} },
		want:   []wantFinding{{client.FindingEpochGap, 2}, {client.FindingEpochReuse, 4}},
		epoch:  4,
	}, {
		name: "unregistered station in the middle, then the chip's own epoch 2",
		leaves: func() [][]byte {
			return [][]byte{station, valid(1), by(other, 2), valid(2), valid(3)}
		},
		rejected: []int{2},
		want:     []wantFinding{{client.FindingUnknownStation, 2}},
		epoch:    3,
	}, {
		name: "unregistered station in the middle, then epochs after it",
		leaves: func() [][]byte {
			return [][]byte{station, valid(1), by(other, 2), valid(3), valid(4)}
		},
		rejected: []int{2},
		want:     []wantFinding{{client.FindingUnknownStation, 2}},
		epoch:    4,
	}, {
		name: "unregistered station first, then the chip's own epoch 1",
		leaves: func() [][]byte {
			return [][]byte{station, by(other, 1), valid(1), valid(2)}
		},
		rejected: []int{1},
		want:     []wantFinding{{client.FindingUnknownStation, 1}},
		epoch:    2,
	}, {
		name: "unregistered station, then a real reuse",
		leaves: func() [][]byte {
			return [][]byte{station, valid(1), by(other, 2), valid(2), valid(2)}
		},
		rejected: []int{2},
		want:     []wantFinding{{client.FindingUnknownStation, 2}, {client.FindingEpochReuse, 4}},
		epoch:    2,
	}, {
		name: "bad signature in the middle",
		leaves: func() [][]byte {
			e := m.mustEntry(t, 1, 2)
			if err := signEntry(e, m.devKey); err != nil {
				t.Fatal(err)
			}
			return [][]byte{station, valid(1), marshal(t, e), valid(2), valid(3)}
		},
		rejected: []int{2},
		want:     []wantFinding{{client.FindingBadSignature, 2}},
		epoch:    3,
	}, {
		name: "revoked station in the middle, then another station",
		leaves: func() [][]byte {
			return [][]byte{station, second.StationLeaf(), valid(1), revoke, valid(2), by(second, 2), by(second, 3)}
		},
		rejected: []int{4},
		want:     []wantFinding{{client.FindingRevokedStation, 4}},
		epoch:    3,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			signer := newSigner(t)
			log := indexed(t, 1, tc.leaves(), tc.rejected...)
			want := slices.Clone(tc.want)
			for i := range want {
				want[i].index = log.at[want[i].index]
			}
			_, addr := startFakeNode(t, signer, log.leaves)
			state := newState(t, signer.VerifierKey(), m.pki.Trust)
			r := audit(t, newAuditor(t, state, client.AuditOptions{}, addr))
			checkEntryFindings(t, r.Findings, want, log.leaves, addr, signer.VerifierKey())
			for _, f := range r.Findings {
				if f.Chip != testpki.ChipID(1).String() || f.Epoch == 0 {
					t.Errorf("%s finding at %d names chip %q at epoch %d, want chip 1", f.Kind, deref(f.Index), f.Chip, f.Epoch)
				}
			}
			if epoch, _, _ := state.LastEpoch(testpki.ChipID(1)); epoch != tc.epoch {
				t.Errorf("the chip's last epoch is %d, want %d", epoch, tc.epoch)
			}
			checkIndex(t, state, log)
			// The state, whose last entry may be past the chip index's, saves
			// and loads.
			again, err := client.ParseAuditState(encode(t, state), signer.VerifierKey(), m.pki.Trust)
			if err != nil || !bytes.Equal(encode(t, again), encode(t, state)) {
				t.Errorf("the state does not round-trip: %v", err)
			}
		})
	}
}

func TestAuditFindsIndexRootsThatDoNotMatchTheLog(t *testing.T) {
	m := newLeafMaker(t)
	leaves := m.mustCleanLog(t, 300)
	for _, tc := range []struct {
		name string
		// lie changes the leaves of log, a clean log in batches of 50, and
		// returns the index of the leaf that lies.
		lie func(log *indexModel) uint64
	}{{
		// An index root that hides the last entry of its batch from the
		// chip index, as a log that serves an older entry as a chip's
		// latest would need; the next roots count it again.
		name: "a root that hides an entry",
		lie: func(log *indexModel) uint64 {
			at := log.rootIdx[3]
			hidden := slices.Index(log.at, at-1)
			log.leaves[at] = indexed(t, 50, leaves, hidden).leaves[at]
			return at
		},
	}, {
		name: "a stale root",
		lie: func(log *indexModel) uint64 {
			at := log.rootIdx[2]
			stale := log.root(log.rootIdx[1])
			stale.CoveredSize = at
			log.leaves[at] = marshal(t, stale)
			return at
		},
	}, {
		name: "a wrong chip count",
		lie: func(log *indexModel) uint64 {
			at := log.rootIdx[4]
			r := log.root(at)
			r.ChipCount++
			log.leaves[at] = marshal(t, r)
			return at
		},
	}, {
		name: "a wrong covered size",
		lie: func(log *indexModel) uint64 {
			at := log.rootIdx[4]
			r := log.root(at)
			r.CoveredSize = at + 1
			log.leaves[at] = marshal(t, r)
			return at
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			log := indexed(t, 50, leaves)
			honest := log.root(log.rootIdx[len(log.rootIdx)-1]) // of the clean log
			at := tc.lie(log)
			want := log.root(at)
			expected := indexed(t, 50, leaves).root(at)
			signer := newSigner(t)
			_, addr := startFakeNode(t, signer, log.leaves)
			state := newState(t, signer.VerifierKey(), m.pki.Trust)
			r := audit(t, newAuditor(t, state, client.AuditOptions{}, addr))
			checkEntryFindings(t, r.Findings, []wantFinding{{client.FindingIndexRootMismatch, at}}, log.leaves, addr, signer.VerifierKey())
			f := r.Findings[0]
			if f.Expected == nil || f.Found == nil {
				t.Fatalf("finding without the expected and found index roots: %+v", f)
			}
			if *f.Expected != (client.IndexRootValues{CoveredSize: at, ChipCount: expected.ChipCount, Root: hex.EncodeToString(expected.Root[:])}) {
				t.Errorf("expected %+v, want the clean log's %+v", *f.Expected, expected)
			}
			if *f.Found != (client.IndexRootValues{CoveredSize: want.CoveredSize, ChipCount: want.ChipCount, Root: hex.EncodeToString(want.Root[:])}) {
				t.Errorf("found %+v, the leaf holds %+v", *f.Found, want)
			}
			// The auditor's index is the clean log's.
			if root, chips := state.IndexRoot(); root != honest.Root || uint64(chips) != honest.ChipCount {
				t.Errorf("the auditor's chip index: %d chips, root %x; want the clean log's %+v", chips, root, honest)
			}
		})
	}

	t.Run("no genesis root", func(t *testing.T) {
		// A station and two chips, closed by the right index root, but
		// without the genesis root at 0.
		log := [][]byte{m.pki.StationLeaf(), m.leaf(t, 1, 1), m.leaf(t, 2, 1)}
		cmap := ledger.NewChipMap()
		for i, leaf := range log[1:] {
			h := proofs.LeafHash(leaf)
			v := proofs.IndexValue{Epoch: 1, LeafIndex: uint64(i + 1), LeafHash: h, HistoryRoot: h}
			cmap.Set(proofs.MapKey(testpki.ChipID(uint64(i+1))), proofs.ValueHash(v))
		}
		log = append(log, marshal(t, &ledger.IndexRoot{CoveredSize: 3, ChipCount: 2, Root: cmap.Root()}))
		signer := newSigner(t)
		_, addr := startFakeNode(t, signer, log)
		state := newState(t, signer.VerifierKey(), m.pki.Trust)
		r := audit(t, newAuditor(t, state, client.AuditOptions{}, addr))
		checkEntryFindings(t, r.Findings, []wantFinding{{client.FindingIndexRootMismatch, 0}}, log, addr, signer.VerifierKey())
		if f := r.Findings[0]; f.Found != nil || f.Expected == nil || *f.Expected != (client.IndexRootValues{Root: hex.EncodeToString(make([]byte, 32))}) {
			t.Errorf("want the genesis root expected and none found: %+v", f)
		}
	})
}

func TestAuditFindsACheckpointNotAtAnIndexRoot(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	vkey, trust := signer.VerifierKey(), m.pki.Trust
	leaves := m.mustCleanLog(t, 100)
	log := indexed(t, 50, leaves[:90])
	log.add(0, leaves[90:])
	open := log.size() - 1 // the last batch without its index root
	a, addrA := startFakeNode(t, signer, log.leaves[:open])
	lagging := log.rootIdx[1] + 6 // 5 leaves into the second batch
	b, addrB := startFakeNode(t, signer, log.leaves[:lagging])

	state := newState(t, vkey, trust)
	r := audit(t, newAuditor(t, state, client.AuditOptions{}, addrA, addrB))
	got := findingsOf(r.Findings, client.FindingCheckpointNotAtIndexRoot)
	if len(got) != 2 || len(r.Findings) != 2 || r.To != open {
		t.Fatalf("audited %d leaves; findings %+v; want both checkpoints", r.To, r.Findings)
	}
	for _, want := range []struct {
		node string
		f    *fakeLog
		size uint64
	}{{addrA, a, open}, {addrB, b, lagging}} {
		i := slices.IndexFunc(got, func(f client.Finding) bool { return f.Node == want.node })
		if i < 0 {
			t.Errorf("no finding names %s", want.node)
			continue
		}
		f := got[i]
		if f.Checkpoint != string(signedNote(t, want.f)) || f.Index == nil || *f.Index != want.size-1 || f.Message == "" {
			t.Errorf("finding %+v, want the checkpoint of size %d and its last leaf", f, want.size)
		}
	}

	// The log closes the batch: its new checkpoint is fine, and the lagging
	// node's, seen again, is not reported again.
	a.add(log.leaves[open:]...)
	r = audit(t, newAuditor(t, state, client.AuditOptions{}, addrA, addrB))
	noNew := len(r.Findings) == 0 && len(state.Findings()) == 2
	if !noNew || r.From != open || r.To != log.size() {
		t.Errorf("after the index root: audited [%d, %d), %d new findings, %d in all", r.From, r.To, len(r.Findings), len(state.Findings()))
	}
	checkIndex(t, state, log)
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

// divergent returns the log, in batches of batch, of the first at of
// leaves and n others after them: up to the index root closing the
// batch of leaf at-1, the log of leaves in batches of batch, if at is a
// multiple of batch.
func divergent(t testing.TB, m *leafMaker, leaves [][]byte, batch, at, n int) [][]byte {
	t.Helper()
	other, err := m.leaves(provisionings(5_000_000, n))
	if err != nil {
		t.Fatal(err)
	}
	return indexed(t, batch, append(slices.Clone(leaves[:at]), other...)).leaves
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
	log := indexed(t, 50, leaves)
	a, addrA := startFakeNode(t, signer, log.leaves)

	t.Run("same size", func(t *testing.T) {
		b, addrB := startFakeNode(t, signer, divergent(t, m, leaves, 50, 100, 100))
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
		if r.To != log.size() || r.Nodes[0].Status != client.NodeOK || r.Nodes[1].Status != client.NodeInconsistent {
			t.Errorf("audited %d leaves; node statuses %s, %s", r.To, r.Nodes[0].Status, r.Nodes[1].Status)
		}
	})
	t.Run("different sizes", func(t *testing.T) {
		b, addrB := startFakeNode(t, signer, divergent(t, m, leaves, 50, 100, 50))
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
	log := indexed(t, 50, leaves)
	a, addrA := startFakeNode(t, signer, log.leaves)
	vkey, trust := signer.VerifierKey(), m.pki.Trust
	path := filepath.Join(t.TempDir(), "audit.state")
	noFindings(t, audit(t, newAuditor(t, newState(t, vkey, trust), client.AuditOptions{Save: saveTo(path)}, addrA)), readState(t, path, vkey, trust))

	lagging := log.rootIdx[2] + 1 // a checkpoint the log signed before
	_, addrLagging := startFakeNode(t, signer, log.leaves[:lagging])
	b, addrB := startFakeNode(t, signer, divergent(t, m, leaves, 50, 100, 50))

	t.Run("lagging", func(t *testing.T) {
		state := readState(t, path, vkey, trust)
		r := audit(t, newAuditor(t, state, client.AuditOptions{}, addrA, addrLagging))
		noFindings(t, r, state)
		if r.Nodes[1].Status != client.NodeLagging || r.Nodes[1].Checkpoint.Size != lagging {
			t.Errorf("lagging node: %+v", r.Nodes[1])
		}
	})
	// A lagging node cannot show the audited tree, and neither can the
	// others, which do not answer: with fewer than a majority of the nodes
	// answering, the auditor cannot tell a rollback from a lag (the silent
	// ones may hold the audited tree), and finds nothing. checkAuditedShown
	// would otherwise call the lagging node a rollback.
	t.Run("lagging, most nodes unreachable", func(t *testing.T) {
		state := readState(t, path, vkey, trust)
		r := audit(t, newAuditor(t, state, client.AuditOptions{}, addrLagging, unreachableAddr(t), unreachableAddr(t)))
		noFindings(t, r, state)
		if n := r.Nodes[0]; n.Status == client.NodeInconsistent || n.Checkpoint.Size != lagging {
			t.Errorf("lagging node: %s at size %d", n.Status, n.Checkpoint.Size)
		}
		for _, n := range r.Nodes[1:] {
			if n.Status != client.NodeUnreachable {
				t.Errorf("node %s is %s, want unreachable", n.Node, n.Status)
			}
		}
		if cp, _ := state.Checkpoint(); cp.Size != log.size() {
			t.Errorf("the audited checkpoint moved to %d", cp.Size)
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
		if cp, _ := state.Checkpoint(); cp.Size != log.size() {
			t.Errorf("the audited checkpoint moved to %d", cp.Size)
		}
	})
}

// TestAuditStateFindingsHaveOneEncoding: the state's findings are JSON,
// which spells one value many ways; a state has exactly one encoding
// (MarshalBinary), so any other spelling of its findings is refused.
func TestAuditStateFindingsHaveOneEncoding(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	vkey, trust := signer.VerifierKey(), m.pki.Trust
	enc := encode(t, newState(t, vkey, trust))
	body := enc[:len(enc)-sha256.Size]
	const empty = "\x00\x00\x00\x02[]" // u32 length ‖ no findings
	if !bytes.HasSuffix(body, []byte(empty)) {
		t.Fatalf("unexpected encoding tail %q", body[len(body)-8:])
	}
	prefix := body[:len(body)-len(empty)]
	withFindings := func(findings string) []byte {
		b := binary.BigEndian.AppendUint32(bytes.Clone(prefix), uint32(len(findings)))
		b = append(b, findings...)
		sum := sha256.Sum256(b)
		return append(b, sum[:]...)
	}
	if _, err := client.ParseAuditState(withFindings("[]"), vkey, trust); err != nil {
		t.Fatalf("the canonical state is refused: %v", err)
	}
	for _, findings := range []string{
		`[ ]`,
		`null`,
		`[{"KIND":"fork","message":"m"}]`,
		`[{"kind":"fork","message":"m","unknown":1}]`,
		`[{"kind":"fork","message":"m","message":"n"}]`,
	} {
		if _, err := client.ParseAuditState(withFindings(findings), vkey, trust); err == nil {
			t.Errorf("findings %s: a state in another encoding is accepted", findings)
		}
	}
}

func TestAuditStateFileRoundTripsAndRefusesOthers(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	log := logWithFindings(t, m, 300)
	_, addr := startFakeNode(t, signer, log.leaves)
	vkey, trust := signer.VerifierKey(), m.pki.Trust
	state := newState(t, vkey, trust)
	audit(t, newAuditor(t, state, client.AuditOptions{}, addr))
	b := encode(t, state)

	parsed, err := client.ParseAuditState(b, vkey, trust)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(encode(t, parsed), b) || len(parsed.Findings()) != 3 || parsed.Audited() != log.size() {
		t.Fatalf("the parsed state differs: %d findings, %d audited", len(parsed.Findings()), parsed.Audited())
	}
	checkIndex(t, parsed, log)
	if !parsed.IndexRootAt(log.size()) || parsed.IndexRootAt(log.size()-1) || !parsed.IndexRootAt(1) || parsed.IndexRootAt(0) {
		t.Error("the parsed state does not know where the index roots are")
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
		"version 1, without a chip index": func() error {
			v1 := slices.Clone(b[:len(b)-sha256.Size])
			v1[4] = 1
			sum := sha256.Sum256(v1)
			_, err := client.ParseAuditState(append(v1, sum[:]...), vkey, trust)
			return err
		},
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
	// The station, 5 entries, and an index root for each and the genesis.
	if size, _ := c.Trusted(); r.To != size.Size || r.To != 1+5+7 || state.IndexRoots() != 7 || state.Chips() != 5 {
		t.Errorf("audited %d leaves of %d, %d chips, %d index roots; want 13, 5 and 7", r.To, size.Size, state.Chips(), state.IndexRoots())
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
	if size, _ := c.Trusted(); r.To != size.Size || r.From != 13 || r.To != 15 {
		t.Errorf("audited [%d, %d) of %d, want the entry and its index root, [13, 15)", r.From, r.To, size.Size)
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
	// Concurrently, so that batches hold several entries. The leaves are
	// made first: escrowLeaf fails the test, which only this goroutine may.
	escrows := make([][]byte, 10)
	for n := range escrows {
		escrows[n] = l.escrowLeaf(uint64(n), 1)
	}
	var wg sync.WaitGroup
	for n, leaf := range escrows {
		wg.Go(func() {
			if _, err := c.Append(context.Background(), leaf); err != nil {
				t.Errorf("append chip %d: %v", n, err)
			}
		})
	}
	wg.Wait()
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
	for _, n := range r.Nodes {
		if n.Status != client.NodeOK && n.Status != client.NodeLagging {
			t.Errorf("node %s is %s: %v", n.Node, n.Status, n.Err)
		}
	}

	// Every leaf was audited: 12 escrow entries of 10 chips, the station,
	// and the index roots, each checked against the auditor's own chip
	// index, the last of which is the one the log ends with.
	leaves, err := c.Entries(context.Background(), 0, r.To)
	if err != nil {
		t.Fatal(err)
	}
	var roots []*ledger.IndexRoot
	for _, leaf := range leaves {
		if ir, err := ledger.ParseIndexRoot(leaf); err == nil {
			roots = append(roots, ir)
		}
	}
	if r.To != r.Checkpoint.Size || escrowCount(leaves) != 12 || state.Chips() != 10 || len(state.Stations()) != 1 {
		t.Errorf("audited %d leaves of %d: %d entries of %d chips, %d stations; want 12 entries of 10 chips", r.To, r.Checkpoint.Size, escrowCount(leaves), state.Chips(), len(state.Stations()))
	}
	if len(roots) < 2 || state.IndexRoots() != uint64(len(roots)) {
		t.Fatalf("%d index roots audited, the log has %d", state.IndexRoots(), len(roots))
	}
	t.Logf("%d leaves, %d index roots", r.To, len(roots))
	last := roots[len(roots)-1]
	if root, chips := state.IndexRoot(); last.CoveredSize != r.To-1 || root != last.Root || uint64(chips) != last.ChipCount || chips != 10 {
		t.Errorf("the auditor's chip index: %d chips, root %x; the log's last index root: %+v", chips, root, last)
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
	registered, _ := c.Trusted()
	awaitAudited(registered.Size)
	for n := range uint64(3) {
		res := l.appendEscrow(c, n) // the watch, not the hourly poll, starts the rounds
		awaitAudited(res.Checkpoint.Size)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("follow ended with %v", err)
	}
	// The genesis root, the station and 3 entries, each closed by a root.
	final, _ := c.Trusted()
	got := readState(t, path, l.vkey, l.pki.Trust)
	if got.Audited() != final.Size || final.Size != 9 || got.IndexRoots() != 5 || got.Chips() != 3 {
		t.Errorf("the saved state audited %d leaves of %d, %d index roots, %d chips; want 9, 5 and 3", got.Audited(), final.Size, got.IndexRoots(), got.Chips())
	}
}

// bigLog is a valid log generated once per test binary for the large-log
// test and the benchmark.
var bigLog = struct {
	sync.Mutex
	leaves  [][]byte
	indexed map[int]*indexModel
}{indexed: make(map[int]*indexModel)}

// largeLogBatch is the number of leaves between the index roots of the
// large logs.
const largeLogBatch = 100

// largeLog returns the log of the first n leaves of the big log (the
// station and n-1 escrow entries) in batches of largeLogBatch, with the
// index roots.
func largeLog(t testing.TB, m *leafMaker, n int) *indexModel {
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
	if bigLog.indexed[n] == nil {
		bigLog.indexed[n] = indexed(t, largeLogBatch, bigLog.leaves[:n])
	}
	return bigLog.indexed[n]
}

func TestAuditOfALargeLogCompletesAndResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("generates and audits 100,000 entries")
	}
	const n = 100_000 // the station and the escrow entries, and 1,001 index roots
	m := newLeafMaker(t)
	signer := newSigner(t)
	log := largeLog(t, m, n)
	size := log.size()
	_, addr := startFakeNode(t, signer, log.leaves)
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
	if first.To != n/2 || r.From != n/2 || r.To != size || state.Audited() != size {
		t.Fatalf("first run to %d, second [%d, %d), want [%d, %d)", first.To, r.From, r.To, n/2, size)
	}
	checkIndex(t, state, log)
	info, _ := os.Stat(path)
	loadStart := time.Now()
	readState(t, path, vkey, trust)
	t.Logf("audited %d leaves (%d index roots) in two runs in %s (%.0f leaves/s in the scans: %.0f and %.0f); %d saves of up to %d bytes (%d chips) took %s; loading it %s",
		size, state.IndexRoots(), elapsed.Round(time.Millisecond), float64(size)/(first.Scan+r.Scan).Seconds(), first.Rate(), r.Rate(), saves, info.Size(), state.Chips(), saveTime.Round(time.Millisecond), time.Since(loadStart).Round(time.Millisecond))
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
		_, chips := state.IndexRoot()
		fmt.Printf("run %d: node %s, audited leaves [%d, %d) of %d: %d stations, %d chips, %d index roots checked; %d findings\n",
			run, r.Nodes[0].Status, r.From, r.To, r.Checkpoint.Size, len(state.Stations()), chips, state.IndexRoots(), state.FindingCount())
	}
	// Output:
	// run 1: node ok, audited leaves [0, 9) of 9: 1 stations, 3 chips, 5 index roots checked; 0 findings
	// run 2: node ok, audited leaves [9, 9) of 9: 1 stations, 3 chips, 5 index roots checked; 0 findings
}

// TestAuditStateKeepsRevocations checks that a revocation survives the
// audit state's round trip, so that a rerun still flags the revoked
// station's later entries.
func TestAuditStateKeepsRevocations(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	rev := &ledger.StationRevocation{StationID: m.pki.StationID(), RevokedAtMs: 1_800_000_000_000, Reason: "stolen"}
	first := indexed(t, 0, [][]byte{m.pki.StationLeaf(), m.leaf(t, 1, 1), marshal(t, rev)})
	f, addr := startFakeNode(t, signer, first.leaves)
	state := newState(t, signer.VerifierKey(), m.pki.Trust)
	if r := audit(t, newAuditor(t, state, client.AuditOptions{}, addr)); len(r.Findings) != 0 {
		t.Fatalf("findings in a clean log: %v", r.Findings)
	}
	b, err := state.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := client.ParseAuditState(b, signer.VerifierKey(), m.pki.Trust)
	if err != nil {
		t.Fatal(err)
	}
	st := loaded.Stations()
	if len(st) != 1 || st[0].Revocation == nil || *st[0].Revocation != *rev || st[0].RevocationIndex != first.at[2] {
		t.Fatalf("stations after the round trip: %+v, want the station revoked at %d", st, first.at[2])
	}
	// The log goes on with an entry the ledger should have refused (and
	// no index root after it, which is a finding of its own).
	f.add(m.leaf(t, 2, 1))
	r := audit(t, newAuditor(t, loaded, client.AuditOptions{}, addr))
	if kinds := kindsOf(r.Findings); !slices.Equal(kinds, []client.FindingKind{client.FindingRevokedStation, client.FindingCheckpointNotAtIndexRoot}) ||
		*r.Findings[0].Index != first.size() {
		t.Fatalf("findings after the revocation: %v, want revoked-station at %d and checkpoint-not-at-index-root", r.Findings, first.size())
	}
}

// junkLeaves returns n leaves of an unknown kind, each a finding.
func junkLeaves(n int, tag byte) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte{0, 9, tag, byte(i), byte(i >> 8), byte(i >> 16)}
	}
	return out
}

// A rollingBackNode shows the whole log's checkpoint, then, asked for its
// leaves, answers OUT_OF_RANGE and shows only a smaller tree: it lost the
// leaves it committed to (ErrRollback when the auditor fetches them).
type rollingBackNode struct {
	*fakeLog
	small []byte
}

func (n *rollingBackNode) GetCheckpoint(ctx context.Context, req *connect.Request[v1.GetCheckpointRequest]) (*connect.Response[v1.GetCheckpointResponse], error) {
	if req.Msg.GetMinSize() > 0 {
		return connect.NewResponse(&v1.GetCheckpointResponse{Checkpoint: n.small}), nil
	}
	return n.fakeLog.GetCheckpoint(ctx, req)
}

func (n *rollingBackNode) GetEntries(ctx context.Context, req *connect.Request[v1.GetEntriesRequest]) (*connect.Response[v1.GetEntriesResponse], error) {
	return nil, connect.NewError(connect.CodeOutOfRange, errors.New("lost"))
}

func startRollingBackNode(t *testing.T, signer *ledger.LogSigner, leaves [][]byte, smallSize int) string {
	t.Helper()
	small, _ := startFakeNode(t, signer, leaves[:smallSize])
	f, _ := startFakeNode(t, signer, leaves)
	return serve(t, &rollingBackNode{fakeLog: f, small: signedNote(t, small)})
}

// TestTwoNodesThatLostTheAuditedLeavesAreTwoFindings: two nodes that
// both lost the audited leaves are two findings, each naming its node; the
// second must not be taken for the first.
func TestTwoNodesThatLostTheAuditedLeavesAreTwoFindings(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	log := indexed(t, 50, m.mustCleanLog(t, 200))
	addrB := startRollingBackNode(t, signer, log.leaves, 51)
	addrC := startRollingBackNode(t, signer, log.leaves, 51)
	state := newState(t, signer.VerifierKey(), m.pki.Trust)
	a := newAuditor(t, state, client.AuditOptions{}, addrB, addrC)
	r, err := a.Audit(context.Background())
	if err == nil {
		t.Fatal("audit of nodes that serve no leaves succeeded")
	}
	var nodes []string
	for _, f := range findingsOf(state.Findings(), client.FindingRollback) {
		nodes = append(nodes, f.Node)
	}
	if !slices.Contains(nodes, addrB) || !slices.Contains(nodes, addrC) {
		t.Errorf("rollback findings name nodes %q, want both %s and %s (report: %v)", nodes, addrB, addrC, kindsOf(r.Findings))
	}
}

// TestARoundsReportOfFindingsIsBounded: the findings of one round are
// bounded like the state's (the others counted), so a hostile log of junk
// leaves does not grow the report without bound.
func TestARoundsReportOfFindingsIsBounded(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	junk := junkLeaves(client.MaxAuditFindings+2000, 3)
	_, addr := startFakeNode(t, signer, indexed(t, 0, junk).leaves)
	state := newState(t, signer.VerifierKey(), m.pki.Trust)
	r := audit(t, newAuditor(t, state, client.AuditOptions{}, addr))
	if len(state.Findings()) != client.MaxAuditFindings {
		t.Fatalf("state keeps %d findings", len(state.Findings()))
	}
	if len(r.Findings) > client.MaxAuditFindings {
		t.Errorf("the round's report holds %d findings, the state keeps at most %d: unbounded in the log's size", len(r.Findings), client.MaxAuditFindings)
	}
	if uint64(r.NewFindings()) != state.FindingCount() {
		t.Errorf("the report counts %d new findings, the state %d", r.NewFindings(), state.FindingCount())
	}
}

// TestAuditNamesTheLeafANodeServesCorrupted: a node that serves one leaf
// corrupted (its disk, say), whatever range is asked, is found with that
// leaf's index, narrowed down from the range whose proof failed.
func TestAuditNamesTheLeafANodeServesCorrupted(t *testing.T) {
	l := startLog(t, 1, nil)
	c := l.client()
	l.registerStation(c)
	for n := range uint64(5) {
		l.appendEscrow(c, n)
	}
	node := l.cluster.Addrs()[0]
	p, proxy := startProxy(t, node)
	const corrupt = 9
	p.setTamper(func(_ context.Context, _ string, req, resp proto.Message) error {
		q, ok := req.(*v1.GetEntriesRequest)
		r, ok2 := resp.(*v1.GetEntriesResponse)
		if ok && ok2 && q.GetStart() <= corrupt && corrupt < q.GetStart()+uint64(len(r.Leaves)) {
			i := corrupt - q.GetStart()
			r.Leaves[i] = slices.Clone(r.Leaves[i])
			r.Leaves[i][len(r.Leaves[i])-1] ^= 1
		}
		return nil
	})
	state := newState(t, l.vkey, l.pki.Trust)
	r := audit(t, newAuditor(t, state, client.AuditOptions{}, proxy, node))
	bad := findingsOf(r.Findings, client.FindingBadProof)
	if len(bad) != 1 || bad[0].Node != proxy || bad[0].Index == nil || *bad[0].Index != corrupt {
		t.Fatalf("findings %+v, want one bad proof from the proxy at leaf %d", r.Findings, corrupt)
	}
	if !strings.Contains(bad[0].Message, fmt.Sprintf("leaf %d", corrupt)) {
		t.Errorf("finding message %q does not name leaf %d", bad[0].Message, corrupt)
	}
}
