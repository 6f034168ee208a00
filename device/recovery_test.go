package device

import (
	"bytes"
	"testing"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
)

func TestRestoreAfterWipeRecoversTheSameKeys(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	p := f.provision(d)
	before, err := d.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	if in := info(t, d); in.HasKeys || in.HasReceipt || in.Epoch != 1 {
		t.Errorf("after Wipe: %+v, want no keys and epoch 1", in)
	}

	if err := d.RestoreBackup(ctx, p.backup, p.cert, p.receipt); err != nil {
		t.Fatalf("restore the same epoch after a wipe: %v", err)
	}
	after, err := d.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after.Keys.DevicePublicKey, before.Keys.DevicePublicKey) ||
		!bytes.Equal(after.Keys.ChannelKeyCheck, before.Keys.ChannelKeyCheck) ||
		!bytes.Equal(after.Keys.Receipt, p.receipt) || after.Epoch != 1 {
		t.Errorf("restored keys differ: before %+v, after %+v", before.Keys, after.Keys)
	}
	pkg, _ := d.Keys()
	raw, _ := pkg.MarshalBinary()
	if !bytes.Equal(raw, p.pkg) {
		t.Error("the restored package is not the provisioned one")
	}
	assertKeysSignUnderCertificate(t, d, p.cert)
}

func TestRestoreWithoutReceipt(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	p := f.provision(d)
	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.RestoreBackup(ctx, p.backup, p.cert, nil); err != nil {
		t.Fatal(err)
	}
	if in := info(t, d); !in.HasKeys || in.HasReceipt {
		t.Errorf("after a restore without receipt: %+v", in)
	}
}

func TestRestoreRefusesAnOlderBackup(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	p1 := f.provision(d)
	f.provision(d)
	err := d.RestoreBackup(ctx, p1.backup, p1.cert, nil)
	wantErr(t, "restore epoch 1 at epoch 2", err, ErrRollback)
	if in := info(t, d); in.Epoch != 2 {
		t.Errorf("epoch %d after a refused rollback", in.Epoch)
	}
	// Also after a wipe: the counter survives it.
	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "restore epoch 1 at epoch 2 after a wipe", d.RestoreBackup(ctx, p1.backup, p1.cert, nil), ErrRollback)
}

func TestRestoreOfANewerEpochRaisesTheCounter(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	f.provision(d)
	// Epoch 2 was sealed and published, but the device never got its
	// receipt (say it was wiped and repaired elsewhere).
	raw, key := f.newPackage(2)
	backup, err := d.StorePackage(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.RestoreBackup(ctx, backup, f.certificate(f.pki, d.chip.ID(), f.ids, key), nil); err != nil {
		t.Fatal(err)
	}
	if in := info(t, d); in.Epoch != 2 || !in.HasKeys {
		t.Errorf("after restoring epoch 2: %+v", in)
	}
}

func TestRestoreRefusesWrongBackupsAndCertificates(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	p := f.provision(d)
	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	other := f.manufacture()
	po := f.provision(other)
	imei, _ := ledger.NewIMEI("35209900176148")
	otherIDs, _ := d.chip.Seal(ledger.Identities{imei}, 1, p.pkg)
	_, otherKey := f.newPackage(1)
	otherPKI, err := testpki.New()
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(p.backup)
	tampered[len(tampered)-5] ^= 1
	badReceipt := bytes.Clone(p.receipt)
	badReceipt[len(badReceipt)-20] ^= 1 // inside the checkpoint signature

	cases := []struct {
		name                  string
		backup, cert, receipt []byte
		want                  error
	}{
		{"backup of another chip", po.backup, po.cert, nil, ErrWrongChip},
		{"tampered backup", tampered, p.cert, nil, ErrDecrypt},
		{"backup for other identities", otherIDs, p.cert, nil, ErrWrongIdentity},
		{"not a backup", []byte("CLB1"), p.cert, nil, ErrMalformed},
		{"certificate of another chip", p.backup, po.cert, nil, ErrWrongChip},
		{"certificate of another key", p.backup, f.certificate(f.pki, d.chip.ID(), f.ids, otherKey), nil, ErrMismatch},
		{"certificate from another CA", p.backup, f.certificate(otherPKI, d.chip.ID(), f.ids, p.key), nil, ErrUntrusted},
		{"receipt of another chip", p.backup, p.cert, po.receipt, ErrWrongChip},
		{"receipt with a bad signature", p.backup, p.cert, badReceipt, ErrUntrusted},
	}
	for _, tc := range cases {
		wantErr(t, tc.name, d.RestoreBackup(ctx, tc.backup, tc.cert, tc.receipt), tc.want)
	}
	if in := info(t, d); in.HasKeys {
		t.Error("a refused restore installed keys")
	}
}

func TestWipeKeepsChipKeyCounterAndROM(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	p := f.provision(d)
	raw, _ := f.newPackage(2)
	if _, err := d.StorePackage(ctx, raw); err != nil {
		t.Fatal(err)
	}
	chip := d.chip.ID()
	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	in := info(t, d)
	if !in.ChipID.Equal(chip) || in.Epoch != 1 || in.HasKeys || in.PendingEpoch != 0 || !in.Identities.Equal(f.ids) {
		t.Errorf("after Wipe: %+v", in)
	}
	// The chip key survived: the old backup still opens.
	if _, _, plain, err := d.chip.Open(p.backup); err != nil || !bytes.Equal(plain, p.pkg) {
		t.Errorf("the chip cannot open its backup after Wipe: %v", err)
	}
	_, err := d.Keys()
	wantErr(t, "Keys after Wipe", err, ErrNoKeys)
}
