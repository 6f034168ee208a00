package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/internal/localcluster"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
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

	// A device agent given as the URL `device serve` prints, and listed
	// again by its address, is provisioned once.
	id, _ := ledger.NewIMEI("35209903000001")
	d, err := device.Manufacture(device.ManufactureOptions{Identities: ledger.Identities{id}, Trust: ca.Trust(), LogVerifierKey: vkey})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(deviceServer(d).Handler)
	defer srv.Close()
	agent := srv.Listener.Addr().String()
	r = runCLI(t, append(provision, "--device", "http://"+agent, "--device", agent)...)
	if r.err != nil || !strings.Contains(r.stdout, "provisioned at epoch 1") {
		t.Fatalf("provision --device http://%s --device %s: %q, %v", agent, agent, r.stdout, r.err)
	}

	// An operator revokes the station; its next device is refused.
	admin := []string{"admin", "revoke-station", "--ledger", addr, "--station-cert", filepath.Join(dir, "station", provisioner.StationCertFile), "--reason", "line 1 decommissioned"}
	if r := runCLI(t, admin...); r.err != nil || !strings.Contains(r.stdout, "revoked at index") {
		t.Fatalf("admin revoke-station: %q, %v", r.stdout, r.err)
	}
	if r := runCLI(t, "admin", "status", "--ledger", addr); r.err != nil || !strings.Contains(r.stdout, "leader") {
		t.Fatalf("admin status: %q, %v", r.stdout, r.err)
	}
	// A list of addresses, as the other commands (and CHIPLEDGER_LEDGER) take.
	if r := runCLI(t, "admin", "status", "--ledger", addr+","+addr); r.err != nil || !strings.Contains(r.stdout, "leader") {
		t.Fatalf("admin status --ledger %s,%s: %q, %v", addr, addr, r.stdout, r.err)
	}
	r = runCLI(t, append(provision, "--emulate", "1", "--json")...)
	if r.err == nil || !strings.Contains(r.stdout+r.stderr+r.err.Error(), "revoked") {
		t.Fatalf("provision after the revocation: %q %q %v, want a station-revoked failure", r.stdout, r.stderr, r.err)
	}
	// The pre-check refuses the revoked station before the device is
	// touched: a device the ledger would refuse the entry of is left
	// waiting for a receipt otherwise.
	id2, _ := ledger.NewIMEI("35209903000002")
	d2, err := device.Manufacture(device.ManufactureOptions{Identities: ledger.Identities{id2}, Trust: ca.Trust(), LogVerifierKey: vkey})
	if err != nil {
		t.Fatal(err)
	}
	var touched atomic.Int64
	inner := deviceServer(d2).Handler
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		touched.Add(1)
		inner.ServeHTTP(w, req)
	}))
	defer srv2.Close()
	r = runCLI(t, append(provision, "--device", srv2.Listener.Addr().String())...)
	if r.err == nil || !strings.Contains(r.err.Error(), "is revoked") || !strings.Contains(r.err.Error(), "no device was contacted") {
		t.Fatalf("provision --device after the revocation: %v, want the pre-check to refuse the revoked station", r.err)
	}
	if n := touched.Load(); n != 0 {
		t.Fatalf("provision of a revoked station made %d requests to the device, want none", n)
	}
	// station init on the revoked station says so, and fails.
	r = runCLI(t, append([]string{"station", "init", "--dir", filepath.Join(dir, "station"), "--ca", ca.Dir(), "--name", "line-1"}, ledgerArgs...)...)
	if r.err == nil || !strings.Contains(r.err.Error(), "is revoked") || !strings.Contains(r.err.Error(), "new station key and certificate") ||
		strings.Contains(r.stdout, "already registered") {
		t.Fatalf("station init of the revoked station: %q, %v; want it to fail saying the station is revoked", r.stdout, r.err)
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

// TestStationInitRegistersLater: a station whose registration failed is
// registered by running station init again on its directory, and provision
// refuses an unregistered station (or an unreachable ledger) before it
// contacts a device.
func TestStationInitRegistersLater(t *testing.T) {
	dir := t.TempDir()
	ca, err := provisioner.InitCA(filepath.Join(dir, "ca"), "Example Devices Ltd")
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, _ := ledger.GenerateLogKey("test.chipledger.example/log")
	signer, _ := ledger.NewLogSigner(skey)
	st := filepath.Join(dir, "st2")
	initArgs := func(ledgerAddr, name string) []string {
		return []string{"station", "init", "--dir", st, "--ca", ca.Dir(), "--name", name, "--ledger", ledgerAddr, "--log-key", vkey}
	}
	if r := runCLI(t, "master-key", "new", "--dir", filepath.Join(dir, "mk")); r.err != nil {
		t.Fatal(r.err)
	}
	provision := func(ledgerAddr string, extra ...string) cliResult {
		return runCLI(t, append([]string{"provision", "--station", st, "--ca", ca.Dir(), "--master-keys", filepath.Join(dir, "mk"),
			"--ledger", ledgerAddr, "--log-key", vkey}, extra...)...)
	}

	// A ledger that refuses every call at once (a down one would take the
	// client's retries to give up).
	refusing := httptest.NewUnstartedServer(http.NotFoundHandler())
	refusing.Config.Protocols = new(http.Protocols)
	refusing.Config.Protocols.SetUnencryptedHTTP2(true) // the SDK speaks h2c
	refusing.Start()
	defer refusing.Close()
	down := strings.TrimPrefix(refusing.URL, "http://")
	for range 2 { // the second run finds the station made by the first
		r := runCLI(t, initArgs(down, "line-2")...)
		if r.err == nil || !strings.Contains(r.err.Error(), "chipledger station init --dir "+st+" ") {
			t.Fatalf("station init with the ledger refusing: %v, want the command that registers later", r.err)
		}
	}

	// provision finds out before any device is contacted: the device
	// address is no agent, and the handshake would fail otherwise.
	cluster, err := localcluster.Start(context.Background(), localcluster.Options{Nodes: 1, Dir: filepath.Join(dir, "ledger"), Signer: signer, Trust: ca.Trust()})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	addr := cluster.Addrs()[0]
	// A new log has a checkpoint moments after its leader is elected.
	for deadline := time.Now().Add(10 * time.Second); cluster.Nodes[0].Checkpoint().Size == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the new log has no checkpoint")
		}
	}
	r := provision(addr, "--device", "127.0.0.1:1")
	if r.err == nil || !strings.Contains(r.err.Error(), "not registered") || !strings.Contains(r.err.Error(), "station init --dir "+st) {
		t.Fatalf("provision with an unregistered station: %v, want the command that registers it", r.err)
	}
	if r := provision(down, "--device", "127.0.0.1:1"); r.err == nil || !strings.Contains(r.err.Error(), "no device was contacted") {
		t.Fatalf("provision with the ledger refusing: %v", r.err)
	}

	if r := runCLI(t, initArgs(addr, "line-3")...); r.err == nil || !strings.Contains(r.err.Error(), `named "line-2"`) {
		t.Fatalf("station init of the existing station under another name: %v", r.err)
	}
	if r := runCLI(t, initArgs(addr, "line-2")...); r.err != nil || !strings.Contains(r.stdout, "registered at index 1") {
		t.Fatalf("station init registering the existing station: %q, %v", r.stdout, r.err)
	}
	if r := runCLI(t, initArgs(addr, "line-2")...); r.err != nil || !strings.Contains(r.stdout, "already registered at index 1") {
		t.Fatalf("station init of a registered station: %q, %v", r.stdout, r.err)
	}
	if r := provision(addr, "--emulate", "2"); r.err != nil {
		t.Fatalf("provision after the registration: %v", r.err)
	}
}

