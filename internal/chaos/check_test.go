package chaos

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// testWorkload returns a workload of n chips without extras.
func testWorkload(t *testing.T, pki *testpki.PKI, n int) *Workload {
	t.Helper()
	w, err := NewWorkload(pki, n)
	if err != nil {
		t.Fatal(err)
	}
	w.Extras, w.extraAttempts, w.extraOf = nil, nil, make(map[int]int)
	return w
}

// leaf makes an escrow leaf of chip i at epoch.
func leaf(t *testing.T, pki *testpki.PKI, i int, epoch uint32) []byte {
	t.Helper()
	l, err := pki.EscrowLeaf(testpki.ChipID(uint64(i)), epoch, 0)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// epochReused is the error a node refuses a conflicting entry with.
var epochReused = connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("chip c3: %w: epoch 1 is logged at index 5", ledger.ErrEpochReused))

// testLog is a workload of seven chips, and a log that keeps its promises,
// made by the ledger's own store (so its index roots are the ledger's):
//
//	0 genesis index root   4 chip 1 (ambiguous, landed)    8 index root
//	1 the station          5 chip 3's conflicting entry    9 chip 6's epoch 2
//	2 index root           6 chip 5 (and its copy)        10 index root
//	3 chip 0 (acked)       7 chip 6, epoch 1
//
// Chip 2's ambiguous append did not land; chip 3's own was refused, its
// conflicting entry acknowledged at 5; chip 4 was never sent; chip 5's leaf
// was sent twice at once, both acknowledged at 6; chip 6's epoch 1 and 2
// were acknowledged.
func testLog(t *testing.T) (*Workload, []byte, [][]byte) {
	t.Helper()
	pki, err := testpki.New()
	if err != nil {
		t.Fatal(err)
	}
	w := testWorkload(t, pki, 7)
	w.addExtra(3, Conflicting, leaf(t, pki, 3, 1))
	w.addExtra(5, Copy, w.Leaves[5])
	w.addExtra(6, NextEpoch, leaf(t, pki, 6, 2))
	w.attempts = []Attempt{
		{Outcome: Acked, Index: 3, Calls: 1}, {Outcome: Ambiguous, Calls: 3}, {Outcome: Ambiguous, Calls: 3},
		{Outcome: Refused, Err: epochReused, Calls: 1}, {},
		{Outcome: Acked, Index: 6, Calls: 1}, {Outcome: Acked, Index: 7, Calls: 1},
	}
	w.extraAttempts = []Attempt{{Outcome: Acked, Index: 5, Calls: 1}, {Outcome: Acked, Index: 6, Duplicate: true, Calls: 1}, {Outcome: Acked, Index: 9, Calls: 1}}
	station := pki.StationLeaf()
	leaves := storeLog(t, [][]byte{station}, [][]byte{w.Leaves[0], w.Leaves[1], w.Extras[0].Leaf, w.Leaves[5], w.Leaves[6]}, [][]byte{w.Extras[2].Leaf})
	if len(leaves) != 11 {
		t.Fatalf("the store made a log of %d leaves, want 11", len(leaves))
	}
	return w, station, leaves
}

