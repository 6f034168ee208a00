package chaos

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"connectrpc.com/connect"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// Findings are the broken promises a check found.
type Findings struct {
	errs  []error
	total int
}

// maxFindings bounds the findings kept; the rest are only counted.
const maxFindings = 25

func (f *Findings) add(format string, args ...any) {
	f.total++
	if len(f.errs) < maxFindings {
		f.errs = append(f.errs, fmt.Errorf(format, args...))
	}
}

// Errs returns the findings kept.
func (f *Findings) Errs() []error { return f.errs }

// Total returns how many findings there were.
func (f *Findings) Total() int { return f.total }

// A LogReport describes the final log.
type LogReport struct {
	Leaves, Escrow, Stations, IndexRoots int
	// AmbiguousLanded counts ambiguous appends that are in the log.
	AmbiguousLanded int
	// Extras tells what became of the extras.
	Extras ExtraReport
}

// An ExtraReport tells what became of the extras whose call ended: the
// conflicting pairs (which of the two landed), the concurrent copies and
// the epoch-2 entries.
type ExtraReport struct {
	Conflicts, FirstLanded, RivalLanded, NeitherLanded int
	// Copies counts the chips whose leaf was sent twice at once, and
	// CopiesBothAcked those whose two calls were both acknowledged (at
	// one index).
	Copies, CopiesBothAcked int
	// NextEpochs counts the epoch-2 entries sent, NextEpochsLanded those
	// in the log.
	NextEpochs, NextEpochsLanded int
}