// TestBatchSummaryWithoutSuccessShowsNoLatency: a batch in which no
// device was provisioned shows neither latencies nor step times, whose
// zeros would read as measured; one with a success shows both.
func TestBatchSummaryWithoutSuccessShowsNoLatency(t *testing.T) {
	var b strings.Builder
	writeBatchSummary(&b, provisioner.BatchResult{Devices: 3, Failed: 3})
	if !strings.Contains(b.String(), "no device was provisioned") || strings.Contains(b.String(), "0s / 0s") || strings.Contains(b.String(), "step times") {
		t.Errorf("summary of a batch that all failed:\n%s", b.String())
	}
	b.Reset()
	writeBatchSummary(&b, provisioner.BatchResult{Devices: 3, Succeeded: 1, Failed: 2, P50: time.Millisecond, P99: time.Millisecond})
	if !strings.Contains(b.String(), "mean step times") || !strings.Contains(b.String(), "1ms / 1ms") {
		t.Errorf("summary of a batch with a success:\n%s", b.String())
	}
}

// TestSecretLogKeyErrorFitsTheCommand: the secret signer key given as
// --log-key is refused with advice for the command at hand.
func TestSecretLogKeyErrorFitsTheCommand(t *testing.T) {
	clearDeviceEnv(t)
	trust, _, skeyFile := deviceFiles(t)
	r := runCLI(t, "monitor", "--ledger", "127.0.0.1:1", "--log-key", skeyFile, "--chip", "00112233445566778899aabbccddeeff")
	if r.err == nil || !strings.Contains(r.err.Error(), "secret signer key") {
		t.Fatalf("monitor with the secret key: %v", r.err)
	}
	if strings.Contains(r.err.Error(), "device") {
		t.Errorf("a ledger client is told about the device: %v", r.err)
	}
	r = runCLI(t, "device", "new", "--state", filepath.Join(t.TempDir(), "d.json"), "--identity", testIMEI1, "--trust", trust, "--log-key", skeyFile)
	if r.err == nil || !strings.Contains(r.err.Error(), "secret signer key") || !strings.Contains(r.err.Error(), "device's ROM") {
		t.Errorf("device new with the secret key: %v", r.err)
	}
}

