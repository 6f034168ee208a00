package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/proofs"
)

func decodeChipEvent(t *testing.T, line string) chipEventJSON {
	t.Helper()
	var e chipEventJSON
	if err := json.Unmarshal([]byte(line), &e); err != nil {
		t.Fatalf("JSON %q: %v", line, err)
	}
	return e
}

func TestMonitorCommandReportsAWatchedChipsReprovisioning(t *testing.T) {
	l := startTestLedger(t)
	first := l.provision(1, 1)
	l.provision(2, 1)
	watched, other := testpki.ChipID(1).String(), testpki.ChipID(2).String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, done := startCLI(t, ctx, "monitor", "--ledger", l.addr, "--log-key", l.vkey, "--chip", watched, "--json")

	line := awaitLine(t, out, func(string) bool { return true })
	if e := decodeChipEvent(t, line); e.Event != "entry" || e.Chip != watched || e.Epoch != 1 || e.Index != first || !e.Initial ||
		e.Serial == "" || e.StationID == "" || e.CheckpointSize <= first {
		t.Fatalf("first line %s", line)
	}
	if _, err := time.Parse(time.RFC3339Nano, decodeChipEvent(t, line).ProvisionedAt); err != nil {
		t.Errorf("provisioned_at: %v", err)
	}

	l.provision(2, 2)
	again := l.provision(1, 2)
	line = awaitLine(t, out, func(line string) bool { return decodeChipEvent(t, line).Epoch == 2 })
	if e := decodeChipEvent(t, line); e.Chip != watched || e.Index != again || e.Initial {
		t.Fatalf("re-provisioning line %s", line)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("monitor ended with %v, want a clean exit", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("monitor did not stop")
	}
	if strings.Contains(out.String(), other) {
		t.Errorf("the unwatched chip was reported:\n%s", out.String())
	}
	// The chip index of a real ledger agrees with its entries.
	if strings.Contains(out.String(), `"anomaly"`) {
		t.Errorf("anomalies on a clean ledger:\n%s", out.String())
	}
}

func TestMonitorCommandPrintsAnomalies(t *testing.T) {
	chip := testpki.ChipID(1)
	a := client.IndexAnomaly{Kind: client.AnomalyNotInIndex, Chip: chip, Index: 12, Epoch: 2, LeafHash: [32]byte{0xab},
		Checkpoint: proofs.Checkpoint{Size: 20}, Value: proofs.IndexValue{Epoch: 1, LeafIndex: 3}, Message: "the index hides it"}
	var text, js strings.Builder
	if err := printIndexAnomaly(&text, a); err != nil {
		t.Fatal(err)
	}
	want := "anomaly entry-not-in-index chip " + chip.String() + " index 12 epoch 2 checkpoint 20: the index hides it\n"
	if text.String() != want {
		t.Errorf("line %q, want %q", text.String(), want)
	}
	if err := printIndexAnomalyJSON(&js, a); err != nil {
		t.Fatal(err)
	}
	var j indexAnomalyJSON
	if err := json.Unmarshal([]byte(js.String()), &j); err != nil {
		t.Fatal(err)
	}
	if j.Event != "anomaly" || j.Kind != "entry-not-in-index" || j.Chip != chip.String() || j.Index != 12 || j.Epoch != 2 ||
		!strings.HasPrefix(j.LeafHash, "ab00") || j.CheckpointSize != 20 || j.IndexEpoch != 1 || j.IndexLeafIndex != 3 || j.Message == "" {
		t.Errorf("JSON %s", js.String())
	}
}

func TestMonitorCommandReadsAChipsFileAndPrintsLines(t *testing.T) {
	l := startTestLedger(t)
	l.provision(1, 1)
	index := l.provision(2, 1)
	chips := filepath.Join(t.TempDir(), "chips.txt")
	os.WriteFile(chips, []byte("# chips of customer 7\n\n"+testpki.ChipID(2).String()+"  # the phone\n"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, _ := startCLI(t, ctx, "monitor", "--ledger", l.addr, "--log-key", l.vkey, "--chips-file", chips, "--lookup")
	line := awaitLine(t, out, func(string) bool { return true })
	for _, want := range []string{"chip " + testpki.ChipID(2).String(), "epoch 1", fmt.Sprintf("index %d", index), "(existing)", "serial "} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q does not show %q", line, want)
		}
	}
}

func TestMonitorCommandRefusesBadInput(t *testing.T) {
	chips := filepath.Join(t.TempDir(), "chips.txt")
	os.WriteFile(chips, []byte("00112233445566778899\nnot-hex\n"), 0o644)
	base := []string{"monitor", "--ledger", "127.0.0.1:1", "--log-key", "example.com/log+01234567+AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no chips", base, "which chips"},
		{"a bad chip", append(base, "--chip", "xyz"), "--chip"},
		{"a bad chips file", append(base, "--chips-file", chips), "chips.txt:2"},
		{"both starts", append(base, "--chip", "0011223344556677", "--from-size", "3", "--lookup"), "exclude"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.args...)
			if r.err == nil || !strings.Contains(r.err.Error(), tc.want) || exitStatus(r.err) != 2 {
				t.Fatalf("got %v (exit status %d), want a usage error about %q", r.err, exitStatus(r.err), tc.want)
			}
		})
	}
}
