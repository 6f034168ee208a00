package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/ledger"
)

// keysCommand is `chipledger keys`: make a log key.
func keysCommand() *cli.Command {
	return &cli.Command{
		Name:  "keys",
		Usage: "generate a log key (the Ed25519 key every node signs checkpoints with) or a witness's key",
		UsageText: `chipledger keys --origin ORIGIN --out FILE

   chipledger keys --origin ledger.example.com/log --out log.key`,
		Description: `Generates a new log key for the log named ORIGIN (the first line of every
checkpoint, conventionally a URL without scheme; no spaces and no '+'). The secret signer key is
written to FILE with mode 0600 (an existing file is never overwritten); give
the same file to every node of the log with "chipledger node --log-key FILE".

The verifier key is printed on stdout: publish it, and configure clients,
devices and auditors with it to check the log's checkpoints.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "origin", Required: true, Usage: "the log's `ORIGIN`, e.g. ledger.example.com/log"},
			&cli.StringFlag{Name: "out", Required: true, TakesFile: true, Usage: "write the secret signer key to `FILE` (created with mode 0600)"},
		},
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			if err := ledger.CheckOrigin(c.String("origin")); err != nil {
				return cli.Exit("--origin: "+err.Error(), 2)
			}
			skey, vkey, err := ledger.GenerateLogKey(c.String("origin"))
			if err != nil {
				return err
			}
			out := c.String("out")
			if err := writeSecretFile(out, []byte(skey+"\n")); err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, vkey)
			fmt.Fprintf(c.App.ErrWriter, "The secret signer key is in %s (mode 0600): keep it secret. A log key goes to every node of the log (--log-key %s);\na witness's key stays with its witness (chipledger witness --key %s).\nThe verifier key above is public: clients and auditors check checkpoints with it.\n", out, out, out)
			return nil
		},
	}
}
