package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/chipledger/chipledger/internal/witness"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus/testutil"
	fnote "github.com/transparency-dev/formats/note"
	fwitness "github.com/transparency-dev/formats/witness"
	"golang.org/x/mod/sumdb/note"

	"github.com/chipledger/chipledger/internal/witness/witnesstest"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// witnessSet starts witnesses for the log of the first node configured
// through it, and sets every node's policy: quorum of n witnesses.
type witnessSet struct {
	t      *testing.T
	n      int
	quorum int
	once   sync.Once
	*witnesstest.Set
}

func (s *witnessSet) configure(cfg *Config) {
	s.once.Do(func() { s.Set = witnesstest.Start(s.t, cfg.Signer.VerifierKey(), s.n, s.quorum) })
	cfg.Witnesses = s.Policy
	cfg.WitnessInterval = 20 * time.Millisecond
}

// witnessed asks node i for its latest witnessed checkpoint of at least
// minSize leaves.
func (c *testCluster) witnessed(ctx context.Context, i int, minSize uint64) ([]byte, error) {
	resp, err := c.client(i).GetCheckpoint(ctx, connect.NewRequest(&v1.GetCheckpointRequest{Witnessed: true, MinSize: minSize}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetCheckpoint(), nil
}

// checkWitnessed verifies a witnessed checkpoint with our verifier and with
// transparency-dev/formats' reading of the same policy, and returns it.
func checkWitnessed(t *testing.T, c *testCluster, ws *witnessSet, signed []byte) proofs.Checkpoint {
	t.Helper()
	cp, err := c.verifier.VerifyWitnessedCheckpoint(signed, ws.Policy)
	if err != nil {
		t.Fatalf("witnessed checkpoint %q: %v", signed, err)
	}
	group, err := fwitness.ParsePolicy(ws.PolicyText)
	if err != nil {
		t.Fatal(err)
	}
	if !group.Satisfied(signed) {
		t.Fatalf("formats/witness: the policy is not satisfied by %q", signed)
	}
	if _, err := note.Open(signed, note.VerifierList(c.verifier.Verifier())); err != nil {
		t.Fatalf("x/mod note: the log's signature: %v", err)
	}
	return cp
}

// rootAt returns node n's tree root at size.
func rootAt(n *Node, size uint64) (root [32]byte, err error) {
	err = n.fsm.withStore(func(s *ledger.Store) error {
		h, err := s.RootAt(size)
		root = [32]byte(h)
		return err
	})
	return root, err
}

func TestEveryNodeServesTheCheckpointTheWitnessesCosigned(t *testing.T) {
	ws := &witnessSet{t: t, n: 3, quorum: 2}
	c := newConfiguredCluster(t, 3, nil, ws.configure)
	c.registerStation()
	leader := c.waitLeader()
	c.appendEscrow(leader, 0, 20)
	cp := c.waitSameState(20)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range c.nodes {
		signed, err := c.witnessed(ctx, i, cp.Size)
		if err != nil {
			t.Fatalf("node %d: witnessed checkpoint of size >= %d: %v", i, cp.Size, err)
		}
		got := checkWitnessed(t, c, ws, signed)
		if got.Size < cp.Size {
			t.Fatalf("node %d: witnessed size %d, asked for at least %d", i, got.Size, cp.Size)
		}
		root, err := rootAt(c.nodes[i], got.Size)
		if err != nil {
			t.Fatal(err)
		}
		if root != got.Hash {
			t.Fatalf("node %d: witnessed root %x, its tree has %x at size %d", i, got.Hash, root, got.Size)
		}
	}
	// Every witness holds the state it cosigned, no larger than the log.
	for i, w := range ws.Witnesses {
		size, _, ok := w.Latest(testOrigin)
		if !ok || size == 0 || size > c.nodes[leader].Checkpoint().Size {
			t.Fatalf("witness %d holds size %d (ok %v), log has %d", i, size, ok, c.nodes[leader].Checkpoint().Size)
		}
	}
}

func TestWitnessingNeedsTheQuorumAndResumes(t *testing.T) {
	ws := &witnessSet{t: t, n: 3, quorum: 2}
	c := newConfiguredCluster(t, 3, nil, ws.configure)
	c.registerStation()
	leader := c.waitLeader()
	c.appendEscrow(leader, 0, 5)
	first := c.waitSameState(5)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.witnessed(ctx, leader, first.Size); err != nil {
		t.Fatal(err)
	}

	// One witness answers a cosignature over another checkpoint, and one
	// is down: one valid cosignature is short of the quorum.
	ws.Witnesses[0].Forge.Store(true)
	ws.Witnesses[1].Down.Store(true)
	c.appendEscrow(leader, 5, 5)
	second := c.waitSameState(10)
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := c.witnessed(short, leader, second.Size)
	cancelShort()
	if err == nil {
		t.Fatalf("a checkpoint of size %d was witnessed with one good witness of three", second.Size)
	}
	signed, err := c.witnessed(ctx, leader, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := checkWitnessed(t, c, ws, signed); got.Size >= second.Size {
		t.Fatalf("witnessed size %d without a quorum", got.Size)
	}

	// The leader counts each witness's failures.
	m := c.nodes[leader].metrics.witnessFailures
	for i, want := range []bool{true, true, false} {
		if got := testutil.ToFloat64(m.WithLabelValues(fmt.Sprintf("w%d.witness.example", i))); (got > 0) != want {
			t.Errorf("witness %d: %v failures counted, want some: %v", i, got, want)
		}
	}

	// The witness comes back: the next round meets the quorum again.
	ws.Witnesses[1].Down.Store(false)
	signed, err = c.witnessed(ctx, leader, second.Size)
	if err != nil {
		t.Fatalf("after the witness came back: %v", err)
	}
	checkWitnessed(t, c, ws, signed)
}

func TestANewLeaderGoesOnWitnessing(t *testing.T) {
	ws := &witnessSet{t: t, n: 3, quorum: 3}
	c := newConfiguredCluster(t, 3, nil, ws.configure)
	c.registerStation()
	leader := c.waitLeader()
	c.appendEscrow(leader, 0, 5)
	first := c.waitSameState(5)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.witnessed(ctx, leader, first.Size); err != nil {
		t.Fatal(err)
	}

	c.stop(leader)
	next := c.waitLeader()
	c.appendEscrow(next, 5, 5)
	second := c.waitSameState(10)
	// The new leader starts without knowing what each witness has seen;
	// the witnesses' 409 answers tell it.
	signed, err := c.witnessed(ctx, next, second.Size)
	if err != nil {
		t.Fatalf("new leader: %v", err)
	}
	checkWitnessed(t, c, ws, signed)

	// The old leader comes back as a follower and serves it too, once it
	// has caught up (until then it answers UNAVAILABLE: its read gate).
	c.restart(leader)
	waitFor(t, "the restarted node to serve the witnessed checkpoint", 20*time.Second, func() bool {
		signed, err = c.witnessed(ctx, leader, second.Size)
		if err != nil && !isCode(err, connect.CodeUnavailable) {
			t.Fatalf("restarted node: %v", err)
		}
		return err == nil
	})
	checkWitnessed(t, c, ws, signed)
}

func TestReplicasRefuseACheckpointThatIsNotTheirs(t *testing.T) {
	ws := &witnessSet{t: t, n: 1, quorum: 1}
	c := newConfiguredCluster(t, 1, nil, ws.configure)
	c.registerStation()
	c.appendEscrow(0, 0, 3)
	cp := c.waitSameState(3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.witnessed(ctx, 0, cp.Size); err != nil {
		t.Fatal(err)
	}
	n := c.nodes[0]
	for _, tc := range []struct {
		name   string
		signed func() []byte
	}{
		{"another root", func() []byte {
			s, err := c.signer.Sign(cp.Size, [32]byte{7})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
		{"beyond the log", func() []byte {
			s, err := c.signer.Sign(cp.Size+100, cp.Root)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
		{"an older size", func() []byte {
			root, err := rootAt(n, 1)
			if err != nil {
				t.Fatal(err)
			}
			s, err := c.signer.Sign(1, root)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
		{"not signed by the log", func() []byte {
			other, _ := testLogKey(t)
			s, err := other.Sign(cp.Size, cp.Root)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := encodeWitnessed(tc.signed())
			if err != nil {
				t.Fatal(err)
			}
			f := n.raft.Apply(data, 5*time.Second)
			if err := f.Error(); err != nil {
				t.Fatal(err)
			}
			if err, _ := f.Response().(error); err == nil {
				t.Fatal("the state machine recorded it")
			}
			w, err := n.fsm.witnessed()
			if err != nil {
				t.Fatal(err)
			}
			if w == nil || w.Size < cp.Size {
				t.Fatalf("witnessed checkpoint now %+v, want the one of size >= %d", w, cp.Size)
			}
		})
	}
}

func TestWitnessedCheckpointWithoutAPolicyIsAPreconditionFailure(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	_, err := c.witnessed(context.Background(), 0, 0)
	if !isCode(err, connect.CodeFailedPrecondition) {
		t.Fatalf("GetCheckpoint(witnessed) on a node without a policy: %v, want FAILED_PRECONDITION", err)
	}
	var ce *connect.Error
	if !errors.As(err, &ce) || !strings.Contains(ce.Message(), "no witness policy") {
		t.Fatalf("error %v does not say what is missing", err)
	}
}

// countingHandler counts log records by message.
type countingHandler struct {
	mu     sync.Mutex
	counts map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.counts[r.Message]++
	h.mu.Unlock()
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func (h *countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[msg]
}

func TestAWitnessThatStaysDownIsReportedOnceNotEveryRound(t *testing.T) {
	logs := &countingHandler{counts: make(map[string]int)}
	ws := &witnessSet{t: t, n: 1, quorum: 1}
	c := newConfiguredCluster(t, 1, nil, func(cfg *Config) {
		ws.configure(cfg)
		cfg.Logger = slog.New(logs)
	})
	c.registerStation()
	ws.Witnesses[0].Down.Store(true)
	c.appendEscrow(0, 0, 1)
	n := c.nodes[0]
	waitFor(t, "ten failed witnessing rounds", 20*time.Second, func() bool {
		return testutil.ToFloat64(n.metrics.witnessRounds.WithLabelValues("failed")) >= 10
	})
	if got := logs.count("witnessing the checkpoint failed; retrying every interval"); got != 1 {
		t.Fatalf("%d warnings for one outage, want 1", got)
	}
	ws.Witnesses[0].Down.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.witnessed(ctx, 0, n.Checkpoint().Size); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the recovery logged", 5*time.Second, func() bool { return logs.count("witnessing works again") == 1 })
}

func TestAnIdleLogHasItsCheckpointCosignedAgain(t *testing.T) {
	ws := &witnessSet{t: t, n: 1, quorum: 1}
	c := newConfiguredCluster(t, 1, nil, func(cfg *Config) {
		ws.configure(cfg)
		cfg.WitnessRefresh = 200 * time.Millisecond
	})
	c.registerStation()
	cp := c.waitSameState(0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := c.witnessed(ctx, 0, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	firstTime := cosignatureTime(t, c, ws, first)
	// The log does not grow; its cosignatures do get newer (they are
	// stamped in seconds).
	var again []byte
	waitFor(t, "a newer cosignature of the same checkpoint", 10*time.Second, func() bool {
		again, err = c.witnessed(ctx, 0, 0)
		return err == nil && cosignatureTime(t, c, ws, again).After(firstTime)
	})
	if got := checkWitnessed(t, c, ws, again); got.Size != cp.Size || got.Hash != cp.Root {
		t.Fatalf("refreshed witnessed checkpoint %+v, the log is at %d", got, cp.Size)
	}
}

// cosignatureTime returns the time of the first cosignature of the
// policy's witnesses on signed.
func cosignatureTime(t *testing.T, c *testCluster, ws *witnessSet, signed []byte) time.Time {
	t.Helper()
	_, n, err := c.verifier.VerifyCheckpointNote(signed, ws.Policy.Verifiers()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range n.Sigs {
		if ts, err := fnote.CoSigV1Timestamp(s); err == nil {
			return ts
		}
	}
	t.Fatalf("no cosignature on %q", signed)
	return time.Time{}
}

// TestAStalledWitnessDoesNotHoldBackTheQuorum: a round ends once the
// policy's quorum cosigned, not when the last witness answers, so a
// witness that never answers does not hold every witnessed checkpoint back
// by the round timeout (as long as a client waits for one).
func TestAStalledWitnessDoesNotHoldBackTheQuorum(t *testing.T) {
	ws := &witnessSet{t: t, n: 3, quorum: 2}
	c := newConfiguredCluster(t, 1, nil, ws.configure)
	ws.Witnesses[2].Stall.Store(true)
	c.registerStation()
	c.appendEscrow(0, 0, 5)
	cp := c.waitSameState(5)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	start := time.Now()
	signed, err := c.witnessed(ctx, 0, cp.Size)
	if err != nil {
		t.Fatalf("with one of three witnesses stalled, no checkpoint of size >= %d was witnessed after %s (the round timeout is %s): %v", cp.Size, time.Since(start).Round(time.Millisecond), witnessRoundTimeout, err)
	}
	checkWitnessed(t, c, ws, signed)
}

// TestAWitnessClaimingATreeBeyondTheLogIsAskedAgain: a witness that once
// answers 409 with a size beyond the log's (a glitch, or another log of the
// same origin) fails that round only; the leader does not take the size as
// what the witness holds, which would keep it from asking that witness
// again until the log grew past it.
func TestAWitnessClaimingATreeBeyondTheLogIsAskedAgain(t *testing.T) {
	ws := &witnessSet{t: t, n: 1, quorum: 1}
	c := newConfiguredCluster(t, 1, nil, ws.configure)
	c.registerStation()
	c.appendEscrow(0, 0, 3)
	first := c.waitSameState(3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.witnessed(ctx, 0, first.Size); err != nil {
		t.Fatal(err)
	}

	ws.Witnesses[0].Claim.Store(math.MaxUint64)
	c.appendEscrow(0, 3, 3)
	second := c.waitSameState(6)
	short, cancelShort := context.WithTimeout(ctx, 5*time.Second)
	defer cancelShort()
	signed, err := c.witnessed(short, 0, second.Size)
	if ws.Witnesses[0].Claim.Load() != 0 {
		t.Fatal("the witness was never asked after the 409 was armed")
	}
	if err != nil {
		t.Fatalf("after one 409 claiming size %d, the witness's next cosignature never came: %v", uint64(math.MaxUint64), err)
	}
	checkWitnessed(t, c, ws, signed)
}

// TestRestoreOfAWitnessedCheckpointWakesItsWaiters: a replica that holds a
// snapshot's leaves but missed the entry that recorded a witnessed
// checkpoint takes it from the snapshot's metadata, and wakes the calls
// waiting for one (GetCheckpoint with witnessed), as applying the entry
// would have.
func TestRestoreOfAWitnessedCheckpointWakesItsWaiters(t *testing.T) {
	a := newTestFSM(t, nil)
	b, err := newFSM(t.TempDir(), a.signer, true, nil, testLogger(t), newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.close() })
	for _, f := range []*fsm{a, b} {
		f.Apply(commandEntry(1, encodeGenesis()))
	}
	data, err := encodeWitnessed(a.checkpoint().Signed)
	if err != nil {
		t.Fatal(err)
	}
	if res := a.Apply(commandEntry(2, data)); res != nil {
		t.Fatalf("recording the witnessed checkpoint: %v", res)
	}

	changed := b.changed()
	if err := b.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, a)))); err != nil {
		t.Fatal(err)
	}
	if w, err := b.witnessed(); err != nil || w == nil {
		t.Fatalf("after the restore the witnessed checkpoint is %v (%v), want the snapshot's", w, err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("the restore recorded a witnessed checkpoint but woke no one waiting for it")
	}
}

// skewedSigner is a cosignature/v1 signer whose clock is off by skew.
type skewedSigner struct {
	note.Signer // name and key hash
	key         ed25519.PrivateKey
	skew        time.Duration
}

func (s skewedSigner) Sign(msg []byte) ([]byte, error) {
	t := uint64(time.Now().Add(s.skew).Unix())
	m := fmt.Appendf(nil, "cosignature/v1\ntime %d\n%s", t, msg)
	return append(binary.BigEndian.AppendUint64(nil, t), ed25519.Sign(s.key, m)...), nil
}

// TestTheQuorumRecordedIsOneClientsCount: with 2 of 3 witnesses, one
// whose clock is an hour behind or ahead (within the n-k the policy
// tolerates) and answers first, and two good ones that are up, the leader
// must not record a witnessed checkpoint whose quorum clients refuse (as
// stale, or dated in the future): the skewed cosignature does not count,
// and the good witnesses meet the quorum. (skewedSigner builds the
// cosignature/v1 signature by the spec, since the library's signer has no
// clock to set.)
func TestTheQuorumRecordedIsOneClientsCount(t *testing.T) {
	for _, wrong := range []time.Duration{-time.Hour, time.Hour} {
		t.Run(fmt.Sprintf("clock %s", wrong), func(t *testing.T) { quorumWithASkewedWitness(t, wrong) })
	}
}

func quorumWithASkewedWitness(t *testing.T, wrong time.Duration) {
	logPub, logPriv, _ := ed25519.GenerateKey(rand.Reader)
	logVKey, _ := note.NewEd25519VerifierKey("example.com/log", logPub)
	lv, err := proofs.NewLogVerifier(logVKey)
	if err != nil {
		t.Fatal(err)
	}
	skeyLog := mustSkey(t, "example.com/log", logPub, logPriv)
	ls, _ := note.NewSigner(skeyLog)
	text := string(proofs.Checkpoint{Origin: "example.com/log", Size: 1, Hash: proofs.LeafHash([]byte("x"))}.Marshal())
	signed, _ := note.Sign(&note.Note{Text: text}, ls)
	cp := &Checkpoint{Size: 1, Signed: signed}

	fastDone := make(chan struct{})
	var policy strings.Builder
	for i, skew := range []time.Duration{wrong, 0, 0} {
		name := fmt.Sprintf("w%d.example", i)
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		skey := mustSkey(t, name, pub, priv)
		var signer note.Signer
		signer, err = fnote.NewSignerForCosignatureV1(skey)
		if err != nil {
			t.Fatal(err)
		}
		if skew != 0 {
			signer = skewedSigner{Signer: signer, key: priv, skew: skew}
		}
		w, err := witness.New(witness.Config{Signer: signer, Logs: []string{logVKey}, StateDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		h := w.Handler()
		fast := i == 0
		srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			if fast {
				h.ServeHTTP(rw, r)
				close(fastDone)
				return
			}
			<-fastDone // the good witnesses answer just after the skewed one
			h.ServeHTTP(rw, r)
		}))
		t.Cleanup(srv.Close)
		vkey, _ := note.NewEd25519VerifierKey(name, pub)
		cvkey, _ := fnote.VKeyToCosignatureV1(vkey)
		fmt.Fprintf(&policy, "witness w%d %s %s\n", i, cvkey, srv.URL)
	}
	policy.WriteString("group main 2 w0 w1 w2\nquorum main\n")
	p, err := proofs.ParseWitnessPolicy([]byte(policy.String()))
	if err != nil {
		t.Fatal(err)
	}
	c := newCosigner(p, nil, nil, newMetrics())
	got, err := c.cosign(context.Background(), cp)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := lv.VerifyWitnessedCheckpointBetween(got, p, now.Add(-10*time.Minute), now.Add(5*time.Minute)); err != nil {
		t.Fatalf("the leader would record a witnessed checkpoint that every client (default WitnessMaxAge) refuses, though two witnesses with good clocks were up: %v", err)
	}
}

func mustSkey(t *testing.T, name string, pub ed25519.PublicKey, priv ed25519.PrivateKey) string {
	t.Helper()
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.Split(vkey, "+")[1]
	return "PRIVATE+KEY+" + name + "+" + id + "+" + base64.StdEncoding.EncodeToString(append([]byte{0x01}, priv.Seed()...))
}
