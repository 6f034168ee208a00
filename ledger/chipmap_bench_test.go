package ledger

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chipledger/chipledger/proofs"
)

// chipMapBenchSize is the number of chips of the chip map benchmarks,
// 1,000,000 unless CHIPLEDGER_BENCH_CHIPS says otherwise (CI uses fewer).
func chipMapBenchSize() int {
	if v, err := strconv.Atoi(os.Getenv("CHIPLEDGER_BENCH_CHIPS")); err == nil && v > 0 {
		return v
	}
	return 1_000_000
}

// benchChipID is the 16-byte ID of the i-th benchmark chip.
func benchChipID(i uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("benchchp"), i)
}

// benchIndexValue is the value of the i-th benchmark chip.
func benchIndexValue(i uint64) proofs.IndexValue {
	v := proofs.IndexValue{Epoch: 1, LeafIndex: 2*i + 1}
	binary.BigEndian.PutUint64(v.LeafHash[:], i)
	return v
}

func benchMapPairs(n int) []MapPair {
	ps := make([]MapPair, n)
	for i := range ps {
		ps[i] = MapPair{proofs.MapKey(benchChipID(uint64(i))), proofs.ValueHash(benchIndexValue(uint64(i)))}
	}
	return ps
}

var benchChipMap = sync.OnceValue(func() *ChipMap { return BuildChipMap(benchMapPairs(chipMapBenchSize())) })

// BenchmarkChipMapUpdate256 measures one FSM batch: 256 new chips into a map
// of chipMapBenchSize chips (which grows by 256 per iteration).
func BenchmarkChipMapUpdate256(b *testing.B) {
	m := BuildChipMap(benchMapPairs(chipMapBenchSize()))
	r := rand.NewChaCha8([32]byte{1})
	batch := make([]MapPair, 256)
	for b.Loop() {
		for i := range batch {
			r.Read(batch[i].Key[:])
			r.Read(batch[i].ValueHash[:])
		}
		m.Update(batch)
	}
	b.ReportMetric(float64(m.Len()), "chips")
}

// BenchmarkChipMapProve measures Prove of present and absent chips, and
// reports the size of the encoded map proof and its non-empty siblings.
func BenchmarkChipMapProve(b *testing.B) {
	m, n := benchChipMap(), uint64(chipMapBenchSize())
	var bytes, siblings, count int
	for i := range uint64(1000) {
		p := benchMapProve(b, m, i*(2*n/1000), n)
		enc, err := p.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		bytes += len(enc)
		for _, s := range p.Siblings {
			if s != proofs.EmptyMapRoot() {
				siblings++
			}
		}
		count++
	}
	r := rand.New(rand.NewPCG(1, 2))
	for b.Loop() {
		benchMapProve(b, m, r.Uint64N(2*n), n) // half of them absent
	}
	b.ReportMetric(float64(bytes)/float64(count), "proof-B")
	b.ReportMetric(float64(siblings)/float64(count), "siblings")
}

func benchMapProve(b *testing.B, m *ChipMap, i, n uint64) *proofs.MapProof {
	var value *proofs.IndexValue
	if i < n {
		v := benchIndexValue(i)
		value = &v
	}
	p, _, err := m.Prove(proofs.MapKey(benchChipID(i)), value)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkVerifyMapProof measures what a device does with a map proof from
// a map of chipMapBenchSize chips.
func BenchmarkVerifyMapProof(b *testing.B) {
	m, n := benchChipMap(), uint64(chipMapBenchSize())
	const k = 64
	ps := make([]*proofs.MapProof, k)
	for i := range ps {
		ps[i] = benchMapProve(b, m, uint64(i)*(n/k), n)
	}
	root := m.Root()
	i := 0
	for b.Loop() {
		if _, _, err := proofs.VerifyMapProof(root, benchChipID(uint64(i%k)*(n/k)), ps[i%k]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkBuildChipMap measures the start-up build of a map of
// chipMapBenchSize chips from unsorted pairs, and the heap it keeps per chip.
func BenchmarkBuildChipMap(b *testing.B) {
	ps := benchMapPairs(chipMapBenchSize())
	var m *ChipMap
	var before, after runtime.MemStats
	var elapsed time.Duration
	runs := 0
	for b.Loop() {
		m = nil
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&before)
		b.StartTimer()
		start := time.Now()
		m = BuildChipMap(ps)
		elapsed += time.Since(start)
		runs++
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	// A full collection with the map live: the arenas hold no pointers, so
	// it should not grow with the number of chips.
	start := time.Now()
	runtime.GC()
	gc := time.Since(start)
	b.ReportMetric(elapsed.Seconds()/float64(runs), "s/build")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(m.Len()), "heap-B/chip")
	b.ReportMetric(float64(gc.Microseconds())/1000, "gc-ms")
	runtime.KeepAlive(m)
	runtime.KeepAlive(ps)
}
