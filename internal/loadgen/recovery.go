package loadgen

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/internal/devicelink"
)

// RecoveryScenario is one configuration of the recovery benchmark.
type RecoveryScenario struct {
	Nodes   int `json:"nodes"` // 0: a running cluster
	Devices int `json:"devices"`
}

// The ways a recovering side holds its client.
const (
	// FreshClient is a new client.Client per device, as a device
	// recovering itself has: the station registrations, the checkpoint and
	// every proof are fetched anew.
	FreshClient = "fresh"
	// SharedClient is one client.Client for every device, with its
	// client.LogInfo fetched once (client.RecoverOptions.LogInfo), as a
	// repair shop has.
	SharedClient = "shared"
)

// RecoveryReport is the outcome of a recovery scenario for one way of
// holding the client.
type RecoveryReport struct {
	RecoveryScenario
	Client string `json:"client"` // FreshClient or SharedClient
	// Recover is client.Recover of each device in turn, one at a time,
	// from reading its chip ID to its keys restored, every check included.
	// A recovery that fails counts as an error.
	Recover Stats `json:"recover"`
	// The mean time of each part of a recovery (client.RecoveryDurations).
	DeviceMs  float64 `json:"device_ms"`
	LedgerMs  float64 `json:"ledger_ms"`
	VerifyMs  float64 `json:"verify_ms"`
	RestoreMs float64 `json:"restore_ms"`
}

// RunRecovery runs the recovery scenarios: each provisions its devices
// through a station (outside the timed phase), then, for each way of holding
// the client, wipes every device and recovers them one after another.
func RunRecovery(ctx context.Context, o Options, scenarios []RecoveryScenario) ([]RecoveryReport, error) {
	o, cleanup, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	defer cleanup()
	var reports []RecoveryReport
	for _, s := range scenarios {
		r, err := runRecovery(ctx, &o, s)
		if err != nil {
			return nil, fmt.Errorf("recovery, %s: %w", nodesName(s.Nodes), err)
		}
		reports = append(reports, r...)
	}
	return reports, nil
}

func runRecovery(ctx context.Context, o *Options, s RecoveryScenario) ([]RecoveryReport, error) {
	t, err := o.start(ctx, s.Nodes)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	if t.logKey == "" {
		return nil, ErrNoLogKey
	}
	o.Progress.logf("recovery, %s: provisioning %d devices…", nodesName(s.Nodes), s.Devices)
	f, err := newFactory(ctx, o, t.addrs, t.logKey, s.Devices)
	if err != nil {
		return nil, err
	}
	defer f.close()
	if res := f.provisionAll(ctx, 64, o.Progress); res.Failed > 0 {
		return nil, fmt.Errorf("%d devices failed to provision: %v", res.Failed, res.Failures)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var reports []RecoveryReport
	for _, mode := range []string{FreshClient, SharedClient} {
		r, err := recoverAll(ctx, t, f, mode)
		if err != nil {
			return nil, err
		}
		r.RecoveryScenario = s
		o.Progress.logf("  %s client: p50 %.1f ms", mode, r.Recover.P50Ms)
		reports = append(reports, *r)
	}
	return reports, nil
}

// ErrNoLogKey reports a scenario that verifies what the log serves run
// against a running cluster without its log key.
var ErrNoLogKey = errors.New("no log verifier key for the running cluster")

// recoverAll wipes every device and recovers each in turn.
func recoverAll(ctx context.Context, t *target, f *factory, mode string) (*RecoveryReport, error) {
	for _, d := range f.devices {
		if err := d.Wipe(ctx); err != nil {
			return nil, err
		}
	}
	var shared *client.Client
	var opts client.RecoverOptions
	if mode == SharedClient {
		var err error
		if shared, err = client.New(client.Options{Addrs: t.addrs, LogKey: t.logKey}); err != nil {
			return nil, err
		}
		defer shared.Close()
		if opts.LogInfo, err = shared.LogInfo(ctx); err != nil {
			return nil, err
		}
	}
	durations := make([]client.RecoveryDurations, len(f.devices))
	st := measure(ctx, len(f.devices), 1, func(ctx context.Context, _, i int) error {
		cl := shared
		if cl == nil {
			var err error
			if cl, err = client.New(client.Options{Addrs: t.addrs, LogKey: t.logKey}); err != nil {
				return err
			}
			defer cl.Close()
		}
		rep, err := client.Recover(ctx, cl, devicelink.ForRecovery(f.devices[i]), opts)
		if err == nil && !rep.Restored {
			err = fmt.Errorf("device %s: recovery reported no keys restored", rep.ChipID)
		}
		if rep != nil {
			durations[i] = rep.Durations
		}
		return err
	})
	r := &RecoveryReport{Client: mode, Recover: st}
	var sum client.RecoveryDurations
	for _, d := range durations {
		sum.Device += d.Device
		sum.Ledger += d.Ledger
		sum.Verify += d.Verify
		sum.Restore += d.Restore
	}
	n := time.Duration(max(len(durations), 1))
	r.DeviceMs, r.LedgerMs, r.VerifyMs, r.RestoreMs = ms(sum.Device/n), ms(sum.Ledger/n), ms(sum.Verify/n), ms(sum.Restore/n)
	return r, nil
}
