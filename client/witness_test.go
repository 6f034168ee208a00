package client_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/internal/localcluster"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/internal/witness"
	"github.com/chipledger/chipledger/internal/witness/witnesstest"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// startWitnessedLog starts a log of n nodes whose checkpoints three
// witnesses cosign (quorum two), and returns it with the policy.
func startWitnessedLog(t *testing.T, n int) (*testLog, *witnesstest.Set) {
	t.Helper()
	signer := newSigner(t)
	ws := witnesstest.Start(t, signer.VerifierKey(), 3, 2)
	l := startLogWith(t, signer, func(o *localcluster.Options) {
		o.Nodes = n
		o.Witnesses = ws.Policy
		o.WitnessInterval = 20 * time.Millisecond
	})
	return l, ws
}

func TestLookupChipWithWitnessesIsCoveredByAWitnessedCheckpoint(t *testing.T) {
	l, ws := startWitnessedLog(t, 3)
	ctx := context.Background()
	admin := l.client()
	l.registerStation(admin)
	for n := range uint64(5) {
		l.appendEscrow(admin, n)
	}

	c := l.clientWith(client.Options{Witnesses: ws.Policy})
	h, err := c.LookupChip(ctx, testpki.ChipID(3))
	if err != nil {
		t.Fatal(err)
	}
	if h.Witnessed == nil || h.Witnessed.Size < h.Checkpoint.Size || len(h.Entries) != 1 {
		t.Fatalf("history at %d, witnessed %+v, %d entries", h.Checkpoint.Size, h.Witnessed, len(h.Entries))
	}
	w, err := l.verifier.VerifyWitnessedCheckpoint(h.WitnessedNote, ws.Policy)
	if err != nil || w != *h.Witnessed {
		t.Fatalf("the witnessed note: %v (%+v, want %+v)", err, w, *h.Witnessed)
	}
	// The client trusts it now: it is proven to extend what it saw.
	if top, _ := c.Trusted(); top.Size < w.Size {
		t.Fatalf("trusted size %d, below the witnessed %d", top.Size, w.Size)
	}

	// Without a policy nothing changes.
	plain, err := l.client().LookupChip(ctx, testpki.ChipID(3))
	if err != nil || plain.Witnessed != nil {
		t.Fatalf("without a policy: %v, witnessed %+v", err, plain.Witnessed)
	}
}

func TestLookupChipLooksAgainWhenANewerEntryPrecedesTheWitnessedCheckpoint(t *testing.T) {
	l, ws := startWitnessedLog(t, 1)
	ctx := context.Background()
	admin := l.client()
	l.registerStation(admin)
	l.appendEscrow(admin, 7)

	// Right after the node answers the first lookup, the chip gets its
	// epoch 2, and the witnesses cosign it: the witnessed checkpoint the
	// client then fetches holds it past the lookup's checkpoint.
	p, addr := startProxy(t, l.cluster.Addrs()[0])
	watcher := l.clientWith(client.Options{Witnesses: ws.Policy})
	var once atomic.Bool
	p.setTamper(func(ctx context.Context, proc string, req, resp proto.Message) error {
		if proc != "LookupChip" || !once.CompareAndSwap(false, true) {
			return nil
		}
		res, err := admin.Append(ctx, l.escrowLeaf(7, 2))
		if err != nil {
			return err
		}
		_, _, err = watcher.WitnessedCheckpoint(ctx, res.Checkpoint.Size)
		return err
	})
	c := l.clientWith(client.Options{Addrs: []string{addr}, Witnesses: ws.Policy})
	h, err := c.LookupChip(ctx, testpki.ChipID(7))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.count("LookupChip"); got != 2 {
		t.Fatalf("%d lookups, want 2: the first was overtaken", got)
	}
	if len(h.Entries) != 2 || h.Latest().Entry.Epoch != 2 {
		t.Fatalf("history of %d entries, latest %+v: want epoch 2", len(h.Entries), h.Latest())
	}
}

