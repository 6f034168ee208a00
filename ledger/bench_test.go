package ledger

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// benchLeaves reads a leaf count from the environment, so the long
// benchmarks can be shortened in CI: CHIPLEDGER_BENCH_LEAVES=20000.
func benchLeaves(def uint64) uint64 {
	if v, err := strconv.ParseUint(os.Getenv("CHIPLEDGER_BENCH_LEAVES"), 10, 64); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkAppend appends 1,536-byte escrow entries with random chip IDs in
// batches of 256, fsync on, chip index included, from an empty store up to
// one million leaves (CHIPLEDGER_BENCH_LEAVES), and reports the rate over
// the whole run and over its first and last tenth, and the bytes on disk per
// leaf beyond the leaf itself. Run with -benchtime=1x.
func BenchmarkAppend(b *testing.B) {
	total := benchLeaves(1_000_000)
	const batchSize, leafSize = 256, 1536
	template := fakeEscrowLeaf(b, chipN(0), 1, leafSize)
	chipOffset := 2 + 1 // u16 kind, u8 chip length
	window := max(total/10, batchSize)
	for range b.N {
		dir := b.TempDir()
		s, err := Open(dir, Options{NoSync: os.Getenv("NOSYNC") != ""})
		if err != nil {
			b.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, batchSize*leafSize)
		batch := make([][]byte, batchSize)
		for i := range batch {
			batch[i] = buf[i*leafSize : (i+1)*leafSize]
			copy(batch[i], template)
		}
		var rates, userCPU, sysCPU []float64
		start, windowStart := time.Now(), time.Now()
		user0, sys0 := cpuTime()
		var windowLeaves uint64
		for s.Size() < total {
			for _, l := range batch {
				binary.BigEndian.PutUint64(l[chipOffset:], rng.Uint64())
				binary.BigEndian.PutUint64(l[chipOffset+8:], rng.Uint64())
			}
			if _, err := s.Append(batch, nil); err != nil {
				b.Fatal(err)
			}
			windowLeaves += batchSize
			if windowLeaves >= window || s.Size() >= total {
				rates = append(rates, float64(windowLeaves)/time.Since(windowStart).Seconds())
				user, sys := cpuTime()
				userCPU = append(userCPU, (user-user0).Seconds()*1e6/float64(windowLeaves))
				sysCPU = append(sysCPU, (sys-sys0).Seconds()*1e6/float64(windowLeaves))
				windowStart, user0, sys0, windowLeaves = time.Now(), user, sys, 0
			}
		}
		elapsed := time.Since(start)
		b.Logf("leaves/s per tenth: %.0f", rates)
		b.Logf("user CPU µs/leaf per tenth: %.2f", userCPU)
		b.Logf("system CPU µs/leaf per tenth: %.2f", sysCPU)
		b.ReportMetric(float64(s.Size())/elapsed.Seconds(), "leaves/s")
		b.ReportMetric(rates[0], "first-tenth-leaves/s")
		b.ReportMetric(rates[len(rates)-1], "last-tenth-leaves/s")
		b.ReportMetric(userCPU[0], "first-tenth-user-µs/leaf")
		b.ReportMetric(userCPU[len(userCPU)-1], "last-tenth-user-µs/leaf")
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(dirSize(b, dir)-s.dataLen+2*total)/float64(total), "overhead-bytes/leaf")
	}
}

func dirSize(b *testing.B, dir string) uint64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var n uint64
	for _, e := range entries {
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		n += uint64(fi.Size())
	}
	return n
}

var (
	benchStoresMu sync.Mutex
	benchStores   = map[uint64]*Store{}
)

// benchStore returns a store of n small leaves, built once per test binary
// run and removed by TestMain.
func benchStore(b *testing.B, n uint64) *Store {
	benchStoresMu.Lock()
	defer benchStoresMu.Unlock()
	if s := benchStores[n]; s != nil {
		return s
	}
	dir, err := os.MkdirTemp("", "chipledger-bench-")
	if err != nil {
		b.Fatal(err)
	}
	s, err := Open(dir, Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	batch := make([][]byte, 0, 4096)
	for i := range n {
		batch = append(batch, binary.BigEndian.AppendUint64(nil, i))
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := s.Append(batch, nil); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	benchStores[n] = s
	return s
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, s := range benchStores {
		s.Close()
		os.RemoveAll(s.dir)
	}
	os.Exit(code)
}

// proofSizes are the tree sizes of the proof benchmarks; 10M is opt-in
// (CHIPLEDGER_BENCH_10M=1) because building it takes a minute.
func proofSizes() []uint64 {
	sizes := []uint64{benchLeaves(1_000_000)}
	if os.Getenv("CHIPLEDGER_BENCH_10M") != "" {
		sizes = append(sizes, 10_000_000)
	}
	return sizes
}

// BenchmarkInclusionProof generates inclusion proofs for random leaves at the
// full tree size, on one goroutine.
func BenchmarkInclusionProof(b *testing.B) {
	for _, n := range proofSizes() {
		b.Run(fmt.Sprintf("leaves=%d", n), func(b *testing.B) {
			s := benchStore(b, n)
			rng := rand.New(rand.NewPCG(3, 4))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := s.InclusionProof(rng.Uint64N(n), n); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "proofs/s")
		})
	}
}

// BenchmarkConsistencyProof generates consistency proofs from a random older
// size to the full tree size.
func BenchmarkConsistencyProof(b *testing.B) {
	for _, n := range proofSizes() {
		b.Run(fmt.Sprintf("leaves=%d", n), func(b *testing.B) {
			s := benchStore(b, n)
			rng := rand.New(rand.NewPCG(5, 6))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := s.ConsistencyProof(1+rng.Uint64N(n-1), n); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "proofs/s")
		})
	}
}

// BenchmarkHashTile reads full level-0 hash tiles.
func BenchmarkHashTile(b *testing.B) {
	n := benchLeaves(1_000_000)
	s := benchStore(b, n)
	rng := rand.New(rand.NewPCG(7, 8))
	b.ResetTimer()
	for range b.N {
		if _, err := s.ReadTile(TileRef{Index: rng.Uint64N(n / 256), Width: 256}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEntryTile reads full entry bundles of 1,536-byte leaves, each
// leaf checked against its stored leaf hash.
func BenchmarkEntryTile(b *testing.B) {
	s, err := Open(b.TempDir(), Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const tiles = 64
	batch := make([][]byte, 256)
	for t := range tiles {
		for i := range batch {
			batch[i] = binary.BigEndian.AppendUint64(make([]byte, 0, 1536), uint64(t*256+i))[:1536]
		}
		if _, err := s.Append(batch, nil); err != nil {
			b.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(9, 10))
	b.SetBytes(256 * (2 + 1536))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := s.ReadTile(TileRef{Entries: true, Index: rng.Uint64N(tiles), Width: 256}); err != nil {
			b.Fatal(err)
		}
	}
}
