package ledger

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/chipledger/chipledger/proofs"
)

// ChipEntry locates one escrow entry of a chip.
type ChipEntry struct {
	Epoch    uint32
	Index    uint64
	LeafHash Hash
}

// The chip index maps a chip ID to its escrow entries in log order. It is
// derived state: everything in it can be recomputed from the leaves.
//
// Random-key B+tree inserts cost a page write per key and slow down as the
// tree grows, so the index is not kept in bbolt. It lives in memory and is
// persisted for fast start-up as an append-only journal, chips.jnl, written
// sequentially after each commit without fsync: one frame per batch,
//
//	u32 length ‖ payload ‖ u32 CRC-32C(payload)
//	payload = u64 size after the batch ‖ { u8 len ‖ chip_id ‖ u32 epoch ‖ u64 index ‖ leaf_hash[32] }*
//
// On open the journal is read up to its first damaged frame or the first
// frame past the committed size (a crash can leave either), cut there, and
// the leaves after the last good frame are replayed from entries.dat. So the
// journal may lag behind the log but never disagrees with it.
//
// The index also keeps the verifiable chip map of DESIGN.md §3.7 (chip key
// → the chip's latest entry and history root), which is rebuilt in bulk
// from the index at open.
type chipIndex struct {
	s       *Store
	journal *os.File
	jlen    int64  // length of the journal's good prefix
	covered uint64 // the journal covers leaves [0, covered)
	frame   []byte // reused frame buffer

	// The maps hold no pointers, so the garbage collector never scans them:
	// first holds each chip's first entry, later the rest for the few chips
	// provisioned more than once.
	mu    sync.RWMutex
	first map[chipKey]ChipEntry
	later map[chipKey][]ChipEntry

	// cmap is the verifiable map; it has its own lock.
	cmap *ChipMap
}

// chipKey is a chip ID as a fixed-size map key: its length, then its bytes.
type chipKey [1 + MaxChipIDLen]byte

func keyOf(chip []byte) (k chipKey) {
	k[0] = byte(len(chip))
	copy(k[1:], chip)
	return k
}

// chipRecord is one escrow entry of a batch.
type chipRecord struct {
	chip []byte // aliases the leaf
	ChipEntry
}

// stationRecord is a station registration (or, with revoked set, a
// station revocation) found in a batch.
type stationRecord struct {
	id      [32]byte
	index   uint64
	revoked bool
}

const chipJournalFile = "chips.jnl"

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func openChipIndex(s *Store) (*chipIndex, error) {
	f, err := os.OpenFile(filepath.Join(s.dir, chipJournalFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open chip index journal: %w", err)
	}
	ci := &chipIndex{s: s, journal: f, first: make(map[chipKey]ChipEntry), later: make(map[chipKey][]ChipEntry)}
	size := s.Size()
	if err := ci.load(size); err != nil {
		f.Close()
		return nil, err
	}
	if err := ci.replay(ci.covered, size); err != nil {
		f.Close()
		return nil, fmt.Errorf("rebuild chip index from leaves [%d, %d): %w", ci.covered, size, err)
	}
	ci.buildMap()
	return ci, nil
}

// buildMap builds the verifiable map from the index in bulk.
func (ci *chipIndex) buildMap() {
	pairs := make([]MapPair, 0, len(ci.first))
	for k, first := range ci.first {
		pairs = append(pairs, ci.mapPair(k, first, ci.later[k]))
	}
	ci.cmap = BuildChipMap(pairs)
}

// mapPair is the map entry of a chip with the given entries.
func (ci *chipIndex) mapPair(k chipKey, first ChipEntry, later []ChipEntry) MapPair {
	v := indexValue(first, later)
	return MapPair{Key: proofs.MapKey(k[1 : 1+k[0]]), ValueHash: proofs.ValueHash(v)}
}

// indexValue is a chip's index value (DESIGN.md §3.7).
func indexValue(first ChipEntry, later []ChipEntry) proofs.IndexValue {
	latest := first
	hashes := [][32]byte{first.LeafHash}
	for _, e := range later {
		latest = e
		hashes = append(hashes, e.LeafHash)
	}
	return proofs.IndexValue{Epoch: latest.Epoch, LeafIndex: latest.Index, LeafHash: latest.LeafHash, HistoryRoot: proofs.HistoryRoot(hashes)}
}

// load reads the journal's good frames that do not go past size, and cuts
// the journal after them.
func (ci *chipIndex) load(size uint64) error {
	br := bufio.NewReaderSize(ci.journal, 1<<20)
	var hdr [4]byte
	var payload []byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			break // end of journal, or a torn frame header
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n < 8 || n > 1<<24 {
			break
		}
		payload = slices.Grow(payload[:0], int(n)+4)[:n+4]
		if _, err := io.ReadFull(br, payload); err != nil {
			break
		}
		body := payload[:n]
		if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(payload[n:]) {
			ci.s.log.Warn("chip index journal: damaged frame; replaying the log from there", "offset", ci.jlen)
			break
		}
		after := binary.BigEndian.Uint64(body)
		if after > size || after < ci.covered {
			break // written for a batch that never committed
		}
		if err := ci.loadRecords(body[8:]); err != nil {
			// A frame with a valid checksum but records of another format:
			// start over from the log.
			ci.s.log.Warn("chip index journal unreadable; rebuilding it from the log", "offset", ci.jlen, "err", err)
			clear(ci.first)
			clear(ci.later)
			ci.covered, ci.jlen = 0, 0
			break
		}
		ci.covered = after
		ci.jlen += int64(8 + n)
	}
	fi, err := ci.journal.Stat()
	if err != nil {
		return fmt.Errorf("chip index journal: %w", err)
	}
	if fi.Size() == ci.jlen {
		return nil
	}
	if err := ci.journal.Truncate(ci.jlen); err != nil {
		return fmt.Errorf("cut chip index journal at %d: %w", ci.jlen, err)
	}
	// The cut frames were written for batches a crash lost. Leaves that
	// differ will take their places, and the journal is never synced after
	// a write: if the cut were lost in a second crash, a dropped frame
	// could come back with its checksum intact and describe leaves that are
	// no longer in the log. So the cut is made durable before anything is
	// appended.
	if ci.s.noSync {
		return nil
	}
	if err := ci.s.stage("sync journal cut"); err != nil {
		return fmt.Errorf("sync chip index journal cut at %d: %w", ci.jlen, err)
	}
	if err := ci.journal.Sync(); err != nil {
		return fmt.Errorf("sync chip index journal cut at %d: %w", ci.jlen, err)
	}
	return nil
}