func TestLookupChipRefusesACheckpointTheWitnessesDidNotCosign(t *testing.T) {
	l, ws := startWitnessedLog(t, 1)
	ctx := context.Background()
	admin := l.client()
	l.registerStation(admin)
	l.appendEscrow(admin, 1)

	// A node that strips the cosignatures, as one showing a split view
	// would have to.
	p, addr := startProxy(t, l.cluster.Addrs()[0])
	p.setTamper(func(ctx context.Context, proc string, req, resp proto.Message) error {
		if proc == "GetCheckpoint" && req.(*v1.GetCheckpointRequest).GetWitnessed() {
			m := resp.(*v1.GetCheckpointResponse)
			cp, err := l.signer.Sign(mustCheckpoint(t, l, m.GetCheckpoint()).Size, mustCheckpoint(t, l, m.GetCheckpoint()).Hash)
			if err != nil {
				return err
			}
			m.Checkpoint = cp
		}
		return nil
	})
	c := l.clientWith(client.Options{Addrs: []string{addr}, Witnesses: ws.Policy})
	_, err := c.LookupChip(ctx, testpki.ChipID(1))
	if !errors.Is(err, client.ErrNotWitnessed) || !errors.Is(err, proofs.ErrNotWitnessed) {
		t.Fatalf("lookup through a node stripping cosignatures: %v, want ErrNotWitnessed", err)
	}

	// A log without witnesses cannot satisfy a client that wants them.
	bare := startLog(t, 1, nil)
	bc := bare.clientWith(client.Options{Witnesses: ws.Policy})
	bare.registerStation(bc)
	_, err = bc.LookupChip(ctx, testpki.ChipID(1))
	if !errors.Is(err, client.ErrNotWitnessed) || connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("lookup in a log without witnesses: %v, want ErrNotWitnessed with FAILED_PRECONDITION", err)
	}
}

func mustCheckpoint(t *testing.T, l *testLog, signed []byte) proofs.Checkpoint {
	t.Helper()
	cp, err := l.verifier.VerifyCheckpoint(signed)
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func TestRecoverWithWitnessesReportsTheWitnessedCheckpoint(t *testing.T) {
	var ws *witnesstest.Set
	f := newRecFixtureWith(t, 1, func(vkey string, o *localcluster.Options) {
		ws = witnesstest.Start(t, vkey, 3, 2)
		o.Witnesses, o.WitnessInterval = ws.Policy, 20*time.Millisecond
	})
	ctx := context.Background()
	d := f.newDevice()
	f.provision(d)
	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := client.Recover(ctx, f.newClientWith(client.Options{Witnesses: ws.Policy}), d, client.RecoverOptions{})
	if err != nil {
		t.Fatalf("recover: %v\n%+v", err, rep)
	}
	var step *client.RecoveryStep
	for i := range rep.Steps {
		if rep.Steps[i].Check == client.CheckWitnesses {
			step = &rep.Steps[i]
		}
	}
	if step == nil || !step.OK || !strings.Contains(step.Detail, "witnesses of the witness policy cosigned") {
		t.Fatalf("witnesses step %+v in %+v", step, rep.Steps)
	}
	if rep.Witnessed == nil || rep.Witnessed.Size < rep.Checkpoint.Size {
		t.Fatalf("report's witnessed checkpoint %+v, lookup's %+v", rep.Witnessed, rep.Checkpoint)
	}
	if _, err := f.verifier.VerifyWitnessedCheckpoint([]byte(rep.Witnessed.Note), ws.Policy); err != nil {
		t.Fatalf("the report's witnessed note: %v", err)
	}

	// A witness policy the log does not meet fails the witnesses check
	// before anything reaches the device.
	stranger := witnesstest.Start(t, f.vkey, 1, 1)
	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err = client.Recover(ctx, f.newClientWith(client.Options{Witnesses: stranger.Policy}), d, client.RecoverOptions{})
	if !errors.Is(err, client.ErrNotWitnessed) || rep.FailedCheck != client.CheckWitnesses || rep.Restored {
		t.Fatalf("recover under a policy of other witnesses: %v, failed check %q, restored %v", err, rep.FailedCheck, rep.Restored)
	}
}

// cosigned returns signed with the cosignatures of every witness of ws,
// which it submits it to as their first checkpoint of the log.
func cosigned(t *testing.T, ws *witnesstest.Set, signed []byte) []byte {
	t.Helper()
	out := slices.Clone(signed)
	for _, w := range ws.Witnesses {
		lines, err := witness.AddCheckpoint(context.Background(), nil, w.URL+"/add-checkpoint", 0, nil, signed)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, lines...)
	}
	return out
}

