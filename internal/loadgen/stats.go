package loadgen

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Stats summarises a run of timed operations (requests, recoveries).
type Stats struct {
	Ops     int     `json:"ops"` // operations that succeeded
	Errors  int     `json:"errors"`
	Seconds float64 `json:"seconds"` // wall time of the whole run
	// PerSecond is successful operations per second of wall time, all
	// workers together.
	PerSecond float64 `json:"per_second"`
	// P50Ms, P99Ms and MaxMs are latencies of one operation, from its
	// start to its result, in milliseconds.
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
	FirstErr string  `json:"first_error,omitempty"`
}

// measure runs op once for each i in [0, n), from workers concurrent
// goroutines (worker is the goroutine's number, for per-worker state such
// as a client), timing each call, and summarises the run. It stops early
// when ctx ends; the calls not made count as neither successes nor errors.
func measure(ctx context.Context, n, workers int, op func(ctx context.Context, worker, i int) error) Stats {
	lat := make([]time.Duration, n)
	var next, errs atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := range max(workers, 1) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				if err := op(ctx, w, i); err != nil {
					errs.Add(1)
					once.Do(func() { firstErr = err })
					continue
				}
				lat[i] = max(time.Since(t0), 1)
			}
		})
	}
	wg.Wait()
	return summarize(lat, int(errs.Load()), firstErr, time.Since(start))
}

// summarize turns per-operation latencies (0 for an operation that failed
// or did not run) into Stats.
func summarize(lat []time.Duration, errors int, firstErr error, d time.Duration) Stats {
	ok := slices.DeleteFunc(slices.Clone(lat), func(l time.Duration) bool { return l <= 0 })
	slices.Sort(ok)
	s := Stats{Ops: len(ok), Errors: errors, Seconds: d.Seconds()}
	if firstErr != nil {
		s.FirstErr = firstErr.Error()
	}
	if len(ok) > 0 {
		s.PerSecond = float64(len(ok)) / d.Seconds()
		s.P50Ms = ms(ok[len(ok)/2])
		s.P99Ms = ms(ok[min(len(ok)-1, len(ok)*99/100)])
		s.MaxMs = ms(ok[len(ok)-1])
	}
	return s
}

// err returns the run's first error, if any operation failed.
func (s Stats) err() error {
	if s.Errors == 0 {
		return nil
	}
	return &RunError{Errors: s.Errors, First: s.FirstErr}
}

// A RunError reports a setup phase (filling a log, provisioning the devices
// to recover) in which operations failed, so the scenario could not be
// measured.
type RunError struct {
	Errors int
	First  string
}

func (e *RunError) Error() string {
	return fmt.Sprintf("%d operations failed, the first with: %s", e.Errors, e.First)
}
