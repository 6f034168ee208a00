package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/provisioner"
)

// poolCommand is `chipledger pool`: the pre-generated device key pool.
func poolCommand() *cli.Command {
	// Each subcommand gets its own flag: urfave/cli keeps state in flags.
	poolFlag := func() cli.Flag {
		return &cli.StringFlag{Name: "pool", Required: true, TakesFile: true, EnvVars: env("pool"),
			Usage: "the key pool database `FILE`"}
	}
	return &cli.Command{
		Name:  "pool",
		Usage: "manage a station's pool of device key pairs generated in advance",
		UsageText: `chipledger pool fill --pool FILE --count N [--pool-key FILE]
chipledger pool status --pool FILE [--json]
chipledger pool destroy --pool FILE --chip ID --reason TEXT [--pool-key FILE]`,
		Description: `A key pool holds ECDSA P-256 device key pairs generated before the devices are
assembled. A station reserves one for each chip it provisions, deletes it once
the chip's escrow entry is in the ledger, and destroys it if the provisioning
fails for good: a key is never given to two chips and never reused. The keys
are encrypted with the pool key, a separate file (mode 0600; by default the
pool's path with ".key" appended) that is needed to use the pool.

Only one process can have a pool open at a time.`,
		HideHelpCommand: true,
		Subcommands: []*cli.Command{
			{
				Name:  "fill",
				Usage: "generate keys and add them to a pool, creating it if needed",
				UsageText: `chipledger pool fill --pool FILE --count N [--pool-key FILE]

   chipledger pool fill --pool /var/lib/chipledger/pool.db --count 100000`,
				Description: `Generates N new ECDSA P-256 key pairs and adds them to the pool as available
keys, 1,000 per transaction, with progress on stderr. A pool that does not
exist is created, with a new pool key if --pool-key does not exist either.
Interrupting it (Ctrl-C) keeps the keys added so far. Prints the pool's status
when done.`,
				Flags: []cli.Flag{
					poolFlag(),
					&cli.IntFlag{Name: "count", Required: true, DefaultText: "none, required", Usage: "add `N` keys"},
					&cli.StringFlag{Name: "pool-key", TakesFile: true, EnvVars: env("pool-key"),
						Usage: "the pool key `FILE` (default: the --pool file with \".key\" appended; made with mode 0600 for a new pool if missing)"},
				},
				Action: runPoolFill,
			},
			{
				Name:  "status",
				Usage: "count a pool's keys by state",
				UsageText: `chipledger pool status --pool FILE [--json]

   chipledger pool status --pool /var/lib/chipledger/pool.db --json`,
				Description: `Prints how many keys of the pool are available, reserved for a chip being
provisioned, consumed (provisioned) and destroyed (failed provisionings). It
opens the pool read-only and does not need the pool key, but it cannot read a
pool while a station or "pool fill" has it open.`,
				Flags: []cli.Flag{
					poolFlag(),
					&cli.BoolFlag{Name: "json", Usage: "print the status as a JSON object"},
				},
				Action: runPoolStatus,
			},
			{
				Name:  "destroy",
				Usage: "destroy the key reserved for a chip whose provisioning will not be finished",
				UsageText: `chipledger pool destroy --pool FILE --chip ID --reason TEXT [--pool-key FILE]

   chipledger pool destroy --pool /var/lib/chipledger/pool.db \
       --chip 0123456789abcdef0123456789abcdef --reason "device scrapped after a failed run"`,
				Description: `A station keeps a chip's key reserved from the start of its provisioning
until the chip's escrow entry is in the ledger, so that a run interrupted
before then resumes with the same key. If the device never comes back (it
was scrapped, or lost after a crash), "pool status" counts its key as
reserved for good. This command deletes that key and records it in the
pool's audit log as destroyed, with the reason. The key is never handed out
again: a later provisioning of the chip gets a new key, and a resumed one
still finishes (its entry, if it was signed, keeps the key it escrows).
Destroying a key that is already destroyed does nothing; a chip with no
reserved key is an error.`,
				Flags: []cli.Flag{
					poolFlag(),
					&cli.StringFlag{Name: "chip", Required: true, Usage: "the chip `ID` (hex), as the station's error or log named it"},
					&cli.StringFlag{Name: "reason", Required: true, Usage: "why the provisioning is given up, for the audit log (`TEXT`, 1 to 1024 bytes)"},
					&cli.StringFlag{Name: "pool-key", TakesFile: true, EnvVars: env("pool-key"),
						Usage: "the pool key `FILE` (default: the --pool file with \".key\" appended)"},
				},
				Action: runPoolDestroy,
			},
		},
	}
}

