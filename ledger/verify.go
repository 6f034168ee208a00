package ledger

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// VerifyReport is the result of VerifyStore.
type VerifyReport struct {
	// Size is the committed tree size, Root its recorded root.
	Size uint64
	Root Hash
	// Leaves and Hashes are how many leaves were rehashed and how many
	// stored tree hashes were recomputed and compared.
	Leaves, Hashes uint64
	// Problem describes the first inconsistency found; empty when the
	// store is sound.
	Problem string
}

// OK reports whether the store verified.
func (r *VerifyReport) OK() bool { return r.Problem == "" }

// VerifyStore rehashes a store from scratch: every leaf in entries.dat
// against its recorded offset and its stored leaf hash, every stored tree
// hash against the hash of its children, and the root against the recorded
// one. It stops at the first inconsistency and reports it. The store must
// not be open (it opens the files read-only). progress, if not nil, is
// called now and then with the leaves done and the total.
func VerifyStore(dir string, progress func(done, total uint64)) (*VerifyReport, error) {
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s read-only (is a node using it?): %w", filepath.Join(dir, dbFile), err)
	}
	defer db.Close()
	f, err := os.Open(filepath.Join(dir, entriesFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()

	rep := &VerifyReport{}
	err = db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("%w: no metadata bucket", ErrCorrupt)
		}
		if v := meta.Get(keySize); len(v) == 8 {
			rep.Size = binary.BigEndian.Uint64(v)
		}
		storedRoot := meta.Get(keyRoot)
		r := &reader{tx: tx}
		bad := func(format string, args ...any) error {
			rep.Problem = fmt.Sprintf(format, args...)
			return nil
		}

		br := bufio.NewReaderSize(f, 1<<20)
		lh := newLeafHasher()
		var e edge
		var offset uint64
		var mismatch error
		leaf := make([]byte, MaxLeafSize)
		var hdr [2]byte
		for i := uint64(0); i < rep.Size; i++ {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				return bad("leaf %d: entries file ends at offset %d: %v", i, offset, err)
			}
			l := leaf[:binary.BigEndian.Uint16(hdr[:])]
			if _, err := io.ReadFull(br, l); err != nil {
				return bad("leaf %d: entries file truncated at offset %d: %v", i, offset, err)
			}
			offset += 2 + uint64(len(l))
			end, err := r.end(i)
			if err != nil {
				return bad("leaf %d: %v", i, err)
			}
			if end != offset {
				return bad("leaf %d: recorded to end at offset %d, but ends at %d in the entries file", i, end, offset)
			}
			// During push e.size is still leaf i's index, so the node at
			// level lv it completes has index i >> lv.
			e.push(lh.hash(l), func(lv uint8, h Hash) {
				if mismatch != nil {
					return
				}
				stored, err := r.node(lv, i>>lv)
				switch {
				case err != nil:
					mismatch = fmt.Errorf("node (level %d) after leaf %d: %v", lv, i, err)
				case stored != h:
					if lv == 0 {
						mismatch = fmt.Errorf("leaf %d: its stored hash %x is not the hash of the leaf, %x", i, stored, h)
					} else {
						mismatch = fmt.Errorf("node (level %d, index %d): stored %x, its children hash to %x", lv, i>>lv, stored, h)
					}
				}
				rep.Hashes++
			})
			if mismatch != nil {
				return bad("%v", mismatch)
			}
			rep.Leaves++
			if progress != nil && i%65536 == 0 {
				progress(i, rep.Size)
			}
		}
		rep.Root = e.root()
		if len(storedRoot) == 32 && Hash(storedRoot) != rep.Root {
			return bad("the recorded root %x is not the root of the leaves, %x", storedRoot, rep.Root)
		}
		if progress != nil {
			progress(rep.Size, rep.Size)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rep, nil
}