func (ci *chipIndex) loadRecords(b []byte) error {
	for len(b) > 0 {
		l := int(b[0])
		if l < MinChipIDLen || l > MaxChipIDLen || len(b) < 1+l+44 {
			return errors.New("malformed record in a frame with a valid checksum")
		}
		ci.addEntry(b[1:1+l], ChipEntry{
			Epoch:    binary.BigEndian.Uint32(b[1+l:]),
			Index:    binary.BigEndian.Uint64(b[5+l:]),
			LeafHash: Hash(b[13+l : 45+l]),
		})
		b = b[1+l+44:]
	}
	return nil
}

// replay indexes the escrow entries among leaves [from, to), reading
// entries.dat sequentially, and journals them.
func (ci *chipIndex) replay(from, to uint64) error {
	if from == to {
		return nil
	}
	var start uint64
	if from > 0 {
		err := ci.s.view(from, func(r *reader) (err error) {
			start, err = r.end(from - 1)
			return err
		})
		if err != nil {
			return err
		}
	}
	ci.s.log.Info("indexing chips from the log", "from", from, "to", to)
	br := bufio.NewReaderSize(io.NewSectionReader(ci.s.entries, int64(start), int64(ci.s.dataLen-start)), 1<<20)
	var hdr [2]byte
	leaf := make([]byte, MaxLeafSize)
	var recs []chipRecord
	lh := newLeafHasher()
	for i := from; i < to; i++ {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return fmt.Errorf("leaf %d: %w", i, err)
		}
		l := leaf[:binary.BigEndian.Uint16(hdr[:])]
		if _, err := io.ReadFull(br, l); err != nil {
			return fmt.Errorf("leaf %d: %w", i, err)
		}
		if rec, ok := escrowRecord(l, i); ok {
			rec.chip = slices.Clone(rec.chip)
			rec.LeafHash = lh.hash(l)
			recs = append(recs, rec)
		}
		if len(recs) >= 1<<16 {
			ci.addAll(recs)
			ci.writeJournal(recs, i+1)
			recs = recs[:0]
		}
	}
	ci.addAll(recs)
	ci.writeJournal(recs, to)
	return nil
}

// escrowRecord returns the chip index record of leaf i if it is an escrow
// entry.
func escrowRecord(leaf []byte, i uint64) (chipRecord, bool) {
	chip, epoch, err := PeekEscrow(leaf)
	if err != nil {
		return chipRecord{}, false
	}
	return chipRecord{chip: chip, ChipEntry: ChipEntry{Epoch: epoch, Index: i}}, true
}

