package client_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/chipledger/chipledger/client"
)

// BenchmarkRecover measures a recovery from reading the chip ID to the keys
// restored, every check included (the chip index's lookup proof too),
// against an in-process three-node ledger on loopback, with the device in
// process. Each iteration recovers a wiped device (the wipe is not timed).
// It reports the p50 and p99 latencies and the mean time of each phase.
//
//   - Device: a new client per recovery, trusting nothing yet, as a device
//     recovering itself (its connections are set up in the timed part);
//   - SharedClient: one client for every recovery, as a repair shop's tool,
//     fetching the station registrations each time;
//   - RepairShop: one client and the station registrations fetched once.
func BenchmarkRecover(b *testing.B) {
	f := newRecFixture(b, 3)
	devices := make([]*recDevice, 16)
	for i := range devices {
		devices[i] = f.provisioned(1, false)
	}
	ctx := context.Background()
	shared := f.newClient()
	info, err := shared.LogInfo(ctx)
	if err != nil {
		b.Fatal(err)
	}

	for _, bc := range []struct {
		name   string
		client func() (*client.Client, func())
		opts   client.RecoverOptions
	}{
		{"Device", func() (*client.Client, func()) {
			c, err := client.New(client.Options{Addrs: f.cluster.Addrs(), LogKey: f.vkey})
			if err != nil {
				b.Fatal(err)
			}
			return c, func() { c.Close() }
		}, client.RecoverOptions{}},
		{"SharedClient", func() (*client.Client, func()) { return shared, func() {} }, client.RecoverOptions{}},
		{"RepairShop", func() (*client.Client, func()) { return shared, func() {} }, client.RecoverOptions{LogInfo: info}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			latencies := make([]time.Duration, 0, b.N)
			var phases client.RecoveryDurations
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				d := devices[i%len(devices)]
				if err := d.Wipe(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()

				start := time.Now()
				c, done := bc.client()
				rep, err := client.Recover(ctx, c, d, bc.opts)
				latencies = append(latencies, time.Since(start))
				done()
				if err != nil || !rep.Restored {
					b.Fatalf("recover: %v", err)
				}
				phases.Ledger += rep.Durations.Ledger
				phases.Verify += rep.Durations.Verify
				phases.Restore += rep.Durations.Restore
			}
			b.StopTimer()
			slices.Sort(latencies)
			n := len(latencies)
			b.ReportMetric(float64(latencies[n/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(latencies[min(n-1, n*99/100)].Microseconds())/1000, "p99-ms")
			// Where the time goes, on average: the ledger round trips with
			// their checks, the local checks, the device's restore.
			for unit, d := range map[string]time.Duration{"ledger-ms": phases.Ledger, "verify-ms": phases.Verify, "restore-ms": phases.Restore} {
				b.ReportMetric(float64(d.Microseconds())/1000/float64(n), unit)
			}
		})
	}
}
