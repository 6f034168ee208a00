package client

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/bits"
	"slices"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// The chip-index audit (DESIGN.md §3.7): while it re-validates the leaves,
// the auditor keeps its own chip index, a ledger.ChipMap of every chip's
// proofs.IndexValue over the escrow entries it admits, and checks each
// index-root leaf (kind 3) of the log against it, and every checkpoint
// against the index-root leaves.
//
// The auditor's index follows the admission rules of the ledger, not
// whatever the log holds: an escrow entry enters it only if the auditor
// found nothing wrong with it and its epoch is the next one of the chip in
// the index (1 for a chip not in it). An entry the ledger should have
// rejected is a finding, and an index root that counts it does not match;
// nor does any later one, since the auditor learns only the log's roots,
// not what its index holds, and cannot tell that fault from a new one: a
// log that wrongly admitted one entry shows an index-root-mismatch at each
// later index root.

// chipIndexState is a chip's entry in the auditor's chip index: what it
// needs to compute the chip's IndexValue and the next one.
type chipIndexState struct {
	epoch uint32   // of the latest admitted entry; 0 if the chip has none
	index uint64   // that entry's leaf index
	hash  [32]byte // that entry's leaf hash
	// rng is the compact range of the admitted entries' leaf hashes in log
	// order: the roots of the perfect subtrees the RFC 6962 tree over them
	// splits into, largest first, one per set bit of epoch; without the
	// last, a single leaf, when epoch is odd, since that is hash.
	rng [][32]byte
}

// admit adds the entry at index, with leaf hash h, to the chip's admitted
// history, as its epoch s.epoch+1.
func (s *chipIndexState) admit(index uint64, h [32]byte) {
	if s.epoch%2 == 1 {
		// The last subtree is the single leaf s.hash: merge it with h, then
		// with every subtree of the same size before it.
		x := historyNode(s.hash, h)
		for k := s.epoch >> 1; k%2 == 1; k >>= 1 {
			x = historyNode(s.rng[len(s.rng)-1], x)
			s.rng = s.rng[:len(s.rng)-1]
		}
		s.rng = append(s.rng, x)
	}
	s.epoch++
	s.index, s.hash = index, h
}

// historyRoot returns the RFC 6962 root over the admitted entries' leaf
// hashes, proofs.HistoryRoot of them, from the compact range.
func (s *chipIndexState) historyRoot() [32]byte {
	r := s.hash
	i := len(s.rng) - 1
	if s.epoch%2 == 0 {
		r, i = s.rng[i], i-1
	}
	for ; i >= 0; i-- {
		r = historyNode(s.rng[i], r)
	}
	return r
}

// rangeLen is the length of rng for a chip at epoch.
func rangeLen(epoch uint32) int { return bits.OnesCount32(epoch) - int(epoch%2) }

// describe says which entry is the chip's latest admitted one, in words.
func (s *chipIndexState) describe() string {
	if s.epoch == 0 {
		return "is none"
	}
	return fmt.Sprintf("has epoch %d (index %d)", s.epoch, s.index)
}

// value returns the chip's IndexValue.
func (s *chipIndexState) value() proofs.IndexValue {
	return proofs.IndexValue{Epoch: s.epoch, LeafIndex: s.index, LeafHash: s.hash, HistoryRoot: s.historyRoot()}
}

// mapPair returns the chip's pair in the chip index map.
func (s *chipIndexState) mapPair(chip []byte) ledger.MapPair {
	return ledger.MapPair{Key: proofs.MapKey(chip), ValueHash: proofs.ValueHash(s.value())}
}

// historyNode is the RFC 6962 interior node hash, SHA-256(0x01 ‖ l ‖ r).
func historyNode(l, r [32]byte) [32]byte {
	var b [65]byte
	b[0] = 0x01
	copy(b[1:], l[:])
	copy(b[33:], r[:])
	return sha256.Sum256(b[:])
}

// IndexRootValues are the fields of an index-root leaf (kind 3): the
// auditor's expected ones or the log's, in an index-root-mismatch finding.
type IndexRootValues struct {
	CoveredSize uint64 `json:"covered_size"`
	ChipCount   uint64 `json:"chip_count"`
	// Root is the chip index root, hex.
	Root string `json:"root"`
}

func indexRootValues(covered, count uint64, root [32]byte) *IndexRootValues {
	return &IndexRootValues{CoveredSize: covered, ChipCount: count, Root: hex.EncodeToString(root[:])}
}

// IndexRoot returns the root of the auditor's chip index over the audited
// leaves, and the number of chips in it: what the log's next index-root
// leaf must carry.
func (s *AuditState) IndexRoot() (root [32]byte, chips int) {
	return s.cmap.Root(), s.cmap.Len()
}

