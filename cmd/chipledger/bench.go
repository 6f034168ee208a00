package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/internal/benchplot"
	"github.com/chipledger/chipledger/internal/loadgen"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/provisioner"
)

const benchDescription = `Runs the benchmark suite and prints a table per scenario group:

  append        throughput and p50/p99 latency of appends at 1, 16 and 256
                concurrent clients with 1,536-byte entries, on 1 and 3 nodes
  proofs        inclusion and consistency proofs served per second at random
                sizes, as raw Connect calls and verified by the Go SDK, from
                16 clients against 3 nodes holding 20,000 entries
  recovery      latency of client.Recover of wiped devices (chip ID read to
                keys restored, every check included), with a fresh client per
                device and with one shared client, against 3 nodes
  provisioning  devices provisioned per second by one station with 1, 8 and
                64 devices in flight, on 1 and 3 nodes, with mean step times
  growth        append throughput and latency (16 and 256 clients) and
                inclusion-proof latency as the log grows to 10k, 100k and 1M
                leaves (--growth-sizes), on 1 node

Every entry and device is made before its timed phase, so that the load
generator's signing does not compete with the ledger. The growth fill signs a
certificate once for each of 16,384 chips and then appends their entries epoch
after epoch (epoch n+1 of a chip is a new valid entry, one signature each),
from 256 concurrent clients.

Without --ledger every scenario runs on fresh in-process clusters on loopback,
fsync on, in a temporary directory. With --ledger the scenarios run against
that cluster, which must trust the manufacturer CA given with --ca (their
entries and devices stay in its log); growth is skipped there, and recovery,
provisioning and the client-verified proofs need its log key (--log-key).

The default suite takes minutes on two cores (the fill to a million leaves
most of them); --quick scales every scenario down to well under a minute.
--json prints one JSON document with every scenario and number; --plot FILE
draws the growth and concurrency curves (.png, .svg or .pdf). Progress goes
to stderr.`

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure the ledger: appends, proofs, recovery, provisioning, and how they change as the log grows",
		UsageText: `chipledger bench [--quick] [--json] [--plot FILE]     # every scenario, in-process clusters
   chipledger bench --growth-sizes 10000,100000 --plot growth.svg
   chipledger bench proofs --entries 100000
   chipledger bench append --nodes 3 --clients 256 --appends 50000 --json
   chipledger bench --ledger 10.0.0.1:8080,10.0.0.2:8080 --ca ./ca --log-key log.pub`,
		Description: benchDescription,
		Flags:       append(benchCommonFlags(), benchGrowthSizeFlags()...),
		Action:      runBenchSuite(nil),
		Subcommands: []*cli.Command{
			benchAppendCommand(),
			{
				Name:        "all",
				Usage:       "run every scenario group (the same as bench alone)",
				UsageText:   "chipledger bench all [--quick] [--json] [--plot FILE] [--growth-sizes SIZES]",
				Description: benchDescription,
				Flags:       append(benchCommonFlags(), benchGrowthSizeFlags()...),
				Action:      runBenchSuite(nil),
			},
			{
				Name:      "proofs",
				Usage:     "proofs served per second and their latency, raw and verified by the Go SDK",
				UsageText: "chipledger bench proofs [--nodes 3] [--entries 20000] [--clients 16] [--requests 20000] [--verified-requests 5000]",
				Description: `Fills a cluster to --entries leaves (outside the timed phase), then asks for
--requests inclusion proofs (GetInclusionProof of a random leaf in a random
tree size up to the current one) and --requests consistency proofs
(GetConsistencyProof between random sizes size1 <= size2) as raw Connect calls
from --clients concurrent clients spread over the nodes, then, verified by the
Go SDK, --verified-requests inclusion proofs (client.InclusionProof: one call
and the proof checked) and consistency proofs (client.ConsistencyProof of an
older checkpoint: the latest checkpoint fetched and checked, then the proof).`,
				Flags: append(benchCommonFlags(),
					&cli.IntFlag{Name: "nodes", Usage: "cluster size", DefaultText: "3"},
					&cli.IntFlag{Name: "entries", Usage: "log size to fill to", DefaultText: "20,000; 2,000 with --quick"},
					&cli.IntFlag{Name: "clients", Usage: "concurrent clients", DefaultText: "16"},
					&cli.IntFlag{Name: "requests", Usage: "raw proofs of each kind", DefaultText: "20,000; 2,000 with --quick"},
					&cli.IntFlag{Name: "verified-requests", Usage: "client-verified proofs of each kind", DefaultText: "5,000; 500 with --quick"},
				),
				Action: runBenchSuite([]loadgen.Group{loadgen.GroupProofs}),
			},
			{
				Name:      "recovery",
				Usage:     "latency of recovering wiped devices' keys from the ledger",
				UsageText: "chipledger bench recovery [--nodes 3] [--devices 200]",
				Description: `Provisions --devices in-process emulated devices through a station (outside the
timed phase), wipes them, and recovers each in turn with client.Recover, from
reading its chip ID to its keys restored, every verification included: first
with a new client per device (as a device recovering itself), then with one
client whose station list is fetched once (as a repair shop).`,
				Flags: append(benchCommonFlags(),
					&cli.IntFlag{Name: "nodes", Usage: "cluster size", DefaultText: "3"},
					&cli.IntFlag{Name: "devices", Usage: "devices to recover", DefaultText: "200; 20 with --quick"},
				),
				Action: runBenchSuite([]loadgen.Group{loadgen.GroupRecovery}),
			},
			{
				Name:      "provisioning",
				Usage:     "devices provisioned per second by one station",
				UsageText: "chipledger bench provisioning [--nodes 1,3] [--in-flight 1,8,64] [--devices N]",
				Description: `Provisions in-process emulated devices through one station
(provisioner.Station.ProvisionAll: the handshake with each device, the backup
round trip, the certificate, the station signature and the append with its
receipt checked), --in-flight devices at a time. The key pool and the devices
are made before the timed phase.`,
				Flags: append(benchCommonFlags(),
					&cli.StringFlag{Name: "nodes", Value: "1,3", Usage: "comma-separated cluster `SIZES`"},
					&cli.StringFlag{Name: "in-flight", Value: "1,8,64", Usage: "comma-separated numbers of devices in flight"},
					&cli.IntFlag{Name: "devices", Usage: "devices per scenario", DefaultText: "200, 1,000 and 2,000 for 1, 8 and 64 in flight; a tenth with --quick"},
				),
				Action: runBenchSuite([]loadgen.Group{loadgen.GroupProvisioning}),
			},
			{
				Name:      "growth",
				Usage:     "append throughput and proof latency as the log grows",
				UsageText: "chipledger bench growth [--growth-sizes 10000,100000,1000000] [--growth-nodes 1] [--plot growth.png]",
				Description: `Fills a fresh in-process cluster to each size in turn, and at each measures
inclusion proofs of random leaves at the current size (--proof-clients
clients), then --appends appends of fresh chips at each --clients count.

The fill signs a certificate once for each of --fill-chips chips, then appends
their entries epoch after epoch (epoch n+1 of a chip is a new valid entry and
costs one signature), each window of distinct chips from --fill-clients
concurrent clients; so the chip index holds --fill-chips chips, not one per
entry.

It runs only on in-process clusters: it cannot take --ledger, since it has to
fill a fresh log.`,
				Flags: append(append(benchCommonFlags(), benchGrowthSizeFlags()...),
					&cli.StringFlag{Name: "clients", Value: "16,256", Usage: "comma-separated numbers of concurrent appending `CLIENTS`"},
					&cli.IntFlag{Name: "appends", Usage: "timed appends per client count and size", DefaultText: "10,000; 1,000 with --quick"},
					&cli.IntFlag{Name: "proof-clients", Value: 16, Usage: "concurrent clients asking for inclusion proofs"},
					&cli.IntFlag{Name: "proof-requests", Usage: "inclusion proofs per size", DefaultText: "10,000; 2,000 with --quick"},
					&cli.IntFlag{Name: "fill-chips", Usage: "chips the fill cycles through", DefaultText: "16,384; 4,096 with --quick"},
					&cli.IntFlag{Name: "fill-clients", Value: 256, Usage: "concurrent clients of the fill"},
				),
				Action: runBenchSuite([]loadgen.Group{loadgen.GroupGrowth}),
			},
		},
	}
}