// storeLog appends batches to a new ledger store, with index roots, and
// returns its leaves.
func storeLog(t *testing.T, batches ...[][]byte) [][]byte {
	t.Helper()
	s, err := ledger.Open(filepath.Join(t.TempDir(), "ledger"), ledger.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, b := range batches {
		if _, err := s.AppendIndexed(b, nil); err != nil {
			t.Fatal(err)
		}
	}
	leaves, err := s.Leaves(0, s.Size())
	if err != nil {
		t.Fatal(err)
	}
	return leaves
}

// setIndexRoots fills the nil leaves with index roots of the leaves before
// them, as the ledger appends them after each batch.
func setIndexRoots(t *testing.T, leaves [][]byte) {
	t.Helper()
	x := newIndexReplay()
	for i, leaf := range leaves {
		if leaf == nil {
			root := x.root(uint64(i))
			var err error
			if leaves[i], err = root.MarshalLeaf(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if e, err := ledger.ParseEscrowEntry(leaf); err == nil {
			x.add(e.ChipID, e.Epoch, uint64(i), proofs.LeafHash(leaf))
		}
	}
}

func TestCheckLogAcceptsALogThatKeepsItsPromises(t *testing.T) {
	w, station, leaves := testLog(t)
	r, f := CheckLog(leaves, w, station, 1)
	for _, err := range f.Errs() {
		t.Error(err)
	}
	want := LogReport{Leaves: 11, Escrow: 6, Stations: 1, IndexRoots: 4, AmbiguousLanded: 1,
		Extras: ExtraReport{Conflicts: 1, RivalLanded: 1, Copies: 1, CopiesBothAcked: 1, NextEpochs: 1, NextEpochsLanded: 1}}
	if r != want {
		t.Errorf("report %+v, want %+v", r, want)
	}
	// The replay of the chip index agrees with the store's index roots.
	rebuilt := append([][]byte(nil), leaves...)
	for _, i := range []int{0, 2, 8, 10} {
		rebuilt[i] = nil
	}
	setIndexRoots(t, rebuilt)
	for i := range leaves {
		if string(rebuilt[i]) != string(leaves[i]) {
			t.Errorf("leaf %d: the replayed index root differs from the store's", i)
		}
	}
}

func TestCheckLogFindsBrokenPromises(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(w *Workload, leaves [][]byte) [][]byte
		want   string
	}{
		{"acknowledged append lost", func(w *Workload, leaves [][]byte) [][]byte {
			return [][]byte{leaves[0], leaves[1], leaves[2], w.Leaves[1], nil}
		}, "chip 0 was acknowledged at index 3 and is in the log 0 times"},
		{"acknowledged append twice", func(w *Workload, leaves [][]byte) [][]byte {
			return append(leaves, w.Leaves[0], nil)
		}, "leaf 11 is leaf 3 again"},
		{"acknowledged append elsewhere", func(w *Workload, leaves [][]byte) [][]byte {
			return [][]byte{leaves[0], leaves[1], leaves[2], w.Leaves[1], w.Leaves[0], nil}
		}, "chip 0 was acknowledged at index 3 and is at 4"},
		{"refused append in the log", func(w *Workload, leaves [][]byte) [][]byte {
			w.attempts[2] = Attempt{Outcome: Refused, Err: epochReused}
			return append(leaves, w.Leaves[2], nil)
		}, "chip 2's append was refused"},
		{"valid entry refused", func(w *Workload, leaves [][]byte) [][]byte {
			w.attempts[2] = Attempt{Outcome: Refused, Err: connect.NewError(connect.CodeInvalidArgument, ledger.ErrBadStationSignature)}
			return leaves
		}, "chip 2's append, valid and fresh, was refused"},
		{"refused for another reason than the conflict", func(w *Workload, leaves [][]byte) [][]byte {
			w.attempts[3].Err = connect.NewError(connect.CodeFailedPrecondition, ledger.ErrEpochGap)
			return leaves
		}, "chip 3's append was refused, not for its conflicting entry"},
		{"refused for a conflicting entry not in the log", func(w *Workload, leaves [][]byte) [][]byte {
			w.Extras[0].Leaf = w.Leaves[4] // stands for a conflicting entry that did not land
			w.extraAttempts[0] = Attempt{Outcome: Ambiguous}
			return leaves
		}, "chip 3's append was refused for a conflicting entry that is not in the log"},
		{"conflicting entries both in the log", func(w *Workload, leaves [][]byte) [][]byte {
			w.attempts[3] = Attempt{Outcome: Ambiguous}
			return append(leaves, w.Leaves[3], nil)
		}, "chip 3's conflicting epoch-1 entries are both in the log, at [11] and [5]"},
		{"copies acknowledged at two indexes", func(w *Workload, leaves [][]byte) [][]byte {
			w.extraAttempts[1].Index = 9
			return leaves
		}, "chip 5's concurrent copy was acknowledged at index 9 and the leaf is in the log at [6]"},
		{"epoch-2 entry refused", func(w *Workload, leaves [][]byte) [][]byte {
			w.extraAttempts[2] = Attempt{Outcome: Refused, Err: connect.NewError(connect.CodeFailedPrecondition, ledger.ErrEpochGap)}
			return leaves[:9:9]
		}, "chip 6's epoch-2 entry, valid and fresh, was refused"},
		{"epoch 2 before epoch 1", func(w *Workload, leaves [][]byte) [][]byte {
			w.attempts[6] = Attempt{Outcome: Ambiguous}
			w.extraAttempts[2] = Attempt{Outcome: Ambiguous}
			return [][]byte{leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], leaves[5], leaves[6], leaves[9], leaves[7], nil}
		}, "chip 6's entries in the log, at [7 8], have epochs [2 1]"},
		{"an entry no client sent", func(w *Workload, leaves [][]byte) [][]byte {
			w.Extras[2].Leaf = leaves[1] // chip 6's epoch-2 entry was another leaf
			w.extraAttempts[2] = Attempt{Outcome: Ambiguous}
			return leaves
		}, "leaf 9 is an entry of chip 6 that no client sent"},
		{"unsent append in the log", func(w *Workload, leaves [][]byte) [][]byte {
			return append(leaves, w.Leaves[4], nil)
		}, "chip 4's append was never appended"},
		{"no index root at the end", func(w *Workload, leaves [][]byte) [][]byte {
			return leaves[:10]
		}, "does not end with an index root"},
		{"index root of another size", func(w *Workload, leaves [][]byte) [][]byte {
			return append(leaves[:10:10], leaves[2])
		}, "leaf 10 is an index root covering 2 leaves"},
		{"index root with another root", func(w *Workload, leaves [][]byte) [][]byte {
			bad := append([]byte(nil), leaves[8]...)
			bad[len(bad)-1] ^= 1
			leaves[8] = bad
			return leaves
		}, "leaf 8 is an index root of 5 chips with root"},
		{"station twice", func(w *Workload, leaves [][]byte) [][]byte {
			return append(leaves, leaves[1], nil)
		}, "2 station registrations"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, station, leaves := testLog(t)
			changed := tc.change(w, leaves)
			setIndexRoots(t, changed) // a nil the change added
			_, f := CheckLog(changed, w, station, 1)
			var all []string
			for _, err := range f.Errs() {
				all = append(all, err.Error())
			}
			if !strings.Contains(strings.Join(all, "\n"), tc.want) {
				t.Errorf("findings %q, want one containing %q", all, tc.want)
			}
		})
	}
}

