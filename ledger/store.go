package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/chipledger/chipledger/internal/atomicfile"
	"github.com/chipledger/chipledger/proofs"
)

// A Store is a durable, append-only RFC 6962 Merkle log on local disk, with
// the indexes a chipledger node needs: leaf index → leaf, every permanent
// tree hash, chip ID → the chip's escrow entries, station ID → its
// registration.
//
// Layout of the directory (chosen by measurement, see the package benchmarks):
//
//	entries.dat  leaves in append order, each framed as u16 length ‖ leaf, so
//	             that a run of 256 leaves is byte for byte a C2SP entry bundle
//	ledger.db    bbolt: the tree size, the caller's marker, the end offset of
//	             every leaf and every permanent tree hash (both in blocks of
//	             256 under sequential keys, so appends never insert at random
//	             B+tree positions), and the station registrations
//	chips.jnl    the chip index as an append-only journal, so that start-up
//	             need not read every leaf (see chipIndex)
//
// An append writes the leaves to entries.dat, syncs it, then commits one bbolt
// transaction with the new size; that commit is the only commit point. On
// open, bytes of entries.dat beyond the committed size are cut off, and the
// chip index is rebuilt from its journal plus the leaves after it, so a crash
// at any moment reopens at exactly the last committed batch.
//
// A Store has one writer (Append is serialised) and any number of concurrent
// readers; readers see only committed leaves.
type Store struct {
	dir     string
	db      *bolt.DB
	entries *os.File
	log     *slog.Logger
	noSync  bool

	// mu serialises writers and guards the writer-only fields below.
	mu         sync.Mutex
	edge       edge
	dataLen    uint64
	hasher     *leafHasher
	buf        []byte // reused record buffer
	hashBuf    []Hash // reused stored-hash buffer
	leafHashes []Hash // reused leaf-hash buffer
	ends       []uint64
	failed     error // sticky: a sync failed, the store must be reopened

	// state is the tree readers see, published after each append.
	state atomic.Pointer[TreeState]
	// pend holds what appends added since the last durable commit (nothing
	// unless Options.DeferSync is set), published before state so that a
	// reader who sees a size also sees its hashes.
	pend     atomic.Pointer[pending]
	deferred bool
	// upper holds the hashes of every node at level upperLevel and above,
	// published after each commit, so that proofs read from disk only the
	// bottom upperLevel levels, whatever the tree size.
	upper   atomic.Pointer[upperLevels]
	upperIn []upperHash // reused

	chips *chipIndex

	// hook, when set by tests, is called at each stage of an append and
	// may fail it there, simulating a crash.
	hook func(stage string) error
}

// TreeState is a committed size of the log and its root hash.
type TreeState struct {
	Size uint64
	Root Hash
}

// Options tune a Store. The zero value is the production configuration.
type Options struct {
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
	// NoSync skips fsync on append. Only for tests and benchmarks that do not
	// need durability; a crash may lose or corrupt committed batches.
	NoSync bool
	// DeferSync makes Append publish a batch to readers without making it
	// durable; Flush (called by the owner, e.g. periodically) makes every
	// batch so far durable with one commit. A crash loses the batches since
	// the last Flush, never corrupts the store. It is for owners that can
	// redo lost batches, such as a Raft state machine whose log holds every
	// entry after the store's marker.
	DeferSync bool
	// Faults, if set, is called before each write the store makes to disk
	// ("write" the leaves, "sync" them, "commit" the batch; at open "sync
	// directory" for the store's directory and its parent, and "sync
	// journal cut" when the chip index journal ran past the log and was
	// cut back); an error it
	// returns fails that write as a failing disk would. It is for
	// fault-injection tests of the store's owners.
	Faults func(op string) error
}

const (
	entriesFile = "entries.dat"
	dbFile      = "ledger.db"

	blockBits = 8
	blockLen  = 1 << blockBits // hashes or offsets per bbolt value

	storeFormat = 1
)

