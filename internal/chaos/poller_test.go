package chaos

import (
	"errors"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

func TestStreamReportsARunServingLess(t *testing.T) {
	s := NewStream()
	for _, size := range []uint64{10, 10, 12} {
		if r, ok := s.Served(1, size); ok {
			t.Fatalf("size %d: reported %s", size, r)
		}
	}
	r, ok := s.Served(1, 11)
	if !ok || r.AcrossRestart || r.From != 12 || r.To != 11 {
		t.Fatalf("size 11 after 12 in one run: %+v, %v; want a regression from 12 to 11", r, ok)
	}
}

func TestStreamTellsRegressionsAcrossARestartApart(t *testing.T) {
	s := NewStream()
	s.Served(1, 20)
	r, ok := s.Served(2, 15)
	if !ok || !r.AcrossRestart || r.From != 20 || r.To != 15 {
		t.Fatalf("size 15 from a restarted node after 20: %+v, %v; want a regression across a restart", r, ok)
	}
	if r, ok := s.Served(2, 18); !ok || !r.AcrossRestart {
		t.Fatalf("size 18 from the restarted node, still below 20: %+v, %v", r, ok)
	}
	if r, ok := s.Served(2, 21); ok {
		t.Fatalf("size 21: reported %s", r)
	}
	if r, ok := s.Served(2, 19); !ok || r.AcrossRestart {
		t.Fatalf("size 19 after the restarted node served 21: %+v, %v; want a regression in one run", r, ok)
	}
}

func TestPollersCheckMinSizeAndSnapshots(t *testing.T) {
	skey, vkey, err := ledger.GenerateLogKey("chaos.test/log")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ledger.NewLogSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := proofs.NewLogVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	answer := func(size uint64) *connect.Response[v1.GetCheckpointResponse] {
		signed, err := signer.Sign(size, ledger.Hash{byte(size)})
		if err != nil {
			t.Fatal(err)
		}
		return connect.NewResponse(&v1.GetCheckpointResponse{Checkpoint: signed})
	}
	snapshots := NewSnapshots(v)
	snapshots.byNode[0] = snapshot{size: 30, run: 1}
	p := &Pollers{verifier: v, snapshots: snapshots, checkpoints: make(map[string]struct{})}
	s := NewStream()

	p.record(0, 0, s, 0, 1, 1, answer(25), nil)
	p.record(0, 0, s, 25, 1, 1, answer(24), nil) // below min_size
	if bad := p.Bad(); len(bad) != 1 || !strings.Contains(bad[0].Error(), "min_size 25 with a checkpoint of size 24") {
		t.Errorf("an answer below min_size: %v", bad)
	}
	p.record(0, 0, s, 0, 2, 2, answer(28), nil) // restarted, below its snapshot
	regs := p.Regressions()
	if len(regs) != 2 || !regs[1].Snapshot || regs[1].From != 30 || regs[1].To != 28 {
		t.Errorf("regressions %v, want one in the first run and one below the snapshot", regs)
	}
	p.record(0, 0, s, 0, 2, 2, answer(31), nil)
	p.record(0, 0, s, 31, 2, 2, nil, connect.NewError(connect.CodeUnavailable, errors.New("waiting")))
	p.record(0, 0, s, 0, 2, 2, nil, wireError(t, connect.NewError(connect.CodeInternal, errors.New("boom"))))
	st := p.Stats()
	want := PollStats{Polls: 6, Failed: 1, MinSize: 2, MinSizeAnswered: 0, AfterRestart: 2}
	if st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if bad := p.Bad(); len(bad) != 2 || !strings.Contains(bad[1].Error(), "unexpected error") {
		t.Errorf("an INTERNAL answer: %v", bad)
	}
}
