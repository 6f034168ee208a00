package client

import (
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/chipledger/chipledger/proofs"
)

// The compact range a chip's index entry keeps gives the history root of
// proofs.HistoryRoot, the ledger's, for every number of epochs, and takes
// the stored length rangeLen.
func TestChipIndexStateHistoryRootIsTheLedgers(t *testing.T) {
	var st chipIndexState
	var hashes [][32]byte
	for n := uint32(1); n <= 70; n++ {
		h := sha256.Sum256(fmt.Appendf(nil, "entry %d", n))
		hashes = append(hashes, h)
		st.admit(uint64(10*n), h)
		if st.epoch != n || st.index != uint64(10*n) || st.hash != h || len(st.rng) != rangeLen(n) {
			t.Fatalf("after %d entries: epoch %d, index %d, %d range hashes (want %d)", n, st.epoch, st.index, len(st.rng), rangeLen(n))
		}
		if got, want := st.historyRoot(), proofs.HistoryRoot(hashes); got != want {
			t.Fatalf("after %d entries: history root %x, want %x", n, got, want)
		}
	}
}