var (
	bucketMeta     = []byte("meta")
	bucketHashes   = []byte("hashes")
	bucketEnds     = []byte("ends")
	bucketStations = []byte("stations")
	bucketRevoked  = []byte("revoked")

	bucketUser = []byte("user") // nested in meta: SetMetadata records

	keySize    = []byte("size")
	keyRoot    = []byte("root") // the root at size, checked against the stored hashes at open
	keyMarker  = []byte("marker")
	keyVersion = []byte("format")
)

// ErrCorrupt reports a store whose data does not agree with itself: a root
// that the stored hashes do not produce, a hash that its children or its
// leaf do not produce, a malformed record. The store must be rebuilt (see
// Verify).
var ErrCorrupt = errors.New("ledger store is corrupt")

// ErrStoreFailed is returned by appends after a write to disk could not be
// made durable; the store must be closed and reopened, which recovers the
// last committed state.
var ErrStoreFailed = errors.New("ledger store failed; reopen it")

// Open opens the store in dir, creating it if needed, and recovers the last
// committed state. The directory is locked: a second Open of the same
// directory fails after a short wait.
func Open(dir string, opts Options) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create ledger directory: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, &bolt.Options{
		Timeout:         2 * time.Second,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: 256 << 20,
		NoSync:          opts.NoSync,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filepath.Join(dir, dbFile), err)
	}
	s := &Store{
		dir:      dir,
		db:       db,
		log:      logger,
		noSync:   opts.NoSync,
		deferred: opts.DeferSync,
		hasher:   newLeafHasher(),
		hook:     opts.Faults,
	}
	if err := s.load(); err != nil {
		db.Close()
		if s.entries != nil {
			s.entries.Close()
		}
		return nil, err
	}
	// The files (and the directory) may have just been created: make their
	// names durable before anything is committed in them, or a crash could
	// keep ledger.db's commits and lose entries.dat's name.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		err := s.stage("sync directory")
		if err == nil {
			err = syncDir(d, s.noSync)
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("sync directory %s: %w", d, err)
		}
	}
	return s, nil
}

// load reads the committed state and brings entries.dat and the chip index
// in line with it.
func (s *Store) load() error {
	var size uint64
	var storedRoot []byte
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketHashes, bucketEnds, bucketStations, bucketRevoked} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyVersion); v == nil {
			if err := meta.Put(keyVersion, binary.BigEndian.AppendUint32(nil, storeFormat)); err != nil {
				return err
			}
		} else if len(v) != 4 || binary.BigEndian.Uint32(v) != storeFormat {
			return fmt.Errorf("unsupported ledger store format %x (want %d)", v, storeFormat)
		}
		if v := meta.Get(keySize); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("%w: tree size record of %d bytes", ErrCorrupt, len(v))
			}
			size = binary.BigEndian.Uint64(v)
		}
		if v := meta.Get(keyRoot); v != nil {
			if len(v) != 32 {
				return fmt.Errorf("%w: root record of %d bytes", ErrCorrupt, len(v))
			}
			storedRoot = bytes.Clone(v)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read ledger metadata: %w", err)
	}

	// Rebuild the right edge and the data length from the stored hashes and
	// offsets: O(log n) reads, and nothing to keep in sync on disk.
	err = s.db.View(func(tx *bolt.Tx) error {
		r := reader{tx: tx}
		hashes, err := r.edge(size)
		if err != nil {
			return err
		}
		s.edge = edge{size: size, hashes: hashes}
		upper, err := loadUpperLevels(&r, size)
		if err != nil {
			return err
		}
		s.upper.Store(upper)
		if size > 0 {
			end, err := r.end(size - 1)
			if err != nil {
				return err
			}
			s.dataLen = end
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover tree at size %d: %w", size, err)
	}

	f, err := os.OpenFile(filepath.Join(s.dir, entriesFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open entries file: %w", err)
	}
	s.entries = f
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat entries file: %w", err)
	}
	switch {
	case uint64(fi.Size()) < s.dataLen:
		return fmt.Errorf("entries file %s is %d bytes, shorter than the committed %d: the file was truncated or replaced",
			f.Name(), fi.Size(), s.dataLen)
	case uint64(fi.Size()) > s.dataLen:
		s.log.Info("discarding uncommitted tail of entries file", "bytes", uint64(fi.Size())-s.dataLen, "size", size)
		if err := f.Truncate(int64(s.dataLen)); err != nil {
			return fmt.Errorf("truncate entries file to committed length %d: %w", s.dataLen, err)
		}
	}

	root := s.edge.root()
	if storedRoot != nil && Hash(storedRoot) != root {
		return fmt.Errorf("%w: the root recomputed from the stored hashes at size %d is %x, the store recorded %x", ErrCorrupt, size, root, storedRoot)
	}
	s.pend.Store(emptyPending(size, root, s.dataLen))
	s.state.Store(&TreeState{Size: size, Root: root})

	chips, err := openChipIndex(s)
	if err != nil {
		return err
	}
	s.chips = chips
	return nil
}

// Close makes every append durable and closes the store's files.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.failed == nil {
		errs = append(errs, s.flushLocked(s.pend.Load()))
	}
	if s.chips != nil {
		errs = append(errs, s.chips.close())
	}
	errs = append(errs, s.entries.Close(), s.db.Close())
	return errors.Join(errs...)
}