// CheckLog checks the final log's leaves against the workload: every
// acknowledged append is in it once, at its acknowledged index; refused and
// unsent ones are not; ambiguous ones are at most once; no leaf is there
// twice; each chip's entries have epochs 1, 2, … in log order, so that of
// two conflicting epoch-1 entries at most one is there; nothing else is
// there but the station's registration, once at stationIndex, and index
// roots, each the root of the chip index over the leaves before it (see
// indexReplay), the first leaf and the last leaf of the log among them. It
// also checks that no valid entry was refused: the workload sends only
// valid, fresh entries from a registered station, so the only refusal the
// log may give is ALREADY_EXISTS (the epoch reused) to one of two
// conflicting entries, when the other is in the log.
func CheckLog(leaves [][]byte, w *Workload, station []byte, stationIndex uint64) (LogReport, *Findings) {
	f := &Findings{}
	r := LogReport{Leaves: len(leaves)}
	at := make(map[[32]byte][]uint64) // leaf hash → indexes
	type logged struct {
		index uint64
		epoch uint32
	}
	byChip := make(map[string][]logged)
	index := newIndexReplay()
	for i, leaf := range leaves {
		idx := uint64(i)
		kind, err := ledger.PeekKind(leaf)
		if err != nil {
			f.add("leaf %d: %v", i, err)
			continue
		}
		if kind == ledger.KindIndexRoot {
			r.IndexRoots++
			ir, err := ledger.ParseIndexRoot(leaf)
			want := index.root(idx)
			switch {
			case err != nil:
				f.add("leaf %d: %v", i, err)
			case ir.CoveredSize != idx || ir.ChipCount != want.ChipCount:
				f.add("leaf %d is an index root covering %d leaves and %d chips; %d chips precede it", i, ir.CoveredSize, ir.ChipCount, want.ChipCount)
			case ir.Root != want.Root:
				f.add("leaf %d is an index root of %d chips with root %x; the chip index of the leaves before it has root %x", i, ir.ChipCount, ir.Root, want.Root)
			}
			continue
		}
		h := proofs.LeafHash(leaf)
		if prev := at[h]; len(prev) > 0 {
			f.add("leaf %d is leaf %d again (%s)", i, prev[0], kind)
		}
		at[h] = append(at[h], idx)
		switch kind {
		case ledger.KindEscrow:
			r.Escrow++
			e, err := ledger.ParseEscrowEntry(leaf)
			if err != nil {
				f.add("leaf %d: %v", i, err)
				continue
			}
			byChip[string(e.ChipID)] = append(byChip[string(e.ChipID)], logged{idx, e.Epoch})
			index.add(e.ChipID, e.Epoch, idx, h)
		case ledger.KindStation:
			r.Stations++
			if idx != stationIndex || !bytes.Equal(leaf, station) {
				f.add("leaf %d is a station registration; the station was acknowledged at %d", i, stationIndex)
			}
		default:
			f.add("leaf %d is of kind %s", i, kind)
		}
	}
	if n := len(leaves); n > 0 {
		if kind, _ := ledger.PeekKind(leaves[n-1]); kind != ledger.KindIndexRoot {
			f.add("the log of %d leaves does not end with an index root", n)
		}
		if kind, _ := ledger.PeekKind(leaves[0]); kind != ledger.KindIndexRoot {
			f.add("the log does not start with the genesis index root")
		}
	}
	if r.Stations != 1 {
		f.add("%d station registrations in the log, want 1", r.Stations)
	}

	// where returns the indexes of leaf in the log.
	where := func(leaf []byte) []uint64 { return at[proofs.LeafHash(leaf)] }
	sent := make(map[[32]byte]bool)
	// checkSend checks one send's outcome against the log; what names it.
	checkSend := func(what string, leaf []byte, a Attempt) {
		sent[proofs.LeafHash(leaf)] = true
		pos := where(leaf)
		switch a.Outcome {
		case Acked:
			switch {
			case len(pos) != 1:
				f.add("%s was acknowledged at index %d and is in the log %d times, at %v", what, a.Index, len(pos), pos)
			case pos[0] != a.Index:
				f.add("%s was acknowledged at index %d and is at %d", what, a.Index, pos[0])
			}
			if a.Index >= uint64(len(leaves)) || !bytes.Equal(leaves[a.Index], leaf) {
				f.add("%s was acknowledged at index %d, which does not hold its leaf", what, a.Index)
			}
		case Refused:
			if len(pos) > 0 {
				f.add("%s was refused (%v) and is in the log at %v", what, a.Err, pos)
			}
		case Unsent:
			if len(pos) > 0 {
				f.add("%s was never appended and is in the log at %v", what, pos)
			}
		}
	}
	// checkRefusal checks that a refused send was refused for the one
	// reason the log may have: rival, a conflicting entry of the chip, is
	// in the log (rival is nil for a chip without one).
	checkRefusal := func(what string, a Attempt, rival []byte) {
		switch {
		case a.Outcome != Refused:
		case rival == nil:
			f.add("%s, valid and fresh, was refused: %v", what, a.Err)
		case !isEpochReused(a.Err):
			f.add("%s was refused, not for its conflicting entry: %v", what, a.Err)
		case len(where(rival)) == 0:
			f.add("%s was refused for a conflicting entry that is not in the log: %v", what, a.Err)
		}
	}

	attempts, extraAttempts := w.Attempts(), w.ExtraAttempts()
	ours := make(map[string]int, len(w.Chips))
	for i, a := range attempts {
		chip := string(w.Chips[i])
		ours[chip] = i
		what := fmt.Sprintf("chip %d's append", i)
		if a.Outcome == Acked {
			what = fmt.Sprintf("chip %d", i)
		}
		checkSend(what, w.Leaves[i], a)
		if a.Outcome == Ambiguous && len(where(w.Leaves[i])) > 0 {
			r.AmbiguousLanded++
		}
		var epochs []uint32
		var in []uint64
		for _, l := range byChip[chip] {
			epochs = append(epochs, l.epoch)
			in = append(in, l.index)
		}
		for k, e := range epochs {
			if e != uint32(k+1) {
				f.add("chip %d's entries in the log, at %v, have epochs %v, want 1, 2, …", i, in, epochs)
				break
			}
		}

		x, ok := w.extraOf[i]
		if !ok {
			checkRefusal(what, a, nil)
			continue
		}
		e, xa := w.Extras[x], extraAttempts[x]
		xwhat := fmt.Sprintf("chip %d's %s", i, e.Kind)
		if e.Kind != Copy {
			checkSend(xwhat, e.Leaf, xa)
		}
		switch e.Kind {
		case Conflicting:
			checkRefusal(what, a, e.Leaf)
			checkRefusal(xwhat, xa, w.Leaves[i])
			first, rival := len(where(w.Leaves[i])) > 0, len(where(e.Leaf)) > 0
			if first && rival {
				f.add("chip %d's conflicting epoch-1 entries are both in the log, at %v and %v", i, where(w.Leaves[i]), where(e.Leaf))
			}
			if a.Outcome == Unsent || xa.Outcome == Unsent {
				break
			}
			r.Extras.Conflicts++
			switch {
			case first && !rival:
				r.Extras.FirstLanded++
			case rival && !first:
				r.Extras.RivalLanded++
			case !first && !rival:
				r.Extras.NeitherLanded++
			}
		case Copy:
			checkRefusal(what, a, nil)
			checkRefusal(xwhat, xa, nil)
			// The leaf's place was checked with the chip's own call;
			// the copy's call must agree with it.
			pos := where(e.Leaf)
			switch {
			case xa.Outcome == Acked && (len(pos) != 1 || pos[0] != xa.Index):
				f.add("%s was acknowledged at index %d and the leaf is in the log at %v", xwhat, xa.Index, pos)
			case xa.Outcome == Acked && a.Outcome == Acked && xa.Index != a.Index:
				f.add("chip %d's leaf, sent twice at once, was acknowledged at indexes %d and %d", i, a.Index, xa.Index)
			}
			if a.Outcome == Unsent || xa.Outcome == Unsent {
				break
			}
			r.Extras.Copies++
			if a.Outcome == Acked && xa.Outcome == Acked {
				r.Extras.CopiesBothAcked++
			}
		case NextEpoch:
			checkRefusal(what, a, nil)
			checkRefusal(xwhat, xa, nil)
			if xa.Outcome == Unsent {
				break
			}
			r.Extras.NextEpochs++
			if len(where(e.Leaf)) > 0 {
				r.Extras.NextEpochsLanded++
			}
		}
	}
	for chip, in := range byChip {
		if _, ok := ours[chip]; !ok {
			f.add("the log holds chip %x, at %v, which no client appended", chip, in)
			continue
		}
		for _, l := range in {
			if !sent[proofs.LeafHash(leaves[l.index])] {
				f.add("leaf %d is an entry of chip %d that no client sent", l.index, ours[chip])
			}
		}
	}
	return r, f
}