// IndexRootAt reports whether leaf size−1 of the audited leaves is an
// index-root leaf covering the size−1 leaves before it, where the log may
// sign a checkpoint of size size. It is false for size 0 and for sizes
// beyond Audited().
func (s *AuditState) IndexRootAt(size uint64) bool {
	if size == 0 || size > s.audited {
		return false
	}
	_, ok := slices.BinarySearch(s.rootAt, size-1)
	return ok
}

// indexChecker runs the chip-index audit over the leaves of one Check call,
// in log order, after the other checks decided which entries are findings.
type indexChecker struct {
	c       *leafChecker
	pending []ledger.MapPair // admitted since the map was last updated
}

// leaf checks leaf i: an escrow entry goes through the epoch rule and,
// without findings, is admitted to the index; an index root is checked
// against the index over the leaves before it; leaf 0 must be the genesis
// index root.
func (x *indexChecker) leaf(i int, p *parsedLeaf) {
	s, idx := x.c.s, x.c.start+uint64(i)
	var root *ledger.IndexRoot
	if p.err == nil {
		switch e := p.entry.(type) {
		case *ledger.EscrowEntry:
			x.escrow(i, idx, e, p.hash)
		case *ledger.IndexRoot:
			root = e
		}
	}
	if root == nil {
		if idx == 0 {
			x.c.addIndex(i, indexRootValues(0, 0, proofs.EmptyMapRoot()), nil,
				"the log does not start with the genesis index root (covering 0 leaves, 0 chips, the empty root)")
		}
		return
	}
	s.indexRoots++
	x.flush()
	wantRoot, count := s.cmap.Root(), uint64(s.cmap.Len())
	if root.CoveredSize == idx {
		s.rootAt = append(s.rootAt, idx)
	}
	if root.CoveredSize == idx && root.ChipCount == count && root.Root == wantRoot {
		return
	}
	var what []string
	if root.CoveredSize != idx {
		what = append(what, fmt.Sprintf("covered size %d, want its own index %d", root.CoveredSize, idx))
	}
	if root.ChipCount != count {
		what = append(what, fmt.Sprintf("chip count %d, want %d", root.ChipCount, count))
	}
	if root.Root != wantRoot {
		what = append(what, fmt.Sprintf("root %x, want %x", root.Root, wantRoot))
	}
	msg := fmt.Sprintf("the index root at %d does not match the chip index over the leaves before it: %s", idx, joinWords(what))
	if root.ChipCount != count || root.Root != wantRoot {
		msg += " (the auditor's index holds the escrow entries it found valid, as the ledger admits them)"
	}
	x.c.addIndex(i, indexRootValues(idx, count, wantRoot), indexRootValues(root.CoveredSize, root.ChipCount, root.Root), msg)
}

// escrow applies the epoch rule to entry e, leaf i at index idx with leaf
// hash h (leafChecker.epoch), then admits it to the index if nothing was
// found wrong with it and it is the chip's next epoch there. An entry
// after one of the chip's entries that the index left out, and whose epoch
// follows that one's, is not admitted either (the ledger would have
// refused it), but is no finding of its own: the fault was reported at the
// first. An entry whose epoch follows the chip's last admitted one is
// admitted, as the ledger would, whatever the log holds between them.
func (x *indexChecker) escrow(i int, idx uint64, e *ledger.EscrowEntry, h [32]byte) {
	s := x.c.s
	st := s.chips[string(e.ChipID)]
	x.c.epoch(i, idx, e, &st)
	if len(x.c.per[i]) == 0 && e.Epoch == st.idx.epoch+1 {
		st.idx.admit(idx, h)
		x.pending = append(x.pending, st.idx.mapPair(e.ChipID))
	}
	s.chips[string(e.ChipID)] = st
}

// flush brings the map up to date with the admitted entries.
func (x *indexChecker) flush() {
	if len(x.pending) > 0 {
		x.c.s.cmap.Update(x.pending)
		x.pending = x.pending[:0]
	}
}

// checkpointFinding returns the checkpoint-not-at-index-root finding of a
// verified checkpoint note of size size, served by node, if its last leaf
// is audited and is not an index root covering the leaves before it.
func (s *AuditState) checkpointFinding(note []byte, size uint64, node string) (Finding, bool) {
	if size > s.audited || s.IndexRootAt(size) {
		return Finding{}, false
	}
	f := Finding{Kind: FindingCheckpointNotAtIndexRoot, Node: node, Checkpoint: string(note)}
	if size == 0 {
		f.Message = "the log signed a checkpoint of the empty tree: it signs only trees that end with an index root"
		return f, true
	}
	idx := size - 1
	f.Index = &idx
	f.Message = fmt.Sprintf("the log signed a checkpoint of size %d, but leaf %d is not an index root covering the %d leaves before it", size, idx, idx)
	return f, true
}

func joinWords(ws []string) string {
	switch len(ws) {
	case 0:
		return ""
	case 1:
		return ws[0]
	}
	out := ws[0]
	for _, w := range ws[1 : len(ws)-1] {
		out += ", " + w
	}
	return out + " and " + ws[len(ws)-1]
}