// prepare extracts the index records of a batch whose first leaf has index
// first. It runs before the batch commits and changes nothing.
func (ci *chipIndex) prepare(leaves [][]byte, leafHashes []Hash, first uint64) ([]chipRecord, []stationRecord) {
	var recs []chipRecord
	var stations []stationRecord
	for i, l := range leaves {
		idx := first + uint64(i)
		if rec, ok := escrowRecord(l, idx); ok {
			rec.LeafHash = leafHashes[i]
			recs = append(recs, rec)
			continue
		}
		if reg, err := ParseStationRegistration(l); err == nil {
			stations = append(stations, stationRecord{id: StationID(reg.Certificate), index: idx})
		} else if rev, err := ParseStationRevocation(l); err == nil {
			stations = append(stations, stationRecord{id: rev.StationID, index: idx, revoked: true})
		}
	}
	return recs, stations
}

// updateMap brings the verifiable map up to date with a batch's records and
// returns its root and size. It runs before the batch commits (the log's
// index-root leaf carries the root); the store fails for good if the batch
// then does not commit, and a reopen rebuilds the map from the log.
func (ci *chipIndex) updateMap(recs []chipRecord) (root Hash, count uint64) {
	if len(recs) > 0 {
		// A chip may occur more than once in a batch: the last entry wins,
		// and its history includes the earlier ones.
		ci.mu.RLock()
		type acc struct {
			first ChipEntry
			later []ChipEntry
			known bool
		}
		chips := make(map[chipKey]*acc, len(recs))
		var order []chipKey
		for _, r := range recs {
			k := keyOf(r.chip)
			a := chips[k]
			if a == nil {
				a = &acc{}
				if f, ok := ci.first[k]; ok {
					a.first, a.later, a.known = f, slices.Clone(ci.later[k]), true
				}
				chips[k] = a
				order = append(order, k)
			}
			if !a.known {
				a.first, a.known = r.ChipEntry, true
			} else {
				a.later = append(a.later, r.ChipEntry)
			}
		}
		ci.mu.RUnlock()
		pairs := make([]MapPair, 0, len(order))
		for _, k := range order {
			pairs = append(pairs, ci.mapPair(k, chips[k].first, chips[k].later))
		}
		ci.cmap.Update(pairs)
	}
	return ci.cmap.Root(), uint64(ci.cmap.Len())
}

// apply adds the records of a committed batch; size is the log size after
// it. The journal write is best effort: if it fails, the journal is cut back
// and the next open replays the log from there.
func (ci *chipIndex) apply(recs []chipRecord, size uint64) {
	ci.addAll(recs)
	ci.writeJournal(recs, size)
}

// addAll adds records to the index (not the map).
func (ci *chipIndex) addAll(recs []chipRecord) {
	ci.mu.Lock()
	for _, r := range recs {
		ci.addEntry(r.chip, r.ChipEntry)
	}
	ci.mu.Unlock()
}

// writeJournal appends the frame of a batch to the journal.
func (ci *chipIndex) writeJournal(recs []chipRecord, size uint64) {
	f := append(ci.frame[:0], 0, 0, 0, 0)
	f = binary.BigEndian.AppendUint64(f, size)
	for _, r := range recs {
		f = append(f, byte(len(r.chip)))
		f = append(f, r.chip...)
		f = binary.BigEndian.AppendUint32(f, r.Epoch)
		f = binary.BigEndian.AppendUint64(f, r.Index)
		f = append(f, r.LeafHash[:]...)
	}
	binary.BigEndian.PutUint32(f, uint32(len(f)-4))
	f = binary.BigEndian.AppendUint32(f, crc32.Checksum(f[4:], crcTable))
	ci.frame = f
	if ci.jlen < 0 {
		return // a previous write failed; the journal stops here until reopen
	}
	if _, err := ci.journal.WriteAt(f, ci.jlen); err != nil {
		ci.s.log.Warn("chip index journal write failed; the next open replays the log", "err", err)
		ci.journal.Truncate(ci.jlen)
		ci.jlen = -1
		return
	}
	ci.jlen += int64(len(f))
	ci.covered = size
}

// addEntry records an entry of chip; the caller holds mu or owns the index.
func (ci *chipIndex) addEntry(chip []byte, e ChipEntry) {
	k := keyOf(chip)
	if _, ok := ci.first[k]; !ok {
		ci.first[k] = e
		return
	}
	ci.later[k] = append(ci.later[k], e)
}

// entries returns the chip's entries in log order.
func (ci *chipIndex) entries(chip []byte) []ChipEntry {
	if len(chip) > MaxChipIDLen {
		return nil
	}
	k := keyOf(chip)
	ci.mu.RLock()
	defer ci.mu.RUnlock()
	first, ok := ci.first[k]
	if !ok {
		return nil
	}
	return append([]ChipEntry{first}, ci.later[k]...)
}

func (ci *chipIndex) count() int {
	ci.mu.RLock()
	defer ci.mu.RUnlock()
	return len(ci.first)
}

func (ci *chipIndex) close() error {
	return ci.journal.Close()
}
