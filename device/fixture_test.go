package device

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

var sharedPKI = sync.OnceValues(testpki.New)

// fixture is the world around a device under test: a manufacturer PKI, a
// log (a ledger.Store and its signer) and a station's master key. It plays
// the station's part of the handshake by hand.
type fixture struct {
	t      testing.TB
	pki    *testpki.PKI
	ids    ledger.Identities
	signer *ledger.LogSigner
	store  *ledger.Store
	master []byte
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	skey, _, err := ledger.GenerateLogKey("device-test.chipledger.example/log")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ledger.NewLogSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	store, err := ledger.Open(t.TempDir(), ledger.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	// A first leaf, so that escrow leaves have non-empty inclusion proofs.
	// The log is indexed (DESIGN.md §3.7): every batch ends with an
	// index-root leaf, so lookup proofs can be made at every size.
	if _, err := store.AppendIndexed([][]byte{pki.StationLeaf()}, nil); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, pki: pki, ids: testIdentities(t), signer: signer, store: store, master: seq(0x80, 32)}
}

// manufacture makes a device in memory with the fixture's identities,
// trust and log key.
func (f *fixture) manufacture() *Device {
	f.t.Helper()
	d, err := Manufacture(f.options())
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

func (f *fixture) options() ManufactureOptions {
	return ManufactureOptions{Identities: f.ids, Trust: f.pki.Trust, LogVerifierKey: f.signer.VerifierKey()}
}

// newPackage makes a package for epoch with a fresh device key.
func (f *fixture) newPackage(epoch uint32) (raw []byte, key *ecdsa.PrivateKey) {
	f.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	ck, err := ChannelKey(f.master, f.ids, 1)
	if err != nil {
		f.t.Fatal(err)
	}
	p, err := NewPackage(f.ids, epoch, 1, ck, key, KeyGenerated)
	if err != nil {
		f.t.Fatal(err)
	}
	raw, err = p.MarshalBinary()
	if err != nil {
		f.t.Fatal(err)
	}
	return raw, key
}

// certificate issues a device certificate for chip, ids and key by the
// device CA of pki.
func (f *fixture) certificate(pki *testpki.PKI, chip ledger.ChipID, ids ledger.Identities, key *ecdsa.PrivateKey) []byte {
	f.t.Helper()
	tmpl, err := ledger.DeviceCertificateTemplate(testpki.Manufacturer, chip, ids, time.Now().Add(-time.Minute), rand.Reader)
	if err != nil {
		f.t.Fatal(err)
	}
	der, err := ledger.IssueDeviceCertificate(rand.Reader, tmpl, &key.PublicKey, pki.DeviceCA, pki.DeviceCAKey)
	if err != nil {
		f.t.Fatal(err)
	}
	return der
}

// leaf returns a signed escrow leaf.
func (f *fixture) leaf(chip ledger.ChipID, ids ledger.Identities, epoch uint32, cert, backup []byte) []byte {
	f.t.Helper()
	e := &ledger.EscrowEntry{
		ChipID:          chip,
		Identities:      ids,
		Epoch:           epoch,
		Certificate:     cert,
		Backup:          backup,
		StationID:       f.pki.StationID(),
		ProvisionedAtMs: uint64(time.Now().UnixMilli()),
	}
	if err := e.Sign(rand.Reader, f.pki.StationKey); err != nil {
		f.t.Fatal(err)
	}
	leaf, err := e.MarshalLeaf()
	if err != nil {
		f.t.Fatal(err)
	}
	return leaf
}

// receipt appends leaf to the log (with the index-root leaf that closes the
// batch) and returns its receipt against a checkpoint of the new size.
func (f *fixture) receipt(leaf []byte) *proofs.Receipt {
	f.t.Helper()
	res, err := f.store.AppendIndexed([][]byte{leaf}, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	proof, err := f.store.InclusionProof(res.First, res.State.Size)
	if err != nil {
		f.t.Fatal(err)
	}
	cp, err := f.signer.Sign(res.State.Size, res.State.Root)
	if err != nil {
		f.t.Fatal(err)
	}
	return &proofs.Receipt{Leaf: leaf, Index: res.First, Proof: proof, Checkpoint: cp}
}

// lookup returns the encoded lookup proof of chip at the log's current
// size, with a checkpoint signed by the fixture's log.
func (f *fixture) lookup(chip ledger.ChipID) []byte {
	f.t.Helper()
	cl, err := f.store.LookupChip(chip)
	if err != nil {
		f.t.Fatal(err)
	}
	root, err := f.store.RootAt(cl.Size)
	if err != nil {
		f.t.Fatal(err)
	}
	if cl.Proof.Checkpoint, err = f.signer.Sign(cl.Size, root); err != nil {
		f.t.Fatal(err)
	}
	b, err := cl.Proof.MarshalBinary()
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func marshalReceipt(t testing.TB, r *proofs.Receipt) []byte {
	t.Helper()
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// provisioned is what one provisioning of a device produced.
type provisioned struct {
	epoch   uint32
	pkg     []byte
	key     *ecdsa.PrivateKey
	backup  []byte
	cert    []byte
	receipt []byte
	// lookup is the chip's lookup proof right after the receipt: it names
	// this epoch as the chip's latest.
	lookup []byte
}

// provision runs the whole handshake against c (DESIGN.md §5) for the
// device's next epoch.
func (f *fixture) provision(c Conn) provisioned {
	f.t.Helper()
	ctx := context.Background()
	info, err := c.ChipInfo(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	p := provisioned{epoch: info.Epoch + 1}
	p.pkg, p.key = f.newPackage(p.epoch)
	if p.backup, err = c.StorePackage(ctx, p.pkg); err != nil {
		f.t.Fatalf("StorePackage: %v", err)
	}
	if err := c.CheckBackup(ctx, p.backup); err != nil {
		f.t.Fatalf("CheckBackup: %v", err)
	}
	p.cert = f.certificate(f.pki, info.ChipID, f.ids, p.key)
	if err := c.StoreCertificate(ctx, p.cert); err != nil {
		f.t.Fatalf("StoreCertificate: %v", err)
	}
	p.receipt = marshalReceipt(f.t, f.receipt(f.leaf(info.ChipID, f.ids, p.epoch, p.cert, p.backup)))
	p.lookup = f.lookup(info.ChipID)
	if err := c.StoreReceipt(ctx, p.receipt); err != nil {
		f.t.Fatalf("StoreReceipt: %v", err)
	}
	return p
}

// publishUnreceipted has d seal a package of epoch (its next) and appends
// the escrow entry of that backup to the log, without giving d the receipt:
// a provisioning that crashed after its append. It returns the backup and
// the certificate of the entry.
func (f *fixture) publishUnreceipted(d *Device, epoch uint32) (backup, cert []byte) {
	f.t.Helper()
	raw, key := f.newPackage(epoch)
	backup, err := d.StorePackage(context.Background(), raw)
	if err != nil {
		f.t.Fatal(err)
	}
	cert = f.certificate(f.pki, d.chip.ID(), f.ids, key)
	f.receipt(f.leaf(d.chip.ID(), f.ids, epoch, cert, backup))
	return backup, cert
}

func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: err = %v, want %v", what, err, target)
	}
}

func info(t testing.TB, c Conn) *Info {
	t.Helper()
	in, err := c.ChipInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return in
}