// An indexReplay rebuilds the verifiable chip index of DESIGN.md §3.7 from
// the log's escrow entries, as an auditor does, to check the index roots
// the log holds: each chip's value is its latest entry (epoch, index, leaf
// hash) and the history root of all its leaf hashes (as the ledger's chip
// index computes it).
type indexReplay struct {
	m       *ledger.ChipMap
	history map[string][][32]byte
}

func newIndexReplay() *indexReplay {
	return &indexReplay{m: ledger.NewChipMap(), history: make(map[string][][32]byte)}
}

// add records an escrow entry of chip at index.
func (x *indexReplay) add(chip ledger.ChipID, epoch uint32, index uint64, leafHash [32]byte) {
	h := append(x.history[string(chip)], leafHash)
	x.history[string(chip)] = h
	v := proofs.IndexValue{Epoch: epoch, LeafIndex: index, LeafHash: leafHash, HistoryRoot: proofs.HistoryRoot(h)}
	x.m.Set(proofs.MapKey(chip), proofs.ValueHash(v))
}

// root returns the index root leaf due at index: the root of the chip
// index of the leaves before it.
func (x *indexReplay) root(index uint64) ledger.IndexRoot {
	return ledger.IndexRoot{CoveredSize: index, ChipCount: uint64(x.m.Len()), Root: x.m.Root()}
}

// CheckSizes checks that every checkpoint size seen during the run ends on
// an index root covering the leaves before it: the log signs no other
// sizes (DESIGN.md §3.7). Sizes beyond the log are CheckConsistency's.
func CheckSizes(leaves [][]byte, sizes []uint64) *Findings {
	f := &Findings{}
	for _, s := range sizes {
		if s == 0 || s > uint64(len(leaves)) {
			continue
		}
		ir, err := ledger.ParseIndexRoot(leaves[s-1])
		switch {
		case err != nil:
			f.add("a checkpoint of size %d was seen, and leaf %d is no index root: %v", s, s-1, err)
		case ir.CoveredSize != s-1:
			f.add("a checkpoint of size %d was seen, and leaf %d is an index root covering %d leaves", s, s-1, ir.CoveredSize)
		}
	}
	return f
}