func runPoolFill(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	count := c.Int("count")
	if count <= 0 {
		return cli.Exit(fmt.Sprintf("--count %d: want a positive number of keys", count), 2)
	}
	path, keyFile := c.String("pool"), c.String("pool-key")
	if keyFile == "" {
		keyFile = path + ".key"
	}
	_, err := os.Stat(keyFile)
	keyExisted := !errors.Is(err, fs.ErrNotExist)
	// A missing pool is created, and so are the directories of the pool and
	// its key.
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		for _, f := range []string{path, keyFile} {
			if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
				return fmt.Errorf("create the directory of %s: %w", f, err)
			}
		}
	}

	pool, err := provisioner.OpenPool(path, provisioner.PoolOptions{KeyFile: keyFile, Create: true})
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := os.Stat(keyFile); !keyExisted && err == nil {
		fmt.Fprintf(c.App.ErrWriter, "Created the pool key %s (mode 0600). Keep it apart from copies of the pool and\nback it up: without it the keys in the pool cannot be used.\n", keyFile)
	}
	progress := fillProgress{w: c.App.ErrWriter, total: count}
	if err := pool.FillContext(c.Context, count, progress.report); err != nil {
		return err
	}
	status, err := pool.Status()
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s: %d available, %d reserved, %d consumed, %d destroyed\n",
		path, status.Available, status.Reserved, status.Consumed, status.Destroyed)
	return nil
}

func runPoolDestroy(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	chip, err := ledger.ParseChipID(c.String("chip"))
	if err != nil {
		return cli.Exit(fmt.Sprintf("--chip: %v", err), 2)
	}
	// A reason the pool's audit log cannot hold is a bad flag value, found
	// before the pool is opened.
	if r := c.String("reason"); r == "" || len(r) > provisioner.MaxDestroyReason || !utf8.ValidString(r) {
		return cli.Exit(fmt.Sprintf("--reason: want 1 to %d bytes of UTF-8, got %d bytes", provisioner.MaxDestroyReason, len(r)), 2)
	}
	pool, err := provisioner.OpenPool(c.String("pool"), provisioner.PoolOptions{KeyFile: c.String("pool-key")})
	if err != nil {
		return err
	}
	defer pool.Close()
	id, reserved, err := pool.Reservation(chip)
	if err != nil {
		return err
	}
	if err := pool.Destroy(chip, c.String("reason")); err != nil {
		return err
	}
	if reserved {
		fmt.Fprintf(c.App.Writer, "%s: key %s of chip %s destroyed\n", pool.Path(), id, chip)
	} else {
		fmt.Fprintf(c.App.Writer, "%s: the key of chip %s was already destroyed\n", pool.Path(), chip)
	}
	return nil
}

// fillProgress prints the progress of a pool fill at most once a second,
// and always when it is done.
type fillProgress struct {
	w       io.Writer
	total   int
	printed time.Time
}

func (f *fillProgress) report(done int) {
	if done < f.total && time.Since(f.printed) < time.Second {
		return
	}
	f.printed = time.Now()
	fmt.Fprintf(f.w, "pool fill: %d of %d keys added (%d%%)\n", done, f.total, done*100/f.total)
}

// poolStatusJSON is the output of `pool status --json`.
type poolStatusJSON struct {
	Pool      string `json:"pool"`
	PoolKeyID string `json:"pool_key_id"`
	provisioner.PoolStatus
}

func runPoolStatus(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	pool, err := provisioner.OpenPool(c.String("pool"), provisioner.PoolOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer pool.Close()
	status, err := pool.Status()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(poolStatusJSON{Pool: pool.Path(), PoolKeyID: pool.PoolKeyID(), PoolStatus: status})
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "pool\t%s\n", pool.Path())
	fmt.Fprintf(tw, "pool key ID\t%s\n", pool.PoolKeyID())
	fmt.Fprintf(tw, "available\t%d\n", status.Available)
	fmt.Fprintf(tw, "reserved\t%d\n", status.Reserved)
	fmt.Fprintf(tw, "consumed\t%d\n", status.Consumed)
	fmt.Fprintf(tw, "destroyed\t%d\n", status.Destroyed)
	if err := tw.Flush(); err != nil {
		return err
	}
	if status.Available == 0 {
		fmt.Fprintf(c.App.ErrWriter, "The pool has no available key: add keys with chipledger pool fill --pool %s --count N\n", pool.Path())
	}
	return nil
}
