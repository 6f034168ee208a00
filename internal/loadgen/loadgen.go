// Package loadgen drives load against a chipledger cluster and measures
// it, for `chipledger bench` and the benchmarks: appends (RunAppend), proofs
// (RunProofs), recoveries (RunRecovery), provisioning (RunProvisioning), and
// appends and proofs as the log grows (RunGrowth), each on fresh in-process
// clusters or a running one, and all of them together (RunSuite). It makes
// every entry and device before the timed phase, and reports numbers only:
// it asserts no threshold, and drawing them is internal/benchplot's.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// Result summarises a load run.
type Result struct {
	Appends  int
	Errors   int
	Duration time.Duration
	// PerSecond is acknowledged appends per second.
	PerSecond float64
	// P50, P99 and Max are append-to-receipt latencies.
	P50, P99, Max time.Duration
	// FirstError is the first error seen, if any.
	FirstError error
	// CPU is the CPU time the whole process used during the run, and
	// SysCPU the part of it in the kernel (both 0 where the platform does
	// not report it). With an in-process cluster that is the cluster's and
	// the load's; against a running cluster, the load generator's alone.
	CPU, SysCPU time.Duration
}

// CPUPerAppend is the process CPU time per acknowledged append (0 if
// unknown).
func (r Result) CPUPerAppend() time.Duration {
	if r.Appends == 0 {
		return 0
	}
	return r.CPU / time.Duration(r.Appends)
}

// Cores is the average number of cores the process kept busy (0 if
// unknown).
func (r Result) Cores() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return r.CPU.Seconds() / r.Duration.Seconds()
}

func (r Result) String() string {
	s := fmt.Sprintf("%d appends in %s: %.0f/s, p50 %s, p99 %s, max %s, %d errors",
		r.Appends, r.Duration.Round(time.Millisecond), r.PerSecond,
		r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond), r.Max.Round(10*time.Microsecond), r.Errors)
	if r.CPU > 0 {
		s += fmt.Sprintf("; process CPU %s (%s in the kernel), %.2f cores, %d µs per append",
			r.CPU.Round(time.Millisecond), r.SysCPU.Round(time.Millisecond), r.Cores(), r.CPUPerAppend().Microseconds())
	}
	return s
}

// NewHTTPClient returns an HTTP client for the load: the Connect protocol
// over HTTP/1.1 with one keep-alive connection per concurrent client, which
// costs less CPU per request on the machine under test than HTTP/2 (the
// nodes serve both).
func NewHTTPClient() *http.Client {
	var p http.Protocols
	p.SetHTTP1(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p, MaxIdleConnsPerHost: 1024}}
}

// Append sends every leaf once to addr (an API address) from the given
// number of concurrent clients, and measures each append from request to
// receipt.
func Append(ctx context.Context, hc *http.Client, addr string, leaves [][]byte, clients int) Result {
	lc := chipledgerv1connect.NewLedgerServiceClient(hc, "http://"+addr)
	return Run(ctx, leaves, clients, func(ctx context.Context, leaf []byte) error {
		_, err := lc.Append(ctx, connect.NewRequest(&v1.AppendRequest{Leaf: leaf}))
		return err
	})
}

// Run appends every leaf once with the given append function from the
// given number of concurrent clients, and measures each append from call
// to return. Append uses it over the Connect API; a benchmark can pass an
// in-process call to see what the API hop costs.
func Run(ctx context.Context, leaves [][]byte, clients int, appendLeaf func(ctx context.Context, leaf []byte) error) Result {
	lat := make([]time.Duration, len(leaves))
	var next atomic.Int64
	var errs atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	user0, sys0, cpuOK := processCPU()
	start := time.Now()
	for range max(clients, 1) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(leaves) || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				if err := appendLeaf(ctx, leaves[i]); err != nil {
					errs.Add(1)
					once.Do(func() { firstErr = err })
					lat[i] = -1
					continue
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	user1, sys1, _ := processCPU()
	ok := slices.DeleteFunc(lat, func(l time.Duration) bool { return l <= 0 })
	slices.Sort(ok)
	r := Result{Appends: len(ok), Errors: int(errs.Load()), Duration: d, FirstError: firstErr}
	if cpuOK {
		r.CPU, r.SysCPU = user1+sys1-user0-sys0, sys1-sys0
	}
	if len(ok) > 0 {
		r.PerSecond = float64(len(ok)) / d.Seconds()
		r.P50 = ok[len(ok)/2]
		r.P99 = ok[min(len(ok)-1, len(ok)*99/100)]
		r.Max = ok[len(ok)-1]
	}
	if r.FirstError == nil && len(ok) < len(leaves) && ctx.Err() != nil {
		r.FirstError = ctx.Err()
	}
	return r
}

// ErrNoLeader is returned by Leader when no node names a leader.
var ErrNoLeader = errors.New("no leader")

// Leader returns the API address of the leader, asking the nodes at addrs
// until one names it (an election may be under way, or a cluster just
// started) or leaderWait has passed.
func Leader(ctx context.Context, hc *http.Client, addrs []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, leaderWait)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		for _, a := range addrs {
			st, err := chipledgerv1connect.NewAdminServiceClient(hc, "http://"+a).Status(ctx, connect.NewRequest(&v1.StatusRequest{}))
			if err == nil && st.Msg.LeaderAddress != "" {
				return st.Msg.LeaderAddress, nil
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return "", fmt.Errorf("%w named by %v within %s", ErrNoLeader, addrs, leaderWait)
		}
	}
}

// leaderWait bounds how long Leader waits for the nodes to name a leader.
const leaderWait = 10 * time.Second