// State returns the committed size and root.
func (s *Store) State() TreeState { return *s.state.Load() }

// Size returns the number of committed leaves.
func (s *Store) Size() uint64 { return s.state.Load().Size }

// Marker returns the marker stored with the last durable batch (nil if
// none), e.g. the Raft index whose application produced it.
func (s *Store) Marker() ([]byte, error) {
	var m []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		m = bytes.Clone(tx.Bucket(bucketMeta).Get(keyMarker))
		return nil
	})
	return m, err
}

// AppendResult describes a committed batch.
type AppendResult struct {
	// First is the index of the batch's first leaf.
	First uint64
	// State is the tree after the batch.
	State TreeState
}

// Append adds leaves to the log as one atomic batch and stores marker (if not
// nil) with it. When it returns nil the batch is visible to readers and,
// unless the store defers syncs, durable; when it returns an error the batch
// is not visible, and it is not after a reopen either unless the error is
// ErrStoreFailed from the commit itself: a commit that failed may still
// have reached the disk, so a reopen finds the batch whole or not at all.
// Each leaf must be 1 to
// MaxLeafSize bytes. Leaves that parse as escrow entries are added to the
// chip index and station registrations to the station index; other leaves
// are stored as they are (validation is the caller's job).
func (s *Store) Append(leaves [][]byte, marker []byte) (AppendResult, error) {
	return s.append(leaves, marker, false)
}

// AppendIndexed is Append, closing the batch with an index-root leaf
// (DESIGN.md §3.7): after the leaves it appends a kind-3 leaf whose
// covered_size is its own index and whose root and chip count are those of
// the chip map over every leaf before it. On an empty log it first appends
// the genesis index-root leaf (covering nothing, the empty map); with no
// leaves it appends only that on an empty log, and nothing otherwise. A log kept
// with AppendIndexed alone ends every batch with such a leaf, which is
// where its checkpoints are signed. Errors after the map was updated leave
// the store failed (ErrStoreFailed): reopen it, which rebuilds the map.
func (s *Store) AppendIndexed(leaves [][]byte, marker []byte) (AppendResult, error) {
	return s.append(leaves, marker, true)
}

// IndexRootAt reports whether leaf size−1 of the log is an index-root leaf
// covering size−1 leaves, as every checkpointed size of an indexed log must
// be, and returns it.
func (s *Store) IndexRootAt(size uint64) (*IndexRoot, bool, error) {
	if size == 0 {
		return nil, false, nil
	}
	leaf, err := s.Leaf(size - 1)
	if err != nil {
		return nil, false, err
	}
	r, err := ParseIndexRoot(leaf)
	if err != nil || r.CoveredSize != size-1 {
		return nil, false, nil
	}
	return r, true, nil
}

