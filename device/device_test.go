package device

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"slices"
	"testing"
	"time"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

var ctx = context.Background()

func TestNewDeviceHasNoKeysAndEpochZero(t *testing.T) {
	d := newFixture(t).manufacture()
	in := info(t, d)
	if in.Epoch != 0 || in.HasKeys || in.HasReceipt || in.PendingEpoch != 0 || len(in.ChipID) != ledger.DefaultChipIDLen {
		t.Errorf("new device: %+v", in)
	}
	_, err := d.Keys()
	wantErr(t, "Keys of a new device", err, ErrNoKeys)
}

func TestProvisioningInstallsKeysAndAdvancesEpoch(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	p := f.provision(d)

	in := info(t, d)
	if in.Epoch != 1 || !in.HasKeys || !in.HasReceipt || in.PendingEpoch != 0 {
		t.Errorf("after provisioning: %+v", in)
	}
	st, err := d.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(&p.key.PublicKey)
	k := st.Keys
	if k == nil || k.Epoch != 1 || k.KeyOrigin != KeyGenerated || !bytes.Equal(k.DevicePublicKey, spki) ||
		!bytes.Equal(k.Certificate, p.cert) || !bytes.Equal(k.Receipt, p.receipt) {
		t.Errorf("status keys: %+v", k)
	}
	ck, _ := ChannelKey(f.master, f.ids, 1)
	if !bytes.Equal(k.ChannelKeyCheck, ChannelKeyCheck(ck)) {
		t.Errorf("channel key check %x, want that of the package's channel key", k.ChannelKeyCheck)
	}
	if st.LogVerifierKey != f.signer.VerifierKey() || !bytes.Equal(st.Trust, f.pki.Trust.PEM()) {
		t.Error("status does not report the ROM")
	}
	assertKeysSignUnderCertificate(t, d, p.cert)

	// Re-provisioning: epoch 2 replaces the keys.
	p2 := f.provision(d)
	if in := info(t, d); in.Epoch != 2 || p2.epoch != 2 {
		t.Errorf("after re-provisioning: epoch %d", in.Epoch)
	}
	assertKeysSignUnderCertificate(t, d, p2.cert)
}

