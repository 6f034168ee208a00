package client

import (
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// indexAnomalies finds an entry the index hides and one it records that
// the log does not hold, but not entries outside what the index covers or
// the monitor read.
func TestIndexAnomaliesComparesTheIndexWithTheLog(t *testing.T) {
	chip := ledger.ChipID("chip-0001")
	hash := func(i uint64) [32]byte { return sha256.Sum256(fmt.Appendf(nil, "leaf %d", i)) }
	history := func(idx ...uint64) *ChipHistory {
		res := &proofs.LookupResult{Checkpoint: proofs.Checkpoint{Size: 30}, Present: len(idx) > 0}
		for _, i := range idx {
			res.History = append(res.History, proofs.HistoryEntry{Index: i, LeafHash: hash(i)})
		}
		if len(idx) > 0 {
			last := idx[len(idx)-1]
			res.Value = proofs.IndexValue{Epoch: uint32(len(idx)), LeafIndex: last, LeafHash: hash(last)}
		}
		return &ChipHistory{Checkpoint: res.Checkpoint, Index: res}
	}
	seen := func(idx ...uint64) map[uint64]seenEntry {
		m := make(map[uint64]seenEntry)
		for k, i := range idx {
			m[i] = seenEntry{hash: hash(i), epoch: uint32(k + 1)}
		}
		return m
	}
	type want struct {
		kind  AnomalyKind
		index uint64
		epoch uint32
	}
	for _, tc := range []struct {
		name string
		h    *ChipHistory
		seen map[uint64]seenEntry
		from uint64
		want []want
	}{
		{"agree", history(3, 12), seen(3, 12), 0, nil},
		{"the index hides the newest", history(3), seen(3, 12), 0, []want{{AnomalyNotInIndex, 12, 2}}},
		{"the index hides the chip", history(), seen(3), 0, []want{{AnomalyNotInIndex, 3, 1}}},
		{"the index records an entry the log does not hold", history(3, 12), seen(3), 0, []want{{AnomalyNotInLog, 12, 2}}},
		{"another leaf at the index", history(3, 12), map[uint64]seenEntry{3: {hash: hash(3), epoch: 1}, 12: {hash: hash(13), epoch: 2}}, 0,
			[]want{{AnomalyNotInIndex, 12, 2}, {AnomalyNotInLog, 12, 2}}},
		{"an entry past what the index covers", history(3), seen(3, 29), 0, nil},
		{"entries before the scan", history(3, 12), seen(12), 10, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := indexAnomalies(chip, tc.h, tc.seen, tc.from)
			if len(got) != len(tc.want) {
				t.Fatalf("anomalies %+v, want %+v", got, tc.want)
			}
			for i, a := range got {
				w := tc.want[i]
				if a.Kind != w.kind || a.Index != w.index || a.Epoch != w.epoch || !a.Chip.Equal(chip) || a.Checkpoint.Size != 30 || a.Message == "" {
					t.Errorf("anomaly %d: %+v, want %+v", i, a, w)
				}
			}
		})
	}
}