func TestAuditProvesTheWitnessedCheckpointIsTheAuditedHistory(t *testing.T) {
	m := newLeafMaker(t)
	signer := newSigner(t)
	leaves := m.mustCleanLog(t, 200)
	log := indexed(t, 50, leaves)
	a, addrA := startFakeNode(t, signer, log.leaves)
	vkey, trust := signer.VerifierKey(), m.pki.Trust

	t.Run("the witnesses cosigned the audited history", func(t *testing.T) {
		ws := witnesstest.Start(t, vkey, 2, 2)
		a.setWitnessed(cosigned(t, ws, signedNote(t, a)))
		state := newState(t, vkey, trust)
		r := audit(t, newAuditor(t, state, client.AuditOptions{Witnesses: ws.Policy}, addrA))
		noFindings(t, r, state)
		if r.Witnessed.Size != log.size() {
			t.Fatalf("witnessed size %d in the report, want %d", r.Witnessed.Size, log.size())
		}
	})
	t.Run("the witnesses cosigned another history", func(t *testing.T) {
		// Witnesses that only ever saw a fork of the log, as a log
		// showing its clients a split view would have them.
		b, _ := startFakeNode(t, signer, divergent(t, m, leaves, 50, 100, 50))
		ws := witnesstest.Start(t, vkey, 1, 1)
		a.setWitnessed(cosigned(t, ws, signedNote(t, b)))
		state := newState(t, vkey, trust)
		r := audit(t, newAuditor(t, state, client.AuditOptions{Witnesses: ws.Policy}, addrA))
		forks := findingsOf(r.Findings, client.FindingFork)
		if len(forks) != 1 || !strings.Contains(forks[0].Message, "cosigned by the witnesses") {
			t.Fatalf("findings %+v, want one fork naming the witnessed checkpoint", r.Findings)
		}
		if r.Witnessed.Size != 0 {
			t.Fatalf("the report counts the forked witnessed checkpoint %+v", r.Witnessed)
		}
		// Without the policy the auditor does not look.
		noFindings(t, audit(t, newAuditor(t, newState(t, vkey, trust), client.AuditOptions{}, addrA)), newState(t, vkey, trust))
	})
	t.Run("without the quorum", func(t *testing.T) {
		ws := witnesstest.Start(t, vkey, 2, 2)
		a.setWitnessed(signedNote(t, a))
		state := newState(t, vkey, trust)
		r := audit(t, newAuditor(t, state, client.AuditOptions{Witnesses: ws.Policy}, addrA))
		bad := findingsOf(r.Findings, client.FindingBadCheckpoint)
		if len(bad) != 1 || !strings.Contains(bad[0].Message, "witness") {
			t.Fatalf("findings %+v, want one bad witnessed checkpoint", r.Findings)
		}
	})
	t.Run("a rolled-back node serves the audited checkpoint cosigned", func(t *testing.T) {
		// No node shows the audited tree: a rollback, as in
		// TestAuditFindsARollbackButNotALaggingNode. Serving the audited
		// checkpoint, cosigned, as its witnessed one (a public note any
		// node can serve) must not count as holding that tree.
		ws := witnesstest.Start(t, vkey, 1, 1)
		state := newState(t, vkey, trust)
		noFindings(t, audit(t, newAuditor(t, state, client.AuditOptions{}, addrA)), state)
		b, addrB := startFakeNode(t, signer, divergent(t, m, leaves, 50, 100, 50))
		b.setWitnessed(cosigned(t, ws, signedNote(t, a)))
		r := audit(t, newAuditor(t, state, client.AuditOptions{Witnesses: ws.Policy}, addrB))
		if rollbacks := findingsOf(r.Findings, client.FindingRollback); len(rollbacks) != 1 || rollbacks[0].Node != addrB {
			t.Fatalf("findings %+v, nodes %+v: want one rollback naming %s", r.Findings, r.Nodes, addrB)
		}
	})
}

