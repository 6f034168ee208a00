package provisioner

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/ledger"
)

// TestJournalRefusesRecordsItCouldNotHaveWritten: the station acts on the
// record Get returns (a signed leaf is appended again), so a record it
// could not have written (another chip's, an unknown step, a member twice)
// is an error naming the chip, not a record.
func TestJournalRefusesRecordsItCouldNotHaveWritten(t *testing.T) {
	j, err := OpenJournal(filepath.Join(t.TempDir(), "journal.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	chip := ledger.ChipID(bytes.Repeat([]byte{0xaa}, 16))
	good := &JournalRecord{ChipID: chip, Identities: []string{"imei:490154203237518"}, Epoch: 1, Step: StepAppended,
		KeyOrigin: uint8(device.KeyFromPool), Leaf: []byte("leaf"), Index: 7, Receipt: []byte("receipt")}
	if err := j.Put(good); err != nil {
		t.Fatal(err)
	}
	if rec, err := j.Get(chip); err != nil || rec.Step != StepAppended || !bytes.Equal(rec.Leaf, good.Leaf) {
		t.Fatalf("the record Put wrote: %+v, %v", rec, err)
	}
	raw, err := json.Marshal(good)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(mod func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		mod(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, tc := range map[string]struct {
		raw  []byte
		want string
	}{
		"another chip's record":        {edit(func(m map[string]any) { m["chip_id"] = "u7u7u7u7u7u7u7u7u7u7uw==" }), "names chip"},
		"unknown step":                 {edit(func(m map[string]any) { m["step"] = "launched" }), "unknown step"},
		"epoch 0":                      {edit(func(m map[string]any) { m["epoch"] = 0 }), "epoch 0"},
		"unknown key origin":           {edit(func(m map[string]any) { m["key_origin"] = 9 }), "key origin"},
		"signed without its leaf":      {edit(func(m map[string]any) { delete(m, "leaf") }), "no signed leaf"},
		"appended without receipt":     {edit(func(m map[string]any) { delete(m, "receipt") }), "no receipt"},
		"identity that does not parse": {edit(func(m map[string]any) { m["identities"] = []string{"imei:not-an-imei"} }), "imei"},
		"unknown member":               {edit(func(m map[string]any) { m["surprise"] = 1 }), "unknown"},
		"step twice":                   {bytes.Replace(raw, []byte(`"step":"appended"`), []byte(`"step":"failed","step":"appended"`), 1), "twice"},
	} {
		err := j.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketDevices).Put(chip, tc.raw) })
		if err != nil {
			t.Fatal(err)
		}
		if rec, err := j.Get(chip); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), chip.String()) {
			t.Errorf("%s: Get = %+v, %v; want an error naming the chip and %q", name, rec, err, tc.want)
		}
		if _, err := j.Counts(); err == nil {
			t.Errorf("%s: Counts read the record", name)
		}
	}
}
