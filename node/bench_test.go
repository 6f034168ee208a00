package node_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chipledger/chipledger/internal/loadgen"
	"github.com/chipledger/chipledger/internal/localcluster"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/node"
)

// benchFixture is a PKI and, first, its station's registration, then
// valid 1,536-byte escrow entries, all made before any timed phase so the
// load generator's signing does not compete with the cluster.
type benchFixture struct {
	pki    *testpki.PKI
	leaves [][]byte
}

var benchLeaves = sync.OnceValues(func() (*benchFixture, error) {
	pki, err := testpki.New()
	if err != nil {
		return nil, err
	}
	leaves := make([][]byte, 30000)
	var wg sync.WaitGroup
	errs := make(chan error, runtime.GOMAXPROCS(0))
	for w := range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := w; i < len(leaves); i += runtime.GOMAXPROCS(0) {
				leaf, err := pki.EscrowLeaf(testpki.ChipID(uint64(i)), 1, 1536)
				if err != nil {
					errs <- err
					return
				}
				leaves[i] = leaf
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return &benchFixture{pki: pki, leaves: append([][]byte{pki.StationLeaf()}, leaves...)}, nil
})

// BenchmarkAppend measures append-to-receipt throughput and latency of a 1-
// and a 3-node cluster (fsync on, everything on this machine's cores) at 1,
// 16 and 256 concurrent clients sending to the leader. The clients call
// the Connect API over loopback HTTP (via=connect, as stations do), or the
// leader's Append handler in process (via=call), which leaves out the HTTP
// hop on both sides (about 75 µs of CPU per append here) to show what the
// ledger itself sustains. Each sub-benchmark runs a fresh cluster; b.N is
// ignored beyond the first iteration, so run it with -benchtime=1x.
func BenchmarkAppend(b *testing.B) {
	fx, err := benchLeaves()
	if err != nil {
		b.Fatal(err)
	}
	for _, via := range []string{"connect", "call"} {
		for _, nodes := range []int{1, 3} {
			for _, clients := range []int{1, 16, 256} {
				b.Run(fmt.Sprintf("via=%s/nodes=%d/clients=%d", via, nodes, clients), func(b *testing.B) {
					n := map[int]int{1: 1000, 16: 10000, 256: 30000}[clients]
					res := runAppendBench(b, via, nodes, clients, fx.pki.Trust, fx.leaves[:n+1])
					b.ReportMetric(res.PerSecond, "appends/s")
					b.ReportMetric(float64(res.P50.Microseconds())/1000, "p50-ms")
					b.ReportMetric(float64(res.P99.Microseconds())/1000, "p99-ms")
					b.Logf("via %s, %d nodes, %d clients: %s", via, nodes, clients, res)
				})
			}
		}
	}
}

func runAppendBench(b *testing.B, via string, nodes, clients int, trust *ledger.Trust, leaves [][]byte) loadgen.Result {
	skey, _, err := ledger.GenerateLogKey("bench.chipledger.example/log")
	if err != nil {
		b.Fatal(err)
	}
	signer, _ := ledger.NewLogSigner(skey)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := localcluster.Start(ctx, localcluster.Options{Nodes: nodes, Dir: b.TempDir(), Signer: signer, Trust: trust})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	hc := loadgen.NewHTTPClient()
	defer hc.CloseIdleConnections()
	leader, err := loadgen.Leader(ctx, hc, c.Addrs())
	if err != nil {
		b.Fatal(err)
	}
	run := func(leaves [][]byte, clients int) loadgen.Result {
		return loadgen.Append(ctx, hc, leader, leaves, clients)
	}
	if via == "call" {
		var ln *node.Node
		for _, n := range c.Nodes {
			if n.APIAddr() == leader {
				ln = n
			}
		}
		if ln == nil {
			b.Fatalf("no node serves the leader's address %s", leader)
		}
		run = func(leaves [][]byte, clients int) loadgen.Result {
			return loadgen.Run(ctx, leaves, clients, ln.AppendInProcess)
		}
	}
	// The station registration first, then the timed run.
	if r := run(leaves[:1], 1); r.Errors > 0 {
		b.Fatalf("register station: %v", r.FirstError)
	}
	b.ResetTimer()
	stopProfile := profileTimedPhase(b)
	res := run(leaves[1:], clients)
	stopProfile()
	b.StopTimer()
	if res.CPU > 0 {
		b.ReportMetric(float64(res.CPUPerAppend().Microseconds()), "cpu-µs/append")
	}
	if resp, err := hc.Get("http://" + leader + "/metrics"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "chipledger_batch_leaves_sum") || strings.HasPrefix(line, "chipledger_batch_leaves_count") ||
				strings.HasPrefix(line, "chipledger_apply_seconds_sum") {
				b.Log(line)
			}
		}
	}
	if res.Errors > 0 {
		b.Fatalf("%d appends failed, first: %v", res.Errors, res.FirstError)
	}
	return res
}

// profileTimedPhase writes a CPU profile of the timed phase alone to the
// file named by CHIPLEDGER_BENCH_CPUPROFILE, if set (go test -cpuprofile
// would include making the entries and starting the cluster). It returns
// the function that stops it.
func profileTimedPhase(b *testing.B) func() {
	name := os.Getenv("CHIPLEDGER_BENCH_CPUPROFILE")
	if name == "" {
		return func() {}
	}
	f, err := os.Create(name)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}
}
