package provisioner

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/device"
)

// BatchResult summarises a batch of provisionings.
type BatchResult struct {
	Devices   int `json:"devices"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	// NotStarted counts the devices the batch never began with, because
	// its context ended first.
	NotStarted int           `json:"not_started"`
	Duration   time.Duration `json:"duration_ns"`
	PerSecond  float64       `json:"devices_per_second"`
	// Failures counts failures by cause.
	Failures map[string]int `json:"failures,omitempty"`
	// Examples holds the first error of each cause in Failures, in full.
	Examples map[string]string `json:"examples,omitempty"`
	// P50 and P99 are per-device provisioning latencies.
	P50, P99 time.Duration
	// Mean time of each step over the successful devices.
	Steps Timings
}

// ProvisionAll provisions every device, at most concurrency at a time.
// A device listed twice (the same chip met again) is provisioned once: the
// repeat fails with ErrChipBusy. progress, if not nil, is called after each
// device with its error, one call at a time.
func (s *Station) ProvisionAll(ctx context.Context, devices []device.Conn, concurrency int, progress func(err error)) BatchResult {
	start := time.Now()
	res := BatchResult{Devices: len(devices), Failures: map[string]int{}, Examples: map[string]string{}}
	var mu sync.Mutex
	var lat []time.Duration
	next := make(chan device.Conn)
	var chips chipSet
	var wg sync.WaitGroup
	for range max(concurrency, 1) {
		wg.Go(func() {
			for dev := range next {
				t := time.Now()
				r, err := s.provisionOne(ctx, dev, nil, &chips)
				d := time.Since(t)
				mu.Lock()
				if err != nil {
					res.Failed++
					cause := failureCause(err)
					if res.Failures[cause]++; res.Failures[cause] == 1 {
						res.Examples[cause] = err.Error()
					}
				} else {
					res.Succeeded++
					lat = append(lat, d)
					addTimings(&res.Steps, r.Timings)
				}
				if progress != nil {
					progress(err)
				}
				mu.Unlock()
			}
		})
	}
	for _, d := range devices {
		if ctx.Err() != nil {
			break
		}
		next <- d
	}
	close(next)
	wg.Wait()
	res.NotStarted = res.Devices - res.Succeeded - res.Failed
	res.Duration = time.Since(start)
	res.PerSecond = float64(res.Succeeded) / res.Duration.Seconds()
	if n := len(lat); n > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		res.P50, res.P99 = lat[n/2], lat[min(n-1, n*99/100)]
		for _, p := range []*time.Duration{&res.Steps.KeyPair, &res.Steps.Package, &res.Steps.Certificate, &res.Steps.Sign, &res.Steps.Ledger, &res.Steps.Receipt} {
			*p /= time.Duration(n)
		}
	}
	return res
}

func addTimings(sum *Timings, t Timings) {
	sum.KeyPair += t.KeyPair
	sum.Package += t.Package
	sum.Certificate += t.Certificate
	sum.Sign += t.Sign
	sum.Ledger += t.Ledger
	sum.Receipt += t.Receipt
}

// failureCause names the cause of a failed provisioning for a summary.
func failureCause(err error) string {
	for _, c := range []struct {
		err  error
		name string
	}{
		// First: an interrupted step is reported as whatever failed with
		// it (a device step wraps ErrDeviceRejected around it).
		{context.Canceled, "cancelled"},
		{context.DeadlineExceeded, "timed out"},
		{ErrPoolEmpty, "key pool empty"},
		{ErrRoundTrip, "backup round trip failed"},
		{ErrDeviceRejected, "device rejected a step"},
		{ErrLedgerRejected, "ledger rejected the entry"},
		{ErrIdentityMismatch, "identity mismatch"},
		{ErrChipBusy, "device given twice"},
	} {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	if code := connect.CodeOf(err); code != connect.CodeUnknown {
		return "ledger or device unreachable (" + code.String() + ")"
	}
	return "other"
}
