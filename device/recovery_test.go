package device

import (
	"bytes"
	"strings"
	"testing"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
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

	if err := d.RestoreBackup(ctx, p.backup, p.cert, p.receipt, p.lookup); err != nil {
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
	if err := d.RestoreBackup(ctx, p.backup, p.cert, nil, p.lookup); err != nil {
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
	p2 := f.provision(d)
	// Even with the lookup proof of epoch 1's time, which the device
	// cannot tell from a current one: the epoch counter refuses it.
	err := d.RestoreBackup(ctx, p1.backup, p1.cert, nil, p1.lookup)
	wantErr(t, "restore epoch 1 at epoch 2", err, ErrRollback)
	if in := info(t, d); in.Epoch != 2 {
		t.Errorf("epoch %d after a refused rollback", in.Epoch)
	}
	// Also after a wipe: the counter survives it.
	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "restore epoch 1 at epoch 2 after a wipe", d.RestoreBackup(ctx, p1.backup, p1.cert, nil, p1.lookup), ErrRollback)
	wantErr(t, "restore epoch 1 with the lookup proof of epoch 2", d.RestoreBackup(ctx, p1.backup, p1.cert, nil, p2.lookup), ErrRollback)
}

func TestRestoreOfANewerEpochRaisesTheCounter(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	f.provision(d)
	// Epoch 2 was sealed and published, but the device never got its
	// receipt (say it was wiped and repaired elsewhere).
	backup, cert := f.publishUnreceipted(d, 2)
	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.RestoreBackup(ctx, backup, cert, nil, f.lookup(d.chip.ID())); err != nil {
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
		// The backup, certificate and receipt checks; every case has the
		// genuine lookup proof of d's epoch 1.
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
		wantErr(t, tc.name, d.RestoreBackup(ctx, tc.backup, tc.cert, tc.receipt, p.lookup), tc.want)
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

// alterLookup returns the lookup proof lookup with alter applied, encoded
// again.
func alterLookup(t *testing.T, lookup []byte, alter func(lp *proofs.LookupProof)) []byte {
	t.Helper()
	lp, err := proofs.ParseLookupProof(lookup)
	if err != nil {
		t.Fatal(err)
	}
	alter(lp)
	b, err := lp.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRestoreRefusesBadLookupProofs(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	absent := f.lookup(d.chip.ID()) // before the chip has an entry
	p := f.provision(d)
	other := f.manufacture()
	po := f.provision(other)
	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}

	// A checkpoint of the same tree signed by another key for the same
	// origin: a log the device does not trust.
	skey, _, err := ledger.GenerateLogKey("device-test.chipledger.example/log")
	if err != nil {
		t.Fatal(err)
	}
	otherSigner, err := ledger.NewLogSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	root, err := f.store.RootAt(f.store.Size())
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := otherSigner.Sign(f.store.Size(), root)
	if err != nil {
		t.Fatal(err)
	}
	receipt, err := proofs.ParseReceipt(p.receipt)
	if err != nil {
		t.Fatal(err)
	}
	later, err := proofs.ParseLookupProof(po.lookup) // at a larger size
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		lookup []byte
		want   error
	}{
		{"no lookup proof", nil, ErrMalformed},
		{"empty lookup proof", []byte{}, ErrMalformed},
		{"not a lookup proof", []byte("CLL1"), ErrMalformed},
		{"truncated lookup proof", p.lookup[:len(p.lookup)-1], ErrMalformed},
		{"lookup proof of another chip", po.lookup, ErrUntrusted},
		{"checkpoint signed by another log", alterLookup(t, p.lookup, func(lp *proofs.LookupProof) { lp.Checkpoint = foreign }), ErrUntrusted},
		{"checkpoint of another size", alterLookup(t, p.lookup, func(lp *proofs.LookupProof) { lp.Checkpoint = later.Checkpoint }), ErrUntrusted},
		{"altered index-root leaf", alterLookup(t, p.lookup, func(lp *proofs.LookupProof) { lp.IndexLeaf[30] ^= 1 }), ErrUntrusted},
		{"altered map proof", alterLookup(t, p.lookup, func(lp *proofs.LookupProof) { lp.Map.Value.Epoch = 2 }), ErrUntrusted},
		{"altered entry inclusion proof", alterLookup(t, p.lookup, func(lp *proofs.LookupProof) { lp.EntryProof[0][0] ^= 1 }), ErrUntrusted},
		{"another leaf as the entry", alterLookup(t, p.lookup, func(lp *proofs.LookupProof) { lp.Entry = receipt.Leaf[:len(receipt.Leaf)-1] }), ErrUntrusted},
		{"chip index without the chip", absent, ErrMismatch},
	}
	for _, tc := range cases {
		wantErr(t, tc.name, d.RestoreBackup(ctx, p.backup, p.cert, p.receipt, tc.lookup), tc.want)
	}
	if in := info(t, d); in.HasKeys {
		t.Error("a refused restore installed keys")
	}
	if err := d.RestoreBackup(ctx, p.backup, p.cert, p.receipt, p.lookup); err != nil {
		t.Fatalf("the genuine lookup proof: %v", err)
	}
}

// TestRestoreRefusesABackupOlderThanTheChipIndexNames is the attack of
// DESIGN.md §3.7 on the device itself: a provisioning published epoch 2
// and crashed before the device got the receipt, so the epoch counter is
// still 1, and a server hands the wiped device the epoch-1 backup.
func TestRestoreRefusesABackupOlderThanTheChipIndexNames(t *testing.T) {
	f := newFixture(t)
	d := f.manufacture()
	p1 := f.provision(d)
	backup2, cert2 := f.publishUnreceipted(d, 2)
	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	if in := info(t, d); in.Epoch != 1 {
		t.Fatalf("epoch counter %d, want 1 (epoch 2 never installed)", in.Epoch)
	}
	lookup := f.lookup(d.chip.ID())
	for _, receipt := range [][]byte{nil, p1.receipt} {
		err := d.RestoreBackup(ctx, p1.backup, p1.cert, receipt, lookup)
		wantErr(t, "restore epoch 1 when the chip index names epoch 2", err, ErrRollback)
		if err != nil && !strings.Contains(err.Error(), "chip index") {
			t.Errorf("the refusal does not say the chip index named a newer epoch: %v", err)
		}
	}
	if in := info(t, d); in.HasKeys || in.Epoch != 1 {
		t.Fatalf("after the refused restores: %+v", in)
	}
	// A lookup proof names the newest epoch, so it cannot vouch for an
	// older backup: epoch 2 is refused with epoch 1's proof...
	wantErr(t, "restore epoch 2 with the lookup proof of epoch 1", d.RestoreBackup(ctx, backup2, cert2, nil, p1.lookup), ErrMismatch)
	// ...and restored with the current one.
	if err := d.RestoreBackup(ctx, backup2, cert2, nil, lookup); err != nil {
		t.Fatal(err)
	}
	if in := info(t, d); !in.HasKeys || in.Epoch != 2 {
		t.Errorf("after restoring epoch 2: %+v", in)
	}
}

// TestRestoreRefusesALookupWhoseEntryIsNotTheBackups publishes, as the
// chip's epoch 1, an entry that is not the one of the backup restored: the
// lookup proof verifies, and the device compares its entry with the backup
// and certificate it is handed, as it compares a receipt's.
func TestRestoreRefusesALookupWhoseEntryIsNotTheBackups(t *testing.T) {
	f := newFixture(t)
	imei, err := ledger.NewIMEI("35209900176148")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		// leaf returns the published entry, given the device, its backup
		// and certificate.
		leaf func(d *Device, backup, cert []byte) []byte
		want error
	}{
		{"entry with another certificate", func(d *Device, backup, _ []byte) []byte {
			_, key := f.newPackage(1)
			return f.leaf(d.chip.ID(), f.ids, 1, f.certificate(f.pki, d.chip.ID(), f.ids, key), backup)
		}, ErrMismatch},
		{"entry with a backup of another package", func(d *Device, _, cert []byte) []byte {
			raw, _ := f.newPackage(1)
			other, err := d.chip.Seal(f.ids, 1, raw)
			if err != nil {
				t.Fatal(err)
			}
			return f.leaf(d.chip.ID(), f.ids, 1, cert, other)
		}, ErrMismatch},
		{"entry for other identities", func(d *Device, backup, cert []byte) []byte {
			return f.leaf(d.chip.ID(), ledger.Identities{imei}, 1, cert, backup)
		}, ErrWrongIdentity},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := f.manufacture()
			raw, key := f.newPackage(1)
			backup, err := d.StorePackage(ctx, raw)
			if err != nil {
				t.Fatal(err)
			}
			cert := f.certificate(f.pki, d.chip.ID(), f.ids, key)
			f.receipt(tc.leaf(d, backup, cert))
			if err := d.Wipe(ctx); err != nil {
				t.Fatal(err)
			}
			wantErr(t, "restore", d.RestoreBackup(ctx, backup, cert, nil, f.lookup(d.chip.ID())), tc.want)
			if in := info(t, d); in.HasKeys {
				t.Error("a refused restore installed keys")
			}
		})
	}
}

// TestRestoreRefusesAReceiptOfAnotherLeafThanTheLookups hands a receipt
// that would pass on its own (its entry holds another seal of the same
// package) but is not of the leaf the chip index names.
func TestRestoreRefusesAReceiptOfAnotherLeafThanTheLookups(t *testing.T) {
	f := newFixture(t)
	d, p := pendingDevice(t, f)
	chip := d.chip.ID()
	r1 := marshalReceipt(t, f.receipt(f.leaf(chip, f.ids, 1, p.cert, p.backup)))
	lookup := f.lookup(chip)
	resealed, err := d.chip.Seal(f.ids, 1, p.pkg)
	if err != nil {
		t.Fatal(err)
	}
	r2 := marshalReceipt(t, f.receipt(f.leaf(chip, f.ids, 1, p.cert, resealed)))
	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "a receipt of another leaf", d.RestoreBackup(ctx, p.backup, p.cert, r2, lookup), ErrMismatch)
	if in := info(t, d); in.HasKeys {
		t.Error("a refused restore installed keys")
	}
	if err := d.RestoreBackup(ctx, p.backup, p.cert, r1, lookup); err != nil {
		t.Fatalf("the receipt of the leaf the lookup proof names: %v", err)
	}
}
