package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/internal/localcluster"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	"github.com/chipledger/chipledger/provisioner"
)

// recoverFixture is a one-node ledger with a registered station, and
// emulated devices served by device agents on loopback.
type recoverFixture struct {
	t          *testing.T
	ca         *provisioner.CA
	vkey       string
	ledgerArgs []string
	station    *provisioner.Station
	imei       int
}

func newRecoverFixture(t *testing.T) *recoverFixture {
	t.Helper()
	dir := t.TempDir()
	ca, err := provisioner.InitCA(filepath.Join(dir, "ca"), "Example Devices Ltd")
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, _ := ledger.GenerateLogKey(testOrigin)
	signer, _ := ledger.NewLogSigner(skey)
	cluster, err := localcluster.Start(context.Background(), localcluster.Options{Nodes: 1, Dir: filepath.Join(dir, "ledger"), Signer: signer, Trust: ca.Trust()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cluster.Close() })
	cl, err := client.New(client.Options{Addrs: cluster.Addrs(), LogKey: vkey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := ca.IssueStationCertificate("line-1", &key.PublicKey, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	reg, _ := (&ledger.StationRegistration{Certificate: der, RegisteredAtMs: uint64(time.Now().UnixMilli())}).MarshalLeaf()
	if _, err := cl.Append(context.Background(), reg); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	if _, err := provisioner.NewMasterKey(filepath.Join(dir, "master")); err != nil {
		t.Fatal(err)
	}
	mk, err := provisioner.LoadMasterKeys(filepath.Join(dir, "master"))
	if err != nil {
		t.Fatal(err)
	}
	j, err := provisioner.OpenJournal(filepath.Join(dir, "journal.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	st, err := provisioner.NewStation(provisioner.StationConfig{Certificate: cert, Key: key, CA: ca, MasterKeys: mk, Ledger: provisioner.ClientLedger{Client: cl}, Journal: j})
	if err != nil {
		t.Fatal(err)
	}
	return &recoverFixture{t: t, ca: ca, vkey: vkey, ledgerArgs: []string{"--ledger", cluster.Addrs()[0], "--log-key", vkey}, station: st}
}

// device manufactures a device, provisions it if asked, wipes it, and
// serves its agent; it returns the device and the agent's address.
func (f *recoverFixture) device(provision bool) (*device.Device, string) {
	f.t.Helper()
	f.imei++
	id, _ := ledger.NewIMEI(fmt.Sprintf("35209902%06d", f.imei))
	d, err := device.Manufacture(device.ManufactureOptions{Identities: ledger.Identities{id}, Trust: f.ca.Trust(), LogVerifierKey: f.vkey})
	if err != nil {
		f.t.Fatal(err)
	}
	ctx := context.Background()
	if provision {
		if _, err := f.station.Provision(ctx, d, nil); err != nil {
			f.t.Fatal(err)
		}
		if err := d.Wipe(ctx); err != nil {
			f.t.Fatal(err)
		}
	}
	srv := httptest.NewServer(deviceServer(d).Handler)
	f.t.Cleanup(srv.Close)
	return d, srv.Listener.Addr().String()
}

func (f *recoverFixture) recover(args ...string) cliResult {
	f.t.Helper()
	return runCLI(f.t, append(append([]string{"recover"}, args...), f.ledgerArgs...)...)
}

func hasKeys(t *testing.T, d *device.Device) bool {
	t.Helper()
	in, err := d.ChipInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return in.HasKeys
}

func exitCode(err error) int {
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	if err != nil {
		return 1
	}
	return 0
}

func TestRecoverCommandRestoresADevice(t *testing.T) {
	f := newRecoverFixture(t)
	d, addr := f.device(true)
	trusted := filepath.Join(t.TempDir(), "trusted")

	r := f.recover("--device", addr, "--trusted", trusted)
	if r.err != nil {
		t.Fatalf("recover: %v\n%s", r.err, r.stdout)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 11 || lines[len(lines)-1] != "Keys restored." {
		t.Fatalf("want 10 checks and \"Keys restored.\", got:\n%s", r.stdout)
	}
	for _, l := range lines[:10] {
		if !strings.HasPrefix(l, "✓ ") {
			t.Errorf("not a passed check: %q", l)
		}
	}
	for _, want := range []string{
		"The ledger's signature on its checkpoint is valid (log " + testOrigin,
		"The chip index in the checkpoint of ",
		" is this chip's latest backup; its history of 1 entry matches the entries served",
		"The backup is in the log at position ",
		"Registered station line-1 signed this entry",
		"The device certificate was issued by Example Devices Ltd's CA, which this device trusts, for chip ",
		"decrypted the backup with its own chip key and restored its keys",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	if !hasKeys(t, d) {
		t.Fatal("the device has no keys after recovery")
	}
	// The largest checkpoint verified is kept for the next run.
	signed, err := os.ReadFile(trusted)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := proofs.NewLogVerifier(f.vkey)
	if _, err := v.VerifyCheckpoint(signed); err != nil {
		t.Fatalf("--trusted file: %v", err)
	}
	if r := f.recover("--device", addr, "--trusted", trusted, "--verify-only"); r.err != nil || !strings.Contains(r.stdout, "nothing was handed to the device") {
		t.Fatalf("a second run from the saved checkpoint: %v\n%s", r.err, r.stdout)
	}
}

func TestRecoverCommandJSON(t *testing.T) {
	f := newRecoverFixture(t)
	_, addr := f.device(true)
	r := f.recover("--device", addr, "--json")
	if r.err != nil {
		t.Fatal(r.err)
	}
	var rep struct {
		client.RecoveryReport
		Device string `json:"device"`
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if rep.Device != addr || !rep.Restored || rep.Epoch != 1 || len(rep.Steps) != 10 || rep.Checkpoint == nil || rep.Station.Name != "line-1" {
		t.Errorf("report: %+v", rep)
	}
}

func TestRecoverCommandFailureExitsNonZero(t *testing.T) {
	f := newRecoverFixture(t)
	f.device(true)
	d, addr := f.device(false) // never provisioned

	r := f.recover("--device", addr)
	if exitCode(r.err) != 1 || !strings.Contains(r.err.Error(), "This chip has no backup in the ledger") {
		t.Fatalf("exit %d: %v", exitCode(r.err), r.err)
	}
	if !strings.Contains(r.stdout, "✗ This chip has no backup in the ledger: the chip index in the ledger's signed checkpoint of ") || !strings.Contains(r.stdout, "nothing was handed to the device") {
		t.Errorf("output:\n%s", r.stdout)
	}
	if hasKeys(t, d) {
		t.Error("the device has keys")
	}

	// The JSON report says why, and the exit code still does.
	r = f.recover("--device", addr, "--json")
	var rep map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || exitCode(r.err) != 1 {
		t.Fatalf("exit %d, %v:\n%s", exitCode(r.err), err, r.stdout)
	}
	if rep["failed_check"] != "lookup" || !strings.Contains(fmt.Sprint(rep["error"]), "no backup in the ledger") || rep["restored"] != false {
		t.Errorf("report: %v", rep)
	}

	// A ledger key the device does not hold.
	_, other, _ := ledger.GenerateLogKey(testOrigin)
	r = runCLI(t, "recover", "--device", addr, "--ledger", f.ledgerArgs[1], "--log-key", other)
	if exitCode(r.err) != 1 || !strings.Contains(r.err.Error(), "trusts another ledger") {
		t.Errorf("another log key: %v", r.err)
	}
	// An agent that is not there.
	r = f.recover("--device", "127.0.0.1:1")
	if exitCode(r.err) != 1 || !strings.Contains(r.err.Error(), "Could not read the chip ID") {
		t.Errorf("unreachable device: %v", r.err)
	}
}

func TestRecoverCommandFlags(t *testing.T) {
	f := newRecoverFixture(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--device ADDRESS"},
		{[]string{"--devices-file", filepath.Join(t.TempDir(), "missing")}, "--devices-file"},
	} {
		r := f.recover(tc.args...)
		if r.err == nil || !strings.Contains(r.err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error about %s", tc.args, r.err, tc.want)
		}
	}
	r := runCLI(t, append(append([]string{"recover", "--device", "127.0.0.1:1"}, f.ledgerArgs...), "extra")...)
	if exitCode(r.err) != 2 || !strings.Contains(r.err.Error(), "takes no arguments") {
		t.Errorf("a positional argument: %v", r.err)
	}
	if r := runCLI(t, "recover", "--device", "127.0.0.1:1"); r.err == nil || !strings.Contains(r.err.Error(), "ledger") {
		t.Errorf("without --ledger and --log-key: %v", r.err)
	}
}

// TestRecoverCommandRepairShop recovers three devices served by agents, as a
// repair shop's bench does.
func TestRecoverCommandRepairShop(t *testing.T) {
	f := newRecoverFixture(t)
	var devices []*device.Device
	var addrs []string
	for range 3 {
		d, addr := f.device(true)
		devices, addrs = append(devices, d), append(addrs, addr)
	}
	list := filepath.Join(t.TempDir(), "devices.txt")
	content := "# bench 1\n" + addrs[0] + "\n\n" + addrs[1] + "  # the cracked one\n" + addrs[2] + "\n"
	if err := os.WriteFile(list, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}

	r := f.recover("--devices-file", list, "--concurrency", "2", "--json")
	if r.err != nil {
		t.Fatalf("%v\n%s", r.err, r.stdout)
	}
	var reps []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &reps); err != nil {
		t.Fatalf("%v:\n%s", err, r.stdout)
	}
	if len(reps) != 3 {
		t.Fatalf("%d reports, want 3", len(reps))
	}
	for i, rep := range reps {
		if rep["device"] != addrs[i] || rep["restored"] != true {
			t.Errorf("report %d: %v", i, rep)
		}
	}
	for i, d := range devices {
		if !hasKeys(t, d) {
			t.Errorf("device %d has no keys", i)
		}
	}

	// One device of four has no backup: the others are recovered, and
	// the summary names the cause.
	_, stranger := f.device(false)
	for _, d := range devices {
		d.Wipe(context.Background())
	}
	r = f.recover("--device", addrs[0], "--device", addrs[1]+","+addrs[2], "--device", stranger)
	if exitCode(r.err) != 1 || !strings.Contains(r.err.Error(), "1 of 4 devices") {
		t.Fatalf("exit %d: %v", exitCode(r.err), r.err)
	}
	for _, want := range []string{`(?m)^devices\s+4$`, `(?m)^recovered\s+3$`, `(?m)^failed\s+1$`, `(?m)^failed: not in the ledger\s+1$`, `(?m)^✗ ` + regexp.QuoteMeta(stranger) + ` chip [0-9a-f]+: This chip has no backup`} {
		if !regexp.MustCompile(want).MatchString(r.stdout) {
			t.Errorf("summary lacks %s:\n%s", want, r.stdout)
		}
	}
	if strings.Count(r.stdout, "keys of epoch 1 restored") != 3 {
		t.Errorf("want three restored devices:\n%s", r.stdout)
	}
}

// TestRecoveryCauseNamesTheChipIndex checks that a node the chip index
// contradicts is counted as such, not as a bad proof or a wrong entry,
// which its error also wraps.
func TestRecoveryCauseNamesTheChipIndex(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: %w", client.ErrNotLatest, client.ErrMismatch), "ledger did not prove the backup is the chip's latest"},
		{fmt.Errorf("%w: %w", client.ErrNotLatest, client.ErrBadProof), "ledger did not prove the backup is the chip's latest"},
		{client.ErrBadProof, "proof does not verify"},
		{client.ErrMismatch, "entry is not this device's"},
		{client.ErrNotInLedger, "not in the ledger"},
	} {
		if got := recoveryCause(deviceRecovery{RecoveryReport: &client.RecoveryReport{}, err: tc.err}); got != tc.want {
			t.Errorf("%v: cause %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestRecoverCommandChecksTheTrustedFileFirst(t *testing.T) {
	f := newRecoverFixture(t)
	d, addr := f.device(true)

	// A file that cannot be saved fails before the device is touched.
	missing := filepath.Join(t.TempDir(), "nonexistent", "trusted")
	r := f.recover("--device", addr, "--trusted", missing)
	if r.err == nil || exitCode(r.err) != 2 || !strings.Contains(r.err.Error(), "--trusted "+missing) || !strings.Contains(r.err.Error(), "does not exist") {
		t.Errorf("--trusted in a missing directory: %v (exit %d), want a usage error saying the directory does not exist", r.err, exitCode(r.err))
	}
	if hasKeys(t, d) {
		t.Error("the device was recovered despite the unusable --trusted file")
	}

	// A file that is no checkpoint of this log says so without Go names
	// or repeated prefixes.
	junk := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(junk, []byte("junk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = f.recover("--device", addr, "--trusted", junk)
	if r.err == nil || !strings.Contains(r.err.Error(), "--trusted "+junk+" does not hold a checkpoint signed with this --log-key") {
		t.Fatalf("--trusted junk: %v", r.err)
	}
	if msg := r.err.Error(); strings.Contains(msg, "Options.") || strings.Count(msg, "client:") > 0 {
		t.Errorf("--trusted junk: %q names Go identifiers or the client package", msg)
	}
}

// TestRecoverCommandVerifyOnlyCountsVerifiedDevices checks the summary and
// exit of --verify-only on several devices: a device whose checks pass is
// counted as verified, not as recovered nor failed, one listed twice is
// counted once, the exit names the devices that failed, and nothing is
// handed to any device.
func TestRecoverCommandVerifyOnlyCountsVerifiedDevices(t *testing.T) {
	f := newRecoverFixture(t)
	var devices []*device.Device
	var addrs []string
	for range 3 {
		d, addr := f.device(true)
		devices, addrs = append(devices, d), append(addrs, addr)
	}
	_, stranger := f.device(false) // never provisioned

	r := f.recover("--verify-only", "--device", addrs[0]+","+addrs[1], "--device", addrs[2], "--device", "http://"+addrs[0]+"/")
	if r.err != nil {
		t.Fatalf("every device verifies: %v\n%s", r.err, r.stdout)
	}
	if strings.Count(r.stdout, addrs[0]) != 1 || !strings.Contains(r.stderr, "device listed more than once") {
		t.Errorf("a device listed twice: stdout\n%s\nstderr\n%s", r.stdout, r.stderr)
	}
	for _, want := range []string{`(?m)^devices\s+3$`, `(?m)^verified\s+3$`, `(?m)^failed\s+0$`} {
		if !regexp.MustCompile(want).MatchString(r.stdout) {
			t.Errorf("summary lacks %s:\n%s", want, r.stdout)
		}
	}

	// One device listed twice is still a batch: --json prints an array.
	r = f.recover("--verify-only", "--json", "--device", addrs[0], "--device", addrs[0])
	if r.err != nil || !strings.HasPrefix(strings.TrimSpace(r.stdout), "[") || strings.Count(r.stdout, addrs[0]) != 1 {
		t.Errorf("one device listed twice, --json: %v\n%s", r.err, r.stdout)
	}

	r = f.recover("--verify-only", "--device", addrs[0], "--device", stranger, "--device", addrs[1], "--device", addrs[2])
	if exitCode(r.err) != 1 || !strings.Contains(r.err.Error(), "1 of 4 devices failed verification") ||
		!strings.Contains(r.err.Error(), stranger) || !strings.Contains(r.err.Error(), "nothing was handed to any device") {
		t.Fatalf("exit %d: %v", exitCode(r.err), r.err)
	}
	for _, want := range []string{`(?m)^devices\s+4$`, `(?m)^verified\s+3$`, `(?m)^failed\s+1$`, `(?m)^failed: not in the ledger\s+1$`} {
		if !regexp.MustCompile(want).MatchString(r.stdout) {
			t.Errorf("summary lacks %s:\n%s", want, r.stdout)
		}
	}
	if regexp.MustCompile(`(?m)^recovered`).MatchString(r.stdout) {
		t.Errorf("a --verify-only summary counts recovered devices:\n%s", r.stdout)
	}
	for i, d := range devices {
		if hasKeys(t, d) {
			t.Errorf("device %d has keys after --verify-only", i)
		}
	}
}