func (s *Store) append(leaves [][]byte, marker []byte, indexed bool) (AppendResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return AppendResult{}, s.failed
	}
	for i, l := range leaves {
		if len(l) == 0 || len(l) > MaxLeafSize {
			return AppendResult{}, fmt.Errorf("leaf %d of batch: %d bytes, want 1 to %d: %w", i, len(l), MaxLeafSize, ErrLeafTooLarge)
		}
	}
	first := s.edge.size
	closeIndex := indexed
	if indexed && len(leaves) == 0 {
		if first > 0 {
			return AppendResult{First: first, State: s.State()}, nil // nothing to close
		}
		closeIndex = false // the genesis root alone starts the log
	}
	if indexed && first == 0 {
		genesis, _ := (&IndexRoot{CoveredSize: 0, ChipCount: 0, Root: proofs.EmptyMapRoot()}).MarshalLeaf()
		leaves = append([][]byte{genesis}, leaves...)
	}

	// 1. Hash the leaves; nothing changes in memory until the batch is in
	// (but for the chip map of an indexed batch, see AppendIndexed).
	leafHashes := s.leafHashes[:0]
	for _, l := range leaves {
		leafHashes = append(leafHashes, s.hasher.hash(l))
	}
	s.leafHashes = leafHashes
	chipUpdates, stations := s.chips.prepare(leaves, leafHashes, first)
	root, count := s.chips.updateMap(chipUpdates)
	if closeIndex {
		closing, _ := (&IndexRoot{CoveredSize: first + uint64(len(leaves)), ChipCount: count, Root: root}).MarshalLeaf()
		leaves = append(leaves, closing)
		s.leafHashes = append(s.leafHashes, s.hasher.hash(closing))
		leafHashes = s.leafHashes
	}
	res, err := s.appendHashed(leaves, leafHashes, first, chipUpdates, stations, marker)
	if err != nil && len(chipUpdates) > 0 {
		// The map already holds the batch: it no longer matches the log.
		s.failed = fmt.Errorf("%w: the chip map holds a batch that failed: %v", ErrStoreFailed, err)
	}
	return res, err
}

// appendHashed writes, commits (unless deferred) and publishes a batch whose
// leaf hashes are known.
func (s *Store) appendHashed(leaves [][]byte, leafHashes []Hash, first uint64, chipUpdates []chipRecord, stations []stationRecord, marker []byte) (AppendResult, error) {
	newEdge := s.edge.clone()
	hashes := s.hashBuf[:0]
	upperIn := s.upperIn[:0]
	emit := func(level uint8, h Hash) {
		hashes = append(hashes, h)
		if level >= upperLevel {
			upperIn = append(upperIn, upperHash{level, h})
		}
	}
	buf := s.buf[:0]
	ends := s.ends[:0]
	end := s.dataLen
	for i, l := range leaves {
		newEdge.push(leafHashes[i], emit)
		buf = binary.BigEndian.AppendUint16(buf, uint16(len(l)))
		buf = append(buf, l...)
		end += 2 + uint64(len(l))
		ends = append(ends, end)
	}
	s.buf, s.hashBuf, s.ends, s.upperIn = buf, hashes, ends, upperIn

	// 2. Write the records past the last one.
	if err := s.stage("write"); err != nil {
		return AppendResult{}, err
	}
	if _, err := s.entries.WriteAt(buf, int64(s.dataLen)); err != nil {
		return AppendResult{}, fmt.Errorf("write %d leaves at offset %d: %w", len(leaves), s.dataLen, err)
	}

	// 3. Add the batch to the pending tail, and commit the tail unless syncs
	// are deferred.
	root := newEdge.root()
	next := s.pend.Load().with(newEdge.size, root, hashes, ends, stations, marker)
	if !s.deferred {
		if err := s.flushLocked(next); err != nil {
			return AppendResult{}, fmt.Errorf("commit batch of %d leaves at size %d: %w", len(leaves), first, err)
		}
		next = emptyPending(newEdge.size, root, end)
	}

	// 4. Publish.
	s.pend.Store(next)
	s.edge = newEdge
	s.dataLen = end
	st := &TreeState{Size: newEdge.size, Root: root}
	s.chips.apply(chipUpdates, st.Size)
	s.upper.Store(s.upper.Load().with(upperIn))
	s.state.Store(st)
	return AppendResult{First: first, State: *st}, nil
}

