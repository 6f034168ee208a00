package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/provisioner"
)

// caCommand is `chipledger ca`: the manufacturer CA.
func caCommand() *cli.Command {
	return &cli.Command{
		Name:      "ca",
		Usage:     "manage the manufacturer CA that issues device and station certificates",
		UsageText: `chipledger ca init --dir DIR --manufacturer NAME`,
		Description: `A manufacturer CA is a root CA and a device CA under it, kept as PEM files in
a directory. The device CA issues device certificates; the root issues station
certificates. Its trust bundle (trust.pem: the root and the device CA) is what
ledger nodes are given with --trust.`,
		HideHelpCommand: true,
		Subcommands: []*cli.Command{{
			Name:  "init",
			Usage: "create a new CA in a directory",
			UsageText: `chipledger ca init --dir DIR --manufacturer NAME

   chipledger ca init --dir ./ca --manufacturer "Example Devices Ltd"`,
			Description: `Creates ECDSA P-256 keys, a self-signed root CA and a device CA (path length
0) for the manufacturer NAME, and writes root.pem, root.key, device-ca.pem,
device-ca.key (keys with mode 0600) and trust.pem to DIR. It refuses to touch
a directory that already holds a CA. Prints the path of trust.pem.

Keep root.key offline in production: it is only needed to issue station
certificates and device CAs.`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "dir", Required: true, TakesFile: true, Usage: "create the CA in `DIR` (made if missing)"},
				&cli.StringFlag{Name: "manufacturer", Required: true, Usage: "the manufacturer's `NAME`, the O= of every certificate (1 to 64 bytes)"},
			},
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				dir := c.String("dir")
				ca, err := provisioner.InitCA(dir, c.String("manufacturer"))
				if errors.Is(err, provisioner.ErrCAExists) {
					return fmt.Errorf("a CA already exists in %s and is left as it is; pass another --dir to create a new one", dir)
				}
				if err != nil {
					return err
				}
				fmt.Fprintln(c.App.Writer, ca.TrustPath())
				fmt.Fprintf(c.App.ErrWriter, `Created the CA of %q in %s:
  root CA       %s (key %s: keep it offline)
  device CA     %s (key %s)
  trust bundle  %s (printed above): give it to every node with --trust
`, ca.Manufacturer(), dir,
					filepath.Join(dir, provisioner.RootCertFile), filepath.Join(dir, provisioner.RootKeyFile),
					filepath.Join(dir, provisioner.DeviceCACertFile), filepath.Join(dir, provisioner.DeviceCAKeyFile),
					ca.TrustPath())
				return nil
			},
		}},
	}
}