// benchCommonFlags are the flags of every bench command but append.
func benchCommonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "ledger", Usage: "comma-separated API `ADDRESSES` of a running cluster (default: in-process clusters)", EnvVars: []string{"CHIPLEDGER_LEDGER"}},
		&cli.StringFlag{Name: "ca", Usage: "manufacturer CA `DIR` (from `chipledger ca init`) the running cluster trusts; needed with --ledger", EnvVars: []string{"CHIPLEDGER_CA"}},
		&cli.StringFlag{Name: "log-key", Usage: "the running cluster's log verifier `KEY` (or a file holding it), for the scenarios that verify", EnvVars: env("log-key")},
		&cli.IntFlag{Name: "leaf-size", Value: 1536, Usage: "size of each escrow entry the load generator makes, in `BYTES`"},
		&cli.BoolFlag{Name: "quick", Usage: "scale every scenario down (for CI: well under a minute)"},
		&cli.BoolFlag{Name: "json", Usage: "print one JSON document with every scenario instead of tables"},
		&cli.StringFlag{Name: "plot", Usage: "draw the growth and concurrency curves to `FILE` (.png, .svg or .pdf)"},
	}
}

func benchGrowthSizeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "growth-sizes", Usage: "comma-separated log `SIZES` the growth scenario measures at (default 10000,100000,1000000; 1000,10000 with --quick)"},
		&cli.StringFlag{Name: "growth-nodes", Value: "1", Usage: "comma-separated cluster sizes the growth scenario runs on"},
	}
}