// Flush makes every batch appended so far durable, with one sync of the
// entries file and one bbolt commit. It is needed only with
// Options.DeferSync.
func (s *Store) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	p := s.pend.Load()
	if err := s.flushLocked(p); err != nil {
		return err
	}
	s.pend.Store(emptyPending(p.size, p.root, p.dataEnd()))
	return nil
}

// Pending returns the number of appended leaves not yet durable.
func (s *Store) Pending() uint64 { return uint64(len(s.pend.Load().ends)) }

// flushLocked commits the pending tail p: it syncs the entries file, then
// commits the hashes, offsets, station registrations, marker and size in
// one bbolt transaction, the commit point. The caller holds s.mu and
// publishes an empty tail afterwards.
func (s *Store) flushLocked(p *pending) error {
	if len(p.ends) == 0 && p.marker == nil {
		return nil
	}
	if err := s.stage("sync"); err != nil {
		return err
	}
	if !s.noSync {
		if err := syncData(s.entries); err != nil {
			s.failed = fmt.Errorf("%w: sync entries file: %v", ErrStoreFailed, err)
			return s.failed
		}
		// The leaves are written once and read rarely; keeping gigabytes of
		// them in the page cache would evict the tree's hash pages, which
		// every proof reads. (Measured: without this, the kernel's cost per
		// appended leaf doubles once the cache holds about 1.4 GB.)
		dropCache(s.entries, int64(p.dataStart), int64(p.dataEnd()-p.dataStart))
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := appendBlocks(tx.Bucket(bucketHashes), p.hashStart, p.hashes, 32, putHash); err != nil {
			return fmt.Errorf("store hashes: %w", err)
		}
		if err := appendBlocks(tx.Bucket(bucketEnds), p.endStart, p.ends, 8, putEnd); err != nil {
			return fmt.Errorf("store offsets: %w", err)
		}
		for _, r := range p.stations {
			b := tx.Bucket(bucketStations)
			if r.revoked {
				b = tx.Bucket(bucketRevoked)
			}
			if b.Get(r.id[:]) != nil {
				// The first record counts, as it does in the tail
				// (pending.station) before this commit.
				continue
			}
			if err := b.Put(r.id[:], binary.BigEndian.AppendUint64(nil, r.index)); err != nil {
				return fmt.Errorf("store station registration: %w", err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if p.marker != nil {
			if err := meta.Put(keyMarker, p.marker); err != nil {
				return err
			}
		}
		if err := s.stage("commit"); err != nil {
			return err
		}
		if err := meta.Put(keyRoot, p.root[:]); err != nil {
			return err
		}
		return meta.Put(keySize, binary.BigEndian.AppendUint64(nil, p.size))
	})
	if err != nil {
		// The commit may have reached the disk even though it failed (a
		// failed fsync says nothing of what was written). Writing on
		// would put other leaves where a reopen could find this batch's,
		// so the store stops until it is reopened and reads what holds.
		s.failed = fmt.Errorf("%w: commit leaves [%d, %d): %w", ErrStoreFailed, p.endStart, p.size, err)
		return s.failed
	}
	return nil
}

// pending is the tail of the log appended since the last durable commit. A
// published value is never modified: appends extend copies of it, writing
// only past the lengths earlier readers see.
type pending struct {
	size      uint64 // tree size including the tail
	root      Hash   // tree root at size
	endStart  uint64 // leaf index of ends[0]: the durable size
	dataStart uint64 // entries file offset where the tail begins
	ends      []uint64
	hashStart uint64 // stored-hash index of hashes[0]
	hashes    []Hash
	stations  []stationRecord
	marker    []byte // of the last batch that had one
}

// emptyPending is the empty tail of a durable tree of the given size, whose
// records end at offset dataLen of the entries file.
func emptyPending(size uint64, root Hash, dataLen uint64) *pending {
	return &pending{size: size, root: root, endStart: size, dataStart: dataLen, hashStart: storedCount(size)}
}

// dataEnd is the entries file offset where the tail ends.
func (p *pending) dataEnd() uint64 {
	if len(p.ends) == 0 {
		return p.dataStart
	}
	return p.ends[len(p.ends)-1]
}

// with returns the tail extended by one batch.
func (p *pending) with(size uint64, root Hash, hashes []Hash, ends []uint64, stations []stationRecord, marker []byte) *pending {
	next := *p
	next.size, next.root = size, root
	next.hashes = append(p.hashes, hashes...)
	next.ends = append(p.ends, ends...)
	next.stations = append(p.stations, stations...)
	if marker != nil {
		next.marker = marker
	}
	return &next
}

// station returns a registration (or, with revoked, a revocation) in the
// tail.
func (p *pending) station(id [32]byte, revoked bool) (uint64, bool) {
	for _, r := range p.stations {
		if r.id == id && r.revoked == revoked {
			return r.index, true
		}
	}
	return 0, false
}

func (s *Store) stage(name string) error {
	if s.hook == nil {
		return nil
	}
	return s.hook(name)
}

func putHash(dst []byte, h Hash) []byte  { return append(dst, h[:]...) }
func putEnd(dst []byte, e uint64) []byte { return binary.BigEndian.AppendUint64(dst, e) }

// appendBlocks stores items start, start+1, … in b, blockLen items per value
// under the big-endian block number, each item encoded by put into size
// bytes. A partial last block is rewritten with the new items after it. Keys
// only ever grow, so the B+tree is filled left to right at FillPercent 1.
func appendBlocks[T any](b *bolt.Bucket, start uint64, items []T, size int, put func([]byte, T) []byte) error {
	b.FillPercent = 1
	for len(items) > 0 {
		block := start >> blockBits
		off := int(start & (blockLen - 1))
		n := min(blockLen-off, len(items))
		key := binary.BigEndian.AppendUint64(nil, block)
		val := make([]byte, 0, (off+n)*size)
		if off > 0 {
			old := b.Get(key)
			if len(old) != off*size {
				return fmt.Errorf("block %d holds %d bytes, want %d: store corrupt", block, len(old), off*size)
			}
			val = append(val, old...)
		}
		for _, it := range items[:n] {
			val = put(val, it)
		}
		if err := b.Put(key, val); err != nil {
			return err
		}
		items = items[n:]
		start += uint64(n)
	}
	return nil
}

// ChipEntries returns the escrow entries of chip in log order (nil if the
// chip has none) among the leaves readers see: an append adds its entries
// to the chip index before it publishes the size that includes them.
func (s *Store) ChipEntries(chip ChipID) []ChipEntry {
	size := s.Size()
	e := s.chips.entries(chip)
	for len(e) > 0 && e[len(e)-1].Index >= size {
		e = e[:len(e)-1]
	}
	if len(e) == 0 {
		return nil
	}
	return e
}

// ChipCount returns the number of distinct chips with an escrow entry.
func (s *Store) ChipCount() int { return s.chips.count() }

// StationRegistrationIndex returns the index of the leaf that registered the
// station with the given ID (SHA-256 of its certificate).
func (s *Store) StationRegistrationIndex(id [32]byte) (index uint64, ok bool, err error) {
	return s.stationIndex(id, false)
}

// StationRevocationIndex returns the index of the leaf that revoked the
// station with the given ID, if one did.
func (s *Store) StationRevocationIndex(id [32]byte) (index uint64, ok bool, err error) {
	return s.stationIndex(id, true)
}

// stationIndex finds a station's registration (or revocation) among the
// leaves readers see: an append records it (in the tail, or in bbolt when
// syncs are not deferred) before it publishes the size that includes it,
// so a record at or past the size read first is not one yet. The tail is
// read before bbolt so that a flush in between cannot hide a record, and a
// record in bbolt, older than any in the tail, counts first.
func (s *Store) stationIndex(id [32]byte, revoked bool) (index uint64, ok bool, err error) {
	size := s.Size()
	index, ok = s.pend.Load().station(id, revoked)
	bucket := bucketStations
	if revoked {
		bucket = bucketRevoked
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucket).Get(id[:])
		if v == nil {
			return nil
		}
		if len(v) != 8 {
			return fmt.Errorf("%w: station %x: record of %d bytes", ErrCorrupt, id, len(v))
		}
		index, ok = binary.BigEndian.Uint64(v), true
		return nil
	})
	if err != nil || !ok || index >= size {
		return 0, false, err
	}
	return index, true, nil
}

