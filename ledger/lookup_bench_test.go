package ledger

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkLookupChip generates chip-index lookup proofs (the map path,
// the index-root leaf's and the entry's inclusion proofs, and the chip's
// history) for random chips of a log of one million chips
// (CHIPLEDGER_BENCH_LEAVES), on one goroutine, and reports the rate and the
// encoded proof's size less the entry leaf.
func BenchmarkLookupChip(b *testing.B) {
	n := benchLeaves(1_000_000)
	const leafSize = 512
	s, err := Open(b.TempDir(), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	template := fakeEscrowLeaf(b, chipN(0), 1, leafSize)
	const chipOffset = 2 + 1 + 8 // u16 kind, u8 chip length, the chip ID's first 8 bytes
	const batchSize = 4096
	buf := make([]byte, batchSize*leafSize)
	batch := make([][]byte, 0, batchSize)
	for i := uint64(0); i < n; i++ {
		leaf := buf[len(batch)*leafSize : (len(batch)+1)*leafSize]
		copy(leaf, template)
		binary.BigEndian.PutUint64(leaf[chipOffset:], i)
		batch = append(batch, leaf)
		if len(batch) == batchSize || i == n-1 {
			if _, err := s.AppendIndexed(batch, nil); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	rng := rand.New(rand.NewPCG(7, 8))
	var size int
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		l, err := s.LookupChip(chipN(rng.Uint64N(n)))
		if err != nil {
			b.Fatal(err)
		}
		if l.Proof.Entry == nil {
			b.Fatal("a provisioned chip looked up as absent")
		}
		if size == 0 {
			// The node adds its signed checkpoint.
			skey, _, _ := GenerateLogKey("bench.chipledger.example/log")
			signer, _ := NewLogSigner(skey)
			if l.Proof.Checkpoint, err = signer.Sign(s.State().Size, s.State().Root); err != nil {
				b.Fatal(err)
			}
			enc, err := l.Proof.MarshalBinary()
			if err != nil {
				b.Fatal(err)
			}
			size = len(enc) - len(l.Proof.Entry)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
	b.ReportMetric(float64(size), "proof-bytes-besides-entry")
	b.Logf("%s chips", fmt.Sprint(s.chips.cmap.Len()))
}
