package client_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/internal/localcluster"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
	"github.com/chipledger/chipledger/provisioner"
)

// recFixture is a ledger, the manufacturer CA its devices trust, a
// registered station that provisions them, and a second manufacturer's CA
// that the ledger also admits but the devices do not trust.
type recFixture struct {
	t           testing.TB
	ca, otherCA *provisioner.CA
	signer      *ledger.LogSigner
	verifier    *proofs.LogVerifier
	vkey        string
	cluster     *localcluster.Cluster
	admin       *client.Client // the station's client
	station     *provisioner.Station
	stationKey  *ecdsa.PrivateKey
	stationCert []byte
	stationReg  uint64 // the station's registration index
	masterKeys  *provisioner.MasterKeys
	nextIMEI    int
}

func newRecFixture(t testing.TB, nodes int) *recFixture {
	t.Helper()
	return newRecFixtureWith(t, nodes, nil)
}

// newRecFixtureWith is newRecFixture with the log key made first and
// passed to opts, which may change the cluster's options.
func newRecFixtureWith(t testing.TB, nodes int, opts func(logVKey string, o *localcluster.Options)) *recFixture {
	t.Helper()
	dir := t.TempDir()
	f := &recFixture{t: t}
	var err error
	if f.ca, err = provisioner.InitCA(filepath.Join(dir, "ca"), "Example Devices Ltd"); err != nil {
		t.Fatal(err)
	}
	if f.otherCA, err = provisioner.InitCA(filepath.Join(dir, "other-ca"), "Other Devices Ltd"); err != nil {
		t.Fatal(err)
	}
	// The ledger admits both manufacturers; each device trusts its own.
	nodeTrust := ledger.NewTrust(
		slices.Concat(f.ca.Trust().Roots(), f.otherCA.Trust().Roots()),
		slices.Concat(f.ca.Trust().Intermediates(), f.otherCA.Trust().Intermediates()))
	f.signer = newSigner(t)
	f.vkey = f.signer.VerifierKey()
	if f.verifier, err = proofs.NewLogVerifier(f.vkey); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := localcluster.Options{Nodes: nodes, Dir: filepath.Join(dir, "ledger"), Signer: f.signer, Trust: nodeTrust, Logger: testLogger()}
	if opts != nil {
		opts(f.vkey, &o)
	}
	f.cluster, err = localcluster.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.cluster.Close() })
	f.admin = f.newClient()

	f.stationKey, f.stationCert, f.stationReg = f.registerStation(f.ca, "station-1")
	cert, _ := x509.ParseCertificate(f.stationCert)
	if _, err := provisioner.NewMasterKey(filepath.Join(dir, "master")); err != nil {
		t.Fatal(err)
	}
	if f.masterKeys, err = provisioner.LoadMasterKeys(filepath.Join(dir, "master")); err != nil {
		t.Fatal(err)
	}
	j, err := provisioner.OpenJournal(filepath.Join(dir, "journal.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	f.station, err = provisioner.NewStation(provisioner.StationConfig{
		Certificate: cert, Key: f.stationKey, CA: f.ca, MasterKeys: f.masterKeys,
		Ledger: provisioner.ClientLedger{Client: f.admin}, Journal: j,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// newClient returns a client of the ledger at addrs (every node's if none)
// that trusts nothing yet, as a device or repair shop starts.
func (f *recFixture) newClient(addrs ...string) *client.Client {
	f.t.Helper()
	return f.newClientWith(client.Options{Addrs: addrs})
}

func (f *recFixture) newClientWith(o client.Options) *client.Client {
	f.t.Helper()
	if len(o.Addrs) == 0 {
		o.Addrs = f.cluster.Addrs()
	}
	o.LogKey, o.Logger = f.vkey, testLogger()
	c, err := client.New(o)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

// registerStation issues a station certificate from ca and registers it.
func (f *recFixture) registerStation(ca *provisioner.CA, name string) (*ecdsa.PrivateKey, []byte, uint64) {
	f.t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := ca.IssueStationCertificate(name, &key.PublicKey, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		f.t.Fatal(err)
	}
	reg, _ := (&ledger.StationRegistration{Certificate: der, RegisteredAtMs: uint64(time.Now().UnixMilli())}).MarshalLeaf()
	res, err := f.admin.Append(context.Background(), reg)
	if err != nil {
		f.t.Fatalf("register station %s: %v", name, err)
	}
	return key, der, res.Receipt.Index
}

// newIMEI returns a fresh IMEI.
func (f *recFixture) newIMEI() ledger.Identity {
	f.t.Helper()
	f.nextIMEI++
	id, err := ledger.NewIMEI(fmt.Sprintf("35209901%06d", f.nextIMEI))
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

// newDevice manufactures a device that trusts f.ca and the log.
func (f *recFixture) newDevice() *recDevice {
	f.t.Helper()
	return f.newDeviceWith(f.ca.Trust(), f.vkey)
}

func (f *recFixture) newDeviceWith(trust *ledger.Trust, logKey string, ids ...ledger.Identity) *recDevice {
	f.t.Helper()
	if len(ids) == 0 {
		ids = ledger.Identities{f.newIMEI()}
	}
	d, err := device.Manufacture(device.ManufactureOptions{Identities: ids, Trust: trust, LogVerifierKey: logKey})
	if err != nil {
		f.t.Fatal(err)
	}
	return &recDevice{Device: d}
}

// provision runs the station's handshake with d.
func (f *recFixture) provision(d *recDevice) *provisioner.Result {
	f.t.Helper()
	res, err := f.station.Provision(context.Background(), d.Device, nil)
	if err != nil {
		f.t.Fatalf("provision: %v", err)
	}
	return res
}

// provisioned returns a device provisioned epochs times, then wiped if
// wipe is set.
func (f *recFixture) provisioned(epochs int, wipe bool) *recDevice {
	f.t.Helper()
	d := f.newDevice()
	for range epochs {
		f.provision(d)
	}
	if wipe {
		if err := d.Wipe(context.Background()); err != nil {
			f.t.Fatal(err)
		}
	}
	return d
}

// appendEntry signs an escrow entry with stationKey and appends it: the
// ledger admits whatever its own trust admits.
func (f *recFixture) appendEntry(chip ledger.ChipID, ids ledger.Identities, epoch uint32, deviceCA *provisioner.CA, stationKey *ecdsa.PrivateKey, stationCert []byte) {
	f.t.Helper()
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl, err := ledger.DeviceCertificateTemplate(deviceCA.Manufacturer(), chip, ids, time.Now().Add(-time.Minute), rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	cert, err := deviceCA.IssueDeviceCertificate(tmpl, &devKey.PublicKey)
	if err != nil {
		f.t.Fatal(err)
	}
	backup := make([]byte, 200)
	rand.Read(backup)
	e := &ledger.EscrowEntry{
		ChipID: chip, Identities: ids, Epoch: epoch, Certificate: cert, Backup: backup,
		StationID: ledger.StationID(stationCert), ProvisionedAtMs: uint64(time.Now().UnixMilli()),
	}
	if err := e.Sign(rand.Reader, stationKey); err != nil {
		f.t.Fatal(err)
	}
	leaf, err := e.MarshalLeaf()
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.admin.Append(context.Background(), leaf); err != nil {
		f.t.Fatalf("append the entry: %v", err)
	}
}

// recDevice is a real device that counts the backups handed to it.
type recDevice struct {
	*device.Device
	restores atomic.Int32
}

// Identity implements client.RecoveryDevice.
func (d *recDevice) Identity(ctx context.Context) (*client.DeviceIdentity, error) {
	return deviceIdentity(ctx, d.Device)
}

// RestoreBackup implements client.RecoveryDevice.
func (d *recDevice) RestoreBackup(ctx context.Context, backup, cert, receipt, lookupProof []byte) error {
	d.restores.Add(1)
	return d.Device.RestoreBackup(ctx, backup, cert, receipt, lookupProof)
}

func deviceIdentity(ctx context.Context, d device.Conn) (*client.DeviceIdentity, error) {
	st, err := d.Status(ctx)
	if err != nil {
		return nil, err
	}
	return &client.DeviceIdentity{ChipID: st.ChipID, Identities: st.Identities, Epoch: st.Epoch, Trust: st.Trust, LogVerifierKey: st.LogVerifierKey}, nil
}

func (d *recDevice) chip() ledger.ChipID {
	in, _ := d.ChipInfo(context.Background())
	return in.ChipID
}

// deviceState is everything a device holds that recovery could change.
type deviceState struct {
	Status *device.Status
	Keys   []byte // the installed package, nil without keys
}

func stateOf(t testing.TB, d *recDevice) deviceState {
	t.Helper()
	st, err := d.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := deviceState{Status: st}
	if p, err := d.Keys(); err == nil {
		s.Keys, _ = p.MarshalBinary()
	} else if !errors.Is(err, device.ErrNoKeys) {
		t.Fatal(err)
	}
	return s
}

var recChecks = []client.RecoveryCheck{
	client.CheckDevice, client.CheckLookup, client.CheckCheckpoint, client.CheckIndex, client.CheckInclusion, client.CheckStation,
	client.CheckCertificate, client.CheckIdentities, client.CheckEpoch, client.CheckRestore,
}

func TestRecoverRestoresTheOriginalKeys(t *testing.T) {
	f := newRecFixture(t, 3)
	ctx := context.Background()

	for _, epochs := range []int{1, 2} {
		t.Run(fmt.Sprintf("epochs=%d", epochs), func(t *testing.T) {
			d := f.newDevice()
			var res *provisioner.Result
			for range epochs {
				res = f.provision(d)
			}
			f.provisioned(1, false) // another chip after it
			orig, err := d.Keys()
			if err != nil {
				t.Fatal(err)
			}
			origState := stateOf(t, d)
			if err := d.Wipe(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := d.Keys(); !errors.Is(err, device.ErrNoKeys) {
				t.Fatalf("the wiped device still has keys: %v", err)
			}

			// The device knows only the nodes and the log key.
			rep, err := client.Recover(ctx, f.newClient(), d, client.RecoverOptions{})
			if err != nil {
				t.Fatalf("recover: %v\n%+v", err, rep)
			}

			got, err := d.Keys()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, orig) {
				t.Fatalf("recovered keys differ from the originals:\n got %+v\nwant %+v", got, orig)
			}
			// The recovered device key signs for the certificate's key.
			st, _ := d.Status(ctx)
			cert, err := x509.ParseCertificate(st.Keys.Certificate)
			if err != nil {
				t.Fatal(err)
			}
			key, err := got.PrivateKey()
			if err != nil {
				t.Fatal(err)
			}
			msg := sha256.Sum256([]byte("a message signed after recovery"))
			sig, err := ecdsa.SignASN1(rand.Reader, key, msg[:])
			if err != nil {
				t.Fatal(err)
			}
			if !ecdsa.VerifyASN1(cert.PublicKey.(*ecdsa.PublicKey), msg[:], sig) {
				t.Fatal("a signature of the recovered key does not verify under the certificate")
			}
			// The manufacturer re-derives the same channel key.
			master, err := f.masterKeys.Key(got.MasterKeyVersion)
			if err != nil {
				t.Fatal(err)
			}
			want, err := device.ChannelKey(master, st.Identities, got.MasterKeyVersion)
			if err != nil || got.ChannelKey != want {
				t.Fatalf("channel key differs from the one re-derived by the manufacturer (%v)", err)
			}
			// Keys, certificate, epoch and a receipt that verifies: the
			// device is as it was before the wipe.
			if st.Epoch != uint32(epochs) || !st.HasKeys || !st.HasReceipt || !bytes.Equal(st.Keys.Certificate, origState.Status.Keys.Certificate) {
				t.Fatalf("device after recovery: %+v", st.Info)
			}
			rc, err := proofs.ParseReceipt(st.Keys.Receipt)
			if err != nil {
				t.Fatal(err)
			}
			v, _ := proofs.NewLogVerifier(f.vkey)
			if _, err := rc.Verify(v); err != nil || rc.Index != res.Index {
				t.Fatalf("stored receipt: index %d, want %d: %v", rc.Index, res.Index, err)
			}

			if rep.ChipID != d.chip().String() || rep.Epoch != uint32(epochs) || rep.LedgerIndex != res.Index ||
				rep.Entries != epochs || rep.DeviceEpoch != uint32(epochs) || !rep.Restored || rep.Error != "" || rep.FailedCheck != "" {
				t.Errorf("report: %+v", rep)
			}
			if rep.Station == nil || rep.Station.Name != "station-1" || rep.Station.RegistrationIndex != f.stationReg || rep.Station.Manufacturer != "Example Devices Ltd" {
				t.Errorf("report station: %+v", rep.Station)
			}
			if rep.Checkpoint == nil || rep.Checkpoint.Origin != testOrigin || rep.Checkpoint.Size <= res.Index {
				t.Errorf("report checkpoint: %+v", rep.Checkpoint)
			} else if cp, err := v.VerifyCheckpoint([]byte(rep.Checkpoint.Note)); err != nil || cp.Size != rep.Checkpoint.Size {
				t.Errorf("the report's signed note does not verify: %v", err)
			}
			var checks []client.RecoveryCheck
			for _, s := range rep.Steps {
				checks = append(checks, s.Check)
				if !s.OK || s.Detail == "" || s.Error != "" {
					t.Errorf("step %+v", s)
				}
			}
			if !slices.Equal(checks, recChecks) {
				t.Errorf("steps %v, want %v", checks, recChecks)
			} else if want := fmt.Sprintf("The chip index in the checkpoint of %d entries proves epoch %d (at position %d) is this chip's latest backup; its history of %s matches",
				rep.Checkpoint.Size, epochs, res.Index, map[int]string{1: "1 entry", 2: "2 entries"}[epochs]); !strings.HasPrefix(rep.Steps[3].Detail, want) {
				t.Errorf("index step %q, want it to start %q", rep.Steps[3].Detail, want)
			}
			if d.restores.Load() != 1 {
				t.Errorf("%d backups handed to the device, want 1", d.restores.Load())
			}
			if rep.Durations.Total <= 0 || rep.Durations.Total < rep.Durations.Ledger+rep.Durations.Restore {
				t.Errorf("durations %+v", rep.Durations)
			}
		})
	}
}

func TestRecoveryReportJSONHasStableFieldNames(t *testing.T) {
	f := newRecFixture(t, 1)
	d := f.provisioned(1, true)
	rep, err := client.Recover(context.Background(), f.newClient(), d, client.RecoverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := []string{"certificate", "checkpoint", "chip_id", "device_epoch", "durations", "entries", "epoch",
		"identities", "ledger_index", "provisioned_at", "restored", "station", "steps"}
	if got := slices.Sorted(mapKeys(m)); !slices.Equal(got, want) {
		t.Errorf("report fields %v, want %v", got, want)
	}
	for field, want := range map[string][]string{
		"checkpoint":  {"note", "origin", "root_hash", "size", "trusted_size"},
		"station":     {"id", "manufacturer", "name", "registered_at", "registration_index"},
		"certificate": {"issuer", "manufacturer", "serial"},
		"durations":   {"device_ns", "ledger_ns", "restore_ns", "total_ns", "verify_ns"},
	} {
		var sub map[string]json.RawMessage
		if err := json.Unmarshal(m[field], &sub); err != nil {
			t.Fatal(err)
		}
		if got := slices.Sorted(mapKeys(sub)); !slices.Equal(got, want) {
			t.Errorf("%s fields %v, want %v", field, got, want)
		}
	}
	var steps []map[string]any
	json.Unmarshal(m["steps"], &steps)
	if len(steps) == 0 || steps[0]["check"] != "device" || steps[0]["ok"] != true || steps[0]["detail"] == "" {
		t.Errorf("steps %v", steps)
	}
	var back client.RecoveryReport
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(&back, rep) {
		t.Errorf("the report does not survive a JSON round trip: %v", err)
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestRecoverVerifyOnlyHandsNothingToTheDevice(t *testing.T) {
	f := newRecFixture(t, 1)
	d := f.provisioned(1, true)
	before := stateOf(t, d)
	rep, err := client.Recover(context.Background(), f.newClient(), d, client.RecoverOptions{VerifyOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Restored || d.restores.Load() != 0 || !reflect.DeepEqual(stateOf(t, d), before) {
		t.Fatalf("verify-only touched the device: restored %v, %d restores", rep.Restored, d.restores.Load())
	}
	if last := rep.Steps[len(rep.Steps)-1]; last.Check != client.CheckEpoch || !last.OK {
		t.Errorf("last step %+v, want the epoch check", last)
	}
}

// TestRecoverReusesLogInfo checks that a repair shop's cached station list
// is used, and a station it lacks is looked up again.
func TestRecoverReusesLogInfo(t *testing.T) {
	f := newRecFixture(t, 1)
	d := f.provisioned(1, true)
	p, addr := startProxy(t, f.cluster.Addrs()[0])
	c := f.newClient(addr)
	ctx := context.Background()
	info, err := c.LogInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := p.count("GetLogInfo")
	if _, err := client.Recover(ctx, c, d, client.RecoverOptions{LogInfo: info, VerifyOnly: true}); err != nil {
		t.Fatal(err)
	}
	if p.count("GetLogInfo") != n {
		t.Error("Recover fetched the log info although it was given")
	}
	stale := &client.LogInfo{Origin: info.Origin, VerifierKey: info.VerifierKey}
	if _, err := client.Recover(ctx, c, d, client.RecoverOptions{LogInfo: stale}); err != nil {
		t.Fatal(err)
	}
	if p.count("GetLogInfo") != n+1 {
		t.Error("a station missing from the given log info was not looked up")
	}
}

// TestRecoverUnknownChipIsErrNotInLedger checks that "no backup" is a
// verified answer: the chip index of a signed checkpoint proves it, and the
// report says so and keeps that checkpoint.
func TestRecoverUnknownChipIsErrNotInLedger(t *testing.T) {
	f := newRecFixture(t, 1)
	f.provisioned(1, false)
	d := f.newDevice() // never provisioned
	rep, err := client.Recover(context.Background(), f.newClient(), d, client.RecoverOptions{})
	if !errors.Is(err, client.ErrNotInLedger) || errors.Is(err, client.ErrNotLatest) || rep.FailedCheck != client.CheckLookup || d.restores.Load() != 0 {
		t.Fatalf("got %v (failed check %q), want ErrNotInLedger", err, rep.FailedCheck)
	}
	if rep.Checkpoint == nil {
		t.Fatalf("the report lacks the checkpoint that proves the chip absent: %+v", rep)
	}
	cp, err := f.verifier.VerifyCheckpoint([]byte(rep.Checkpoint.Note))
	if err != nil || cp.Size != rep.Checkpoint.Size {
		t.Fatalf("the report's note does not verify: %v", err)
	}
	want := fmt.Sprintf("This chip has no backup in the ledger: the chip index in the ledger's signed checkpoint of %d entries proves it", cp.Size)
	if last := rep.Steps[len(rep.Steps)-1]; last.OK || last.Check != client.CheckLookup || last.Detail != want {
		t.Errorf("last step %+v, want detail %q", last, want)
	}
}

// TestRecoverDeviceAheadOfTheLedgerIsErrStaleBackup recovers a device whose
// chip counted keys of a newer epoch than the ledger proves it holds: they
// were never published in this log, so the proven latest backup would roll
// the device back.
func TestRecoverDeviceAheadOfTheLedgerIsErrStaleBackup(t *testing.T) {
	f := newRecFixture(t, 1)
	ctx := context.Background()
	chip, err := device.NewSoftChip(nil)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := device.Manufacture(device.ManufactureOptions{Identities: ledger.Identities{f.newIMEI()}, Trust: f.ca.Trust(), LogVerifierKey: f.vkey, Chip: chip})
	if err != nil {
		t.Fatal(err)
	}
	d := &recDevice{Device: dev}
	f.provision(d)
	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := chip.AdvanceEpoch(2); err != nil { // keys of epoch 2 that never reached the log
		t.Fatal(err)
	}
	before := stateOf(t, d)
	rep, err := client.Recover(ctx, f.newClient(), d, client.RecoverOptions{})
	if !errors.Is(err, client.ErrStaleBackup) || rep.FailedCheck != client.CheckEpoch || rep.Epoch != 1 || rep.DeviceEpoch != 2 {
		t.Fatalf("got %v at %q (epoch %d, device epoch %d), want ErrStaleBackup at the epoch check", err, rep.FailedCheck, rep.Epoch, rep.DeviceEpoch)
	}
	// The index proved epoch 1 the latest before the epoch check refused it.
	if i := slices.IndexFunc(rep.Steps, func(s client.RecoveryStep) bool { return s.Check == client.CheckIndex }); i < 0 || !rep.Steps[i].OK {
		t.Errorf("steps %+v lack a passed index check", rep.Steps)
	}
	if d.restores.Load() != 0 || !reflect.DeepEqual(stateOf(t, d), before) {
		t.Error("the device was touched")
	}
}

func TestRecoverDeviceOfAnotherLogIsErrWrongLog(t *testing.T) {
	f := newRecFixture(t, 1)
	f.provisioned(1, false)
	other := newSigner(t)
	d := f.newDeviceWith(f.ca.Trust(), other.VerifierKey())
	rep, err := client.Recover(context.Background(), f.newClient(), d, client.RecoverOptions{})
	if !errors.Is(err, client.ErrWrongLog) || rep.FailedCheck != client.CheckDevice || d.restores.Load() != 0 {
		t.Fatalf("got %v (failed check %q), want ErrWrongLog", err, rep.FailedCheck)
	}
}

// TestRecoverRefusesALyingLedger puts a proxy that alters answers in front
// of a real node, and checks that recovery refuses each lie with its
// specific error and failed check before anything reaches the device,
// which stays wiped. Each lie is coherent: whatever the node changes, it
// changes everywhere the answer repeats it (the receipts' and the lookup
// proof's checkpoint), so the check named is the one that catches it.
func TestRecoverRefusesALyingLedger(t *testing.T) {
	f := newRecFixture(t, 1)
	ctx := context.Background()
	hc := h2cClient()
	t.Cleanup(hc.CloseIdleConnections) // before the node stops
	node := chipledgerv1connect.NewLedgerServiceClient(hc, "http://"+f.cluster.Addrs()[0])
	lookup := func(ctx context.Context, chip ledger.ChipID) (*v1.LookupChipResponse, error) {
		resp, err := node.LookupChip(ctx, connect.NewRequest(&v1.LookupChipRequest{ChipId: chip}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}

	victim := f.provisioned(1, false)
	// The node's whole, genuine answer for the victim now: its checkpoint,
	// entries and lookup proof, all valid at a tree that later grows.
	older, err := lookup(ctx, victim.chip())
	if err != nil {
		t.Fatal(err)
	}
	other := f.provisioned(1, false)
	reprovisioned := f.provisioned(2, false)
	f.provisioned(3, false)
	stranger := f.newDevice() // never provisioned: the index proves it absent
	for _, d := range []*recDevice{victim, reprovisioned} {
		if err := d.Wipe(ctx); err != nil {
			t.Fatal(err)
		}
	}

	type tamperFunc = func(ctx context.Context, p *proxy, c *client.Client, proc string, req, resp proto.Message) error
	// onLookup alters a lookup answer that has entries.
	onLookup := func(alter func(ctx context.Context, m *v1.LookupChipResponse) error) tamperFunc {
		return func(ctx context.Context, _ *proxy, _ *client.Client, _ string, _, resp proto.Message) error {
			if m, ok := resp.(*v1.LookupChipResponse); ok && len(m.Entries) > 0 {
				return alter(ctx, m)
			}
			return nil
		}
	}
	// replace replaces a lookup answer with another one, whole.
	replace := func(m, with *v1.LookupChipResponse) {
		proto.Reset(m)
		proto.Merge(m, with)
	}
	alterProof := func(m *v1.LookupChipResponse, alter func(lp *proofs.LookupProof)) error {
		lp, err := proofs.ParseLookupProof(m.LookupProof)
		if err != nil {
			return err
		}
		alter(lp)
		m.LookupProof, err = lp.MarshalBinary()
		return err
	}
	alterLeaf := func(alter func(e *ledger.EscrowEntry)) tamperFunc {
		return onLookup(func(_ context.Context, m *v1.LookupChipResponse) error {
			r := m.Entries[len(m.Entries)-1].Receipt
			e, err := ledger.ParseEscrowEntry(r.Leaf)
			if err != nil {
				return err
			}
			alter(e)
			r.Leaf, err = e.MarshalLeaf()
			return err
		})
	}
	setCheckpoint := func(m *v1.LookupChipResponse, signed []byte) error {
		m.Checkpoint = signed
		for _, e := range m.Entries {
			e.Receipt.Checkpoint = signed
		}
		return alterProof(m, func(lp *proofs.LookupProof) { lp.Checkpoint = signed })
	}
	// Same origin, another key. Made here: the tampers run on the proxy's
	// goroutine, where they must not fail the test, only the call.
	foreign := newSigner(t)

	for _, tc := range []struct {
		name   string
		dev    *recDevice
		tamper tamperFunc
		want   []error
		check  client.RecoveryCheck
	}{
		{
			name:   "ChangedBackupByteIsErrBadProof",
			tamper: alterLeaf(func(e *ledger.EscrowEntry) { e.Backup[len(e.Backup)/2] ^= 1 }),
			want:   []error{client.ErrBadProof, proofs.ErrInclusion}, check: client.CheckInclusion,
		},
		{
			name: "ChangedCertificateIsErrBadProof",
			tamper: alterLeaf(func(e *ledger.EscrowEntry) {
				e.Certificate = slices.Clone(e.Certificate)
				e.Certificate[len(e.Certificate)-5] ^= 1
			}),
			want: []error{client.ErrBadProof, proofs.ErrInclusion}, check: client.CheckInclusion,
		},
		{
			name: "ProofForAnotherIndexIsErrBadProof",
			tamper: onLookup(func(ctx context.Context, m *v1.LookupChipResponse) error {
				o, err := lookup(ctx, other.chip())
				if err != nil {
					return err
				}
				cp, err := f.verifier.VerifyCheckpoint(m.Checkpoint)
				if err != nil {
					return err
				}
				idx := o.Entries[0].Receipt.Index
				proof, err := node.GetInclusionProof(ctx, connect.NewRequest(&v1.GetInclusionProofRequest{Index: idx, TreeSize: cp.Size}))
				if err != nil {
					return err
				}
				r := m.Entries[len(m.Entries)-1].Receipt
				r.Index, r.InclusionProof = idx, proof.Msg.InclusionProof
				return nil
			}),
			want: []error{client.ErrBadProof, proofs.ErrInclusion}, check: client.CheckInclusion,
		},
		{
			name: "CheckpointSignedByAnotherKeyIsErrBadSignature",
			tamper: onLookup(func(_ context.Context, m *v1.LookupChipResponse) error {
				cp, err := f.verifier.VerifyCheckpoint(m.Checkpoint)
				if err != nil {
					return err
				}
				forged, err := foreign.Sign(cp.Size, cp.Hash)
				if err != nil {
					return err
				}
				return setCheckpoint(m, forged)
			}),
			want: []error{client.ErrBadSignature}, check: client.CheckCheckpoint,
		},
		{
			// The node's own, genuine answer from before the client saw
			// the log grow: checkpoint, receipts and lookup proof all
			// verify, but a node answering at an older tree could hide a
			// newer entry.
			name: "GenuineOlderAnswerIsErrRollback",
			tamper: onLookup(func(_ context.Context, m *v1.LookupChipResponse) error {
				replace(m, older)
				return nil
			}),
			want: []error{client.ErrRollback}, check: client.CheckCheckpoint,
		},
		{
			name: "TwoCheckpointsOfOneSizeIsErrFork",
			tamper: func(_ context.Context, _ *proxy, c *client.Client, _ string, _, resp proto.Message) error {
				if m, ok := resp.(*v1.LookupChipResponse); ok {
					cp, _ := c.Trusted()
					var root ledger.Hash
					rand.Read(root[:])
					forged, err := f.signer.Sign(cp.Size, root) // the log's key, another root
					if err != nil {
						return err
					}
					return setCheckpoint(m, forged)
				}
				return nil
			},
			want: []error{client.ErrFork}, check: client.CheckCheckpoint,
		},
		{
			// The chip was re-provisioned; the node serves only epoch 1,
			// whose receipt is valid, with the real lookup proof, which
			// names epoch 2 as the latest.
			name: "HiddenNewestEntryIsErrNotLatest",
			dev:  reprovisioned,
			tamper: onLookup(func(_ context.Context, m *v1.LookupChipResponse) error {
				m.Entries = m.Entries[:1]
				return nil
			}),
			want: []error{client.ErrNotLatest, client.ErrMismatch}, check: client.CheckIndex,
		},
		{
			// The node says the chip has no entry; its lookup proof is
			// the real one, which proves the chip present.
			name: "DeniedChipWithItsOwnProofIsErrNotLatest",
			tamper: onLookup(func(_ context.Context, m *v1.LookupChipResponse) error {
				m.Entries = nil
				return nil
			}),
			want: []error{client.ErrNotLatest, client.ErrMismatch}, check: client.CheckIndex,
		},
		{
			// The node says the chip has no entry and serves, whole, its
			// genuine answer for a chip that has none: that lookup proof
			// cannot prove this chip absent.
			name: "DeniedChipWithAnAbsentChipsProofIsErrNotLatest",
			tamper: onLookup(func(ctx context.Context, m *v1.LookupChipResponse) error {
				o, err := lookup(ctx, stranger.chip())
				if err != nil {
					return err
				}
				if len(o.Entries) != 0 {
					return errors.New("the stranger has entries")
				}
				replace(m, o)
				return nil
			}),
			want: []error{client.ErrNotLatest, client.ErrBadProof, proofs.ErrLookup}, check: client.CheckIndex,
		},
		{
			name: "NoLookupProofIsErrNotLatest",
			tamper: onLookup(func(_ context.Context, m *v1.LookupChipResponse) error {
				m.LookupProof = nil
				return nil
			}),
			want: []error{client.ErrNotLatest, client.ErrMismatch}, check: client.CheckIndex,
		},
		{
			// The kind-3 leaf names another index root than the one the
			// checkpoint commits to.
			name: "ChangedIndexRootLeafIsErrBadProof",
			tamper: onLookup(func(_ context.Context, m *v1.LookupChipResponse) error {
				return alterProof(m, func(lp *proofs.LookupProof) { lp.IndexLeaf[len(lp.IndexLeaf)-1] ^= 1 })
			}),
			want: []error{client.ErrNotLatest, client.ErrBadProof, proofs.ErrLookup}, check: client.CheckIndex,
		},
		{
			// The map path leads to another root than the kind-3 leaf's.
			name: "ChangedMapProofIsErrBadProof",
			tamper: onLookup(func(_ context.Context, m *v1.LookupChipResponse) error {
				return alterProof(m, func(lp *proofs.LookupProof) {
					if len(lp.Map.Siblings) > 0 {
						lp.Map.Siblings[0][0] ^= 1
					} else {
						lp.Map.Value.HistoryRoot[0] ^= 1
					}
				})
			}),
			want: []error{client.ErrNotLatest, client.ErrBadProof, proofs.ErrLookup, proofs.ErrMapProof}, check: client.CheckIndex,
		},
		{
			// The node serves another chip's whole, genuine answer.
			name: "AnswerForAnotherChipIsErrMismatch",
			tamper: onLookup(func(ctx context.Context, m *v1.LookupChipResponse) error {
				o, err := lookup(ctx, other.chip())
				if err != nil {
					return err
				}
				replace(m, o)
				return nil
			}),
			want: []error{client.ErrMismatch}, check: client.CheckLookup,
		},
		{
			name: "HiddenStationIsErrUnknownStation",
			tamper: func(_ context.Context, _ *proxy, _ *client.Client, _ string, _, resp proto.Message) error {
				if m, ok := resp.(*v1.GetLogInfoResponse); ok {
					m.Stations = nil
				}
				return nil
			},
			want: []error{client.ErrUnknownStation}, check: client.CheckStation,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.dev
			if d == nil {
				d = victim
			}
			p, addr := startProxy(t, f.cluster.Addrs()[0])
			c := f.newClientWith(client.Options{Addrs: []string{addr}, Retry: client.RetryPolicy{MaxAttempts: 1}})
			if _, _, err := c.Checkpoint(ctx); err != nil { // the client has seen the log before
				t.Fatal(err)
			}
			p.setTamper(func(ctx context.Context, proc string, req, resp proto.Message) error {
				return tc.tamper(ctx, p, c, proc, req, resp)
			})
			before := stateOf(t, d)
			restores := d.restores.Load()

			rep, err := client.Recover(ctx, c, d, client.RecoverOptions{})
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("got %v, want %v", err, want)
				}
			}
			if err == nil {
				t.FailNow()
			}
			if tc.check != client.CheckIndex && errors.Is(err, client.ErrNotLatest) {
				t.Errorf("got %v, not a chip index failure", err)
			}
			if rep == nil || rep.Restored || rep.FailedCheck != tc.check || rep.Error != err.Error() {
				t.Fatalf("report: %+v, want failed check %q", rep, tc.check)
			}
			last := rep.Steps[len(rep.Steps)-1]
			if last.OK || last.Check != tc.check || last.Error == "" {
				t.Errorf("last step %+v", last)
			}
			if tc.check == client.CheckIndex {
				want := "The ledger node hid the chip's newest backup"
				if errors.Is(err, client.ErrBadProof) {
					want = "The ledger node's answer does not match the chip index"
				}
				if !strings.HasPrefix(last.Detail, want) {
					t.Errorf("index failure %q, want it to start %q", last.Detail, want)
				}
			}
			if n := d.restores.Load() - restores; n != 0 {
				t.Errorf("%d backups were handed to the device", n)
			}
			if after := stateOf(t, d); !reflect.DeepEqual(after, before) {
				t.Errorf("the device changed:\n%+v\nto\n%+v", before.Status.Info, after.Status.Info)
			}
			if after := stateOf(t, d); after.Keys != nil || after.Status.HasKeys {
				t.Error("the wiped device has keys")
			}
		})
	}
}

// TestRecoverTrustsTheDeviceNotTheLedger appends entries the ledger admits,
// because it trusts a second manufacturer too, but the device does not: its
// ROM trust decides.
func TestRecoverTrustsTheDeviceNotTheLedger(t *testing.T) {
	f := newRecFixture(t, 1)
	ctx := context.Background()
	otherStationKey, otherStationCert, _ := f.registerStation(f.otherCA, "other-line")

	for _, tc := range []struct {
		name string
		// publish appends epoch 2 of the wiped device d, whose
		// identities are an IMEI and a serial number.
		publish func(chip ledger.ChipID, ids ledger.Identities)
		want    []error
		check   client.RecoveryCheck
	}{
		{
			name: "StationOfAnotherManufacturer",
			publish: func(chip ledger.ChipID, ids ledger.Identities) {
				f.appendEntry(chip, ids, 2, f.otherCA, otherStationKey, otherStationCert)
			},
			want:  []error{client.ErrUntrustedCertificate, ledger.ErrUntrustedCertificate},
			check: client.CheckStation,
		},
		{
			name: "DeviceCertificateFromACAThisDeviceDoesNotTrust",
			publish: func(chip ledger.ChipID, ids ledger.Identities) {
				f.appendEntry(chip, ids, 2, f.otherCA, f.stationKey, f.stationCert)
			},
			want:  []error{client.ErrUntrustedCertificate, ledger.ErrUntrustedCertificate},
			check: client.CheckCertificate,
		},
		{
			name: "CertificateForOtherIdentities",
			publish: func(chip ledger.ChipID, _ ledger.Identities) {
				f.appendEntry(chip, ledger.Identities{f.newIMEI()}, 2, f.ca, f.stationKey, f.stationCert)
			},
			want:  []error{client.ErrMismatch, ledger.ErrIdentityMismatch},
			check: client.CheckCertificate,
		},
		{
			// The certificate names the IMEI only, so it binds the
			// device too; the entry's identities do not.
			name: "EntryForAnotherSerialNumber",
			publish: func(chip ledger.ChipID, ids ledger.Identities) {
				serial, _ := ledger.NewSerial("SN-OTHER")
				f.appendEntry(chip, ledger.Identities{ids[0], serial}, 2, f.ca, f.stationKey, f.stationCert)
			},
			want:  []error{client.ErrMismatch},
			check: client.CheckIdentities,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serial, _ := ledger.NewSerial("SN-" + tc.name)
			d := f.newDeviceWith(f.ca.Trust(), f.vkey, f.newIMEI(), serial)
			f.provision(d)
			if err := d.Wipe(ctx); err != nil {
				t.Fatal(err)
			}
			in, _ := d.ChipInfo(ctx)
			tc.publish(in.ChipID, in.Identities)
			before := stateOf(t, d)
			rep, err := client.Recover(ctx, f.newClient(), d, client.RecoverOptions{})
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("got %v, want %v", err, want)
				}
			}
			if rep.FailedCheck != tc.check || rep.Epoch != 2 {
				t.Errorf("failed check %q on epoch %d, want %q on epoch 2", rep.FailedCheck, rep.Epoch, tc.check)
			}
			if d.restores.Load() != 0 || !reflect.DeepEqual(stateOf(t, d), before) {
				t.Error("the device was touched")
			}
		})
	}
}

// TestRecoverDeviceRefusalKeepsItsKeys hands the device a verified backup it
// cannot use: the chip is not the one the entry was made for.
func TestRecoverDeviceRefusalIsErrDeviceRefused(t *testing.T) {
	f := newRecFixture(t, 1)
	ctx := context.Background()
	d := f.provisioned(1, true)
	impostor := &lyingChip{recDevice: f.newDevice(), chip: d.chip()}
	before := stateOf(t, impostor.recDevice)
	rep, err := client.Recover(ctx, f.newClient(), impostor, client.RecoverOptions{})
	// The certificate binds another IMEI, so the client refuses first.
	if !errors.Is(err, client.ErrMismatch) || rep.FailedCheck != client.CheckCertificate {
		t.Fatalf("got %v at %q, want ErrMismatch at the certificate", err, rep.FailedCheck)
	}
	// With the identities the entry names, only the device can tell.
	impostor.ids = stateOf(t, d).Status.Identities
	rep, err = client.Recover(ctx, f.newClient(), impostor, client.RecoverOptions{})
	if !errors.Is(err, client.ErrDeviceRefused) || !errors.Is(err, device.ErrWrongChip) || rep.FailedCheck != client.CheckRestore {
		t.Fatalf("got %v at %q, want ErrDeviceRefused wrapping device.ErrWrongChip", err, rep.FailedCheck)
	}
	if impostor.restores.Load() != 1 || !reflect.DeepEqual(stateOf(t, impostor.recDevice), before) {
		t.Error("the refusing device changed")
	}
}

// lyingChip is a device that reports another chip ID (and identities).
type lyingChip struct {
	*recDevice
	chip ledger.ChipID
	ids  ledger.Identities
}

func (d *lyingChip) Identity(ctx context.Context) (*client.DeviceIdentity, error) {
	id, err := d.recDevice.Identity(ctx)
	if err == nil {
		id.ChipID = d.chip
		if d.ids != nil {
			id.Identities = d.ids
		}
	}
	return id, err
}

// A repair shop recovers a wiped phone. Identity and RestoreBackup are
// usually those of the device agent the shop's tool is connected to.
func ExampleRecover() {
	var phone client.RecoveryDevice // the device being recovered
	c, err := client.New(client.Options{
		Addrs:  []string{"ledger-1.example.com:8080", "ledger-2.example.com:8080"},
		LogKey: "ledger.example.com/log+1a2b3c4d+AT...", // published out of band
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	report, err := client.Recover(context.Background(), c, phone, client.RecoverOptions{})
	for _, step := range report.Steps {
		mark := "✓"
		if !step.OK {
			mark = "✗"
		}
		fmt.Println(mark, step.Detail)
	}
	switch {
	case errors.Is(err, client.ErrNotInLedger):
		fmt.Println("this chip was never provisioned against this ledger")
	case errors.Is(err, client.ErrNotLatest):
		fmt.Println("a ledger node hid this chip's newest backup; recover against another node")
	case err != nil:
		fmt.Println("recovery refused; the device keeps its keys:", err)
	default:
		fmt.Printf("keys of epoch %d restored from ledger position %d\n", report.Epoch, report.LedgerIndex)
	}
}

// TestRecoverRefusesAForgedLog serves trees whose every proof and checkpoint
// verifies, signed with the log's own key, as a log whose key was stolen or
// whose admission checks broke could: the entry is the device's genuine
// backup, which the device would restore, so only the client's checks on
// the station stand in the way.
func TestRecoverRefusesAForgedLog(t *testing.T) {
	f := newRecFixture(t, 1)
	ctx := context.Background()
	d := f.provisioned(1, true)
	h, err := f.admin.LookupChip(ctx, d.chip())
	if err != nil {
		t.Fatal(err)
	}
	entryLeaf := h.Latest().Receipt.Leaf
	regs, err := f.admin.Entries(ctx, f.stationReg, f.stationReg+1)
	if err != nil {
		t.Fatal(err)
	}
	registration := regs[0]
	e, _ := ledger.ParseEscrowEntry(entryLeaf)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := e.Sign(rand.Reader, otherKey); err != nil {
		t.Fatal(err)
	}
	badSignature, _ := e.MarshalLeaf()

	for _, tc := range []struct {
		name   string
		leaves [][]byte
		want   []error // nil: every check passes
	}{
		{"RegisteredStationAndEntryPass", [][]byte{registration, entryLeaf}, nil},
		{"StationRegisteredAfterTheEntryIsErrUnknownStation", [][]byte{entryLeaf, registration}, []error{client.ErrUnknownStation}},
		{"StationSignatureThatDoesNotVerifyIsErrUnknownStation", [][]byte{registration, badSignature},
			[]error{client.ErrUnknownStation, ledger.ErrBadStationSignature}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serve(t, newForgedLog(t, f, tc.leaves))
			before := stateOf(t, d)
			rep, err := client.Recover(ctx, f.newClient(addr), d, client.RecoverOptions{VerifyOnly: tc.want == nil})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("the forged log itself is broken: %v", err)
				}
				// Genesis index root, registration, entry, closing root.
				if want := "The chip index in the checkpoint of 4 entries proves epoch 1 (at position 2) is this chip's latest backup"; !strings.HasPrefix(rep.Steps[3].Detail, want) {
					t.Errorf("index step %+v, want %q", rep.Steps[3], want)
				}
				return
			}
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("got %v, want %v", err, want)
				}
			}
			if rep.FailedCheck != client.CheckStation {
				t.Errorf("failed check %q, want %q", rep.FailedCheck, client.CheckStation)
			}
			if d.restores.Load() != 0 || !reflect.DeepEqual(stateOf(t, d), before) {
				t.Error("the device was touched")
			}
		})
	}
}

// A forgedLog serves a fixed log of leaves like a node: kept in a
// ledger.Store with AppendIndexed, so it carries the chip index (a genesis
// index root, the leaves, a closing index root) and answers lookups with
// lookup proofs, under checkpoints signed by the log's key.
type forgedLog struct {
	chipledgerv1connect.UnimplementedLedgerServiceHandler
	f      *recFixture
	st     *ledger.Store
	signed []byte
}

func newForgedLog(t testing.TB, f *recFixture, leaves [][]byte) *forgedLog {
	t.Helper()
	st, err := ledger.Open(t.TempDir(), ledger.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.AppendIndexed(leaves, nil); err != nil {
		t.Fatal(err)
	}
	l := &forgedLog{f: f, st: st}
	if l.signed, err = l.sign(st.Size()); err != nil {
		t.Fatal(err)
	}
	return l
}

// sign signs the checkpoint of the tree of size leaves.
func (l *forgedLog) sign(size uint64) ([]byte, error) {
	root, err := l.st.RootAt(size)
	if err != nil {
		return nil, err
	}
	return l.f.signer.Sign(size, root)
}

func proofBytes(hs []ledger.Hash) [][]byte {
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

func (l *forgedLog) GetCheckpoint(context.Context, *connect.Request[v1.GetCheckpointRequest]) (*connect.Response[v1.GetCheckpointResponse], error) {
	return connect.NewResponse(&v1.GetCheckpointResponse{Checkpoint: l.signed}), nil
}

func (l *forgedLog) GetEntries(_ context.Context, req *connect.Request[v1.GetEntriesRequest]) (*connect.Response[v1.GetEntriesResponse], error) {
	if req.Msg.Start >= req.Msg.End || req.Msg.End > l.st.Size() {
		return nil, connect.NewError(connect.CodeOutOfRange, errors.New("no such entries"))
	}
	leaves, err := l.st.Leaves(req.Msg.Start, req.Msg.End)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&v1.GetEntriesResponse{Leaves: leaves}), nil
}

func (l *forgedLog) GetInclusionProof(_ context.Context, req *connect.Request[v1.GetInclusionProofRequest]) (*connect.Response[v1.GetInclusionProofResponse], error) {
	i, size := req.Msg.Index, req.Msg.TreeSize
	proof, err := l.st.InclusionProof(i, size)
	if err != nil {
		return nil, connect.NewError(connect.CodeOutOfRange, err)
	}
	hash, err := l.st.LeafHash(i)
	if err != nil {
		return nil, connect.NewError(connect.CodeOutOfRange, err)
	}
	return connect.NewResponse(&v1.GetInclusionProofResponse{Index: i, TreeSize: size, InclusionProof: proofBytes(proof), LeafHash: hash[:]}), nil
}

func (l *forgedLog) GetConsistencyProof(_ context.Context, req *connect.Request[v1.GetConsistencyProofRequest]) (*connect.Response[v1.GetConsistencyProofResponse], error) {
	proof, err := l.st.ConsistencyProof(req.Msg.Size1, req.Msg.Size2)
	if err != nil {
		return nil, connect.NewError(connect.CodeOutOfRange, err)
	}
	return connect.NewResponse(&v1.GetConsistencyProofResponse{Size1: req.Msg.Size1, Size2: req.Msg.Size2, ConsistencyProof: proofBytes(proof)}), nil
}

// LookupChip answers as node/api.go does: the store's lookup proof at its
// size, the checkpoint of that size, and the chip's entries with receipts
// against it.
func (l *forgedLog) LookupChip(_ context.Context, req *connect.Request[v1.LookupChipRequest]) (*connect.Response[v1.LookupChipResponse], error) {
	cl, err := l.st.LookupChip(req.Msg.ChipId)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if cl.Proof.Checkpoint, err = l.sign(cl.Size); err != nil {
		return nil, err
	}
	lp, err := cl.Proof.MarshalBinary()
	if err != nil {
		return nil, err
	}
	resp := &v1.LookupChipResponse{Checkpoint: cl.Proof.Checkpoint, LookupProof: lp}
	for _, e := range cl.Entries {
		leaf, err := l.st.Leaf(e.Index)
		if err != nil {
			return nil, err
		}
		proof, err := l.st.InclusionProof(e.Index, cl.Size)
		if err != nil {
			return nil, err
		}
		resp.Entries = append(resp.Entries, &v1.ChipEntry{Epoch: e.Epoch, Receipt: &v1.Receipt{
			Index: e.Index, Leaf: leaf, InclusionProof: proofBytes(proof), Checkpoint: cl.Proof.Checkpoint,
		}})
	}
	return connect.NewResponse(resp), nil
}

func (l *forgedLog) GetLogInfo(context.Context, *connect.Request[v1.GetLogInfoRequest]) (*connect.Response[v1.GetLogInfoResponse], error) {
	resp := &v1.GetLogInfoResponse{Origin: testOrigin, VerifierKey: l.f.vkey, ManufacturerTrust: l.f.ca.Trust().PEM(), Checkpoint: l.signed}
	leaves, err := l.st.Leaves(0, l.st.Size())
	if err != nil {
		return nil, err
	}
	for i, leaf := range leaves {
		if reg, err := ledger.ParseStationRegistration(leaf); err == nil {
			id := reg.StationID()
			resp.Stations = append(resp.Stations, &v1.Station{StationId: id[:], Certificate: reg.Certificate, RegistrationIndex: uint64(i)})
		}
	}
	return connect.NewResponse(resp), nil
}

// answerLostDevice restores the backup, then reports its deadline passed:
// the answer of a device that did the work was lost on the way.
type answerLostDevice struct{ *recDevice }

func (d answerLostDevice) RestoreBackup(ctx context.Context, backup, cert, receipt, lookupProof []byte) error {
	if err := d.recDevice.RestoreBackup(ctx, backup, cert, receipt, lookupProof); err != nil {
		return err
	}
	return context.DeadlineExceeded
}

// TestARestoreWhoseAnswerIsLostIsNotCalledARefusal: ErrDeviceRefused says
// the device kept its keys; a device whose answer was lost may have
// restored the backup (this one did), so Recover must say the outcome is
// unknown, and recovering it again must succeed.
func TestARestoreWhoseAnswerIsLostIsNotCalledARefusal(t *testing.T) {
	f := newRecFixture(t, 1)
	ctx := context.Background()
	d := f.provisioned(1, true)
	rep, err := client.Recover(ctx, f.newClient(), answerLostDevice{d}, client.RecoverOptions{})
	if !errors.Is(err, client.ErrRestoreUnknown) || errors.Is(err, client.ErrDeviceRefused) || rep.FailedCheck != client.CheckRestore {
		t.Fatalf("restore whose answer was lost: %v at %q, want ErrRestoreUnknown (not ErrDeviceRefused)", err, rep.FailedCheck)
	}
	if in, err := d.ChipInfo(ctx); err != nil || !in.HasKeys {
		t.Fatalf("the device did not restore (%v): the test's premise fails", err)
	}
	if _, err := client.Recover(ctx, f.newClient(), d, client.RecoverOptions{}); err != nil {
		t.Fatalf("recovering the device again: %v", err)
	}
}
