package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/internal/loadgen"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/provisioner"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure the ledger: append throughput and latency",
		Subcommands: []*cli.Command{{
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
				&cli.IntFlag{Name: "appends", Usage: "appends per scenario (default: 1,000 for one client, 10,000 up to 16 clients, 30,000 above)"},
				&cli.IntFlag{Name: "leaf-size", Value: 1536, Usage: "size of each escrow entry in `BYTES`"},
				&cli.BoolFlag{Name: "json", Usage: "print the results as JSON instead of a table"},
			},
			Action: runBenchAppend,
		}},
	}
}

func runBenchAppend(c *cli.Context) error {
	clients, err := intList(c.String("clients"), "--clients")
	if err != nil {
		return err
	}
	opts := loadgen.AppendOptions{LeafSize: c.Int("leaf-size"), Progress: c.App.ErrWriter}
	nodes := []int{0}
	if l := c.String("ledger"); l != "" {
		opts.Ledger = strings.Split(l, ",")
		if c.String("ca") == "" {
			return cli.Exit("--ledger needs --ca: the manufacturer CA directory the cluster trusts, to sign entries it accepts", 2)
		}
		ca, err := provisioner.LoadCA(c.String("ca"))
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
			}
			scenarios = append(scenarios, loadgen.AppendScenario{Nodes: n, Clients: cl, Appends: appends})
		}
	}
	reports, err := loadgen.RunAppend(c.Context, opts, scenarios)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return loadgen.WriteJSON(c.App.Writer, reports)
	}
	return loadgen.WriteAppendTable(c.App.Writer, reports)
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