// TestMonitorWithWitnessesLooksChipsUpWithinAWitnessedCheckpoint checks
// that Monitor, which reads through a client of its own, keeps the witness
// policy and its maximum age: under a policy the log's witnesses do not
// meet, or with cosignatures older than the client accepts, its lookups
// fail with ErrNotWitnessed instead of reporting the chip's entries.
func TestMonitorWithWitnessesLooksChipsUpWithinAWitnessedCheckpoint(t *testing.T) {
	l, ws := startWitnessedLog(t, 1)
	admin := l.client()
	l.registerStation(admin)
	l.appendEscrow(admin, 4)

	events, _ := monitorEvents(t, l.clientWith(client.Options{Witnesses: ws.Policy}), client.MonitorOptions{Chips: []ledger.ChipID{testpki.ChipID(4)}, Lookup: true})
	if e := nextEvent(t, events); !e.Initial || e.Epoch != 1 {
		t.Fatalf("under the log's policy: event %+v, want chip 4's existing epoch 1", e)
	}

	stranger := witnesstest.Start(t, l.vkey, 1, 1)
	events, done := monitorEvents(t, l.clientWith(client.Options{Witnesses: stranger.Policy}), client.MonitorOptions{Chips: []ledger.ChipID{testpki.ChipID(4)}, Lookup: true})
	select {
	case e := <-events:
		t.Fatalf("under a policy the log does not meet, the monitor reported %+v", e)
	case err := <-done:
		if !errors.Is(err, client.ErrNotWitnessed) {
			t.Fatalf("under a policy the log does not meet: %v, want ErrNotWitnessed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the monitor neither reported nor failed")
	}

	// Cosignatures are stamped in whole seconds: none is from the last
	// nanosecond, which LookupChip refuses (TestLookupChipNeedsRecentCosignatures);
	// so must the monitor of that client.
	strict := l.clientWith(client.Options{Witnesses: ws.Policy, WitnessMaxAge: time.Nanosecond})
	events, done = monitorEvents(t, strict, client.MonitorOptions{Chips: []ledger.ChipID{testpki.ChipID(4)}, Lookup: true})
	select {
	case e := <-events:
		t.Fatalf("the monitor of a client needing cosignatures of the last nanosecond reported %+v", e)
	case err := <-done:
		if !errors.Is(err, client.ErrNotWitnessed) {
			t.Fatalf("the monitor of a client needing cosignatures of the last nanosecond: %v, want ErrNotWitnessed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the monitor neither reported nor failed")
	}
}

func TestLookupChipNeedsRecentCosignatures(t *testing.T) {
	l, ws := startWitnessedLog(t, 1)
	ctx := context.Background()
	admin := l.client()
	l.registerStation(admin)
	l.appendEscrow(admin, 2)

	// Cosignatures are stamped in whole seconds, before the lookup: none
	// is from the last nanosecond.
	_, err := l.clientWith(client.Options{Witnesses: ws.Policy, WitnessMaxAge: time.Nanosecond}).LookupChip(ctx, testpki.ChipID(2))
	if !errors.Is(err, client.ErrNotWitnessed) || !strings.Contains(err.Error(), "cosignatures made since") {
		t.Fatalf("lookup needing cosignatures of the last nanosecond: %v, want ErrNotWitnessed", err)
	}
	for _, age := range []time.Duration{0, -1} {
		if _, err := l.clientWith(client.Options{Witnesses: ws.Policy, WitnessMaxAge: age}).LookupChip(ctx, testpki.ChipID(2)); err != nil {
			t.Fatalf("WitnessMaxAge %s: %v", age, err)
		}
	}
}

// TestLookupChipReadsTheLeavesAfterAStaleLookupAWindowAtATime: a node that
// answers a lookup at an old checkpoint (here: recorded before the chip's
// entry and the thousand leaves after it) makes the client read the leaves
// from there to the witnessed checkpoint. It reads them a window at a
// time and stops at the chip's entry, rather than holding every leaf since
// that checkpoint, as many as the node chooses, at once before looking.
func TestLookupChipReadsTheLeavesAfterAStaleLookupAWindowAtATime(t *testing.T) {
	l, ws := startWitnessedLog(t, 1)
	ctx := context.Background()
	admin := l.client()
	l.registerStation(admin)
	const chip = 900

	p, addr := startProxy(t, l.cluster.Addrs()[0])
	var stale atomic.Pointer[v1.LookupChipResponse]
	p.setTamper(func(ctx context.Context, proc string, req, resp proto.Message) error {
		if proc == "LookupChip" {
			stale.CompareAndSwap(nil, proto.Clone(resp).(*v1.LookupChipResponse))
		}
		return nil
	})
	before, err := l.clientWith(client.Options{Addrs: []string{addr}}).LookupChip(ctx, testpki.ChipID(chip))
	if err != nil || len(before.Entries) != 0 {
		t.Fatalf("lookup before the chip's entry: %v, %d entries", err, len(before.Entries))
	}

	l.appendEscrow(admin, chip)
	const after = 1100
	var next atomic.Uint64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for n := next.Add(1); n <= after; n = next.Add(1) {
				if _, err := admin.Append(ctx, l.escrowLeaf(1000+n, 1)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	top, _ := admin.Trusted()
	watcher := l.clientWith(client.Options{Witnesses: ws.Policy})
	if _, _, err := watcher.WitnessedCheckpoint(ctx, top.Size); err != nil {
		t.Fatal(err)
	}

	// The node answers with the old lookup whenever the client would
	// accept it, and counts the leaves it hands out.
	var leaves atomic.Int64
	p.setTamper(func(ctx context.Context, proc string, req, resp proto.Message) error {
		switch proc {
		case "LookupChip":
			if req.(*v1.LookupChipRequest).GetMinSize() <= before.Checkpoint.Size {
				proto.Reset(resp)
				proto.Merge(resp, stale.Load())
			}
		case "GetEntries":
			leaves.Add(int64(len(resp.(*v1.GetEntriesResponse).GetLeaves())))
		}
		return nil
	})
	c := l.clientWith(client.Options{Addrs: []string{addr}, Witnesses: ws.Policy})
	h, err := c.LookupChip(ctx, testpki.ChipID(chip))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Entries) != 1 || h.Checkpoint.Size <= before.Checkpoint.Size {
		t.Fatalf("history of %d entries at size %d, want the chip's entry, past the stale lookup at %d", len(h.Entries), h.Checkpoint.Size, before.Checkpoint.Size)
	}
	gap := h.Witnessed.Size - before.Checkpoint.Size
	if got := leaves.Load(); got > 1000 {
		t.Fatalf("the client read %d leaves to find the chip's entry, the first after the stale lookup of %d leaves (%d leaves to the witnessed checkpoint)", got, before.Checkpoint.Size, gap)
	}
}

// TestASplitViewIsCaughtByAClientWithTheWitnessPolicy runs the attack the
// witnesses exist for, end to end: whoever holds the log key runs a second
// cluster, a fork of the log, in which chip 11 never got its epoch 2, and
// shows it to one client. A client without a policy takes the fork's
// answer (it is signed by the log key, and proves itself); a client with
// the policy does not, because the witnesses, which follow the real log,
// cosign none of the fork's checkpoints.
func TestASplitViewIsCaughtByAClientWithTheWitnessPolicy(t *testing.T) {
	ctx := context.Background()
	signer := newSigner(t)
	ws := witnesstest.Start(t, signer.VerifierKey(), 3, 2)
	withWitnesses := func(o *localcluster.Options) {
		o.Nodes, o.Witnesses, o.WitnessInterval = 1, ws.Policy, 20*time.Millisecond
	}
	real := startLogWith(t, signer, withWitnesses)
	admin := real.client()
	real.registerStation(admin)
	for epoch := uint32(1); epoch <= 2; epoch++ {
		if _, err := admin.Append(ctx, real.escrowLeaf(11, epoch)); err != nil {
			t.Fatal(err)
		}
	}
	top, _ := admin.Trusted()
	watcher := real.clientWith(client.Options{Witnesses: ws.Policy})
	if _, _, err := watcher.WitnessedCheckpoint(ctx, top.Size); err != nil {
		t.Fatal(err)
	}

	// The fork: the same key, the same policy, a history without epoch 2.
	fork := startLogWith(t, signer, withWitnesses)
	forkAdmin := fork.client()
	fork.registerStation(forkAdmin)
	for _, chip := range []uint64{11, 12, 13, 14} { // a longer tree than the real one
		if _, err := forkAdmin.Append(ctx, fork.escrowLeaf(chip, 1)); err != nil {
			t.Fatal(err)
		}
	}

	// A victim without the policy, on its first run, is fooled.
	h, err := fork.client().LookupChip(ctx, testpki.ChipID(11))
	if err != nil || h.Latest().Entry.Epoch != 1 {
		t.Fatalf("a client without a policy, shown the fork: %v, %+v", err, h)
	}
	// A victim with the policy is not: the fork has no witnessed checkpoint.
	_, err = fork.clientWith(client.Options{Witnesses: ws.Policy, Retry: client.RetryPolicy{MaxAttempts: 1, AttemptTimeout: time.Second}}).LookupChip(ctx, testpki.ChipID(11))
	if !errors.Is(err, client.ErrNotWitnessed) {
		t.Fatalf("a client with the policy, shown the fork: %v, want ErrNotWitnessed", err)
	}
	// Nor can the fork borrow the real log's cosignatures: they are over
	// another tree. Served as the fork's witnessed checkpoint, the real
	// one (smaller here) cannot cover the fork's lookup; a larger one could
	// not be proven to extend the fork's tree.
	_, realWitnessed, err := watcher.WitnessedCheckpoint(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	p, addr := startProxy(t, fork.cluster.Addrs()[0])
	p.mu.Lock()
	p.witnessed = realWitnessed
	p.mu.Unlock()
	_, err = fork.clientWith(client.Options{Addrs: []string{addr}, Witnesses: ws.Policy, Retry: client.RetryPolicy{MaxAttempts: 1, AttemptTimeout: 2 * time.Second}}).LookupChip(ctx, testpki.ChipID(11))
	if err == nil || !(errors.Is(err, client.ErrNotWitnessed) || errors.Is(err, client.ErrFork)) {
		t.Fatalf("the fork serving the real log's witnessed checkpoint: %v, want it refused", err)
	}
	// The witnesses still hold the real history.
	for i, w := range ws.Witnesses {
		size, root, ok := w.Latest(testOrigin)
		rc, _ := admin.Trusted()
		if !ok || size > rc.Size {
			t.Fatalf("witness %d holds size %d (ok %v), the real log has %d", i, size, ok, rc.Size)
		}
		if size == rc.Size && root != rc.Hash {
			t.Fatalf("witness %d holds another root at size %d", i, size)
		}
	}
}

// TestWitnessedCheckpointRefusesCosignaturesDatedInTheFuture: a witness
// whose clock runs an hour ahead stamps its cosignatures an hour in the
// future, and counted, they would look recent an hour longer than
// WitnessMaxAge allows. The client refuses such a cosignature
// (ErrNotWitnessed), though it takes the same witness's cosignature of the
// same checkpoint stamped now, or a minute ahead (a small skew).
func TestWitnessedCheckpointRefusesCosignaturesDatedInTheFuture(t *testing.T) {
	f, addr := startFakeLog(t, 10)
	signed := signedNote(t, f)
	text := string(signed[:bytes.Index(signed, []byte("\n\n"))+1])
	seed := sha256.Sum256([]byte(t.Name()))
	_, vkey := witnesstest.CosignAt(seed, "w0.example", text, time.Now())
	policy, err := proofs.ParseWitnessPolicy([]byte("witness w0 " + vkey + " https://w0.example/\nquorum w0\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Options{Addrs: []string{addr}, LogKey: f.signer.VerifierKey(), Witnesses: policy,
		Logger: testLogger(), Retry: client.RetryPolicy{MaxAttempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for _, tc := range []struct {
		name  string
		ahead time.Duration
		want  error
	}{
		{"a clock on time", 0, nil},
		{"a clock a minute ahead", time.Minute, nil},
		{"a clock an hour ahead", time.Hour, client.ErrNotWitnessed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line, _ := witnesstest.CosignAt(seed, "w0.example", text, time.Now().Add(tc.ahead))
			f.setWitnessed(append(slices.Clone(signed), line...))
			cp, _, err := c.WitnessedCheckpoint(context.Background(), 0)
			if tc.want == nil {
				if err != nil || cp.Size != f.size() {
					t.Fatalf("got size %d, %v; want the checkpoint of size %d", cp.Size, err, f.size())
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got size %d, %v; want %v", cp.Size, err, tc.want)
			}
		})
	}
}
