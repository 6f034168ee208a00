package chaos

import (
	"bytes"
	"context"
	"fmt"
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
}

// CheckLog checks the final log's leaves against the workload: every
// acknowledged append is in it once, at its acknowledged index; refused and
// unsent ones are not; ambiguous ones are at most once; no leaf is there
// twice; nothing else is there but the station's registration, once at
// stationIndex, and index roots, each covering the leaves before it and
// the last leaf of the log.
func CheckLog(leaves [][]byte, w *Workload, station []byte, stationIndex uint64) (LogReport, *Findings) {
	f := &Findings{}
	r := LogReport{Leaves: len(leaves)}
	seen := make(map[[32]byte]uint64) // leaf hash → first index
	byChip := make(map[string][]uint64)
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
			switch {
			case err != nil:
				f.add("leaf %d: %v", i, err)
			case ir.CoveredSize != idx || ir.ChipCount != uint64(len(byChip)):
				f.add("leaf %d is an index root covering %d leaves and %d chips; %d chips precede it", i, ir.CoveredSize, ir.ChipCount, len(byChip))
			}
			continue
		}
		h := proofs.LeafHash(leaf)
		if first, ok := seen[h]; ok {
			f.add("leaf %d is leaf %d again (%s)", i, first, kind)
		} else {
			seen[h] = idx
		}
		switch kind {
		case ledger.KindEscrow:
			r.Escrow++
			e, err := ledger.ParseEscrowEntry(leaf)
			if err != nil {
				f.add("leaf %d: %v", i, err)
				continue
			}
			byChip[string(e.ChipID)] = append(byChip[string(e.ChipID)], idx)
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
	}
	if r.Stations != 1 {
		f.add("%d station registrations in the log, want 1", r.Stations)
	}

	ours := make(map[string]bool, len(w.Chips))
	for i, a := range w.Attempts() {
		chip := string(w.Chips[i])
		ours[chip] = true
		at := byChip[chip]
		switch a.Outcome {
		case Acked:
			switch {
			case len(at) != 1:
				f.add("chip %d was acknowledged at index %d and is in the log %d times, at %v", i, a.Index, len(at), at)
			case at[0] != a.Index:
				f.add("chip %d was acknowledged at index %d and is at %d", i, a.Index, at[0])
			}
			if a.Index >= uint64(len(leaves)) || !bytes.Equal(leaves[a.Index], w.Leaves[i]) {
				f.add("chip %d was acknowledged at index %d, which does not hold its leaf", i, a.Index)
			}
		case Refused:
			if len(at) > 0 {
				f.add("chip %d's append was refused (%v) and is in the log at %v", i, a.Err, at)
			}
		case Ambiguous:
			if len(at) > 1 {
				f.add("chip %d's append was ambiguous and is in the log %d times, at %v", i, len(at), at)
			}
			if len(at) > 0 {
				r.AmbiguousLanded++
			}
		case Unsent:
			if len(at) > 0 {
				f.add("chip %d was never appended and is in the log at %v", i, at)
			}
		}
	}
	for chip, at := range byChip {
		if !ours[chip] {
			f.add("the log holds chip %x, at %v, which no client appended", chip, at)
		}
	}
	return r, f
}

// CheckLookups looks up the chips of the workload numbered in chips, with
// the verifying client c, and checks that each has exactly its one
// acknowledged entry; an ambiguous append has its entry if the log scan
// found it (inLog). It returns how many lookups it made.
func CheckLookups(ctx context.Context, c *client.Client, w *Workload, chips []int, inLog func(chip int) bool) (int, *Findings) {
	f := &Findings{}
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for k := int(next.Add(1) - 1); k < len(chips); k = int(next.Add(1) - 1) {
				i := chips[k]
				err := checkLookup(ctx, c, w, i, inLog(i))
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

func checkLookup(ctx context.Context, c *client.Client, w *Workload, i int, inLog bool) error {
	a := w.Attempts()[i]
	h, err := c.LookupChip(ctx, w.Chips[i])
	if err != nil {
		return err
	}
	want := 0
	if a.Outcome == Acked || (a.Outcome == Ambiguous && inLog) {
		want = 1
	}
	if len(h.Entries) != want {
		return fmt.Errorf("%d entries, want %d (append %v)", len(h.Entries), want, a.Outcome)
	}
	if want == 0 {
		return nil
	}
	r := h.Entries[0].Receipt
	if !bytes.Equal(r.Leaf, w.Leaves[i]) {
		return fmt.Errorf("its entry at index %d is another leaf", r.Index)
	}
	if a.Outcome == Acked && r.Index != a.Index {
		return fmt.Errorf("its entry is at index %d, acknowledged at %d", r.Index, a.Index)
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
