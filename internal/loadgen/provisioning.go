package loadgen

import (
	"context"
	"fmt"
)

// ProvisionScenario is one configuration of the provisioning benchmark.
type ProvisionScenario struct {
	Nodes    int `json:"nodes"` // 0: a running cluster
	InFlight int `json:"in_flight"`
	Devices  int `json:"devices"`
}

// ProvisionReport is the outcome of a provisioning scenario: one station
// (provisioner.Station.ProvisionAll) provisioning in-process emulated
// devices, its whole handshake with each device and its append to the
// ledger with the receipt checked.
type ProvisionReport struct {
	ProvisionScenario
	Succeeded int     `json:"succeeded"`
	Failed    int     `json:"failed"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"devices_per_second"`
	// P50Ms and P99Ms are per-device provisioning latencies.
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	// The mean time of each step over the devices that succeeded
	// (provisioner.Timings).
	KeyPairMs     float64        `json:"key_pair_ms"`
	PackageMs     float64        `json:"package_ms"`
	CertificateMs float64        `json:"certificate_ms"`
	SignMs        float64        `json:"sign_ms"`
	LedgerMs      float64        `json:"ledger_ms"`
	ReceiptMs     float64        `json:"receipt_ms"`
	Failures      map[string]int `json:"failures,omitempty"`
}

// RunProvisioning runs the provisioning scenarios. Consecutive scenarios
// with the same number of nodes share a fresh cluster; each has a new
// station, whose key pool and devices are made outside the timed phase.
func RunProvisioning(ctx context.Context, o Options, scenarios []ProvisionScenario) ([]ProvisionReport, error) {
	o, cleanup, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	defer cleanup()
	var reports []ProvisionReport
	var t *target
	defer func() {
		if t != nil {
			t.Close()
		}
	}()
	for i, s := range scenarios {
		if i == 0 || s.Nodes != scenarios[i-1].Nodes {
			if t != nil {
				t.Close()
			}
			if t, err = o.start(ctx, s.Nodes); err != nil {
				return nil, err
			}
		}
		r, err := runProvisioning(ctx, &o, t, s)
		if err != nil {
			return nil, fmt.Errorf("provisioning, %s, %d in flight: %w", nodesName(s.Nodes), s.InFlight, err)
		}
		reports = append(reports, *r)
	}
	return reports, nil
}

func runProvisioning(ctx context.Context, o *Options, t *target, s ProvisionScenario) (*ProvisionReport, error) {
	if t.logKey == "" {
		return nil, ErrNoLogKey
	}
	f, err := newFactory(ctx, o, t.addrs, t.logKey, s.Devices)
	if err != nil {
		return nil, err
	}
	defer f.close()
	o.Progress.logf("provisioning, %s: %d devices, %d in flight…", nodesName(s.Nodes), s.Devices, s.InFlight)
	res := f.provisionAll(ctx, s.InFlight, o.Progress)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o.Progress.logf("  %.0f devices/s", res.PerSecond)
	r := &ProvisionReport{
		ProvisionScenario: s, Succeeded: res.Succeeded, Failed: res.Failed,
		Seconds: res.Duration.Seconds(), PerSecond: res.PerSecond, P50Ms: ms(res.P50), P99Ms: ms(res.P99),
		KeyPairMs: ms(res.Steps.KeyPair), PackageMs: ms(res.Steps.Package), CertificateMs: ms(res.Steps.Certificate),
		SignMs: ms(res.Steps.Sign), LedgerMs: ms(res.Steps.Ledger), ReceiptMs: ms(res.Steps.Receipt),
	}
	if len(res.Failures) > 0 {
		r.Failures = res.Failures
	}
	return r, nil
}
