package loadgen

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/chipledger/chipledger/internal/localcluster"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/provisioner"
)

// Options say where the scenarios of the suite run and with which keys.
type Options struct {
	// Ledger lists the API addresses of a running cluster; empty runs each
	// scenario on a fresh in-process cluster (loopback TCP, fsync on) in a
	// temporary directory under Dir.
	Ledger []string
	// LogKey is the running cluster's note verifier key. The scenarios
	// that verify what the log serves (client-verified proofs, recovery,
	// provisioning) need it and are skipped without it; in-process
	// clusters make their own.
	LogKey string
	// CA is the manufacturer CA that signs entries, stations and device
	// certificates. A running cluster must trust it; nil makes a new one
	// under Dir (for in-process clusters only).
	CA *provisioner.CA
	// LeafSize is the size of each escrow entry the load generator makes
	// (1,536 bytes by default). Provisioned devices make their own.
	LeafSize int
	// Dir holds the in-process clusters' data and the CA; "" is the
	// system's temporary directory.
	Dir string
	// Logger receives the nodes' logs; nil discards them.
	Logger   *slog.Logger
	Progress Progress
}

// Progress receives the progress of a run, for a person watching it.
// Either field may be nil.
type Progress struct {
	// Log receives a line as each step starts or ends (stderr).
	Log io.Writer
	// Count is called as a long phase (making entries, filling a log,
	// provisioning devices) advances: done of total steps. done reaches
	// total at the end of the phase.
	Count func(phase string, done, total int)
}

func (p Progress) logf(format string, args ...any) {
	if p.Log != nil {
		fmt.Fprintf(p.Log, format+"\n", args...)
	}
}

func (p Progress) count(phase string, done, total int) {
	if p.Count != nil {
		p.Count(phase, done, total)
	}
}

// external reports whether the scenarios run against a running cluster.
func (o *Options) external() bool { return len(o.Ledger) > 0 }

// withDefaults fills in the defaults and, for in-process clusters, makes a
// CA if there is none. The cleanup removes what it made.
func (o Options) withDefaults() (Options, func(), error) {
	if o.LeafSize == 0 {
		o.LeafSize = 1536
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.CA != nil {
		return o, func() {}, nil
	}
	if o.external() {
		return o, nil, fmt.Errorf("benchmarking a running cluster needs the manufacturer CA it trusts")
	}
	dir, err := os.MkdirTemp(o.Dir, "chipledger-bench-")
	if err != nil {
		return o, nil, err
	}
	o.Dir = dir
	if o.CA, err = provisioner.InitCA(filepath.Join(dir, "ca"), "Bench Devices Ltd"); err != nil {
		os.RemoveAll(dir)
		return o, nil, err
	}
	return o, func() { os.RemoveAll(dir) }, nil
}

// pki returns a test PKI on the options' CA, with a new station, for the
// load generator's entries.
func (o *Options) pki() (*testpki.PKI, error) {
	return testpki.FromCA(o.CA.Root(), o.CA.RootKey(), o.CA.DeviceCA(), o.CA.DeviceCAKey())
}

// target is the ledger one scenario runs against: a fresh in-process
// cluster or the running one.
type target struct {
	addrs   []string
	logKey  string
	cluster *localcluster.Cluster // nil for a running cluster
	dir     string
}

// start returns the running cluster, or starts an in-process cluster of the
// given number of nodes with a new log key.
func (o *Options) start(ctx context.Context, nodes int) (*target, error) {
	if o.external() {
		return &target{addrs: o.Ledger, logKey: o.LogKey}, nil
	}
	skey, vkey, err := ledger.GenerateLogKey("bench.chipledger.local/log")
	if err != nil {
		return nil, err
	}
	signer, err := ledger.NewLogSigner(skey)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(o.Dir, "cluster-")
	if err != nil {
		return nil, err
	}
	c, err := localcluster.Start(ctx, localcluster.Options{Nodes: nodes, Dir: dir, Signer: signer, Trust: o.CA.Trust(), Logger: o.Logger})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &target{addrs: c.Addrs(), logKey: vkey, cluster: c, dir: dir}, nil
}

// Close stops and removes an in-process cluster.
func (t *target) Close() {
	if t.cluster != nil {
		t.cluster.Close()
		os.RemoveAll(t.dir)
	}
}

// registration returns a registration leaf for the PKI's station dated
// now. testpki's own (PKI.StationLeaf) is dated November 2023, before a CA
// made since (by `chipledger ca init`, or for an in-process suite) is
// valid, and the ledger checks the station's chain at that date. Make it
// once per PKI: registering the same station again with another leaf is
// refused.
func registration(pki *testpki.PKI) ([]byte, error) {
	r := &ledger.StationRegistration{Certificate: pki.Station.Raw, RegisteredAtMs: uint64(time.Now().UnixMilli())}
	return r.MarshalLeaf()
}

// register appends a station registration to the cluster's leader (a
// duplicate if it is registered already) and returns the leader's address.
func register(ctx context.Context, hc *http.Client, addrs []string, stationLeaf []byte) (string, error) {
	leader, err := Leader(ctx, hc, addrs)
	if err != nil {
		return "", err
	}
	if r := Append(ctx, hc, leader, [][]byte{stationLeaf}, 1); r.Errors > 0 {
		return "", fmt.Errorf("register the benchmark station: %w", r.FirstError)
	}
	return leader, nil
}
