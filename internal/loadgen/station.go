package loadgen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/provisioner"
)

// factory is a registered station with its master key, a filled key pool
// and a journal, and the emulated devices it provisions, wired in process
// as `chipledger demo` does; everything but the timed provisioning is made
// here.
type factory struct {
	station *provisioner.Station
	client  *client.Client // the station's ledger client
	devices []*device.Device
	trust   *ledger.Trust
	logKey  string
	close   func()
}

// newFactory registers a new station of the CA in the cluster at addrs,
// fills its key pool with a key per device and manufactures the devices.
func newFactory(ctx context.Context, o *Options, addrs []string, logKey string, devices int) (f *factory, err error) {
	dir, err := os.MkdirTemp(o.Dir, "station-")
	if err != nil {
		return nil, err
	}
	f = &factory{trust: o.CA.Trust(), logKey: logKey}
	var closers []func()
	f.close = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		os.RemoveAll(dir)
	}
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	if f.client, err = client.New(client.Options{Addrs: addrs, LogKey: logKey, Logger: o.Logger}); err != nil {
		return nil, err
	}
	closers = append(closers, func() { f.client.Close() })

	id, err := provisioner.InitStation(filepath.Join(dir, "station"), o.CA, "bench-line", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	leaf, err := id.RegistrationLeaf()
	if err != nil {
		return nil, err
	}
	if _, err := f.client.Append(ctx, leaf); err != nil {
		return nil, fmt.Errorf("register the station: %w", err)
	}
	mkDir := filepath.Join(dir, "master-keys")
	if _, err := provisioner.NewMasterKey(mkDir); err != nil {
		return nil, err
	}
	mk, err := provisioner.LoadMasterKeys(mkDir)
	if err != nil {
		return nil, err
	}
	j, err := provisioner.OpenJournal(filepath.Join(id.Dir, provisioner.JournalFile))
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { j.Close() })
	pool, err := provisioner.OpenPool(filepath.Join(dir, "pool.db"), provisioner.PoolOptions{Create: true})
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { pool.Close() })
	if err := pool.FillContext(ctx, devices, func(done int) { o.Progress.count("device key pool", done, devices) }); err != nil {
		return nil, err
	}
	f.station, err = provisioner.NewStation(provisioner.StationConfig{
		Certificate: id.Certificate, Key: id.Key, CA: o.CA, MasterKeys: mk, Pool: pool,
		Ledger: provisioner.ClientLedger{Client: f.client}, Journal: j, Logger: o.Logger,
	})
	if err != nil {
		return nil, err
	}
	f.devices, err = manufacture(devices, f.trust, logKey)
	return f, err
}

// manufacture makes n emulated devices with distinct IMEIs.
func manufacture(n int, trust *ledger.Trust, logKey string) ([]*device.Device, error) {
	// IMEIs from a random start, so that runs against a running cluster
	// do not all repeat the same identities.
	base := rand.IntN(1_000_000)
	out := make([]*device.Device, n)
	for i := range out {
		imei, err := ledger.NewIMEI(fmt.Sprintf("35209905%06d", (base+i)%1_000_000))
		if err != nil {
			return nil, err
		}
		if out[i], err = device.Manufacture(device.ManufactureOptions{
			Identities: ledger.Identities{imei}, Trust: trust, LogVerifierKey: logKey,
		}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// provisionAll provisions every device, inFlight at a time, with progress.
func (f *factory) provisionAll(ctx context.Context, inFlight int, p Progress) provisioner.BatchResult {
	conns := make([]device.Conn, len(f.devices))
	for i, d := range f.devices {
		conns[i] = d
	}
	// Counted under a lock, so that the counts arrive in order.
	var mu sync.Mutex
	done := 0
	phase := fmt.Sprintf("provisioning %d devices, %d in flight", len(conns), inFlight)
	return f.station.ProvisionAll(ctx, conns, inFlight, func(error) {
		mu.Lock()
		defer mu.Unlock()
		done++
		p.count(phase, done, len(conns))
	})
}