// TestGroupCommandsShowExamples: the station, tls and admin commands show
// usage examples and a description in their help.
func TestGroupCommandsShowExamples(t *testing.T) {
	app := newApp(io.Discard, io.Discard, nil)
	for _, name := range []string{"station", "tls", "admin"} {
		c := app.Command(name)
		if c == nil {
			t.Fatalf("no %s command", name)
		}
		if !strings.Contains(c.UsageText, "chipledger "+name+" ") || c.Description == "" {
			t.Errorf("%s: usage %q, description %q: want examples and a description", name, c.UsageText, c.Description)
		}
	}
}

// TestStationInitWithAnotherLogsKeyRegistersNothing: station init with a
// --log-key of another log must find out before it appends the
// registration (the ledger would register it, and the client then refuse
// the receipt), and say the key is wrong, not that the ledger is down.
func TestStationInitWithAnotherLogsKeyRegistersNothing(t *testing.T) {
	dir := t.TempDir()
	ca, err := provisioner.InitCA(filepath.Join(dir, "ca"), "Example Devices Ltd")
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, _ := ledger.GenerateLogKey("test.chipledger.example/log")
	_, otherKey, _ := ledger.GenerateLogKey("other.chipledger.example/log")
	signer, _ := ledger.NewLogSigner(skey)
	cluster, err := localcluster.Start(context.Background(), localcluster.Options{Nodes: 1, Dir: filepath.Join(dir, "ledger"), Signer: signer, Trust: ca.Trust()})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	initArgs := func(key string) []string {
		return []string{"station", "init", "--dir", filepath.Join(dir, "station"), "--ca", ca.Dir(), "--name", "line-1", "--ledger", cluster.Addrs()[0], "--log-key", key}
	}
	r := runCLI(t, initArgs(otherKey)...)
	if r.err == nil || !strings.Contains(r.err.Error(), "does not serve the log of --log-key") || strings.Contains(r.err.Error(), "once the ledger is reachable") {
		t.Fatalf("station init with another log's key: %v", r.err)
	}
	if r := runCLI(t, initArgs(vkey)...); r.err != nil || !strings.Contains(r.stdout, "registered at index") || strings.Contains(r.stdout, "already") {
		t.Fatalf("station init again with the right key: %q, %v; want it registered now, not before", r.stdout, r.err)
	}
}

