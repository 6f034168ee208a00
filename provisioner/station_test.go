package provisioner

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/internal/localcluster"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// stationFixture is a one-node ledger, a manufacturer CA, a registered
// station and its journal, master keys and (optionally) key pool.
type stationFixture struct {
	t       testing.TB
	ca      *CA
	vkey    string
	cluster *localcluster.Cluster
	client  *client.Client
	station *Station
	cfg     StationConfig
	dir     string
}

func newStationFixture(t *testing.T, withPool bool) *stationFixture {
	return newStationFixtureTB(t, 1, withPool)
}

func newStationFixtureTB(t testing.TB, nodes int, withPool bool) *stationFixture {
	t.Helper()
	dir := t.TempDir()
	ca, err := InitCA(filepath.Join(dir, "ca"), "Example Devices Ltd")
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := ledger.GenerateLogKey("test.chipledger.example/log")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := ledger.NewLogSigner(skey)
	ctx := context.Background()
	cluster, err := localcluster.Start(ctx, localcluster.Options{Nodes: nodes, Dir: filepath.Join(dir, "ledger"), Signer: signer, Trust: ca.Trust()})
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
	der, err := ca.IssueStationCertificate("station-1", &key.PublicKey, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	reg, _ := (&ledger.StationRegistration{Certificate: der, RegisteredAtMs: uint64(time.Now().UnixMilli())}).MarshalLeaf()
	if _, err := cl.Append(ctx, reg); err != nil {
		t.Fatalf("register the station: %v", err)
	}
	if _, err := NewMasterKey(filepath.Join(dir, "master")); err != nil {
		t.Fatal(err)
	}
	mk, err := LoadMasterKeys(filepath.Join(dir, "master"))
	if err != nil {
		t.Fatal(err)
	}
	j, err := OpenJournal(filepath.Join(dir, "journal.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	cfg := StationConfig{Certificate: cert, Key: key, CA: ca, MasterKeys: mk, Ledger: ClientLedger{cl}, Journal: j}
	if withPool {
		pool, err := OpenPool(filepath.Join(dir, "pool.db"), PoolOptions{Create: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pool.Close() })
		if err := pool.Fill(5, nil); err != nil {
			t.Fatal(err)
		}
		cfg.Pool = pool
	}
	st, err := NewStation(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &stationFixture{t: t, ca: ca, vkey: vkey, cluster: cluster, client: cl, station: st, cfg: cfg, dir: dir}
}

func (f *stationFixture) newDevice(imei string) *device.Device {
	f.t.Helper()
	id, err := ledger.NewIMEI(imei)
	if err != nil {
		f.t.Fatal(err)
	}
	d, err := device.Manufacture(device.ManufactureOptions{Identities: ledger.Identities{id}, Trust: f.ca.Trust(), LogVerifierKey: f.vkey})
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

// entries returns the chip's escrow entries in the ledger, verified.
func (f *stationFixture) entries(chip ledger.ChipID) []*ledger.EscrowEntry {
	f.t.Helper()
	var out []*ledger.EscrowEntry
	for _, e := range f.lookup(chip).Entries {
		out = append(out, e.Entry)
	}
	return out
}

// lookup returns the chip's entries with the lookup proof that they are its
// whole history, fetched and verified at the ledger's current size.
func (f *stationFixture) lookup(chip ledger.ChipID) *client.ChipHistory {
	f.t.Helper()
	h, err := f.client.LookupChip(context.Background(), chip)
	if err != nil {
		f.t.Fatal(err)
	}
	return h
}

func TestProvisionEndToEnd(t *testing.T) {
	for _, withPool := range []bool{false, true} {
		t.Run(map[bool]string{false: "generated", true: "pool"}[withPool], func(t *testing.T) {
			f := newStationFixture(t, withPool)
			ctx := context.Background()
			dev := f.newDevice("490154203237518")
			res, err := f.station.Provision(ctx, dev, nil)
			if err != nil {
				t.Fatal(err)
			}
			info, _ := dev.ChipInfo(ctx)
			if info.Epoch != 1 || !info.HasKeys || !info.HasReceipt {
				t.Fatalf("device after provisioning: %+v", info)
			}
			entries := f.entries(info.ChipID)
			if len(entries) != 1 {
				t.Fatalf("%d entries in the ledger, want 1", len(entries))
			}
			e := entries[0]
			// The certificate chains to the root and binds the chip and IMEI.
			if _, err := f.ca.Trust().VerifyDeviceCertificate(e.Certificate, info.ChipID, info.Identities, time.UnixMilli(int64(e.ProvisionedAtMs))); err != nil {
				t.Fatal(err)
			}
			if err := e.VerifySignature(&f.cfg.Key.PublicKey); err != nil {
				t.Fatal(err)
			}
			// The device's receipt verifies offline.
			st, _ := dev.Status(ctx)
			rc, err := proofs.ParseReceipt(st.Keys.Receipt)
			if err != nil {
				t.Fatal(err)
			}
			v, _ := proofs.NewLogVerifier(f.vkey)
			if _, err := rc.Verify(v); err != nil || rc.Index != res.Index {
				t.Fatalf("device receipt: index %d (want %d), %v", rc.Index, res.Index, err)
			}
			// The manufacturer re-derives the channel key from the identity.
			version, master := f.cfg.MasterKeys.Current()
			want, _ := device.ChannelKey(master, info.Identities, version)
			keys, _ := dev.Keys()
			if keys.ChannelKey != want {
				t.Fatal("the channel key in the device differs from the one re-derived from the identity")
			}
			if withPool {
				s, _ := f.cfg.Pool.Status()
				if s.Available != 4 || s.Reserved != 0 || s.Consumed != 1 {
					t.Fatalf("pool after provisioning: %+v", s)
				}
			}
			// Re-provisioning makes epoch 2; the old backup no longer restores.
			if _, err := f.station.Provision(ctx, dev, nil); err != nil {
				t.Fatal(err)
			}
			h := f.lookup(info.ChipID)
			entries = f.entries(info.ChipID)
			if len(entries) != 2 || entries[1].Epoch != 2 {
				t.Fatalf("after re-provisioning: %d entries", len(entries))
			}
			if err := dev.RestoreBackup(ctx, entries[0].Backup, entries[0].Certificate, nil, h.LookupProof); !errors.Is(err, device.ErrRollback) {
				t.Fatalf("the epoch-1 backup after re-provisioning: %v, want ErrRollback", err)
			}
			if err := dev.RestoreBackup(ctx, entries[1].Backup, entries[1].Certificate, nil, h.LookupProof); err != nil {
				t.Fatalf("the latest backup does not restore: %v", err)
			}
		})
	}
}

// faultyDevice corrupts or fails one step of a real device.
type faultyDevice struct {
	device.Conn
	corruptBackup bool
	// mislabelBackup relabels the backup's epoch (its header is not
	// authenticated until the chip opens it) and vouches for it.
	mislabelBackup bool
	crashAfter     string // panic after this step succeeded on the device
}

// lyingDevice says every backup round-trips.
type lyingDevice struct{ faultyDevice }

func (*lyingDevice) CheckBackup(context.Context, []byte) error { return nil }

type crash struct{ step string }

func (d *faultyDevice) after(step string) {
	if d.crashAfter == step {
		panic(crash{step})
	}
}

func (d *faultyDevice) StorePackage(ctx context.Context, pkg []byte) ([]byte, error) {
	b, err := d.Conn.StorePackage(ctx, pkg)
	if err == nil && d.corruptBackup {
		b = slices.Clone(b)
		b[len(b)-1] ^= 1
	}
	if err == nil && d.mislabelBackup {
		h, _, perr := device.ParseBackupHeader(b)
		if perr != nil {
			return nil, perr
		}
		hdr, perr := h.MarshalBinary()
		if perr != nil {
			return nil, perr
		}
		h.Epoch++
		relabelled, perr := h.MarshalBinary()
		if perr != nil {
			return nil, perr
		}
		b = append(relabelled, b[len(hdr):]...)
	}
	d.after("StorePackage")
	return b, err
}

func (d *faultyDevice) CheckBackup(ctx context.Context, b []byte) error {
	err := d.Conn.CheckBackup(ctx, b)
	d.after("CheckBackup")
	return err
}

func (d *faultyDevice) StoreCertificate(ctx context.Context, c []byte) error {
	err := d.Conn.StoreCertificate(ctx, c)
	d.after("StoreCertificate")
	return err
}

func (d *faultyDevice) StoreReceipt(ctx context.Context, r []byte) error {
	err := d.Conn.StoreReceipt(ctx, r)
	d.after("StoreReceipt")
	return err
}

type crashingLedger struct {
	Ledger
	crash bool
}

func (l *crashingLedger) Append(ctx context.Context, leaf []byte) (*proofs.Receipt, error) {
	r, err := l.Ledger.Append(ctx, leaf)
	if l.crash {
		panic(crash{"Append"})
	}
	return r, err
}

// provisionCrashing runs Provision and turns an injected crash into a
// return, as a process that died and was restarted.
func provisionCrashing(st *Station, dev device.Conn) (res *Result, crashed bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(crash); !ok {
				panic(r)
			}
			crashed = true
		}
	}()
	res, err = st.Provision(context.Background(), dev, nil)
	return res, false, err
}

// TestProvisionResumesAfterACrashAtEveryStep crashes the station after
// each step and reruns it: every time exactly one entry lands, the device
// holds a valid receipt, and the pool key is consumed once.
func TestProvisionResumesAfterACrashAtEveryStep(t *testing.T) {
	f := newStationFixture(t, true)
	steps := []string{"StorePackage", "CheckBackup", "StoreCertificate", "Append", "StoreReceipt"}
	for i, step := range steps {
		t.Run(step, func(t *testing.T) {
			dev := f.newDevice(imeiN(i))
			cl := &crashingLedger{Ledger: f.cfg.Ledger, crash: step == "Append"}
			cfg := f.cfg
			cfg.Ledger = cl
			st, _ := NewStation(cfg)
			fd := &faultyDevice{Conn: dev}
			if step != "Append" {
				fd.crashAfter = step
			}
			if _, crashed, err := provisionCrashing(st, fd); !crashed {
				t.Fatalf("no crash injected (err %v)", err)
			}
			// Restart: a new station over the same journal and pool.
			st, _ = NewStation(f.cfg)
			res, err := st.Provision(context.Background(), dev, nil)
			if err != nil {
				t.Fatalf("rerun after a crash after %s: %v", step, err)
			}
			info, _ := dev.ChipInfo(context.Background())
			if n := len(f.entries(info.ChipID)); n != 1 {
				t.Fatalf("crash after %s: %d entries, want 1", step, n)
			}
			if info.Epoch != 1 || !info.HasReceipt || res.Epoch != 1 {
				t.Fatalf("crash after %s: device %+v, result epoch %d", step, info, res.Epoch)
			}
			if _, ok, _ := f.cfg.Pool.Reservation(info.ChipID); ok {
				t.Fatalf("crash after %s: the chip still holds a reserved pool key", step)
			}
			a, ok, _ := f.cfg.Pool.LastAudit(info.ChipID)
			if !ok || a.Outcome != OutcomeConsumed {
				t.Fatalf("crash after %s: pool audit %+v", step, a)
			}
		})
	}
	s, _ := f.cfg.Pool.Status()
	if s.Consumed != len(steps) || s.Destroyed != 0 {
		t.Fatalf("pool: %+v, want %d consumed and none destroyed", s, len(steps))
	}
}

// TestResumeNeedsThePoolItsKeyCameFrom: a provisioning whose key came from
// the pool crashes after its append; a station restarted without the pool
// refuses to resume it (rather than finish and then fail to consume the
// key), and one with the pool finishes it.
func TestResumeNeedsThePoolItsKeyCameFrom(t *testing.T) {
	f := newStationFixture(t, true)
	dev := f.newDevice(imeiN(42))
	cfg := f.cfg
	cfg.Ledger = &crashingLedger{Ledger: f.cfg.Ledger, crash: true}
	st, _ := NewStation(cfg)
	if _, crashed, err := provisionCrashing(st, dev); !crashed {
		t.Fatalf("no crash injected (err %v)", err)
	}
	cfg = f.cfg
	cfg.Pool = nil
	st, _ = NewStation(cfg)
	if _, err := st.Provision(context.Background(), dev, nil); !errors.Is(err, ErrNoPool) {
		t.Fatalf("resume without the pool: err = %v, want ErrNoPool", err)
	}
	info, _ := dev.ChipInfo(context.Background())
	if info.Epoch != 0 {
		t.Fatalf("the refused resume changed the device: epoch %d", info.Epoch)
	}
	st, _ = NewStation(f.cfg)
	res, err := st.Provision(context.Background(), dev, nil)
	if err != nil || !res.Resumed || res.Epoch != 1 {
		t.Fatalf("resume with the pool: %+v, %v", res, err)
	}
	if a, ok, _ := f.cfg.Pool.LastAudit(info.ChipID); !ok || a.Outcome != OutcomeConsumed {
		t.Fatalf("pool audit %+v, want the key consumed", a)
	}
	if n := len(f.entries(info.ChipID)); n != 1 {
		t.Fatalf("%d entries, want 1", n)
	}
}

// escrowAndCrash provisions a new device with a pool key and crashes the
// station once the ledger has its entry (epoch 1), before the key is
// consumed or the device took the receipt. It returns the device, its chip
// info and the ID of the pool key, still reserved for the chip.
func (f *stationFixture) escrowAndCrash(imei string) (*device.Device, *device.Info, KeyID) {
	f.t.Helper()
	dev := f.newDevice(imei)
	cfg := f.cfg
	cfg.Ledger = &crashingLedger{Ledger: f.cfg.Ledger, crash: true}
	st, _ := NewStation(cfg)
	if _, crashed, err := provisionCrashing(st, dev); !crashed {
		f.t.Fatalf("no crash injected (err %v)", err)
	}
	info, err := dev.ChipInfo(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	escrowed, ok, _ := f.cfg.Pool.Reservation(info.ChipID)
	if !ok {
		f.t.Fatal("the crashed provisioning holds no pool key")
	}
	return dev, info, escrowed
}

// restoreLatest restores the device from the chip's latest entry in the
// ledger.
func (f *stationFixture) restoreLatest(dev *device.Device) {
	f.t.Helper()
	ctx := context.Background()
	info, err := dev.ChipInfo(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	h := f.lookup(info.ChipID)
	e := h.Latest().Entry
	if err := dev.RestoreBackup(ctx, e.Backup, e.Certificate, nil, h.LookupProof); err != nil {
		f.t.Fatal(err)
	}
}

// TestAPoolKeyIsNeverEscrowedTwice: a provisioning whose key came from the
// pool crashes after its append, so the journal keeps its entry (epoch 1)
// at "signed" and the pool keeps the key reserved for the chip. The device
// moves past that epoch elsewhere: it is restored from the ledger and
// re-provisioned (epoch 2) by a station with another journal and no pool.
// When this station provisions it again (epoch 3), it must first finish the
// signed entry and consume its key (and refuse to go on without the pool),
// not reserve that same key, already escrowed in epoch 1, for epoch 3.
func TestAPoolKeyIsNeverEscrowedTwice(t *testing.T) {
	f := newStationFixture(t, true)
	ctx := context.Background()
	dev, info, escrowed := f.escrowAndCrash(imeiN(44))

	// The device is restored from the ledger (epoch 1) and re-provisioned
	// by another line (epoch 2).
	f.restoreLatest(dev)
	j2, err := OpenJournal(filepath.Join(f.dir, "journal-line-2.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	cfg := f.cfg
	cfg.Journal, cfg.Pool = j2, nil
	line2, _ := NewStation(cfg)
	if res, err := line2.Provision(ctx, dev, nil); err != nil || res.Epoch != 2 {
		t.Fatalf("re-provisioning at another line: %+v, %v", res, err)
	}

	// Back at the first station: without the pool it cannot settle the
	// reserved key, so it provisions nothing.
	cfg = f.cfg
	cfg.Pool = nil
	st, _ := NewStation(cfg)
	if _, err := st.Provision(ctx, dev, nil); !errors.Is(err, ErrNoPool) {
		t.Fatalf("re-provisioning without the pool: err = %v, want ErrNoPool", err)
	}
	st, _ = NewStation(f.cfg)
	res, err := st.Provision(ctx, dev, nil)
	if err != nil || res.Epoch != 3 {
		t.Fatalf("re-provisioning back at the first station: %+v, %v; want epoch 3", res, err)
	}
	entries := f.entries(info.ChipID)
	if len(entries) != 3 {
		t.Fatalf("%d entries, want 3", len(entries))
	}
	seen := map[string]uint32{}
	for _, e := range entries {
		cert, err := x509.ParseCertificate(e.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := x509.MarshalPKIXPublicKey(cert.PublicKey)
		if first, ok := seen[string(pub)]; ok {
			t.Fatalf("epochs %d and %d escrow the same device key pair", first, e.Epoch)
		}
		seen[string(pub)] = e.Epoch
	}
	a, ok, _ := f.cfg.Pool.LastAudit(info.ChipID)
	if !ok || a.Outcome != OutcomeConsumed || a.KeyID == escrowed {
		t.Fatalf("pool audit %+v: want epoch 3's own key consumed, not key %s again", a, escrowed)
	}
	if s, _ := f.cfg.Pool.Status(); s.Consumed != 2 || s.Reserved != 0 || s.Destroyed != 0 {
		t.Fatalf("pool %+v, want both pool keys consumed", s)
	}
}

// TestAPoolKeyEscrowedWithoutAJournalIsNotReused: a run escrows a pool
// key and dies before consuming it, and its journal is out of reach (the
// pool went to another station, or the journal was lost). The chip's next
// provisioning must not escrow that key under a second epoch: the station
// finds it in the ledger, consumes it and takes another.
func TestAPoolKeyEscrowedWithoutAJournalIsNotReused(t *testing.T) {
	f := newStationFixture(t, true)
	ctx := context.Background()
	dev, info, escrowed := f.escrowAndCrash(imeiN(45))
	f.restoreLatest(dev)

	// Another station, with its own journal, is given the pool.
	j2, err := OpenJournal(filepath.Join(f.dir, "journal-station-2.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	cfg := f.cfg
	cfg.Journal = j2
	st2, _ := NewStation(cfg)
	res, err := st2.Provision(ctx, dev, nil)
	if err != nil || res.Epoch != 2 {
		t.Fatalf("re-provisioning at the station with the pool: %+v, %v; want epoch 2", res, err)
	}
	entries := f.entries(info.ChipID)
	if len(entries) != 2 {
		t.Fatalf("%d entries, want 2", len(entries))
	}
	pub := func(e *ledger.EscrowEntry) string {
		cert, err := x509.ParseCertificate(e.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(cert.PublicKey)
		return string(der)
	}
	if pub(entries[0]) == pub(entries[1]) {
		t.Fatalf("epochs 1 and 2 escrow the same device key pair (pool key %s)", escrowed)
	}
	var outcomes []string
	for r, err := range f.cfg.Pool.Audit() {
		if err != nil {
			t.Fatal(err)
		}
		outcomes = append(outcomes, fmt.Sprintf("%s %s", r.KeyID, r.Outcome))
	}
	if len(outcomes) != 2 || outcomes[0] != fmt.Sprintf("%s %s", escrowed, OutcomeConsumed) {
		t.Fatalf("pool audit %q: want key %s consumed, then epoch 2's key consumed", outcomes, escrowed)
	}
	if s, _ := f.cfg.Pool.Status(); s.Consumed != 2 || s.Reserved != 0 {
		t.Fatalf("pool %+v, want both pool keys consumed", s)
	}
}

// frontRunningLedger logs, before each escrow entry it is given, the
// entry's twin: the same entry with the station signature (r, s) replaced
// by (r, n−s), which verifies as well. It is what anyone who sees an entry
// before it is logged can do.
type frontRunningLedger struct {
	Ledger
	t testing.TB
}

func (l *frontRunningLedger) Append(ctx context.Context, leaf []byte) (*proofs.Receipt, error) {
	if kind, _ := ledger.PeekKind(leaf); kind == ledger.KindEscrow {
		twin := malleate(l.t, leaf)
		if _, err := l.Ledger.Append(ctx, twin); err != nil && connect.CodeOf(err) != connect.CodeAlreadyExists {
			l.t.Errorf("append the twin: %v", err)
		}
	}
	return l.Ledger.Append(ctx, leaf)
}

// conflictingLedger logs, before each escrow entry it is given, another
// entry of the same station, chip and epoch (provisioned a millisecond
// later, signed anew).
type conflictingLedger struct {
	Ledger
	t   testing.TB
	key *ecdsa.PrivateKey
}

func (l *conflictingLedger) Append(ctx context.Context, leaf []byte) (*proofs.Receipt, error) {
	if kind, _ := ledger.PeekKind(leaf); kind == ledger.KindEscrow {
		e, err := ledger.ParseEscrowEntry(leaf)
		if err != nil {
			l.t.Fatal(err)
		}
		e.ProvisionedAtMs++
		if err := e.Sign(rand.Reader, l.key); err != nil {
			l.t.Fatal(err)
		}
		other, _ := e.MarshalLeaf()
		if _, err := l.Ledger.Append(ctx, other); err != nil {
			l.t.Errorf("append the other entry: %v", err)
		}
	}
	return l.Ledger.Append(ctx, leaf)
}

// malleate returns leaf with its station signature (r, s) replaced by
// (r, n−s).
func malleate(t testing.TB, leaf []byte) []byte {
	t.Helper()
	e, err := ledger.ParseEscrowEntry(leaf)
	if err != nil {
		t.Fatal(err)
	}
	var sig struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(e.Signature, &sig); err != nil || len(rest) != 0 {
		t.Fatalf("parse the station signature: %v", err)
	}
	sig.S.Sub(elliptic.P256().Params().N, sig.S)
	if e.Signature, err = asn1.Marshal(sig); err != nil {
		t.Fatal(err)
	}
	twin, err := e.MarshalLeaf()
	if err != nil {
		t.Fatal(err)
	}
	return twin
}

// TestAnEntryLoggedWithItsTwinSignatureIsProvisioned: someone logs the
// twin of a station's entry (the station signature's other encoding)
// before the station's own append lands. The backup and certificate are
// in the log exactly as signed, so the provisioning goes on with the
// logged leaf: the device takes its receipt and the pool key is consumed,
// not destroyed as for a refused entry.
func TestAnEntryLoggedWithItsTwinSignatureIsProvisioned(t *testing.T) {
	f := newStationFixture(t, true)
	ctx := context.Background()
	cfg := f.cfg
	cfg.Ledger = &frontRunningLedger{Ledger: f.cfg.Ledger, t: t}
	st, _ := NewStation(cfg)
	dev := f.newDevice(imeiN(46))
	res, err := st.Provision(ctx, dev, nil)
	if err != nil {
		t.Fatalf("provision with the twin logged first: %v", err)
	}
	info, _ := dev.ChipInfo(ctx)
	if res.Epoch != 1 || info.Epoch != 1 || !info.HasReceipt {
		t.Fatalf("result %+v, device %+v: want epoch 1 installed with its receipt", res, info)
	}
	entries := f.entries(info.ChipID)
	if len(entries) != 1 {
		t.Fatalf("%d entries, want 1", len(entries))
	}
	logged, _ := entries[0].MarshalLeaf()
	rec, err := f.cfg.Journal.Get(info.ChipID)
	if err != nil || rec.Step != StepDone || !bytes.Equal(rec.Leaf, logged) {
		t.Fatalf("journal %+v, %v: want done with the logged leaf", rec, err)
	}
	if s, _ := f.cfg.Pool.Status(); s.Consumed != 1 || s.Destroyed != 0 || s.Reserved != 0 {
		t.Fatalf("pool %+v, want the key consumed", s)
	}

	// An entry of another content in the epoch is still refused for good.
	other := f.newDevice(imeiN(47))
	cfg.Ledger = &conflictingLedger{Ledger: f.cfg.Ledger, t: t, key: f.cfg.Key}
	st2, _ := NewStation(cfg)
	if _, err := st2.Provision(ctx, other, nil); !errors.Is(err, ErrLedgerRejected) {
		t.Fatalf("provision with another entry in the epoch: err = %v, want ErrLedgerRejected", err)
	}
}

// receiptRefusingDevice is a device that goes away after its certificate:
// it never takes the receipt.
type receiptRefusingDevice struct{ device.Conn }

func (receiptRefusingDevice) StoreReceipt(context.Context, []byte) error {
	return errors.New("device unplugged")
}

// TestThePoolKeyIsConsumedOnceTheReceiptVerifies: the pool key is deleted
// as soon as the entry is in the ledger and its receipt verified (DESIGN.md
// §5 step 7), not when the device stores the receipt: a device that never
// comes back for it must not keep a key reserved in the pool for good. A
// rerun with the device still finishes the provisioning.
func TestThePoolKeyIsConsumedOnceTheReceiptVerifies(t *testing.T) {
	f := newStationFixture(t, true)
	ctx := context.Background()
	dev := f.newDevice(imeiN(45))
	if _, err := f.station.Provision(ctx, receiptRefusingDevice{dev}, nil); !errors.Is(err, ErrDeviceRejected) {
		t.Fatalf("err = %v, want ErrDeviceRejected", err)
	}
	info, _ := dev.ChipInfo(ctx)
	if rec, _ := f.cfg.Journal.Get(info.ChipID); rec == nil || rec.Step != StepAppended {
		t.Fatalf("journal %+v, want appended", rec)
	}
	if id, ok, _ := f.cfg.Pool.Reservation(info.ChipID); ok {
		t.Fatalf("key %s stays reserved for a chip whose entry is in the ledger", id)
	}
	if a, ok, _ := f.cfg.Pool.LastAudit(info.ChipID); !ok || a.Outcome != OutcomeConsumed {
		t.Fatalf("pool audit %+v, want the key consumed", a)
	}

	res, err := f.station.Provision(ctx, dev, nil)
	if err != nil || !res.Resumed || res.Epoch != 1 {
		t.Fatalf("rerun with the device: %+v, %v", res, err)
	}
	if info, _ := dev.ChipInfo(ctx); info.Epoch != 1 || !info.HasReceipt {
		t.Fatalf("device after the rerun: %+v", info)
	}
	if s, _ := f.cfg.Pool.Status(); s.Consumed != 1 || s.Reserved != 0 || s.Destroyed != 0 {
		t.Fatalf("pool %+v, want the one key consumed once", s)
	}
}

// parkedDevice holds its first StorePackage until release is closed,
// telling parked when it is there.
type parkedDevice struct {
	device.Conn
	parked, release chan struct{}
	once            sync.Once
}

func (d *parkedDevice) StorePackage(ctx context.Context, pkg []byte) ([]byte, error) {
	first := false
	d.once.Do(func() { first = true })
	if first {
		close(d.parked)
		<-d.release
	}
	return d.Conn.StorePackage(ctx, pkg)
}

// TestAChipIsProvisionedByOneRunAtATime: while a provisioning of a chip is
// in flight (the same device given twice to one batch, say), a second one
// is refused. Otherwise both would take the chip's one reserved key and
// its journal record, and the loser's failure would overwrite the winner's
// record.
func TestAChipIsProvisionedByOneRunAtATime(t *testing.T) {
	f := newStationFixture(t, true)
	ctx := context.Background()
	dev := &parkedDevice{Conn: f.newDevice(imeiN(46)), parked: make(chan struct{}), release: make(chan struct{})}
	type outcome struct {
		res *Result
		err error
	}
	first := make(chan outcome)
	go func() {
		res, err := f.station.Provision(ctx, dev, nil)
		first <- outcome{res, err}
	}()
	<-dev.parked
	_, err := f.station.Provision(ctx, dev, nil)
	close(dev.release)
	if !errors.Is(err, ErrChipBusy) {
		t.Errorf("a second provisioning while the first is in flight: err = %v, want ErrChipBusy", err)
	}
	if o := <-first; o.err != nil || o.res.Epoch != 1 {
		t.Fatalf("the first provisioning: %+v, %v", o.res, o.err)
	}
	info, _ := dev.ChipInfo(ctx)
	if rec, _ := f.cfg.Journal.Get(info.ChipID); rec == nil || rec.Step != StepDone || rec.Epoch != 1 {
		t.Fatalf("journal %+v, want epoch 1 done", rec)
	}
	if s, _ := f.cfg.Pool.Status(); s.Consumed != 1 || s.Reserved != 0 || s.Destroyed != 0 {
		t.Fatalf("pool %+v, want one key consumed", s)
	}
	// Once it is over, the chip can be provisioned again.
	if res, err := f.station.Provision(ctx, dev, nil); err != nil || res.Epoch != 2 {
		t.Fatalf("re-provisioning after the first run ended: %+v, %v", res, err)
	}
}

func imeiN(i int) string {
	d := []byte("35209900000000")
	d[13] = byte('0' + i%10)
	d[12] = byte('0' + i/10)
	c, _ := ledger.LuhnCheckDigit(string(d))
	return string(append(d, c))
}

func TestProvisionFailuresLeaveNothingHalfDone(t *testing.T) {
	f := newStationFixture(t, true)
	ctx := context.Background()

	t.Run("tampered backup", func(t *testing.T) {
		dev := f.newDevice(imeiN(20))
		_, err := f.station.Provision(ctx, &faultyDevice{Conn: dev, corruptBackup: true}, nil)
		if !errors.Is(err, ErrRoundTrip) {
			t.Fatalf("err %v, want ErrRoundTrip", err)
		}
		f.checkNothingPublished(dev, OutcomeDestroyed)
	})
	t.Run("device rejects the certificate", func(t *testing.T) {
		other, err := InitCA(filepath.Join(f.dir, "other-ca"), "Other")
		if err != nil {
			t.Fatal(err)
		}
		id, _ := ledger.NewIMEI(imeiN(21))
		dev, _ := device.Manufacture(device.ManufactureOptions{Identities: ledger.Identities{id}, Trust: other.Trust(), LogVerifierKey: f.vkey})
		_, err = f.station.Provision(ctx, dev, nil)
		if !errors.Is(err, ErrDeviceRejected) {
			t.Fatalf("err %v, want ErrDeviceRejected", err)
		}
		f.checkNothingPublished(dev, OutcomeDestroyed)
	})
	t.Run("ledger rejects an unregistered station", func(t *testing.T) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := f.ca.IssueStationCertificate("unregistered", &key.PublicKey, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		cert, _ := x509.ParseCertificate(der)
		cfg := f.cfg
		cfg.Certificate, cfg.Key = cert, key
		st, _ := NewStation(cfg)
		dev := f.newDevice(imeiN(22))
		_, err := st.Provision(ctx, dev, nil)
		if !errors.Is(err, ErrLedgerRejected) || connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Fatalf("err %v, want ErrLedgerRejected with FailedPrecondition", err)
		}
		f.checkNothingPublished(dev, OutcomeDestroyed)
	})
	t.Run("ledger rejects a reused epoch", func(t *testing.T) {
		// Two copies of one device: the second still believes epoch 1 is
		// free, but the ledger already has it.
		id, _ := ledger.NewIMEI(imeiN(25))
		path := filepath.Join(f.dir, "dev25.state")
		if _, err := device.Manufacture(device.ManufactureOptions{Identities: ledger.Identities{id}, Trust: f.ca.Trust(), LogVerifierKey: f.vkey, StatePath: path}); err != nil {
			t.Fatal(err)
		}
		copyPath := filepath.Join(f.dir, "dev25-copy.state")
		b, _ := os.ReadFile(path)
		os.WriteFile(copyPath, b, 0o600)
		first, _ := device.Load(path, device.LoadOptions{})
		if _, err := f.station.Provision(ctx, first, nil); err != nil {
			t.Fatal(err)
		}
		clone, err := device.Load(copyPath, device.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// A fresh journal, as a second station would have.
		j, _ := OpenJournal(filepath.Join(f.dir, "journal2.db"))
		defer j.Close()
		cfg := f.cfg
		cfg.Journal = j
		st, _ := NewStation(cfg)
		_, err = st.Provision(ctx, clone, nil)
		if !errors.Is(err, ErrLedgerRejected) || connect.CodeOf(err) != connect.CodeAlreadyExists {
			t.Fatalf("err %v, want ErrLedgerRejected with AlreadyExists", err)
		}
		info, _ := clone.ChipInfo(ctx)
		if n := len(f.entries(info.ChipID)); n != 1 {
			t.Fatalf("%d entries, want the first provisioning's only", n)
		}
		if a, ok, _ := f.cfg.Pool.LastAudit(info.ChipID); !ok || a.Outcome != OutcomeDestroyed {
			t.Fatalf("pool audit %+v: the rejected key must be destroyed, not handed on", a)
		}
	})
	t.Run("identities that are not the device's", func(t *testing.T) {
		dev := f.newDevice(imeiN(23))
		other, _ := ledger.NewIMEI(imeiN(24))
		if _, err := f.station.Provision(ctx, dev, ledger.Identities{other}); !errors.Is(err, ErrIdentityMismatch) {
			t.Fatalf("err %v, want ErrIdentityMismatch", err)
		}
	})
	t.Run("an invalid IMEI is refused before the device is touched", func(t *testing.T) {
		bad := ledger.Identities{{Type: ledger.IdentityIMEI, Value: "4901542032375"}}
		if _, err := f.station.Provision(ctx, nil, bad); !errors.Is(err, ledger.ErrInvalidIdentity) {
			t.Fatalf("err %v, want ErrInvalidIdentity", err)
		}
		if _, err := ledger.ParseIdentity("imei:490154203237517"); !errors.Is(err, ledger.ErrInvalidIdentity) {
			t.Fatalf("a wrong Luhn digit parsed: %v", err)
		}
	})
	t.Run("an empty pool", func(t *testing.T) {
		for i := 30; ; i++ {
			_, err := f.station.Provision(ctx, f.newDevice(imeiN(i)), nil)
			if errors.Is(err, ErrPoolEmpty) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if i > 50 {
				t.Fatal("the pool never ran out")
			}
		}
	})
}

// TestStationChecksTheBackupsLabel: the backup is published for good, so
// the station reads its header itself: a device that labels it with
// another epoch (its header is authenticated only when the chip opens it)
// and vouches for it in the round trip publishes nothing.
func TestStationChecksTheBackupsLabel(t *testing.T) {
	f := newStationFixture(t, false)
	dev := f.newDevice(imeiN(26))
	_, err := f.station.Provision(context.Background(), &lyingDevice{faultyDevice{Conn: dev, mislabelBackup: true}}, nil)
	if !errors.Is(err, ErrRoundTrip) {
		t.Fatalf("err %v, want ErrRoundTrip", err)
	}
	info, _ := dev.ChipInfo(context.Background())
	if n := len(f.entries(info.ChipID)); n != 0 || info.HasKeys {
		t.Fatalf("after the refusal: %d entries, device has keys %v; want none", n, info.HasKeys)
	}
}

// checkNothingPublished checks that a failed provisioning left no entry,
// no keys in the device, and destroyed (not freed) its pool key.
func (f *stationFixture) checkNothingPublished(dev *device.Device, outcome Outcome) {
	f.t.Helper()
	info, _ := dev.ChipInfo(context.Background())
	if n := len(f.entries(info.ChipID)); n != 0 {
		f.t.Fatalf("%d entries published for a failed provisioning", n)
	}
	if info.HasKeys || info.Epoch != 0 {
		f.t.Fatalf("device installed keys: %+v", info)
	}
	if _, ok, _ := f.cfg.Pool.Reservation(info.ChipID); ok {
		f.t.Fatal("the pool key is still reserved")
	}
	if a, ok, _ := f.cfg.Pool.LastAudit(info.ChipID); !ok || a.Outcome != outcome {
		f.t.Fatalf("pool audit %+v, want %s", a, outcome)
	}
	if rec, _ := f.cfg.Journal.Get(info.ChipID); rec == nil || rec.Step != StepFailed {
		f.t.Fatalf("journal %+v, want failed", rec)
	}
}

// TestAFinishedProvisioningIsNeverJournaledAsFailed checks that a failure
// to journal the last step, done, after the entry is in the ledger and the
// receipt in the device, does not record the provisioning as failed (it is
// not: a rerun finishes it).
func TestAFinishedProvisioningIsNeverJournaledAsFailed(t *testing.T) {
	f := newStationFixture(t, true)
	dev := f.newDevice(imeiN(40))
	injected := errors.New("injected journal fault")
	f.cfg.Journal.putFault = func(rec *JournalRecord) error {
		if rec.Step == StepDone {
			return injected
		}
		return nil
	}
	_, err := f.station.Provision(context.Background(), dev, nil)
	f.cfg.Journal.putFault = nil
	if !errors.Is(err, injected) {
		t.Fatalf("provision with the done step unjournaled: %v", err)
	}
	info, _ := dev.ChipInfo(context.Background())
	rec, err := f.cfg.Journal.Get(info.ChipID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Step != StepAppended {
		t.Fatalf("journal says %q (%s), want %q: the entry is in the ledger and the device has its receipt", rec.Step, rec.Error, StepAppended)
	}
	res, err := f.station.Provision(context.Background(), dev, nil)
	if err != nil || !res.Resumed || res.Epoch != 1 {
		t.Fatalf("rerun: %+v, %v; want the epoch-1 provisioning finished", res, err)
	}
	if rec, _ := f.cfg.Journal.Get(info.ChipID); rec.Step != StepDone {
		t.Fatalf("after the rerun the journal says %q", rec.Step)
	}
}

// slowInfoDevice holds its first ChipInfo answer, read from the device,
// until release is closed, telling read when it has it: a reply that was
// on its way while another run provisioned the chip.
type slowInfoDevice struct {
	device.Conn
	read, release chan struct{}
	once          sync.Once
}

func (d *slowInfoDevice) ChipInfo(ctx context.Context) (*device.Info, error) {
	info, err := d.Conn.ChipInfo(ctx)
	first := false
	d.once.Do(func() { first = true })
	if first {
		close(d.read)
		<-d.release
	}
	return info, err
}

// TestAChipInfoReadBeforeAnotherRunEndedIsNotActedOn: a run that read the
// device while another run of the chip was about to finish claims the chip
// once that one is over. It must provision from the device as it is then,
// not from the epoch it read before, or it stores a package of the epoch
// just escrowed, fails, and journals the finished provisioning as failed.
func TestAChipInfoReadBeforeAnotherRunEndedIsNotActedOn(t *testing.T) {
	f := newStationFixture(t, true)
	ctx := context.Background()
	dev := f.newDevice(imeiN(47))
	slow := &slowInfoDevice{Conn: dev, read: make(chan struct{}), release: make(chan struct{})}
	type outcome struct {
		res *Result
		err error
	}
	second := make(chan outcome)
	go func() {
		res, err := f.station.Provision(ctx, slow, nil)
		second <- outcome{res, err}
	}()
	<-slow.read // it read epoch 0
	if res, err := f.station.Provision(ctx, dev, nil); err != nil || res.Epoch != 1 {
		t.Fatalf("the first run: %+v, %v", res, err)
	}
	close(slow.release)
	o := <-second
	info, _ := dev.ChipInfo(ctx)
	if o.err != nil || o.res.Epoch != 2 || info.Epoch != 2 {
		t.Errorf("the second run, after the first ended: %+v, %v (device at epoch %d); want epoch 2 provisioned", o.res, o.err, info.Epoch)
	}
	if rec, _ := f.cfg.Journal.Get(info.ChipID); rec == nil || rec.Step != StepDone {
		t.Errorf("journal %+v, want done", rec)
	}
	if s, _ := f.cfg.Pool.Status(); s.Destroyed != 0 {
		t.Errorf("pool %+v: a key was destroyed for a provisioning that never needed to fail", s)
	}
}

// TestADeviceListedTwiceInABatchIsProvisionedOnce: a batch that lists one
// device twice (a repeated --device) provisions it once, also when the two
// runs do not overlap (concurrency 1), instead of escrowing a second epoch
// with a second pool key.
func TestADeviceListedTwiceInABatchIsProvisionedOnce(t *testing.T) {
	f := newStationFixture(t, true)
	dev := f.newDevice(imeiN(77))
	res := f.station.ProvisionAll(context.Background(), []device.Conn{dev, dev}, 1, nil)
	info, _ := dev.ChipInfo(context.Background())
	if n := len(f.entries(info.ChipID)); n != 1 || info.Epoch != 1 {
		t.Fatalf("one device listed twice: %d escrow entries, device at epoch %d; want 1 entry", n, info.Epoch)
	}
	if res.Succeeded != 1 || res.Failed != 1 || res.Failures["device given twice"] != 1 {
		t.Fatalf("batch %+v: want 1 ok and the repeat failed as a device given twice", res)
	}
	if s, _ := f.cfg.Pool.Status(); s.Consumed != 1 || s.Reserved != 0 {
		t.Fatalf("pool %+v, want one key consumed", s)
	}
}

// TestThePoolKeyIsTheDeviceKeyAndLeavesThePool covers claims 7 and 15
// (seed-claims.txt, the pool alternative) and 1 and 25 end to end: the key pair the device receives in its
// data package is the one drawn from the pre-generated pool, the published
// certificate certifies it, the published backup names this chip and opens
// (on this chip) to the package holding it, and the key is gone from the
// pool once the backup has been received and escrowed.
func TestThePoolKeyIsTheDeviceKeyAndLeavesThePool(t *testing.T) {
	f := newStationFixture(t, true)
	ctx := context.Background()
	dev := f.newDevice(imeiN(78))
	info, _ := dev.ChipInfo(ctx)
	id, poolKey, err := f.cfg.Pool.Reserve(info.ChipID) // what the station will draw
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.station.Provision(ctx, dev, nil); err != nil {
		t.Fatal(err)
	}
	st, _ := dev.Status(ctx)
	if st.Keys == nil || st.Keys.KeyOrigin != device.KeyFromPool {
		t.Fatalf("device keys %+v, want key origin pool", st.Keys)
	}
	spki, _ := x509.MarshalPKIXPublicKey(&poolKey.PublicKey)
	if !bytes.Equal(st.Keys.DevicePublicKey, spki) {
		t.Fatal("the device key pair is not the pool key reserved for the chip")
	}
	e := f.entries(info.ChipID)[0]
	cert, _ := x509.ParseCertificate(e.Certificate)
	if pub, _ := x509.MarshalPKIXPublicKey(cert.PublicKey); !bytes.Equal(pub, spki) {
		t.Fatal("the published certificate does not certify the pool key")
	}
	h, _, err := device.ParseBackupHeader(e.Backup)
	if err != nil || !h.ChipID.Equal(e.ChipID) || !h.Identities.Equal(e.Identities) {
		t.Fatalf("published backup header %+v, %v", h, err)
	}
	if _, ok, _ := f.cfg.Pool.Reservation(info.ChipID); ok {
		t.Fatal("the pool key is still in the pool after the backup was received and escrowed")
	}
	if a, ok, _ := f.cfg.Pool.LastAudit(info.ChipID); !ok || a.KeyID != id || a.Outcome != OutcomeConsumed {
		t.Fatalf("pool audit %+v", a)
	}
	// Wipe and restore from the public entry: only this chip opens it.
	if err := dev.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	hist := f.lookup(info.ChipID)
	if err := dev.RestoreBackup(ctx, e.Backup, e.Certificate, nil, hist.LookupProof); err != nil {
		t.Fatal(err)
	}
	k, _ := dev.Keys()
	pk, _ := k.PrivateKey()
	if !pk.Equal(poolKey) {
		t.Fatal("the restored package does not hold the pool key")
	}
}

// TestAnInterruptedBatchAccountsForEveryDevice: a batch whose context ends
// counts the devices it never began with, and a step cut short by the
// interruption is counted as cancelled, not as the step's own failure.
func TestAnInterruptedBatchAccountsForEveryDevice(t *testing.T) {
	f := newStationFixture(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	devs := []device.Conn{f.newDevice(imeiN(91)), f.newDevice(imeiN(92)), f.newDevice(imeiN(93))}
	res := f.station.ProvisionAll(ctx, devs, 1, nil)
	if res.Succeeded+res.Failed+res.NotStarted != len(devs) || res.NotStarted == 0 {
		t.Fatalf("interrupted batch %+v: want every device counted, the unstarted ones as not started", res)
	}
	err := fmt.Errorf("%w: receipt: %w", ErrDeviceRejected, context.Canceled)
	if got := failureCause(err); got != "cancelled" {
		t.Fatalf("failure cause of an interrupted device step: %q, want cancelled", got)
	}
}