func benchAppendCommand() *cli.Command {
	return &cli.Command{
		Name:  "append",
		Usage: "append signed escrow entries from concurrent clients and report throughput and latency",
		UsageText: `chipledger bench append                          # in-process 1- and 3-node clusters, 1/16/256 clients
   chipledger bench append --nodes 3 --clients 256 --appends 50000 --json
   chipledger bench append --ledger 10.0.0.1:8080,10.0.0.2:8080 --ca ./ca`,
		Description: `Every entry is a valid escrow entry (a fresh device certificate and a station
signature, about 1,536 bytes) made before the timed phase, so that the load
generator's signing does not compete with the ledger. Each append is timed from
request to receipt. Without --ledger every scenario runs on a fresh in-process
cluster on loopback, with fsync on, in a temporary directory. With --ledger the
entries are appended to that cluster (to its leader), which must trust the
manufacturer CA given with --ca; they stay in its log.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ledger", Usage: "comma-separated API `ADDRESSES` of a running cluster (default: in-process clusters)", EnvVars: []string{"CHIPLEDGER_LEDGER"}},
			&cli.StringFlag{Name: "ca", Usage: "manufacturer CA `DIR` (from `chipledger ca init`) the running cluster trusts; needed with --ledger", EnvVars: []string{"CHIPLEDGER_CA"}},
			&cli.StringFlag{Name: "nodes", Value: "1,3", Usage: "comma-separated cluster `SIZES` for in-process runs"},
			&cli.StringFlag{Name: "clients", Value: "1,16,256", Usage: "comma-separated numbers of concurrent `CLIENTS`"},
			&cli.IntFlag{Name: "appends", Usage: "appends per scenario", DefaultText: "1,000 for one client, 10,000 up to 16 clients, 30,000 above; a tenth of that, at least 100, with --quick"},
			&cli.IntFlag{Name: "leaf-size", Value: 1536, Usage: "size of each escrow entry in `BYTES`"},
			&cli.BoolFlag{Name: "quick", Usage: "fewer appends per scenario"},
			&cli.BoolFlag{Name: "json", Usage: "print the results as JSON instead of a table"},
			&cli.StringFlag{Name: "plot", Usage: "draw throughput against concurrency to `FILE` (.png, .svg or .pdf)"},
		},
		Action: runBenchAppend,
	}
}

func runBenchAppend(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	if p := c.String("plot"); p != "" && !benchplotFormat(p) {
		return cli.Exit(fmt.Sprintf("--plot %s: want a .png, .svg or .pdf file", p), 2)
	}
	clients, err := intList(c.String("clients"), "--clients")
	if err != nil {
		return err
	}
	progress := &benchProgress{w: c.App.ErrWriter}
	opts := loadgen.AppendOptions{LeafSize: c.Int("leaf-size"), Progress: loadgen.Progress{Log: c.App.ErrWriter, Count: progress.count}}
	nodes := []int{0}
	if l := c.String("ledger"); l != "" {
		opts.Ledger = strings.Split(l, ",")
		ca, err := benchCA(c)
		if err != nil {
			return err
		}
		if opts.PKI, err = testpki.FromCA(ca.Root(), ca.RootKey(), ca.DeviceCA(), ca.DeviceCAKey()); err != nil {
			return err
		}
	} else {
		if nodes, err = intList(c.String("nodes"), "--nodes"); err != nil {
			return err
		}
		if opts.PKI, err = testpki.New(); err != nil {
			return err
		}
	}
	var scenarios []loadgen.AppendScenario
	for _, n := range nodes {
		for _, cl := range clients {
			appends := c.Int("appends")
			if appends == 0 {
				appends = map[bool]int{true: 1000, false: 10000}[cl == 1]
				if cl > 16 {
					appends = 30000
				}
				if c.Bool("quick") {
					appends = max(100, appends/10)
				}
			}
			scenarios = append(scenarios, loadgen.AppendScenario{Nodes: n, Clients: cl, Appends: appends})
		}
	}
	reports, err := loadgen.RunAppend(c.Context, opts, scenarios)
	if err != nil {
		return err
	}
	if p := c.String("plot"); p != "" {
		if err := benchplot.Write(p, &loadgen.Report{Append: reports}); err != nil {
			return fmt.Errorf("--plot: %w", err)
		}
	}
	if c.Bool("json") {
		return loadgen.WriteJSON(c.App.Writer, reports)
	}
	return loadgen.WriteAppendTable(c.App.Writer, reports)
}

// runBenchSuite returns the action that runs the given scenario groups
// (every group if nil) with the sizes of the defaults and the flags.
func runBenchSuite(groups []loadgen.Group) cli.ActionFunc {
	return func(c *cli.Context) error {
		if err := noArgs(c); err != nil {
			return err
		}
		if len(groups) == 1 && groups[0] == loadgen.GroupGrowth && c.String("ledger") != "" {
			return cli.Exit("bench growth fills fresh in-process clusters and cannot run against --ledger; drop --ledger, or run the other scenarios (chipledger bench --ledger ...)", 2)
		}
		if p := c.String("plot"); p != "" && !benchplotFormat(p) {
			return cli.Exit(fmt.Sprintf("--plot %s: want a .png, .svg or .pdf file", p), 2)
		}
		opts, err := benchOptions(c)
		if err != nil {
			return err
		}
		cfg, err := benchConfig(c)
		if err != nil {
			return err
		}
		if len(opts.Ledger) > 0 {
			cfg = cfg.ForRunningCluster()
		}
		report, runErr := loadgen.RunSuite(c.Context, opts, cfg, groups...)
		if report == nil {
			return runErr
		}
		if p := c.String("plot"); p != "" {
			if err := benchplot.Write(p, report); err != nil && runErr == nil {
				return fmt.Errorf("--plot: %w", err)
			}
		}
		if c.Bool("json") {
			err = loadgen.WriteJSON(c.App.Writer, report)
		} else {
			err = report.WriteTables(c.App.Writer)
		}
		if runErr != nil {
			return runErr
		}
		return err
	}
}

func benchplotFormat(path string) bool {
	for _, f := range benchplot.Formats {
		if strings.HasSuffix(strings.ToLower(path), "."+f) {
			return true
		}
	}
	return false
}

// benchOptions maps the common flags to loadgen.Options.
func benchOptions(c *cli.Context) (loadgen.Options, error) {
	progress := &benchProgress{w: c.App.ErrWriter}
	opts := loadgen.Options{
		LeafSize: c.Int("leaf-size"),
		Progress: loadgen.Progress{Log: c.App.ErrWriter, Count: progress.count},
	}
	l := c.String("ledger")
	if l == "" {
		return opts, nil
	}
	opts.Ledger = strings.Split(l, ",")
	var err error
	if opts.CA, err = benchCA(c); err != nil {
		return opts, err
	}
	if k := c.String("log-key"); k != "" {
		if opts.LogKey, err = verifierKey(k); err != nil {
			return opts, cli.Exit(err.Error(), 2)
		}
	}
	return opts, nil
}

// benchCA loads the CA given with --ca, needed with --ledger.
func benchCA(c *cli.Context) (*provisioner.CA, error) {
	if c.String("ca") == "" {
		return nil, cli.Exit("--ledger needs --ca: the manufacturer CA directory the cluster trusts, to sign entries it accepts", 2)
	}
	return provisioner.LoadCA(c.String("ca"))
}

// benchConfig is the default configuration (--quick's if set) with the
// flags the command has applied over it.
func benchConfig(c *cli.Context) (loadgen.Config, error) {
	cfg := loadgen.DefaultConfig(c.Bool("quick"))
	var err error
	if c.IsSet("growth-sizes") {
		if cfg.Growth.Sizes, err = sizeList(c.String("growth-sizes"), "--growth-sizes"); err != nil {
			return cfg, err
		}
	}
	if c.IsSet("growth-nodes") {
		if cfg.Growth.Nodes, err = intList(c.String("growth-nodes"), "--growth-nodes"); err != nil {
			return cfg, err
		}
	}
	switch c.Command.Name {
	case "proofs":
		p := &cfg.Proofs[0]
		setInt(c, "nodes", &p.Nodes)
		setInt(c, "entries", &p.Entries)
		setInt(c, "clients", &p.Clients)
		setInt(c, "requests", &p.Requests)
		setInt(c, "verified-requests", &p.Verified)
	case "recovery":
		setInt(c, "nodes", &cfg.Recovery[0].Nodes)
		setInt(c, "devices", &cfg.Recovery[0].Devices)
	case "provisioning":
		cfg.Provisioning, err = provisionScenarios(c, cfg.Provisioning)
	case "growth":
		g := &cfg.Growth
		if g.Clients, err = intList(c.String("clients"), "--clients"); err != nil {
			return cfg, err
		}
		setInt(c, "appends", &g.Appends)
		setInt(c, "proof-clients", &g.ProofClients)
		setInt(c, "proof-requests", &g.ProofRequests)
		setInt(c, "fill-chips", &g.FillChips)
		setInt(c, "fill-clients", &g.FillClients)
	}
	return cfg, err
}

// provisionScenarios applies --nodes, --in-flight and --devices: the
// devices per scenario default to those of the same number in flight.
func provisionScenarios(c *cli.Context, defaults []loadgen.ProvisionScenario) ([]loadgen.ProvisionScenario, error) {
	nodes, err := intList(c.String("nodes"), "--nodes")
	if err != nil {
		return nil, err
	}
	inFlight, err := intList(c.String("in-flight"), "--in-flight")
	if err != nil {
		return nil, err
	}
	var out []loadgen.ProvisionScenario
	for _, n := range nodes {
		for _, f := range inFlight {
			devices := c.Int("devices")
			if devices <= 0 {
				devices = defaults[len(defaults)-1].Devices
				for _, d := range defaults {
					if d.InFlight >= f {
						devices = d.Devices
						break
					}
				}
			}
			out = append(out, loadgen.ProvisionScenario{Nodes: n, InFlight: f, Devices: devices})
		}
	}
	return out, nil
}

// setInt sets *v to the flag's value if the flag is set and positive.
func setInt(c *cli.Context, name string, v *int) {
	if c.IsSet(name) && c.Int(name) > 0 {
		*v = c.Int(name)
	}
}

// intList parses "1,16,256".
func intList(s, flag string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, cli.Exit(fmt.Sprintf("%s %q: want comma-separated positive numbers", flag, s), 2)
		}
		out = append(out, n)
	}
	return out, nil
}

// sizeList parses "10000,100000,1000000", also written "10k,100k,1M".
func sizeList(s, flag string) ([]uint64, error) {
	var out []uint64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mult := uint64(1)
		switch {
		case strings.HasSuffix(f, "k"):
			f, mult = strings.TrimSuffix(f, "k"), 1000
		case strings.HasSuffix(f, "M"):
			f, mult = strings.TrimSuffix(f, "M"), 1_000_000
		}
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil || n == 0 {
			return nil, cli.Exit(fmt.Sprintf("%s %q: want comma-separated positive sizes (10000 or 10k)", flag, s), 2)
		}
		out = append(out, n*mult)
	}
	return out, nil
}

// benchProgress draws a progress bar on stderr for each long phase of a
// run (drawn only on a terminal), from the load generator's counts.
type benchProgress struct {
	w     io.Writer
	mu    sync.Mutex
	phase string
	bar   *progressbar.ProgressBar
}

func (p *benchProgress) count(phase string, done, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil || phase != p.phase {
		if p.bar != nil {
			p.bar.Finish()
		}
		p.phase, p.bar = phase, newProgress(p.w, total, phase, "steps")
	}
	p.bar.Set(done)
	if done >= total {
		p.bar.Finish()
		p.bar = nil
	}
}