// StationRegistrations returns the leaf index of every station registration,
// keyed by station ID.
func (s *Store) StationRegistrations() (map[[32]byte]uint64, error) {
	size := s.Size() // as in stationIndex
	out := make(map[[32]byte]uint64)
	p := s.pend.Load()
	for _, r := range p.stations {
		if _, seen := out[r.id]; !r.revoked && !seen {
			out[r.id] = r.index
		}
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketStations).ForEach(func(k, v []byte) error {
			if len(k) != 32 || len(v) != 8 {
				return fmt.Errorf("station %x: corrupt record", k)
			}
			out[[32]byte(k)] = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	maps.DeleteFunc(out, func(_ [32]byte, index uint64) bool { return index >= size })
	return out, err
}

// SetMetadata stores small key/value records that belong with the ledger
// state but are not leaves (for example the cluster's member addresses),
// with the caller's marker, in one transaction. A nil value deletes the key.
func (s *Store) SetMetadata(key string, value, marker []byte) error {
	err := s.updateMetadata(marker, func(meta *bolt.Bucket) error {
		b, err := meta.CreateBucketIfNotExists(bucketUser)
		if err != nil {
			return err
		}
		if value == nil {
			return b.Delete([]byte(key))
		}
		return b.Put([]byte(key), value)
	})
	if err != nil {
		return fmt.Errorf("set metadata %q: %w", key, err)
	}
	return nil
}

// ReplaceMetadata makes md the whole set of metadata records (deleting
// any others) and stores marker, in one transaction. It is for restoring
// a snapshot's metadata and position into a store that already holds its
// leaves.
func (s *Store) ReplaceMetadata(md map[string][]byte, marker []byte) error {
	err := s.updateMetadata(marker, func(meta *bolt.Bucket) error {
		if meta.Bucket(bucketUser) != nil {
			if err := meta.DeleteBucket(bucketUser); err != nil {
				return err
			}
		}
		b, err := meta.CreateBucket(bucketUser)
		if err != nil {
			return err
		}
		for k, v := range md {
			if err := b.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replace metadata: %w", err)
	}
	return nil
}

// updateMetadata commits the pending leaves (a marker must never get ahead
// of durable leaves), then runs fn on the meta bucket and stores marker (if
// not nil), in one transaction.
func (s *Store) updateMetadata(marker []byte, fn func(meta *bolt.Bucket) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return s.failed
	}
	p := s.pend.Load()
	if err := s.flushLocked(p); err != nil {
		return err
	}
	s.pend.Store(emptyPending(p.size, p.root, p.dataEnd()))
	return s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if err := fn(meta); err != nil {
			return err
		}
		if marker != nil {
			return meta.Put(keyMarker, marker)
		}
		return nil
	})
}

// Metadata returns every record stored with SetMetadata.
func (s *Store) Metadata() (map[string][]byte, error) {
	out := make(map[string][]byte)
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta).Bucket(bucketUser)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			out[string(k)] = bytes.Clone(v)
			return nil
		})
	})
	return out, err
}