// TestARevokedStationStillFinishesWhatItSigned: a device whose entry is in
// the ledger but that did not take its receipt is finished by running
// provision again ("rerun to retry"), and the ledger answers the journaled
// leaf as a duplicate even after the station is revoked: the rerun
// delivers the receipt (no other station could: the device's next epoch
// is that entry's). Any other device is refused before it is changed.
func TestARevokedStationStillFinishesWhatItSigned(t *testing.T) {
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
	if r := runCLI(t, append([]string{"station", "init", "--dir", filepath.Join(dir, "station"), "--ca", ca.Dir(), "--name", "line-1"}, ledgerArgs...)...); r.err != nil {
		t.Fatal(r.err)
	}
	if r := runCLI(t, "master-key", "new", "--dir", filepath.Join(dir, "mk")); r.err != nil {
		t.Fatal(r.err)
	}
	provision := append([]string{"provision", "--station", filepath.Join(dir, "station"), "--ca", ca.Dir(),
		"--master-keys", filepath.Join(dir, "mk")}, ledgerArgs...)

	id, _ := ledger.NewIMEI("35209903000001")
	d, err := device.Manufacture(device.ManufactureOptions{Identities: ledger.Identities{id}, Trust: ca.Trust(), LogVerifierKey: vkey})
	if err != nil {
		t.Fatal(err)
	}
	var dropReceipt atomic.Bool
	dropReceipt.Store(true)
	inner := deviceServer(d).Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if dropReceipt.Load() && req.URL.Path == chipledgerv1connect.DeviceServiceStoreReceiptProcedure {
			http.Error(w, "device unplugged", http.StatusServiceUnavailable)
			return
		}
		inner.ServeHTTP(w, req)
	}))
	defer srv.Close()
	dev := []string{"--device", srv.Listener.Addr().String()}

	r := runCLI(t, append(provision, dev...)...)
	if r.err == nil || !strings.Contains(r.err.Error(), "is in the ledger; rerun to retry") {
		t.Fatalf("provision with the receipt lost: %q %v; want the entry in the ledger and a rerun asked for", r.stdout, r.err)
	}
	t.Logf("first run: %v", r.err)

	admin := []string{"admin", "revoke-station", "--ledger", addr, "--station-cert", filepath.Join(dir, "station", provisioner.StationCertFile), "--reason", "line 1 decommissioned"}
	if r := runCLI(t, admin...); r.err != nil {
		t.Fatalf("admin revoke-station: %v", r.err)
	}

	dropReceipt.Store(false)
	r = runCLI(t, append(provision, dev...)...)
	if r.err != nil {
		t.Fatalf("the rerun that delivers the receipt of an entry already in the ledger: %v", r.err)
	}
	if st, err := d.Status(context.Background()); err != nil || !st.HasKeys || st.Epoch != 1 {
		t.Fatalf("the device after the rerun: %+v, %v; want its keys at epoch 1", st, err)
	}

	// Another device: refused, and not changed.
	id2, _ := ledger.NewIMEI("35209903000019")
	d2, err := device.Manufacture(device.ManufactureOptions{Identities: ledger.Identities{id2}, Trust: ca.Trust(), LogVerifierKey: vkey})
	if err != nil {
		t.Fatal(err)
	}
	srv2 := httptest.NewServer(deviceServer(d2).Handler)
	defer srv2.Close()
	r = runCLI(t, append(provision, "--device", srv2.Listener.Addr().String())...)
	if r.err == nil || !strings.Contains(r.err.Error(), "revoked") {
		t.Fatalf("a new device with a revoked station: %v, want a refusal saying the station is revoked", r.err)
	}
	if st, err := d2.Status(context.Background()); err != nil || st.HasKeys || st.Epoch != 0 {
		t.Fatalf("the refused device: %+v, %v; want it untouched", st, err)
	}
}
