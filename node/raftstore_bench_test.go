package node

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// BenchmarkRaftLogStore measures what one Raft round waits for on disk: a
// commit of one batch to the Raft log store (raft-boltdb, opened as a node
// opens it, fsync on), for batches of 1, 8 and 64 leaves of 1,536 bytes,
// with 1 store, or 3 stores committing at once on this machine's disk as
// the replicas of a local 3-node cluster do. A round commits on the leader
// and then on the followers, so an append waits for two of these in
// series before the state machines apply it. Each op is one commit on
// every store; p50-µs and p99-µs are per commit.
func BenchmarkRaftLogStore(b *testing.B) {
	for _, stores := range []int{1, 3} {
		for _, leaves := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("stores=%d/leaves=%d", stores, leaves), func(b *testing.B) {
				batch := make([][]byte, leaves)
				for i := range batch {
					batch[i] = make([]byte, 1536)
				}
				data, err := encodeBatch(batch)
				if err != nil {
					b.Fatal(err)
				}
				dir := b.TempDir()
				var (
					mu  sync.Mutex
					lat []time.Duration
					wg  sync.WaitGroup
				)
				opened := make([]raft.LogStore, stores)
				for s := range opened {
					st, err := openRaftStore(filepath.Join(dir, fmt.Sprintf("raft-%d.db", s)), false)
					if err != nil {
						b.Fatal(err)
					}
					defer st.Close()
					opened[s] = st
				}
				b.SetBytes(int64(len(data) * stores))
				b.ResetTimer()
				for _, st := range opened {
					wg.Go(func() {
						own := make([]time.Duration, 0, b.N)
						for i := range b.N {
							start := time.Now()
							if err := st.StoreLogs([]*raft.Log{{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
								b.Error(err)
								return
							}
							own = append(own, time.Since(start))
						}
						mu.Lock()
						lat = append(lat, own...)
						mu.Unlock()
					})
				}
				wg.Wait()
				b.StopTimer()
				if len(lat) == 0 {
					b.Fatal("no commit measured")
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			})
		}
	}
}