// CheckLookups looks up the chips of the workload numbered in chips, with
// the verifying client c, and checks that each has exactly the entries the
// log scan found for it (inLog: their indexes, in log order), and its
// acknowledged one among them. It returns how many lookups it made.
func CheckLookups(ctx context.Context, c *client.Client, w *Workload, chips []int, inLog func(chip int) []uint64) (int, *Findings) {
	f := &Findings{}
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	attempts := w.Attempts()
	for range 4 {
		wg.Go(func() {
			for k := int(next.Add(1) - 1); k < len(chips); k = int(next.Add(1) - 1) {
				i := chips[k]
				err := checkLookup(ctx, c, w, i, attempts[i], inLog(i))
				if err != nil {
					mu.Lock()
					f.add("lookup of chip %d: %v", i, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return len(chips), f
}

func checkLookup(ctx context.Context, c *client.Client, w *Workload, i int, a Attempt, want []uint64) error {
	h, err := c.LookupChip(ctx, w.Chips[i])
	if err != nil {
		return err
	}
	var got []uint64
	for _, e := range h.Entries {
		got = append(got, e.Receipt.Index)
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("entries at %v; the log holds the chip's at %v (append %v)", got, want, a.Outcome)
	}
	if a.Outcome == Acked {
		if len(h.Entries) == 0 || h.Entries[0].Receipt.Index != a.Index {
			return fmt.Errorf("its first entry is not at index %d, where it was acknowledged", a.Index)
		}
		if !bytes.Equal(h.Entries[0].Receipt.Leaf, w.Leaves[i]) {
			return fmt.Errorf("its entry at index %d is another leaf", a.Index)
		}
	}
	return nil
}

// A ConsistencyReport counts the checkpoints CheckConsistency checked.
type ConsistencyReport struct {
	// Observed is the number of signed checkpoints given, Sizes the
	// number of distinct tree sizes among them, and Proven how many of
	// those were proven prefixes of the final tree with a consistency
	// proof (the others have the final size).
	Observed, Sizes, Proven int
	// SizeList is the distinct sizes, in increasing order.
	SizeList []uint64
}

// CheckConsistency checks that every signed checkpoint observed during the
// run is consistent with every other: that checkpoints of one size have one
// root, and that each is a prefix of the final tree, with a consistency
// proof from one of the nodes checked by tlog.CheckTree. (Prefixes of one
// tree are prefixes of one another, so this checks every pair.)
func CheckConsistency(ctx context.Context, nodes []chipledgerv1connect.LedgerServiceClient, v *proofs.LogVerifier, final proofs.Checkpoint, observed [][]byte) (ConsistencyReport, *Findings) {
	f := &Findings{}
	r := ConsistencyReport{Observed: len(observed)}
	roots := make(map[uint64][32]byte)
	notes := make(map[uint64][]byte)
	for _, signed := range observed {
		cp, err := v.VerifyCheckpoint(signed)
		if err != nil {
			f.add("an observed checkpoint does not verify: %v: %q", err, signed)
			continue
		}
		if root, ok := roots[cp.Size]; ok {
			if root != cp.Hash {
				f.add("fork: two checkpoints of size %d with different roots:\n%s\n%s", cp.Size, notes[cp.Size], signed)
			}
			continue
		}
		roots[cp.Size], notes[cp.Size] = cp.Hash, signed
	}
	r.Sizes = len(roots)
	r.SizeList = slices.Sorted(maps.Keys(roots))

	type prefix struct {
		size uint64
		root [32]byte
	}
	var todo []prefix
	for size, root := range roots {
		switch {
		case size > final.Size:
			f.add("a checkpoint of size %d was observed, larger than the final log of %d:\n%s", size, final.Size, notes[size])
		case size == final.Size:
			if root != final.Hash {
				f.add("fork: a checkpoint of the final size %d with another root:\n%s", size, notes[size])
			}
		case size > 0:
			todo = append(todo, prefix{size, root})
		}
	}
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for k := int(next.Add(1) - 1); k < len(todo); k = int(next.Add(1) - 1) {
				p := todo[k]
				err := proveConsistent(ctx, nodes[k%len(nodes)], p.size, p.root, final)
				mu.Lock()
				if err != nil {
					f.add("checkpoint of size %d against the final %d (from n%d): %v\n%s", p.size, final.Size, k%len(nodes)+1, err, notes[p.size])
				} else {
					r.Proven++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return r, f
}

// proveConsistent fetches from node the proof that the tree of size with
// root is a prefix of final, and checks it with tlog.CheckTree.
func proveConsistent(ctx context.Context, node chipledgerv1connect.LedgerServiceClient, size uint64, root [32]byte, final proofs.Checkpoint) error {
	resp, err := node.GetConsistencyProof(ctx, connect.NewRequest(&v1.GetConsistencyProofRequest{Size1: size, Size2: final.Size}))
	if err != nil {
		return err
	}
	proof := make(tlog.TreeProof, len(resp.Msg.GetConsistencyProof()))
	for i, h := range resp.Msg.GetConsistencyProof() {
		if len(h) != tlog.HashSize {
			return fmt.Errorf("proof hash %d is %d bytes", i, len(h))
		}
		proof[i] = tlog.Hash(h)
	}
	return tlog.CheckTree(proof, int64(final.Size), tlog.Hash(final.Hash), int64(size), tlog.Hash(root))
}
