package node

import (
	"runtime"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/chipledger/chipledger/internal/testpki"
)

// BenchmarkApplyBatch measures the state machine's serial work per
// appended leaf: admitting, appending (fsync off), indexing and signing
// batches of 64 new 1,536-byte escrow entries of one station, as the
// leader's batcher proposes them under load.
func BenchmarkApplyBatch(b *testing.B) {
	const batchLeaves, batches = 64, 200
	pki, err := sharedPKI()
	if err != nil {
		b.Fatal(err)
	}
	leaves := make([][]byte, batchLeaves*batches)
	var wg sync.WaitGroup
	for w := range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := w; i < len(leaves); i += runtime.GOMAXPROCS(0) {
				leaf, err := pki.EscrowLeaf(testpki.ChipID(uint64(i)), 1, 1536)
				if err != nil {
					b.Error(err)
					return
				}
				leaves[i] = leaf
			}
		})
	}
	wg.Wait()
	cmds := make([][]byte, batches)
	for i := range cmds {
		if cmds[i], err = encodeBatch(leaves[i*batchLeaves : (i+1)*batchLeaves]); err != nil {
			b.Fatal(err)
		}
	}
	signer, _ := testLogKey(b)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		f, err := newFSM(b.TempDir(), signer, true, nil, testLogger(b), newMetrics())
		if err != nil {
			b.Fatal(err)
		}
		station, err := encodeBatch([][]byte{pki.StationLeaf()})
		if err != nil {
			b.Fatal(err)
		}
		index := uint64(1)
		for _, data := range [][]byte{encodeGenesis(), station} {
			f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
			index++
		}
		b.StartTimer()
		for _, data := range cmds {
			res, ok := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}).(*applyResult)
			if !ok || res.results[0].Err != nil {
				b.Fatalf("apply: %+v", res)
			}
			index++
		}
		b.StopTimer()
		f.close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(leaves)), "ns/leaf")
}
