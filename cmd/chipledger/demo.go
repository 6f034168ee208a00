package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/internal/demo"
	"github.com/chipledger/chipledger/internal/loadgen"
)

// demoCommand is `chipledger demo`: the whole story in one process.
func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run the whole story in one process: ledger, witnesses, station, devices, a recovery and an audit",
		UsageText: `chipledger demo                      # 3 nodes, 200 devices, everything in a temporary directory
chipledger demo --nodes 1 --devices 50
chipledger demo --keep               # keep the data directory to look at afterwards`,
		Description: `Runs, with no setup: a manufacturer CA and a log key, an in-process ledger
cluster (real TCP on 127.0.0.1, fsync on) whose leader has its checkpoints
cosigned by three in-process witnesses (a witness policy needing two), a
registered factory station with a master key and a key pool, emulated devices
provisioned concurrently, one device wiped and recovered from the ledger with
every verification spelled out (the witnesses' cosignatures among them), and
an audit of the whole log from every node, then a summary. The data directory
keeps the witness policy in witness-policy. Ctrl-C stops it cleanly.`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "nodes", Value: 3, Usage: "ledger nodes in the cluster"},
			&cli.IntFlag{Name: "devices", Value: 200, Usage: "devices to provision"},
			&cli.IntFlag{Name: "concurrency", Value: 64, Usage: "devices provisioned at once"},
			&cli.StringFlag{Name: "dir", Usage: "put the data in `DIR` (kept) instead of a temporary directory"},
			&cli.BoolFlag{Name: "keep", Usage: "keep the temporary data directory"},
			&cli.BoolFlag{Name: "json", Usage: "print the summary as JSON on stdout, and the story on stderr"},
		},
		Action: runDemo,
	}
}

func runDemo(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	for _, f := range []string{"nodes", "devices", "concurrency"} {
		if n := c.Int(f); n < 1 {
			return cli.Exit(fmt.Sprintf("--%s %d: want at least 1", f, n), 2)
		}
	}
	// With --json, stdout is the JSON summary alone, for jq and scripts:
	// the story goes to stderr with the progress.
	story := c.App.Writer
	if c.Bool("json") {
		story = c.App.ErrWriter
	}
	bar := newProgress(c.App.ErrWriter, c.Int("devices"), "provisioning", "devices")
	s, err := demo.Run(c.Context, demo.Options{
		Nodes:       c.Int("nodes"),
		Devices:     c.Int("devices"),
		Concurrency: c.Int("concurrency"),
		Dir:         c.String("dir"),
		Keep:        c.Bool("keep"),
		Out:         story,
		Progress:    func(done, total int) { bar.Set(done) },
	})
	bar.Finish()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return loadgen.WriteJSON(c.App.Writer, s)
	}
	return nil
}
