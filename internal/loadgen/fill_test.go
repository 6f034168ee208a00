package loadgen

import (
	"context"
	"errors"
	"testing"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
)

// TestFillEntriesCycleThroughTheChipsEpochAfterEpoch checks the fill's
// scheme: entry s is chip s mod K at epoch s/K + 1, a valid escrow entry
// of about the leaf size that the ledger's stateless admission accepts.
func TestFillEntriesCycleThroughTheChipsEpochAfterEpoch(t *testing.T) {
	pki, err := testpki.New()
	if err != nil {
		t.Fatal(err)
	}
	const chips, leafSize = 3, 1536
	c, err := newFillChips(context.Background(), pki, chips, leafSize, Progress{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string][]uint32{}
	var order []string
	for seq := range uint64(2*chips + 1) {
		leaf, err := c.leaf(seq)
		if err != nil {
			t.Fatal(err)
		}
		if len(leaf) < leafSize-80 || len(leaf) > leafSize+8 {
			t.Errorf("entry %d is %d bytes, want about %d", seq, len(leaf), leafSize)
		}
		e, err := ledger.ParseEscrowEntry(leaf)
		if err != nil {
			t.Fatalf("entry %d: %v", seq, err)
		}
		if err := ledger.CheckEscrowEntry(e, pki.Station, pki.Trust); err != nil {
			t.Errorf("entry %d is not admissible: %v", seq, err)
		}
		chip := e.ChipID.String()
		if seen[chip] == nil {
			order = append(order, chip)
		}
		seen[chip] = append(seen[chip], e.Epoch)
		if want := order[seq%chips]; chip != want {
			t.Errorf("entry %d is for chip %s, want %s", seq, chip, want)
		}
	}
	if len(seen) != chips {
		t.Fatalf("entries for %d chips, want %d", len(seen), chips)
	}
	for chip, epochs := range seen {
		for i, ep := range epochs {
			if ep != uint32(i+1) {
				t.Errorf("chip %s has epochs %v, want 1, 2, …", chip, epochs)
				break
			}
		}
	}
}

func TestForRunningClusterRunsEachScenarioOnce(t *testing.T) {
	cfg := DefaultConfig(false).ForRunningCluster()
	if len(cfg.Append) != 3 || len(cfg.Provisioning) != 3 || len(cfg.Proofs) != 1 || len(cfg.Recovery) != 1 {
		t.Fatalf("running-cluster config has %d append, %d provisioning, %d proofs, %d recovery scenarios; want 3, 3, 1, 1",
			len(cfg.Append), len(cfg.Provisioning), len(cfg.Proofs), len(cfg.Recovery))
	}
	for _, s := range cfg.Append {
		if s.Nodes != 0 {
			t.Errorf("append scenario %+v names a cluster size", s)
		}
	}
	for _, s := range cfg.Provisioning {
		if s.Nodes != 0 {
			t.Errorf("provisioning scenario %+v names a cluster size", s)
		}
	}
}

func TestRunGrowthRefusesARunningCluster(t *testing.T) {
	_, err := RunGrowth(context.Background(), Options{Ledger: []string{"127.0.0.1:1"}}, DefaultConfig(true).Growth)
	if !errors.Is(err, ErrNeedsInProcess) {
		t.Errorf("RunGrowth against a running cluster = %v, want ErrNeedsInProcess", err)
	}
}