// assertKeysSignUnderCertificate signs with the device's key and verifies
// the signature with the certificate's key.
func assertKeysSignUnderCertificate(t *testing.T, d *Device, certDER []byte) {
	t.Helper()
	pkg, err := d.Keys()
	if err != nil {
		t.Fatal(err)
	}
	key, err := pkg.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("challenge"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(cert.PublicKey.(*ecdsa.PublicKey), digest[:], sig) {
		t.Error("the device key's signature does not verify under the certificate")
	}
}

func TestStorePackageRefusesWrongInput(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	raw, _ := f.newPackage(1)

	other := *f
	imei, _ := ledger.NewIMEI("35209900176148")
	other.ids = ledger.Identities{imei}
	otherRaw, _ := other.newPackage(1)
	_, err := d.StorePackage(ctx, otherRaw)
	wantErr(t, "package for other identities", err, ErrWrongIdentity)

	swapped := *f
	swapped.ids = ledger.Identities{f.ids[1], f.ids[0]}
	swappedRaw, _ := swapped.newPackage(1)
	_, err = d.StorePackage(ctx, swappedRaw)
	wantErr(t, "package with the identities in another order", err, ErrWrongIdentity)

	two, _ := f.newPackage(2)
	_, err = d.StorePackage(ctx, two)
	wantErr(t, "epoch 2 on a new device", err, ErrWrongEpoch)

	_, err = d.StorePackage(ctx, raw[:len(raw)-1])
	wantErr(t, "truncated package", err, ErrMalformed)

	if in := info(t, d); in.PendingEpoch != 0 {
		t.Errorf("a refused package is pending: %+v", in)
	}

	f.provision(d)
	one, _ := f.newPackage(1)
	_, err = d.StorePackage(ctx, one)
	wantErr(t, "epoch 1 again at epoch 1", err, ErrWrongEpoch)
}

func TestCheckBackupNeedsThePendingPackage(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	raw, _ := f.newPackage(1)
	wantErr(t, "no pending package", d.CheckBackup(ctx, []byte("x")), ErrNoPending)

	backup, err := d.StorePackage(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CheckBackup(ctx, backup); err != nil {
		t.Errorf("CheckBackup of the backup StorePackage returned: %v", err)
	}
	resealed, err := d.chip.Seal(f.ids, 1, raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CheckBackup(ctx, resealed); err != nil {
		t.Errorf("CheckBackup of another seal of the same package: %v", err)
	}
	otherRaw, _ := f.newPackage(1)
	other, err := d.chip.Seal(f.ids, 1, otherRaw)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "backup of another package", d.CheckBackup(ctx, other), ErrMismatch)
	otherChip := newFixture(t).manufacture()
	foreign, err := otherChip.chip.Seal(f.ids, 1, raw)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "backup of another chip", d.CheckBackup(ctx, foreign), ErrWrongChip)
	tampered := bytes.Clone(backup)
	tampered[len(tampered)-1] ^= 1
	wantErr(t, "tampered backup", d.CheckBackup(ctx, tampered), ErrDecrypt)
}

func TestStoreCertificateRefusesWrongCertificates(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	chip := info(t, d).ChipID
	raw, key := f.newPackage(1)
	wantErr(t, "no pending package", d.StoreCertificate(ctx, f.certificate(f.pki, chip, f.ids, key)), ErrNoPending)
	if _, err := d.StorePackage(ctx, raw); err != nil {
		t.Fatal(err)
	}

	otherPKI, err := testpki.New()
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey := f.newPackage(1)
	imei, _ := ledger.NewIMEI("35209900176148")
	cases := []struct {
		name string
		cert []byte
		want error
	}{
		{"from another CA", f.certificate(otherPKI, chip, f.ids, key), ErrUntrusted},
		{"for another chip", f.certificate(f.pki, ledger.ChipID(seq(1, 16)), f.ids, key), ErrWrongChip},
		{"for other identities", f.certificate(f.pki, chip, ledger.Identities{imei}, key), ErrWrongIdentity},
		{"for the first identity only", f.certificate(f.pki, chip, f.ids[:1], key), ErrWrongIdentity},
		{"for another key", f.certificate(f.pki, chip, f.ids, otherKey), ErrMismatch},
		{"not a certificate", []byte("garbage"), ErrMalformed},
		{"empty", nil, ErrMalformed},
	}
	for _, tc := range cases {
		wantErr(t, tc.name, d.StoreCertificate(ctx, tc.cert), tc.want)
	}
	if in := info(t, d); in.PendingCertified {
		t.Error("a refused certificate was stored")
	}
	if err := d.StoreCertificate(ctx, f.certificate(f.pki, chip, f.ids, key)); err != nil {
		t.Errorf("the right certificate: %v", err)
	}
	if in := info(t, d); !in.PendingCertified {
		t.Error("the certificate was not stored")
	}
}

// TestStoreCertificateToleratesAClockBehindTheStation: the station's clock
// sets the certificate's notBefore; a device whose clock is behind it (by
// seconds, or at 1970 for lack of a real-time clock) takes the certificate
// rather than refuse it as not yet valid.
func TestStoreCertificateToleratesAClockBehindTheStation(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		now  time.Time
	}{
		{"a minute behind", time.Now().Add(-2 * time.Minute)},
		{"no real-time clock", time.Unix(0, 0)},
		{"ahead", time.Now().Add(24 * time.Hour)},
	} {
		opts := f.options()
		opts.Now = func() time.Time { return tc.now }
		d, err := Manufacture(opts)
		if err != nil {
			t.Fatal(err)
		}
		raw, key := f.newPackage(1)
		if _, err := d.StorePackage(ctx, raw); err != nil {
			t.Fatal(err)
		}
		// f.certificate's notBefore is a minute ago.
		if err := d.StoreCertificate(ctx, f.certificate(f.pki, info(t, d).ChipID, f.ids, key)); err != nil {
			t.Errorf("device clock %s: %v", tc.name, err)
		}
	}
}

// pendingDevice is a device with a pending, certified package, ready for
// its receipt.
func pendingDevice(t testing.TB, f *fixture) (*Device, provisioned) {
	d := f.manufacture()
	p := provisioned{epoch: 1}
	p.pkg, p.key = f.newPackage(1)
	var err error
	if p.backup, err = d.StorePackage(ctx, p.pkg); err != nil {
		t.Fatal(err)
	}
	p.cert = f.certificate(f.pki, d.chip.ID(), f.ids, p.key)
	if err := d.StoreCertificate(ctx, p.cert); err != nil {
		t.Fatal(err)
	}
	return d, p
}

