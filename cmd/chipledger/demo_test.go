package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestDemoRefusesZeroNodesDevicesOrConcurrency(t *testing.T) {
	for _, args := range [][]string{
		{"demo", "--nodes", "0"},
		{"demo", "--devices", "0"},
		{"demo", "--concurrency", "0"},
		{"demo", "--nodes", "-1"},
	} {
		r := runCLI(t, args...)
		if r.err == nil || exitStatus(r.err) != 2 || !strings.Contains(r.err.Error(), args[1]) {
			t.Errorf("chipledger %s: %v (exit %d), want a usage error naming %s", strings.Join(args, " "), r.err, exitStatus(r.err), args[1])
		}
		if r.stdout != "" {
			t.Errorf("chipledger %s ran: %q", strings.Join(args, " "), r.stdout)
		}
	}
}

// TestDemoRecoversWithinAWitnessedCheckpoint runs a small demo and checks
// that its recovery reports the witnesses step, that the JSON summary names
// the witnessed checkpoint, and that the policy it ran with is kept with the
// data.
func TestDemoRecoversWithinAWitnessedCheckpoint(t *testing.T) {
	dir := t.TempDir()
	r := runCLI(t, "demo", "--nodes", "1", "--devices", "3", "--dir", dir, "--json")
	if r.err != nil {
		t.Fatalf("demo: %v\n%s\n%s", r.err, r.stdout, r.stderr)
	}
	// With --json, stdout is the JSON summary alone (jq reads it); the
	// story goes to stderr.
	for _, want := range []string{"the witness policy needs 2 of the 3", "witnesses of the witness policy cosigned the checkpoint of"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the story on stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	var s struct {
		Witnesses     int    `json:"witnesses"`
		WitnessQuorum int    `json:"witness_quorum"`
		WitnessedSize uint64 `json:"witnessed_size"`
		TreeSize      uint64 `json:"tree_size"`
		EscrowEntries uint64 `json:"escrow_entries"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("stdout is not the JSON summary alone: %v\n%s", err, r.stdout)
	}
	if s.Witnesses != 3 || s.WitnessQuorum != 2 || s.WitnessedSize < 4 || s.WitnessedSize > s.TreeSize {
		t.Errorf("summary %+v: want 3 witnesses, quorum 2, a witnessed size of at least 4 (3 devices and the station), at most the tree size", s)
	}
	// The JSON and the text count the escrow entries alike: one a device.
	m := regexp.MustCompile(`escrow entries +(\d+)`).FindStringSubmatch(r.stderr)
	if m == nil || m[1] != "3" || s.EscrowEntries != 3 {
		t.Errorf("escrow entries: text %q, JSON %d; want 3 in both", m, s.EscrowEntries)
	}
	if _, err := readWitnessPolicy(filepath.Join(dir, "witness-policy")); err != nil {
		t.Errorf("the demo's witness policy: %v", err)
	}
}
