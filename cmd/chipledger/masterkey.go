package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/provisioner"
)

// masterKeyCommand is `chipledger master-key`: the versioned master keys
// channel keys are derived from.
func masterKeyCommand() *cli.Command {
	return &cli.Command{
		Name:      "master-key",
		Usage:     "manage the versioned master keys that device channel keys are derived from",
		UsageText: `chipledger master-key new --dir DIR`,
		Description: `A station derives each device's symmetric channel key from a master key and
the device identity, and records the master key's version in the device's data
package, so the manufacturer backend can derive the same key later from the
identity alone. Master keys live in a directory, one file per version
(master-1.key, master-2.key, ...: 64 hex digits, mode 0600). Stations use the
highest version; the backend needs every version ever used.`,
		HideHelpCommand: true,
		Subcommands: []*cli.Command{{
			Name:  "new",
			Usage: "create the next master key version",
			UsageText: `chipledger master-key new --dir DIR

   chipledger master-key new --dir /etc/chipledger/master-keys`,
			Description: `Creates a new random 32-byte master key as DIR/master-<N>.key with mode 0600,
where N is the highest version in DIR plus one (1 in an empty directory; DIR is
made with mode 0700 if missing), and prints N. An existing version is never
overwritten, and DIR must not hold key files other users can read.

From then on stations derive new channel keys with version N. Back up every
version: a device's channel key can only be derived again with the version it
was provisioned with.`,
			Flags: []cli.Flag{
				// $CHIPLEDGER_MASTER_KEYS, as for provision --master-keys;
				// $CHIPLEDGER_MASTER_KEY_DIR is its old name.
				&cli.StringFlag{Name: "dir", Required: true, TakesFile: true, EnvVars: []string{"CHIPLEDGER_MASTER_KEYS", "CHIPLEDGER_MASTER_KEY_DIR"},
					Usage: "the master key directory `DIR` (provision's --master-keys)"},
			},
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				dir := c.String("dir")
				version, err := provisioner.NewMasterKey(dir)
				if err != nil {
					return err
				}
				fmt.Fprintln(c.App.Writer, version)
				fmt.Fprintf(c.App.ErrWriter, "Created master key version %d in %s (mode 0600).\nStations now derive new channel keys with it. Back it up with every earlier version:\nthe manufacturer backend needs version %d to derive the channel keys of the devices\nprovisioned with it.\n",
					version, provisioner.MasterKeyPath(dir, version), version)
				return nil
			},
		}},
	}
}
