package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// TestLyingNode puts a proxy that alters answers in front of a real node and
// checks that each lie fails the call with its specific error, returns no
// result, and leaves the client's trust where it was.
func TestLyingNode(t *testing.T) {
	l := startLog(t, 1, nil)
	honest := l.client()
	l.registerStation(honest)
	l.appendEscrow(honest, 1)
	_, older := honest.Trusted() // a genuine checkpoint, smaller than later ones
	// A genuine lookup answer for chip 1 at a tree as small, for a node to
	// replay once the log has grown.
	hc := h2cClient()
	t.Cleanup(hc.CloseIdleConnections) // before the node stops
	staleLookup, err := chipledgerv1connect.NewLedgerServiceClient(hc, "http://"+l.cluster.Addrs()[0]).
		LookupChip(context.Background(), connect.NewRequest(&v1.LookupChipRequest{ChipId: testpki.ChipID(1)}))
	if err != nil {
		t.Fatal(err)
	}
	for n := range uint64(4) {
		l.appendEscrow(honest, 2+n)
	}
	nextChip := uint64(1000)
	fresh := func() []byte { nextChip++; return l.escrowLeaf(nextChip, 1) }

	// setup returns a client that trusts the log's current checkpoint and
	// talks only to a proxy, which lies with tamper from then on.
	setup := func(t *testing.T, tamper func(ctx context.Context, proc string, req, resp proto.Message) error) (*client.Client, *proxy, string) {
		p, addr := startProxy(t, l.cluster.Addrs()[0])
		c := l.clientWith(client.Options{Addrs: []string{addr}, Retry: client.RetryPolicy{MaxAttempts: 1}})
		if _, _, err := c.Checkpoint(context.Background()); err != nil {
			t.Fatal(err)
		}
		p.setTamper(tamper)
		return c, p, addr
	}
	// trustKept fails the test if c's trust changed from before.
	trustKept := func(t *testing.T, c *client.Client, before []byte) {
		t.Helper()
		if _, after := c.Trusted(); !bytes.Equal(after, before) {
			t.Errorf("trusted checkpoint changed after a lie:\n%s\nto\n%s", before, after)
		}
	}
	// forge signs a random root for size with signer. Tampers call it on
	// the proxy's goroutine, so it returns its error rather than failing
	// the test; a tamper's error fails the call, and so the test.
	forge := func(signer *ledger.LogSigner, size uint64) ([]byte, error) {
		var root ledger.Hash
		rand.Read(root[:])
		return signer.Sign(size, root)
	}
	onCheckpoint := func(replace func() ([]byte, error)) func(context.Context, string, proto.Message, proto.Message) error {
		return func(_ context.Context, proc string, _, resp proto.Message) error {
			if r, ok := resp.(*v1.GetCheckpointResponse); ok {
				signed, err := replace()
				if err != nil {
					return err
				}
				r.Checkpoint = signed
			}
			return nil
		}
	}
	ctx := context.Background()

	t.Run("CheckpointSignedByAnotherKeyIsErrBadSignature", func(t *testing.T) {
		other := newSigner(t) // same origin, another key
		var c *client.Client
		c, _, _ = setup(t, onCheckpoint(func() ([]byte, error) {
			cp, _ := c.Trusted()
			return other.Sign(cp.Size+1, cp.Hash)
		}))
		_, before := c.Trusted()
		cp, signed, err := c.Checkpoint(ctx)
		if !errors.Is(err, client.ErrBadSignature) || !errors.Is(err, proofs.ErrBadSignature) {
			t.Fatalf("got %v, want ErrBadSignature wrapping proofs.ErrBadSignature", err)
		}
		if cp != (proofs.Checkpoint{}) || signed != nil {
			t.Errorf("a checkpoint was returned with the error: %+v", cp)
		}
		trustKept(t, c, before)
	})

	t.Run("SmallerCheckpointNotAPrefixIsAFork", func(t *testing.T) {
		var c *client.Client
		var forged []byte
		c, _, addr := setup(t, onCheckpoint(func() ([]byte, error) {
			cp, _ := c.Trusted()
			var err error
			forged, err = forge(l.signer, cp.Size-1)
			return forged, err
		}))
		_, before := c.Trusted()
		_, _, err := c.Checkpoint(ctx)
		var fe *client.ForkError
		if !errors.As(err, &fe) || !errors.Is(err, client.ErrFork) {
			t.Fatalf("got %v, want a *ForkError", err)
		}
		if !bytes.Equal(fe.Old, before) || !bytes.Equal(fe.New, forged) || fe.Node != addr {
			t.Errorf("fork evidence: old %q new %q node %s", fe.Old, fe.New, fe.Node)
		}
		if fe.Proof == nil || !errors.Is(fe.Err, proofs.ErrConsistency) {
			t.Errorf("fork of two sizes should hold the failed proof: %v", fe.Err)
		}
		trustKept(t, c, before)
	})

	t.Run("SmallerGenuineCheckpointIsAcceptedAsProvenPrefix", func(t *testing.T) {
		c, _, _ := setup(t, onCheckpoint(func() ([]byte, error) { return older, nil }))
		before, _ := c.Trusted()
		cp, _, err := c.Checkpoint(ctx)
		if err != nil {
			t.Fatalf("a stale but consistent checkpoint was refused: %v", err)
		}
		if cp != before {
			t.Errorf("Checkpoint returned %+v, want the trusted %+v", cp, before)
		}
	})

	t.Run("SmallerCheckpointWithoutProofIsARollback", func(t *testing.T) {
		c, _, _ := setup(t, func(_ context.Context, proc string, _, resp proto.Message) error {
			switch r := resp.(type) {
			case *v1.GetCheckpointResponse:
				r.Checkpoint = older
			case *v1.GetConsistencyProofResponse:
				return connect.NewError(connect.CodeOutOfRange, errors.New("this node lost its newer leaves"))
			}
			return nil
		})
		_, before := c.Trusted()
		_, _, err := c.Checkpoint(ctx)
		if !errors.Is(err, client.ErrRollback) {
			t.Fatalf("got %v, want ErrRollback", err)
		}
		trustKept(t, c, before)
	})

	// A node that shows a tree large enough, then still answers
	// OUT_OF_RANGE for leaves or a proof within it, lost what it committed
	// to: ErrRollback, not an error about a log too small (atSize and
	// consistency label the second OUT_OF_RANGE).
	t.Run("OutOfRangeEntriesAfterShowingTheTreeIsARollback", func(t *testing.T) {
		c, p, _ := setup(t, func(_ context.Context, proc string, _, resp proto.Message) error {
			if _, ok := resp.(*v1.GetEntriesResponse); ok {
				return connect.NewError(connect.CodeOutOfRange, errors.New("this node lost its leaves"))
			}
			return nil
		})
		cp, before := c.Trusted()
		checkpoints := p.count("GetCheckpoint")
		leaves, err := c.Entries(ctx, 0, cp.Size)
		if !errors.Is(err, client.ErrRollback) || leaves != nil {
			t.Fatalf("got %d leaves, %v; want ErrRollback", len(leaves), err)
		}
		if p.count("GetCheckpoint") == checkpoints {
			t.Error("the client did not ask the node to show the tree before calling it a rollback")
		}
		trustKept(t, c, before)
	})

	t.Run("OutOfRangeConsistencyAfterShowingTheTreeIsARollback", func(t *testing.T) {
		c, p, _ := setup(t, func(_ context.Context, proc string, _, resp proto.Message) error {
			if _, ok := resp.(*v1.GetConsistencyProofResponse); ok {
				return connect.NewError(connect.CodeOutOfRange, errors.New("this node cannot prove its own tree"))
			}
			return nil
		})
		_, before := c.Trusted()
		l.appendEscrow(honest, nextChip+1) // the node shows a larger, genuine tree
		nextChip++
		_, _, err := c.Checkpoint(ctx)
		if !errors.Is(err, client.ErrRollback) {
			t.Fatalf("got %v, want ErrRollback", err)
		}
		if n := p.count("GetConsistencyProof"); n != 2 {
			t.Errorf("%d consistency proofs asked for, want 2: one before and one after the node showed the tree", n)
		}
		trustKept(t, c, before)
	})

	// LookupChip's answer must be at a tree at least as large as the
	// trusted one: a genuine answer replayed from before the log grew (a
	// proven prefix, every receipt and the lookup proof valid) could lack
	// the chip's newest entry. Recover checks this again itself; here
	// LookupChip, without a witness policy, is the only guard.
	t.Run("LookupBelowTheTrustedSizeIsErrRollback", func(t *testing.T) {
		c, _, _ := setup(t, func(_ context.Context, proc string, _, resp proto.Message) error {
			if r, ok := resp.(*v1.LookupChipResponse); ok {
				proto.Reset(r)
				proto.Merge(r, staleLookup.Msg)
			}
			return nil
		})
		cp, before := c.Trusted()
		if stale := mustCheckpoint(t, l, staleLookup.Msg.Checkpoint); stale.Size >= cp.Size {
			t.Fatalf("the replayed lookup is at size %d, not below the trusted %d", stale.Size, cp.Size)
		}
		h, err := c.LookupChip(ctx, testpki.ChipID(1))
		if h != nil {
			t.Fatalf("got a history at tree size %d, below the trusted %d (err %v); want ErrRollback and no result", h.Checkpoint.Size, cp.Size, err)
		}
		if !errors.Is(err, client.ErrRollback) {
			t.Fatalf("got %v, want ErrRollback", err)
		}
		var ne *client.NodeError
		if !errors.As(err, &ne) {
			t.Errorf("%v does not name the node", err)
		}
		trustKept(t, c, before)
	})

	t.Run("SameSizeOtherRootIsAConclusiveFork", func(t *testing.T) {
		var c *client.Client
		var forged []byte
		c, _, _ = setup(t, onCheckpoint(func() ([]byte, error) {
			cp, _ := c.Trusted()
			var err error
			forged, err = forge(l.signer, cp.Size)
			return forged, err
		}))
		_, before := c.Trusted()
		_, _, err := c.Checkpoint(ctx)
		var fe *client.ForkError
		if !errors.As(err, &fe) {
			t.Fatalf("got %v, want a *ForkError", err)
		}
		if !bytes.Equal(fe.Old, before) || !bytes.Equal(fe.New, forged) || fe.Proof != nil {
			t.Errorf("evidence: old %q, new %q, proof %x", fe.Old, fe.New, fe.Proof)
		}
		// Both notes verify: the log's key signed two roots for one size.
		for _, n := range [][]byte{fe.Old, fe.New} {
			if _, err := l.verifier.VerifyCheckpoint(n); err != nil {
				t.Errorf("evidence does not verify: %v", err)
			}
		}
		trustKept(t, c, before)
	})

	t.Run("LookupAgainstSameSizeForkIsAFork", func(t *testing.T) {
		var c *client.Client
		c, _, _ = setup(t, func(_ context.Context, proc string, _, resp proto.Message) error {
			if r, ok := resp.(*v1.LookupChipResponse); ok {
				cp, _ := c.Trusted()
				signed, err := forge(l.signer, cp.Size)
				if err != nil {
					return err
				}
				r.Checkpoint = signed
			}
			return nil
		})
		h, err := c.LookupChip(ctx, testpki.ChipID(1))
		if !errors.Is(err, client.ErrFork) || h != nil {
			t.Fatalf("got %v, %v; want ErrFork and no result", h, err)
		}
	})

	flipLookup := func(alter func(r *v1.Receipt)) func(context.Context, string, proto.Message, proto.Message) error {
		return func(_ context.Context, proc string, _, resp proto.Message) error {
			if r, ok := resp.(*v1.LookupChipResponse); ok && len(r.Entries) > 0 {
				alter(r.Entries[0].Receipt)
			}
			return nil
		}
	}
	for name, alter := range map[string]func(r *v1.Receipt){
		"AlteredProofHashInLookupIsErrBadProof": func(r *v1.Receipt) { r.InclusionProof[0][7] ^= 1 },
		"AlteredLeafInLookupIsErrBadProof":      func(r *v1.Receipt) { r.Leaf[len(r.Leaf)-1] ^= 1 },
		"DroppedProofHashInLookupIsErrBadProof": func(r *v1.Receipt) { r.InclusionProof = r.InclusionProof[1:] },
	} {
		t.Run(name, func(t *testing.T) {
			c, _, addr := setup(t, flipLookup(alter))
			h, err := c.LookupChip(ctx, testpki.ChipID(1))
			var pe *client.ProofError
			if !errors.As(err, &pe) || !errors.Is(err, client.ErrBadProof) || h != nil {
				t.Fatalf("got %v, %v; want a *ProofError and no result", h, err)
			}
			cp, _ := c.Trusted()
			if pe.Node != addr || pe.Size != cp.Size || pe.Index == 0 {
				t.Errorf("proof error names leaf %d of %d at %s", pe.Index, pe.Size, pe.Node)
			}
		})
	}

	for name, alter := range map[string]func(r *v1.Receipt){
		"AlteredProofHashInAppendIsErrBadProof": func(r *v1.Receipt) { r.InclusionProof[0][0] ^= 0x80 },
		"AlteredLeafInAppendIsErrBadProof":      func(r *v1.Receipt) { r.Leaf[5] ^= 1 },
	} {
		t.Run(name, func(t *testing.T) {
			c, _, _ := setup(t, func(_ context.Context, proc string, _, resp proto.Message) error {
				if r, ok := resp.(*v1.AppendResponse); ok {
					alter(r.Receipt)
				}
				return nil
			})
			_, before := c.Trusted()
			res, err := c.Append(ctx, fresh())
			if !errors.Is(err, client.ErrBadProof) || res != nil {
				t.Fatalf("got %v, %v; want ErrBadProof and no result", res, err)
			}
			trustKept(t, c, before)
		})
	}

	t.Run("ReceiptForAnotherLeafIsErrMismatch", func(t *testing.T) {
		var p *proxy
		var c *client.Client
		c, p, _ = setup(t, func(ctx context.Context, proc string, _, resp proto.Message) error {
			if r, ok := resp.(*v1.AppendResponse); ok {
				// A valid receipt, for the station's registration.
				other, err := p.up.Append(ctx, connect.NewRequest(&v1.AppendRequest{Leaf: l.pki.StationLeaf()}))
				if err != nil {
					return err
				}
				r.Receipt = other.Msg.Receipt
			}
			return nil
		})
		res, err := c.Append(ctx, fresh())
		if !errors.Is(err, client.ErrMismatch) || res != nil {
			t.Fatalf("got %v, %v; want ErrMismatch", res, err)
		}
	})

	t.Run("EntryOfAnotherChipIsErrMismatch", func(t *testing.T) {
		var p *proxy
		var c *client.Client
		c, p, _ = setup(t, func(ctx context.Context, proc string, req, resp proto.Message) error {
			if r, ok := resp.(*v1.LookupChipResponse); ok {
				other, err := p.up.LookupChip(ctx, connect.NewRequest(&v1.LookupChipRequest{ChipId: testpki.ChipID(2)}))
				if err != nil {
					return err
				}
				proto.Reset(r)
				proto.Merge(r, other.Msg)
			}
			return nil
		})
		h, err := c.LookupChip(ctx, testpki.ChipID(1))
		if !errors.Is(err, client.ErrMismatch) || h != nil {
			t.Fatalf("got %v, %v; want ErrMismatch", h, err)
		}
		var ne *client.NodeError
		if !errors.As(err, &ne) {
			t.Errorf("%v does not name the node", err)
		}
	})

	t.Run("HiddenEarlierEpochIsErrMismatch", func(t *testing.T) {
		chip := nextChip + 1
		for epoch := range uint32(2) {
			if _, err := honest.Append(ctx, l.escrowLeaf(chip, epoch+1)); err != nil {
				t.Fatal(err)
			}
		}
		nextChip++
		c, _, _ := setup(t, func(_ context.Context, proc string, _, resp proto.Message) error {
			if r, ok := resp.(*v1.LookupChipResponse); ok {
				r.Entries = r.Entries[1:]
			}
			return nil
		})
		h, err := c.LookupChip(ctx, testpki.ChipID(chip))
		if !errors.Is(err, client.ErrMismatch) || h != nil {
			t.Fatalf("got %v, %v; want ErrMismatch", h, err)
		}
	})

	t.Run("AlteredLeafInEntriesIsErrBadProof", func(t *testing.T) {
		c, _, _ := setup(t, func(_ context.Context, proc string, _, resp proto.Message) error {
			if r, ok := resp.(*v1.GetEntriesResponse); ok && len(r.Leaves) > 2 {
				r.Leaves[2][3] ^= 1
			}
			return nil
		})
		cp, _ := c.Trusted()
		leaves, err := c.Entries(ctx, 1, cp.Size)
		if !errors.Is(err, client.ErrBadProof) || leaves != nil {
			t.Fatalf("got %d leaves, %v; want ErrBadProof", len(leaves), err)
		}
	})

	t.Run("AlteredInclusionProofIsErrBadProof", func(t *testing.T) {
		c, _, _ := setup(t, func(_ context.Context, proc string, _, resp proto.Message) error {
			if r, ok := resp.(*v1.GetInclusionProofResponse); ok {
				r.InclusionProof[len(r.InclusionProof)-1][31] ^= 1
			}
			return nil
		})
		leaves, err := honest.Entries(ctx, 2, 3)
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.InclusionProof(ctx, 2, leaves[0])
		if !errors.Is(err, client.ErrBadProof) || r != nil {
			t.Fatalf("got %v, %v; want ErrBadProof", r, err)
		}
	})

	t.Run("ForgedCheckpointInWatchEndsTheWatchWithAFork", func(t *testing.T) {
		c, _, _ := setup(t, func(_ context.Context, proc string, _, resp proto.Message) error {
			if r, ok := resp.(*v1.WatchCheckpointsResponse); ok {
				cp, err := l.verifier.VerifyCheckpoint(r.Checkpoint)
				if err != nil {
					return err
				}
				signed, err := forge(l.signer, cp.Size)
				if err != nil {
					return err
				}
				r.Checkpoint = signed
			}
			return nil
		})
		_, before := c.Trusted()
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		errc := make(chan error, 1)
		saw := 0
		go func() {
			errc <- c.WatchCheckpoints(wctx, func(proofs.Checkpoint, []byte) error { saw++; return nil })
		}()
		l.appendEscrow(honest, nextChip+1)
		nextChip++
		err := <-errc
		if !errors.Is(err, client.ErrFork) || saw != 0 {
			t.Fatalf("watch ended with %v after %d checkpoints; want ErrFork before any", err, saw)
		}
		trustKept(t, c, before)
	})
}

// TestClientTrustingAnotherHistoryDetectsTheFork starts a client from a
// checkpoint saved from one log and points it at another log signed with
// the same key: a split view.
func TestClientTrustingAnotherHistoryDetectsTheFork(t *testing.T) {
	signer := newSigner(t)
	a, b := startLog(t, 1, signer), startLog(t, 1, signer)
	ca := a.client()
	a.registerStation(ca)
	a.appendEscrow(ca, 1)
	_, saved := ca.Trusted()

	cb := b.client()
	b.registerStation(cb)
	for n := range uint64(3) {
		b.appendEscrow(cb, 10+n)
	}
	c := b.clientWith(client.Options{Trusted: saved})
	_, _, err := c.Checkpoint(context.Background())
	var fe *client.ForkError
	if !errors.As(err, &fe) || !bytes.Equal(fe.Old, saved) {
		t.Fatalf("got %v, want a *ForkError against the saved checkpoint", err)
	}
	if _, still := c.Trusted(); !bytes.Equal(still, saved) {
		t.Error("the client moved its trust to the other history")
	}
}
