package provisioner

import (
	"context"
	"fmt"
	"testing"

	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/ledger"
)

// BenchmarkProvision provisions emulated in-process devices through one
// station against a 1- and a 3-node ledger (fsync on), with 1, 8 and 64
// devices in flight, and reports devices per second and the mean time of
// each step. Run with -benchtime=1x (each sub-benchmark provisions a fixed
// number of devices).
func BenchmarkProvision(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		for _, inFlight := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("nodes=%d/in-flight=%d", nodes, inFlight), func(b *testing.B) {
				f := newBenchStation(b, nodes)
				n := map[int]int{1: 200, 8: 1000, 64: 3000}[inFlight]
				devs := make([]device.Conn, n)
				for i := range devs {
					id, _ := ledger.NewIMEI(fmt.Sprintf("35209902%06d", i))
					d, err := device.Manufacture(device.ManufactureOptions{Identities: ledger.Identities{id}, Trust: f.ca.Trust(), LogVerifierKey: f.vkey})
					if err != nil {
						b.Fatal(err)
					}
					devs[i] = d
				}
				b.ResetTimer()
				res := f.station.ProvisionAll(context.Background(), devs, inFlight, nil)
				b.StopTimer()
				if res.Failed > 0 {
					b.Fatalf("%d failed: %v", res.Failed, res.Failures)
				}
				b.ReportMetric(res.PerSecond, "devices/s")
				b.ReportMetric(float64(res.P50.Microseconds())/1000, "p50-ms")
				b.Logf("%d nodes, %d in flight: %.0f devices/s, p50 %s p99 %s; mean steps: key %s package %s certificate %s sign %s ledger %s receipt %s",
					nodes, inFlight, res.PerSecond, res.P50, res.P99, res.Steps.KeyPair, res.Steps.Package, res.Steps.Certificate, res.Steps.Sign, res.Steps.Ledger, res.Steps.Receipt)
			})
		}
	}
}

func newBenchStation(b *testing.B, nodes int) *stationFixture {
	b.Helper()
	return newStationFixtureTB(b, nodes, false)
}
