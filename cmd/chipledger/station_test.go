package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chipledger/chipledger/internal/localcluster"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/provisioner"
)

// TestStationInitAndBatchProvision registers a station and provisions
// emulated devices against an in-process ledger, through the commands.
func TestStationInitAndBatchProvision(t *testing.T) {
	dir := t.TempDir()
	ca, err := provisioner.InitCA(filepath.Join(dir, "ca"), "Example Devices Ltd")
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, _ := ledger.GenerateLogKey("test.chipledger.example/log")
	signer, _ := ledger.NewLogSigner(skey)
	cluster, err := localcluster.Start(context.Background(), localcluster.Options{Nodes: 1, Dir: filepath.Join(dir, "ledger"), Signer: signer, Trust: ca.Trust()})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	addr := cluster.Addrs()[0]
	ledgerArgs := []string{"--ledger", addr, "--log-key", vkey}

	r := runCLI(t, append([]string{"station", "init", "--dir", filepath.Join(dir, "station"), "--ca", ca.Dir(), "--name", "line-1"}, ledgerArgs...)...)
	if r.err != nil || !strings.Contains(r.stdout, "registered at index 1") {
		t.Fatalf("station init: %q, %v", r.stdout, r.err)
	}
	if r := runCLI(t, "master-key", "new", "--dir", filepath.Join(dir, "mk")); r.err != nil {
		t.Fatal(r.err)
	}
	provision := append([]string{"provision", "--station", filepath.Join(dir, "station"), "--ca", ca.Dir(),
		"--master-keys", filepath.Join(dir, "mk")}, ledgerArgs...)

	r = runCLI(t, append(provision, "--emulate", "20", "--concurrency", "8", "--json")...)
	if r.err != nil {
		t.Fatalf("provision --emulate: %v", r.err)
	}
	var res provisioner.BatchResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("summary %q: %v", r.stdout, err)
	}
	if res.Succeeded != 20 || res.Failed != 0 {
		t.Fatalf("summary %+v", res)
	}
	if got := cluster.Nodes[0].Checkpoint().Size; got < 22 {
		t.Fatalf("ledger size %d, want at least the genesis root, the registration and 20 entries", got)
	}

	// An operator revokes the station; its next device is refused.
	admin := []string{"admin", "revoke-station", "--ledger", addr, "--station-cert", filepath.Join(dir, "station", provisioner.StationCertFile), "--reason", "line 1 decommissioned"}
	if r := runCLI(t, admin...); r.err != nil || !strings.Contains(r.stdout, "revoked at index") {
		t.Fatalf("admin revoke-station: %q, %v", r.stdout, r.err)
	}
	if r := runCLI(t, "admin", "status", "--ledger", addr); r.err != nil || !strings.Contains(r.stdout, "leader") {
		t.Fatalf("admin status: %q, %v", r.stdout, r.err)
	}
	r = runCLI(t, append(provision, "--emulate", "1", "--json")...)
	if r.err == nil || !strings.Contains(r.stdout+r.stderr+r.err.Error(), "station revoked") {
		t.Fatalf("provision after the revocation: %q %q %v, want a station-revoked failure", r.stdout, r.stderr, r.err)
	}
	if r := runCLI(t, "admin", "revoke-station", "--ledger", addr, "--station-id", "abcd"); r.err == nil {
		t.Fatal("a short --station-id was accepted")
	}

	// A bad check digit is refused before any device is contacted.
	r = runCLI(t, append(provision, "--device", "127.0.0.1:1", "--identity", "imei:490154203237517")...)
	if r.err == nil || !strings.Contains(r.err.Error(), "check digit") {
		t.Fatalf("a wrong Luhn digit: %v", r.err)
	}
}
