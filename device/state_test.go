package device

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func manufactureAt(t *testing.T, f *fixture, path string) *Device {
	t.Helper()
	opts := f.options()
	opts.StatePath = path
	d, err := Manufacture(opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func load(t *testing.T, path string) *Device {
	t.Helper()
	d, err := Load(path, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func statusOf(t testing.TB, d *Device) *Status {
	t.Helper()
	st, err := d.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func sameStatus(t testing.TB, what string, got, want *Status) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		t.Errorf("%s:\n got %s\nwant %s", what, g, w)
	}
}

func TestStateFileSurvivesEveryStep(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "device.json")
	d := manufactureAt(t, f, path)
	check := func(step string) {
		t.Helper()
		sameStatus(t, "reloaded after "+step, statusOf(t, load(t, path)), statusOf(t, d))
	}
	check("manufacture")

	raw, key := f.newPackage(1)
	backup, err := d.StorePackage(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	check("StorePackage")
	cert := f.certificate(f.pki, d.chip.ID(), f.ids, key)
	if err := d.StoreCertificate(ctx, cert); err != nil {
		t.Fatal(err)
	}
	check("StoreCertificate")

	// A device reloaded mid-handshake continues it, and its chip opens
	// the backup made before the reload.
	d = load(t, path)
	if err := d.CheckBackup(ctx, backup); err != nil {
		t.Fatalf("CheckBackup after reload: %v", err)
	}
	if err := d.StoreReceipt(ctx, marshalReceipt(t, f.receipt(f.leaf(d.chip.ID(), f.ids, 1, cert, backup)))); err != nil {
		t.Fatalf("StoreReceipt after reload: %v", err)
	}
	check("StoreReceipt")
	before, _ := d.Keys()

	if err := d.Wipe(ctx); err != nil {
		t.Fatal(err)
	}
	check("Wipe")
	if err := load(t, path).RestoreBackup(ctx, backup, cert, nil, f.lookup(d.chip.ID())); err != nil {
		t.Fatal(err)
	}
	after, err := load(t, path).Keys()
	if err != nil || after.ChannelKey != before.ChannelKey || !bytes.Equal(after.DeviceKey, before.DeviceKey) {
		t.Errorf("keys restored through the state file differ (%v)", err)
	}
}

func TestStateFileIsPrivateAndNeverOverwrittenByManufacture(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "device.json")
	d := manufactureAt(t, f, path)
	f.provision(d)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %04o, want 0600", fi.Mode().Perm())
	}
	before, _ := os.ReadFile(path)
	opts := f.options()
	opts.StatePath = path
	if _, err := Manufacture(opts); err == nil {
		t.Fatal("Manufacture over an existing state file succeeded")
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("a refused Manufacture changed the state file")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("the directory holds %d files, want only the state file (no temporary files left)", len(entries))
	}
}

func TestLoadIsStrict(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "device.json")
	f.provision(manufactureAt(t, f, path))
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(mod func(m map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(good, &m)
		mod(m)
		b, _ := json.Marshal(m)
		return b
	}
	cases := map[string][]byte{
		"not JSON":           []byte("device"),
		"trailing data":      append(bytes.Clone(good), []byte("{}")...),
		"unknown field":      edit(func(m map[string]any) { m["extra"] = 1 }),
		"other format":       edit(func(m map[string]any) { m["format"] = "chipledger-device-state/v2" }),
		"bad chip ID":        edit(func(m map[string]any) { m["chip_id"] = "00" }),
		"upper-case chip ID": edit(func(m map[string]any) { m["chip_id"] = strings.ToUpper(m["chip_id"].(string)) }),
		"no identities":      edit(func(m map[string]any) { m["identities"] = []string{} }),
		"14-digit IMEI text": edit(func(m map[string]any) { m["identities"] = []string{"imei:26053179311383"} }),
		"no trust":           edit(func(m map[string]any) { m["trust"] = "" }),
		"bad log key":        edit(func(m map[string]any) { m["log_verifier_key"] = "x" }),
		"short chip key":     edit(func(m map[string]any) { m["soft_chip"].(map[string]any)["key"] = "00" }),
		"upper-case chip key": edit(func(m map[string]any) {
			sc := m["soft_chip"].(map[string]any)
			sc["key"] = strings.ToUpper(sc["key"].(string))
		}),
		"no chip":        edit(func(m map[string]any) { delete(m, "soft_chip") }),
		"bad package":    edit(func(m map[string]any) { m["keys"].(map[string]any)["package"] = "AAAA" }),
		"no certificate": edit(func(m map[string]any) { delete(m["keys"].(map[string]any), "certificate") }),
		"bad receipt":    edit(func(m map[string]any) { m["keys"].(map[string]any)["receipt"] = "AAAA" }),
		// encoding/json alone lets a repeated member override the first
		// (a provisioned device would load without its keys) and matches
		// names in any case.
		"keys twice":             append(bytes.Clone(good[:bytes.LastIndexByte(good, '}')]), []byte(`, "keys": null}`)...),
		"member in another case": bytes.Replace(good, []byte(`"format"`), []byte(`"FORMAT"`), 1),
	}
	for name, data := range cases {
		p := filepath.Join(t.TempDir(), "state.json")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p, LoadOptions{}); err == nil {
			t.Errorf("%s: Load succeeded", name)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json"), LoadOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// hardwareChip stands for a chip that keeps its own state (a TPM or secure
// element): the state file must not hold it.
type hardwareChip struct{ *SoftChip }

func TestStateFileOfAHardwareChipHoldsNoChipSecret(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "device.json")
	chip := hardwareChip{newTestChip(t)}
	opts := f.options()
	opts.StatePath, opts.Chip = path, chip
	d, err := Manufacture(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.provision(d)
	data, _ := os.ReadFile(path)
	_, key, _ := chip.secret()
	if bytes.Contains(data, []byte("soft_chip")) || bytes.Contains(data, []byte(hex.EncodeToString(key[:]))) {
		t.Error("the state file of a hardware chip holds chip state")
	}
	if _, err := Load(path, LoadOptions{}); err == nil {
		t.Error("Load without the hardware chip succeeded")
	}
	if _, err := Load(path, LoadOptions{Chip: hardwareChip{newTestChip(t)}}); !errors.Is(err, ErrWrongChip) {
		t.Errorf("Load with another chip: %v, want ErrWrongChip", err)
	}
	again, err := Load(path, LoadOptions{Chip: chip})
	if err != nil {
		t.Fatal(err)
	}
	sameStatus(t, "reloaded with its chip", statusOf(t, again), statusOf(t, d))
}

func TestAFailedSaveChangesNothingAndTheStepCanBeRetried(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(t.TempDir(), "dev")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "device.json")
	d := manufactureAt(t, f, path)
	raw, key := f.newPackage(1)
	backup, err := d.StorePackage(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	cert := f.certificate(f.pki, d.chip.ID(), f.ids, key)
	if err := d.StoreCertificate(ctx, cert); err != nil {
		t.Fatal(err)
	}
	saved, _ := os.ReadFile(path)
	receipt := marshalReceipt(t, f.receipt(f.leaf(d.chip.ID(), f.ids, 1, cert, backup)))

	// The disk goes away: the receipt cannot be saved.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := d.StoreReceipt(ctx, receipt); err == nil {
		t.Fatal("StoreReceipt succeeded without a state file to write")
	}
	if in := info(t, d); in.HasKeys || in.PendingEpoch != 1 {
		t.Errorf("after a failed save: %+v, want the pending package kept", in)
	}
	// The chip's counter may have moved first (a hardware counter would
	// have); the step still completes once the disk is back.
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := d.StoreReceipt(ctx, receipt); err != nil {
		t.Fatalf("retrying StoreReceipt: %v", err)
	}
	if in := info(t, load(t, path)); !in.HasKeys || in.Epoch != 1 {
		t.Errorf("after the retry, the state file holds %+v", in)
	}

	// A device restarted from the state before the failure continues too.
	if err := os.WriteFile(path, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := load(t, path).StoreReceipt(ctx, receipt); err != nil {
		t.Errorf("StoreReceipt on the device reloaded from before the failure: %v", err)
	}
}
