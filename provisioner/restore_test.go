package provisioner

import (
	"context"
	"errors"
	"testing"

	"github.com/chipledger/chipledger/device"
)

// TestDeviceRefusesABackupOlderThanTheChipIndexNames: a provisioning that
// published epoch 2 and crashed before the device got the receipt leaves
// the device's epoch counter at 1. Its epoch-1 backup, with the lookup
// proof of the current tree (whose chip index names epoch 2), must not
// restore: the device checks the proof itself (DESIGN.md §3.7).
func TestDeviceRefusesABackupOlderThanTheChipIndexNames(t *testing.T) {
	f := newStationFixture(t, false)
	ctx := context.Background()
	dev := f.newDevice(imeiN(43))
	if _, err := f.station.Provision(ctx, dev, nil); err != nil {
		t.Fatal(err)
	}
	st1, err := dev.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dev.ChipInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old := f.entries(info.ChipID)[0]
	cl := &crashingLedger{Ledger: f.cfg.Ledger, crash: true}
	cfg := f.cfg
	cfg.Ledger = cl
	st, err := NewStation(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, crashed, err := provisionCrashing(st, dev); !crashed {
		t.Fatalf("no crash (err %v)", err)
	}
	h := f.lookup(info.ChipID)
	if n := len(h.Entries); n != 2 || h.Index.Value.Epoch != 2 {
		t.Fatalf("%d entries, index epoch %d; want epoch 2 published", n, h.Index.Value.Epoch)
	}
	if in, _ := dev.ChipInfo(ctx); in.Epoch != 1 {
		t.Fatalf("epoch counter %d, want 1: the device never got epoch 2's receipt", in.Epoch)
	}
	if err := dev.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	err = dev.RestoreBackup(ctx, old.Backup, old.Certificate, st1.Keys.Receipt, h.LookupProof)
	if !errors.Is(err, device.ErrRollback) {
		t.Fatalf("restoring epoch 1 although the chip index in the ledger names epoch 2 as latest: %v, want ErrRollback", err)
	}
	if in, _ := dev.ChipInfo(ctx); in.HasKeys {
		t.Fatal("the refused restore installed keys")
	}
	// The latest entry restores, with the same proof.
	latest := h.Latest().Entry
	if err := dev.RestoreBackup(ctx, latest.Backup, latest.Certificate, nil, h.LookupProof); err != nil {
		t.Fatalf("the latest backup does not restore: %v", err)
	}
	if in, _ := dev.ChipInfo(ctx); !in.HasKeys || in.Epoch != 2 {
		t.Fatalf("after restoring the latest: %+v", in)
	}
}