func TestCheckSizesWantsAnIndexRootAtEveryCheckpoint(t *testing.T) {
	_, _, leaves := testLog(t)
	if f := CheckSizes(leaves, []uint64{1, 3, 9, 11, 12}); f.Total() != 0 {
		t.Errorf("sizes ending on index roots: %v", f.Errs())
	}
	f := CheckSizes(leaves, []uint64{4})
	if f.Total() != 1 || !strings.Contains(f.Errs()[0].Error(), "leaf 3 is no index root") {
		t.Errorf("size 4, ending on an escrow entry: %v", f.Errs())
	}
}

func TestScanNodeLogAllowsOnlyTheExpectedErrors(t *testing.T) {
	out := `=== start 1
time=2026-01-01T00:00:00Z level=INFO msg="node started"
time=2026-01-01T00:00:01Z level=WARN msg="[ERROR] raft: failed to contact" component=raft
time=2026-01-01T00:00:02Z level=ERROR msg="something unforeseen" err=boom
panic: runtime error
`
	allowed := make(map[string]int)
	bad := ScanNodeLog(out, allowed)
	if len(bad) != 2 || !strings.Contains(bad[0], "something unforeseen") || !strings.HasPrefix(bad[1], "panic: ") {
		t.Errorf("bad lines %q, want the unforeseen ERROR line and the panic", bad)
	}
	for _, a := range allowedErrors {
		if a.Example == "" || !a.Match.MatchString(a.Example) {
			t.Errorf("allowed error %s does not match its example %q", a.Name, a.Example)
		}
		if bad := ScanNodeLog(a.Example+"\n", allowed); len(bad) != 0 {
			t.Errorf("allowed error %s's example is reported: %q", a.Name, bad)
		}
	}
}
