package ledger

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// fillStore appends n small leaves in a few batches and closes the store.
func fillStore(t *testing.T, dir string, n int) {
	t.Helper()
	s, err := Open(dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	var batch [][]byte
	for i := range n {
		batch = append(batch, binary.BigEndian.AppendUint64([]byte("leaf"), uint64(i)))
		if len(batch) == 97 || i == n-1 {
			if _, err := s.Append(batch, nil); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyStoreAcceptsASoundStore(t *testing.T) {
	dir := t.TempDir()
	fillStore(t, dir, 1000)
	rep, err := VerifyStore(dir, nil)
	if err != nil || !rep.OK() {
		t.Fatalf("VerifyStore: %+v, %v", rep, err)
	}
	if rep.Leaves != 1000 || rep.Hashes != storedCount(1000) {
		t.Fatalf("rehashed %d leaves and %d hashes, want 1000 and %d", rep.Leaves, rep.Hashes, storedCount(1000))
	}
}

// TestVerifyStoreFindsTheFirstBadLeafOrNode corrupts a leaf, a stored
// hash and the recorded root, and checks each is reported, and that Open
// refuses a store whose root does not match its hashes.
func TestVerifyStoreFindsTheFirstBadLeafOrNode(t *testing.T) {
	t.Run("a flipped leaf byte", func(t *testing.T) {
		dir := t.TempDir()
		fillStore(t, dir, 1000)
		path := filepath.Join(dir, entriesFile)
		b, _ := os.ReadFile(path)
		b[14*10+2+5] ^= 1 // inside leaf 10 (each record is 2 + 12 bytes)
		os.WriteFile(path, b, 0o600)
		rep, err := VerifyStore(dir, nil)
		if err != nil || rep.OK() || !strings.Contains(rep.Problem, "leaf 10:") {
			t.Fatalf("report %+v, %v; want leaf 10", rep, err)
		}
	})
	t.Run("a flipped interior hash", func(t *testing.T) {
		dir := t.TempDir()
		fillStore(t, dir, 1000)
		corruptHash(t, dir, storedIndex(3, 20))
		rep, err := VerifyStore(dir, nil)
		if err != nil || rep.OK() || !strings.Contains(rep.Problem, "node (level 3, index 20)") {
			t.Fatalf("report %+v, %v; want node (3, 20)", rep, err)
		}
	})
	t.Run("a root that the hashes do not produce", func(t *testing.T) {
		dir := t.TempDir()
		fillStore(t, dir, 1000)
		db, _ := bolt.Open(filepath.Join(dir, dbFile), 0o600, nil)
		db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyRoot, make([]byte, 32)) })
		db.Close()
		rep, err := VerifyStore(dir, nil)
		if err != nil || rep.OK() || !strings.Contains(rep.Problem, "recorded root") {
			t.Fatalf("report %+v, %v", rep, err)
		}
		if s, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) {
			if s != nil {
				s.Close()
			}
			t.Fatalf("Open of a store whose root does not match: %v, want ErrCorrupt", err)
		}
	})
}

// corruptHash flips a bit of the stored hash at stored index si.
func corruptHash(t *testing.T, dir string, si uint64) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHashes)
		key := binary.BigEndian.AppendUint64(nil, si>>blockBits)
		v := append([]byte(nil), b.Get(key)...)
		v[int(si&(blockLen-1))*32] ^= 1
		return b.Put(key, v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReadsRefuseALeafCorruptedOnDisk flips a byte of one leaf in the
// entries file of an open store: every read that returns that leaf's bytes
// (a leaf, a range, an entry bundle tile) fails with ErrCorrupt naming it,
// rather than serve bytes the log never held; the leaves around it still
// read.
func TestReadsRefuseALeafCorruptedOnDisk(t *testing.T) {
	dir := t.TempDir()
	fillStore(t, dir, 1000)
	s, err := Open(dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := os.OpenFile(filepath.Join(dir, entriesFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	off := int64(14*300 + 2 + 5) // inside leaf 300 (each record is 2 + 12 bytes)
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	f.Close()

	reads := map[string]func() error{
		"Leaf(300)": func() error { _, err := s.Leaf(300); return err },
		"Leaves(256, 512)": func() error {
			_, err := s.Leaves(256, 512)
			return err
		},
		"entry bundle tile 1": func() error {
			_, err := s.ReadTile(TileRef{Entries: true, Index: 1, Width: 256})
			return err
		},
	}
	for name, read := range reads {
		if err := read(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "leaf 300 ") {
			t.Errorf("%s: %v, want ErrCorrupt naming leaf 300", name, err)
		}
	}
	for _, i := range []uint64{0, 299, 301, 999} {
		leaf, err := s.Leaf(i)
		if err != nil || string(leaf) != string(binary.BigEndian.AppendUint64([]byte("leaf"), i)) {
			t.Errorf("Leaf(%d) = %q, %v", i, leaf, err)
		}
	}
	if _, err := s.Leaves(0, 300); err != nil {
		t.Errorf("Leaves(0, 300): %v", err)
	}
}