func TestStoreReceiptRefusesBadReceipts(t *testing.T) {
	f := newFixture(t)
	d, p := pendingDevice(t, f)
	chip := d.chip.ID()
	good := f.receipt(f.leaf(chip, f.ids, 1, p.cert, p.backup))

	otherLog := newFixture(t)
	otherRaw, _ := f.newPackage(1)
	otherBackup, _ := d.chip.Seal(f.ids, 1, otherRaw)
	secondCert := f.certificate(f.pki, chip, f.ids, p.key)
	otherChip := newFixture(t).manufacture()
	foreignBackup, _ := otherChip.chip.Seal(f.ids, 1, p.pkg)
	imei, _ := ledger.NewIMEI("35209900176148")
	stationReceipt := f.receipt(f.pki.StationLeaf())

	tamper := func(mod func(r *proofs.Receipt)) []byte {
		r := *good
		r.Proof = append([][32]byte(nil), good.Proof...)
		mod(&r)
		return marshalReceipt(t, &r)
	}
	cases := []struct {
		name    string
		receipt []byte
		want    error
	}{
		{"not a receipt", []byte("CLR1 garbage"), ErrMalformed},
		{"signed by another log", marshalReceipt(t, otherLog.receipt(good.Leaf)), ErrUntrusted},
		{"tampered proof", tamper(func(r *proofs.Receipt) { r.Proof[0][0] ^= 1 }), ErrUntrusted},
		{"wrong index", tamper(func(r *proofs.Receipt) { r.Index-- }), ErrUntrusted},
		{"tampered leaf", tamper(func(r *proofs.Receipt) { r.Leaf = append(bytes.Clone(r.Leaf[:len(r.Leaf)-1]), r.Leaf[len(r.Leaf)-1]^1) }), ErrUntrusted},
		{"leaf not an escrow entry", marshalReceipt(t, stationReceipt), ErrMalformed},
		{"entry for another chip", marshalReceipt(t, f.receipt(f.leaf(otherChip.chip.ID(), f.ids, 1, p.cert, foreignBackup))), ErrWrongChip},
		{"entry for other identities", marshalReceipt(t, f.receipt(f.leaf(chip, ledger.Identities{imei}, 1, p.cert, p.backup))), ErrWrongIdentity},
		{"entry of another epoch", marshalReceipt(t, f.receipt(f.leaf(chip, f.ids, 2, p.cert, p.backup))), ErrMismatch},
		{"entry with another certificate", marshalReceipt(t, f.receipt(f.leaf(chip, f.ids, 1, secondCert, p.backup))), ErrMismatch},
		{"entry with a backup of another package", marshalReceipt(t, f.receipt(f.leaf(chip, f.ids, 1, p.cert, otherBackup))), ErrMismatch},
	}
	for _, tc := range cases {
		wantErr(t, tc.name, d.StoreReceipt(ctx, tc.receipt), tc.want)
	}
	if in := info(t, d); in.Epoch != 0 || in.HasKeys || in.PendingEpoch != 1 || !in.PendingCertified {
		t.Errorf("refused receipts changed the device: %+v", in)
	}
	if err := d.StoreReceipt(ctx, marshalReceipt(t, good)); err != nil {
		t.Fatalf("the good receipt: %v", err)
	}
	if in := info(t, d); in.Epoch != 1 || !in.HasKeys {
		t.Errorf("after the good receipt: %+v", in)
	}
}

func TestStoreReceiptNeedsTheCertificateFirst(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	wantErr(t, "no pending package", d.StoreReceipt(ctx, []byte("x")), ErrNoPending)
	raw, key := f.newPackage(1)
	backup, err := d.StorePackage(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	cert := f.certificate(f.pki, d.chip.ID(), f.ids, key)
	receipt := marshalReceipt(t, f.receipt(f.leaf(d.chip.ID(), f.ids, 1, cert, backup)))
	wantErr(t, "receipt before the certificate", d.StoreReceipt(ctx, receipt), ErrNoPending)
}

func TestStoreReceiptAcceptsAnotherSealOfThePendingPackage(t *testing.T) {
	f := newFixture(t)
	d, p := pendingDevice(t, f)
	resealed, err := d.chip.Seal(f.ids, 1, p.pkg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.StoreReceipt(ctx, marshalReceipt(t, f.receipt(f.leaf(d.chip.ID(), f.ids, 1, p.cert, resealed)))); err != nil {
		t.Errorf("receipt whose backup is another seal of the pending package: %v", err)
	}
}

func TestOperationsRespectContextCancellation(t *testing.T) {
	d := newFixture(t).manufacture()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.ChipInfo(cctx); err != context.Canceled {
		t.Errorf("ChipInfo with a cancelled context: %v", err)
	}
	if err := d.Wipe(cctx); err != context.Canceled {
		t.Errorf("Wipe with a cancelled context: %v", err)
	}
}

func TestManufactureRejectsAnIncompleteROM(t *testing.T) {
	f := newFixture(t)
	for name, mod := range map[string]func(*ManufactureOptions){
		"no identities": func(o *ManufactureOptions) { o.Identities = nil },
		"no trust":      func(o *ManufactureOptions) { o.Trust = nil },
		"bad log key":   func(o *ManufactureOptions) { o.LogVerifierKey = "not a key" },
	} {
		opts := f.options()
		mod(&opts)
		if _, err := Manufacture(opts); err == nil {
			t.Errorf("%s: Manufacture succeeded", name)
		}
	}
}

func TestConcurrentOperationsAreSerialized(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	raws := make([][]byte, 8)
	for i := range raws {
		raws[i], _ = f.newPackage(1)
	}
	errs := make(chan error, 2*len(raws))
	for _, raw := range raws {
		go func() {
			_, err := d.StorePackage(ctx, raw)
			if err == nil {
				_, err = d.Status(ctx)
			}
			errs <- err
		}()
		go func() { _, err := d.ChipInfo(ctx); errs <- err }()
	}
	for range 2 * len(raws) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	pending := d.mem.pending
	if pending == nil || !slices.ContainsFunc(raws, func(r []byte) bool { return bytes.Equal(r, pending.raw) }) {
		t.Error("the pending package is none of the stored ones")
	}
}
