package demo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoTellsTheWholeStory runs the demo with a few devices on one and
// three nodes and checks its summary: every device provisioned, the
// recovered keys equal the originals, the recovery relied on a checkpoint
// the demo's witnesses cosigned, the audit found nothing, and the data
// directory is removed.
func TestDemoTellsTheWholeStory(t *testing.T) {
	for _, nodes := range []int{1, 3} {
		var out bytes.Buffer
		s, err := Run(context.Background(), Options{Nodes: nodes, Devices: 20, Concurrency: 8, Out: &out})
		if err != nil {
			t.Fatalf("%d nodes: %v\n%s", nodes, err, out.String())
		}
		if s.Provisioned != 20 || s.Failed != 0 {
			t.Errorf("%d nodes: provisioned %d, failed %d", nodes, s.Provisioned, s.Failed)
		}
		if !s.RecoveredKeysEqual || s.RecoveredChip == "" {
			t.Errorf("%d nodes: recovery %+v", nodes, s)
		}
		if s.AuditFindings != 0 || s.AuditedLeaves < 21 {
			t.Errorf("%d nodes: audit re-validated %d leaves, %d findings", nodes, s.AuditedLeaves, s.AuditFindings)
		}
		if s.EscrowEntries != 20 {
			t.Errorf("%d nodes: %d escrow entries, want one for each of the 20 devices", nodes, s.EscrowEntries)
		}
		if s.TreeSize < 21 || !strings.Contains(s.Checkpoint, "demo.chipledger.local/log") {
			t.Errorf("%d nodes: tree size %d, checkpoint %q", nodes, s.TreeSize, s.Checkpoint)
		}
		if s.Witnesses != 3 || s.WitnessQuorum != 2 || s.WitnessedSize < 21 || s.WitnessedSize > s.TreeSize {
			t.Errorf("%d nodes: %d witnesses, quorum %d, the recovery's witnessed checkpoint has size %d (tree size %d)", nodes, s.Witnesses, s.WitnessQuorum, s.WitnessedSize, s.TreeSize)
		}
		for _, want := range []string{"Provisioning 20 devices", "the witness policy needs 2 of the 3",
			"witnesses of the witness policy cosigned the checkpoint of", "restored its keys", "no findings", "Summary"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%d nodes: the story lacks %q", nodes, want)
			}
		}
		if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
			t.Errorf("%d nodes: data directory %s not removed: %v", nodes, s.Dir, err)
		}
	}
}

func TestDemoStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, Options{Nodes: 1, Devices: 5}); err == nil {
		t.Fatal("a cancelled demo reported success")
	}
}

// TestDemoRefusesADirectoryInUse: the demo makes a new CA, keys and ledger
// each run; a --dir that holds files already is refused at once with what
// to do, not half way with a message about an existing CA.
func TestDemoRefusesADirectoryInUse(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "something"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, err := Run(context.Background(), Options{Dir: dir, Out: &out, Devices: 1, Nodes: 1})
	if !errors.Is(err, ErrDirInUse) || out.Len() != 0 {
		t.Fatalf("demo in a directory in use: %v, printed %q; want ErrDirInUse before anything", err, out.String())
	}
}
