package chaos

import (
	"strings"
	"testing"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
)

// testLog is a workload of five chips, and a log that keeps its promises:
// chip 0 acknowledged at index 3, chip 1's ambiguous append landed at 4,
// chip 2's ambiguous one did not, chip 3 was refused and chip 4 unsent.
func testLog(t *testing.T) (*Workload, []byte, [][]byte) {
	t.Helper()
	pki, err := testpki.New()
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWorkload(pki, 5)
	if err != nil {
		t.Fatal(err)
	}
	w.attempts = []Attempt{{Outcome: Acked, Index: 3}, {Outcome: Ambiguous}, {Outcome: Ambiguous}, {Outcome: Refused}, {}}
	station := pki.StationLeaf()
	leaves := [][]byte{nil, station, nil, w.Leaves[0], w.Leaves[1], nil}
	setIndexRoots(t, leaves)
	return w, station, leaves
}

// setIndexRoots fills the nil leaves with index roots of the leaves before
// them, as the ledger appends them after each batch.
func setIndexRoots(t *testing.T, leaves [][]byte) {
	t.Helper()
	chips := map[string]bool{}
	for i, leaf := range leaves {
		if leaf == nil {
			var err error
			if leaves[i], err = (&ledger.IndexRoot{CoveredSize: uint64(i), ChipCount: uint64(len(chips))}).MarshalLeaf(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if e, err := ledger.ParseEscrowEntry(leaf); err == nil {
			chips[string(e.ChipID)] = true
		}
	}
}

func TestCheckLogAcceptsALogThatKeepsItsPromises(t *testing.T) {
	w, station, leaves := testLog(t)
	r, f := CheckLog(leaves, w, station, 1)
	for _, err := range f.Errs() {
		t.Error(err)
	}
	want := LogReport{Leaves: 6, Escrow: 2, Stations: 1, IndexRoots: 3, AmbiguousLanded: 1}
	if r != want {
		t.Errorf("report %+v, want %+v", r, want)
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
		}, "leaf 6 is leaf 3 again"},
		{"acknowledged append elsewhere", func(w *Workload, leaves [][]byte) [][]byte {
			return [][]byte{leaves[0], leaves[1], leaves[2], w.Leaves[1], w.Leaves[0], nil}
		}, "chip 0 was acknowledged at index 3 and is at 4"},
		{"refused append in the log", func(w *Workload, leaves [][]byte) [][]byte {
			return append(leaves, w.Leaves[3], nil)
		}, "chip 3's append was refused"},
		{"unsent append in the log", func(w *Workload, leaves [][]byte) [][]byte {
			return append(leaves, w.Leaves[4], nil)
		}, "chip 4 was never appended"},
		{"no index root at the end", func(w *Workload, leaves [][]byte) [][]byte {
			return leaves[:5]
		}, "does not end with an index root"},
		{"index root of another size", func(w *Workload, leaves [][]byte) [][]byte {
			return append(leaves[:5:5], leaves[2])
		}, "leaf 5 is an index root covering 2 leaves"},
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
