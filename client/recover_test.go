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
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
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
	f.cluster, err = localcluster.Start(ctx, localcluster.Options{
		Nodes: nodes, Dir: filepath.Join(dir, "ledger"), Signer: f.signer, Trust: nodeTrust, Logger: testLogger(),
	})
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
func (d *recDevice) RestoreBackup(ctx context.Context, backup, cert, receipt []byte) error {
	d.restores.Add(1)
	return d.Device.RestoreBackup(ctx, backup, cert, receipt)
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
	client.CheckDevice, client.CheckLookup, client.CheckCheckpoint, client.CheckInclusion, client.CheckStation,
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

func TestRecoverUnknownChipIsErrNotInLedger(t *testing.T) {
	f := newRecFixture(t, 1)
	f.provisioned(1, false)
	d := f.newDevice() // never provisioned
	rep, err := client.Recover(context.Background(), f.newClient(), d, client.RecoverOptions{})
	if !errors.Is(err, client.ErrNotInLedger) || rep.FailedCheck != client.CheckLookup || d.restores.Load() != 0 {
		t.Fatalf("got %v (failed check %q), want ErrNotInLedger", err, rep.FailedCheck)
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
// specific error before anything reaches the device, which stays wiped.
func TestRecoverRefusesALyingLedger(t *testing.T) {
	f := newRecFixture(t, 1)
	ctx := context.Background()
	victim := f.provisioned(1, false)
	_, older := f.admin.Trusted() // holds the victim's entry
	other := f.provisioned(1, false)
	reprovisioned := f.provisioned(2, false)
	f.provisioned(3, false)
	for _, d := range []*recDevice{victim, reprovisioned} {
		if err := d.Wipe(ctx); err != nil {
			t.Fatal(err)
		}
	}
	olderCP, err := f.verifier.VerifyCheckpoint(older)
	if err != nil {
		t.Fatal(err)
	}

	type tamperFunc = func(ctx context.Context, p *proxy, c *client.Client, proc string, req, resp proto.Message) error
	// onLookup alters the last entry of a lookup answer.
	onLookup := func(alter func(ctx context.Context, p *proxy, m *v1.LookupChipResponse) error) tamperFunc {
		return func(ctx context.Context, p *proxy, _ *client.Client, proc string, _, resp proto.Message) error {
			if m, ok := resp.(*v1.LookupChipResponse); ok && len(m.Entries) > 0 {
				return alter(ctx, p, m)
			}
			return nil
		}
	}
	alterLeaf := func(alter func(e *ledger.EscrowEntry)) tamperFunc {
		return onLookup(func(_ context.Context, _ *proxy, m *v1.LookupChipResponse) error {
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
	setCheckpoint := func(m *v1.LookupChipResponse, signed []byte) {
		m.Checkpoint = signed
		for _, e := range m.Entries {
			e.Receipt.Checkpoint = signed
		}
	}
	otherEntry := func(ctx context.Context, p *proxy) (*v1.LookupChipResponse, error) {
		resp, err := p.up.LookupChip(ctx, connect.NewRequest(&v1.LookupChipRequest{ChipId: other.chip()}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	sizeOf := func(signed []byte) uint64 {
		cp, err := f.verifier.VerifyCheckpoint(signed)
		if err != nil {
			t.Fatal(err)
		}
		return cp.Size
	}

	for _, tc := range []struct {
		name   string
		dev    *recDevice
		tamper tamperFunc
		want   error
		check  client.RecoveryCheck
	}{
		{
			name:   "ChangedBackupByteIsErrBadProof",
			tamper: alterLeaf(func(e *ledger.EscrowEntry) { e.Backup[len(e.Backup)/2] ^= 1 }),
			want:   client.ErrBadProof, check: client.CheckInclusion,
		},
		{
			name: "ChangedCertificateIsErrBadProof",
			tamper: alterLeaf(func(e *ledger.EscrowEntry) {
				e.Certificate = slices.Clone(e.Certificate)
				e.Certificate[len(e.Certificate)-5] ^= 1
			}),
			want: client.ErrBadProof, check: client.CheckInclusion,
		},
		{
			name: "ProofForAnotherIndexIsErrBadProof",
			tamper: onLookup(func(ctx context.Context, p *proxy, m *v1.LookupChipResponse) error {
				o, err := otherEntry(ctx, p)
				if err != nil {
					return err
				}
				idx := o.Entries[0].Receipt.Index
				proof, err := p.up.GetInclusionProof(ctx, connect.NewRequest(&v1.GetInclusionProofRequest{Index: idx, TreeSize: sizeOf(m.Checkpoint)}))
				if err != nil {
					return err
				}
				r := m.Entries[len(m.Entries)-1].Receipt
				r.Index, r.InclusionProof = idx, proof.Msg.InclusionProof
				return nil
			}),
			want: client.ErrBadProof, check: client.CheckInclusion,
		},
		{
			name: "CheckpointSignedByAnotherKeyIsErrBadSignature",
			tamper: onLookup(func(_ context.Context, _ *proxy, m *v1.LookupChipResponse) error {
				cp, err := f.verifier.VerifyCheckpoint(m.Checkpoint)
				if err != nil {
					return err
				}
				forged, err := newSigner(t).Sign(cp.Size, cp.Hash) // same origin, another key
				setCheckpoint(m, forged)
				return err
			}),
			want: client.ErrBadSignature, check: client.CheckCheckpoint,
		},
		{
			// The log's own, genuine, older checkpoint: a node answering
			// at an older tree could hide a newer entry.
			name: "CheckpointSmallerThanOneSeenIsErrRollback",
			tamper: onLookup(func(ctx context.Context, p *proxy, m *v1.LookupChipResponse) error {
				r := m.Entries[len(m.Entries)-1].Receipt
				proof, err := p.up.GetInclusionProof(ctx, connect.NewRequest(&v1.GetInclusionProofRequest{Index: r.Index, TreeSize: olderCP.Size}))
				if err != nil {
					return err
				}
				r.InclusionProof = proof.Msg.InclusionProof
				setCheckpoint(m, older)
				return nil
			}),
			want: client.ErrRollback, check: client.CheckCheckpoint,
		},
		{
			name: "TwoCheckpointsOfOneSizeIsErrFork",
			tamper: func(_ context.Context, _ *proxy, c *client.Client, _ string, _, resp proto.Message) error {
				if m, ok := resp.(*v1.LookupChipResponse); ok {
					cp, _ := c.Trusted()
					var root ledger.Hash
					rand.Read(root[:])
					forged, err := f.signer.Sign(cp.Size, root) // the log's key, another root
					setCheckpoint(m, forged)
					return err
				}
				return nil
			},
			want: client.ErrFork, check: client.CheckCheckpoint,
		},
		{
			// The chip was re-provisioned; the node serves only epoch 1,
			// with a valid proof.
			name: "OlderEpochIsErrStaleBackup",
			dev:  reprovisioned,
			tamper: onLookup(func(_ context.Context, _ *proxy, m *v1.LookupChipResponse) error {
				m.Entries = m.Entries[:1]
				return nil
			}),
			want: client.ErrStaleBackup, check: client.CheckEpoch,
		},
		{
			name: "EntryOfAnotherChipIsErrMismatch",
			tamper: onLookup(func(ctx context.Context, p *proxy, m *v1.LookupChipResponse) error {
				o, err := otherEntry(ctx, p)
				if err != nil {
					return err
				}
				m.Checkpoint, m.Entries = o.Checkpoint, o.Entries
				return nil
			}),
			want: client.ErrMismatch, check: client.CheckLookup,
		},
		{
			name: "HiddenStationIsErrUnknownStation",
			tamper: func(_ context.Context, _ *proxy, _ *client.Client, _ string, _, resp proto.Message) error {
				if m, ok := resp.(*v1.GetLogInfoResponse); ok {
					m.Stations = nil
				}
				return nil
			},
			want: client.ErrUnknownStation, check: client.CheckStation,
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
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if rep == nil || rep.Restored || rep.FailedCheck != tc.check || rep.Error != err.Error() {
				t.Fatalf("report: %+v, want failed check %q", rep, tc.check)
			}
			if last := rep.Steps[len(rep.Steps)-1]; last.OK || last.Check != tc.check || last.Error == "" {
				t.Errorf("last step %+v", last)
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

// A forgedLog serves a fixed tree of leaves like a node, with checkpoints
// signed by the log's key.
type forgedLog struct {
	chipledgerv1connect.UnimplementedLedgerServiceHandler
	f      *recFixture
	tree   *testonly.Tree
	leaves [][]byte
	signed []byte
}

func newForgedLog(t testing.TB, f *recFixture, leaves [][]byte) *forgedLog {
	l := &forgedLog{f: f, tree: testonly.New(rfc6962.DefaultHasher), leaves: leaves}
	for _, leaf := range leaves {
		l.tree.AppendData(leaf)
	}
	var err error
	if l.signed, err = f.signer.Sign(l.tree.Size(), ledger.Hash(l.tree.Hash())); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *forgedLog) receipt(i uint64) (*v1.Receipt, error) {
	proof, err := l.tree.InclusionProof(i, l.tree.Size())
	return &v1.Receipt{Leaf: l.leaves[i], Index: i, InclusionProof: proof, Checkpoint: l.signed}, err
}

func (l *forgedLog) GetCheckpoint(context.Context, *connect.Request[v1.GetCheckpointRequest]) (*connect.Response[v1.GetCheckpointResponse], error) {
	return connect.NewResponse(&v1.GetCheckpointResponse{Checkpoint: l.signed}), nil
}

func (l *forgedLog) GetEntries(_ context.Context, req *connect.Request[v1.GetEntriesRequest]) (*connect.Response[v1.GetEntriesResponse], error) {
	if req.Msg.Start >= req.Msg.End || req.Msg.End > uint64(len(l.leaves)) {
		return nil, connect.NewError(connect.CodeOutOfRange, errors.New("no such entries"))
	}
	return connect.NewResponse(&v1.GetEntriesResponse{Leaves: l.leaves[req.Msg.Start:req.Msg.End]}), nil
}

func (l *forgedLog) GetInclusionProof(_ context.Context, req *connect.Request[v1.GetInclusionProofRequest]) (*connect.Response[v1.GetInclusionProofResponse], error) {
	i, size := req.Msg.Index, req.Msg.TreeSize
	proof, err := l.tree.InclusionProof(i, size)
	if err != nil {
		return nil, connect.NewError(connect.CodeOutOfRange, err)
	}
	return connect.NewResponse(&v1.GetInclusionProofResponse{Index: i, TreeSize: size, InclusionProof: proof, LeafHash: l.tree.LeafHash(i)}), nil
}

func (l *forgedLog) GetConsistencyProof(_ context.Context, req *connect.Request[v1.GetConsistencyProofRequest]) (*connect.Response[v1.GetConsistencyProofResponse], error) {
	proof, err := l.tree.ConsistencyProof(req.Msg.Size1, req.Msg.Size2)
	if err != nil {
		return nil, connect.NewError(connect.CodeOutOfRange, err)
	}
	return connect.NewResponse(&v1.GetConsistencyProofResponse{Size1: req.Msg.Size1, Size2: req.Msg.Size2, ConsistencyProof: proof}), nil
}

func (l *forgedLog) LookupChip(_ context.Context, req *connect.Request[v1.LookupChipRequest]) (*connect.Response[v1.LookupChipResponse], error) {
	resp := &v1.LookupChipResponse{Checkpoint: l.signed}
	for i, leaf := range l.leaves {
		chip, epoch, err := ledger.PeekEscrow(leaf)
		if err != nil || !chip.Equal(req.Msg.ChipId) {
			continue
		}
		r, err := l.receipt(uint64(i))
		if err != nil {
			return nil, err
		}
		resp.Entries = append(resp.Entries, &v1.ChipEntry{Epoch: epoch, Receipt: r})
	}
	return connect.NewResponse(resp), nil
}

func (l *forgedLog) GetLogInfo(context.Context, *connect.Request[v1.GetLogInfoRequest]) (*connect.Response[v1.GetLogInfoResponse], error) {
	resp := &v1.GetLogInfoResponse{Origin: testOrigin, VerifierKey: l.f.vkey, ManufacturerTrust: l.f.ca.Trust().PEM(), Checkpoint: l.signed}
	for i, leaf := range l.leaves {
		if reg, err := ledger.ParseStationRegistration(leaf); err == nil {
			id := reg.StationID()
			resp.Stations = append(resp.Stations, &v1.Station{StationId: id[:], Certificate: reg.Certificate, RegistrationIndex: uint64(i)})
		}
	}
	return connect.NewResponse(resp), nil
}