// WriteLeaves writes the leaves [0, size) to w as u16-length-framed records
// (the entries file's own format), for snapshots. It reads only committed,
// immutable data, so it may run concurrently with appends.
func (s *Store) WriteLeaves(w io.Writer, size uint64) error {
	if size == 0 {
		return nil
	}
	var end uint64
	err := s.view(size, func(r *reader) (err error) {
		end, err = r.end(size - 1)
		return err
	})
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, io.NewSectionReader(s.entries, 0, int64(end))); err != nil {
		return fmt.Errorf("copy %d leaves: %w", size, err)
	}
	return nil
}

// syncDir makes a directory's entries (new and renamed files) durable.
func syncDir(dir string, noSync bool) error {
	if noSync {
		return nil
	}
	return atomicfile.SyncDir(dir)
}

// ErrNotIndexed is returned by LookupChip when the log's last leaf is not an
// index root, as in a log not kept with AppendIndexed.
var ErrNotIndexed = errors.New("the log does not end with an index-root leaf")

// ChipLookup is the store's part of a chip lookup proof: the proof for the
// tree of Size leaves, whose last leaf is the index root the map proof is
// under (the caller adds the signed checkpoint of that size), and the chip's
// entries.
type ChipLookup struct {
	Size    uint64
	Proof   *proofs.LookupProof
	Entries []ChipEntry
}

// LookupChip proves what the chip index says about chip at the current size:
// its latest entry and history, or that it has none.
func (s *Store) LookupChip(chip ChipID) (*ChipLookup, error) {
	if err := chip.Validate(); err != nil {
		return nil, err
	}
	// The map keeps only its latest root, which the writer updates before it
	// publishes a batch: prove under the writer's lock, where the map and
	// the log's last index root agree.
	s.mu.Lock()
	st := s.State()
	entries := s.ChipEntries(chip)
	var value *proofs.IndexValue
	if len(entries) > 0 {
		v := indexValue(entries[0], entries[1:])
		value = &v
	}
	mp, root, err := s.chips.cmap.Prove(proofs.MapKey(chip), value)
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("prove chip %s in the index: %w", chip, err)
	}
	notIndexed := func() error { return fmt.Errorf("lookup of chip %s at size %d: %w", chip, st.Size, ErrNotIndexed) }
	if st.Size == 0 {
		return nil, notIndexed()
	}
	// The index-root leaf (as IndexRootAt reads it) and the entry, with
	// their proofs, in one read transaction.
	p := &proofs.LookupProof{Map: mp}
	err = s.view(st.Size, func(r *reader) (err error) {
		if p.IndexLeaf, err = s.leaf(r, st.Size-1); err != nil {
			return err
		}
		if ir, err := ParseIndexRoot(p.IndexLeaf); err != nil || ir.CoveredSize != st.Size-1 || ir.Root != root {
			return notIndexed()
		}
		if p.IndexProof, err = r.inclusionProof(st.Size-1, st.Size); err != nil {
			return err
		}
		if value == nil {
			return nil
		}
		if p.Entry, err = s.leaf(r, value.LeafIndex); err != nil {
			return err
		}
		p.EntryProof, err = r.inclusionProof(value.LeafIndex, st.Size)
		return err
	})
	if err != nil {
		return nil, err
	}
	if value != nil {
		for _, e := range entries {
			p.History = append(p.History, proofs.HistoryEntry{Index: e.Index, LeafHash: e.LeafHash})
		}
	}
	return &ChipLookup{Size: st.Size, Proof: p, Entries: entries}, nil
}
