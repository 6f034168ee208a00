package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/internal/atomicfile"
	"github.com/chipledger/chipledger/ledger"
)

// keysCommand is `chipledger keys`: make a log key.
func keysCommand() *cli.Command {
	return &cli.Command{
		Name:  "keys",
		Usage: "generate a log key (the Ed25519 key every node signs checkpoints with) or a witness's key",
		UsageText: `chipledger keys --origin ORIGIN --out FILE

   chipledger keys --origin ledger.example.com/log --out log.key     # writes log.key and log.pub`,
		Description: `Generates a new log key for the log named ORIGIN (the first line of every
checkpoint, conventionally a URL without scheme; no spaces and no '+'). The secret signer key is
written to FILE with mode 0600; give the same file to every node of the log with
"chipledger node --log-key FILE".

The verifier key is written beside it, to FILE with its .key suffix replaced
by .pub (log.key: log.pub; a FILE without .key gets .pub added), and printed
on stdout: publish it, and configure clients, devices and auditors with it
("--log-key log.pub") to check the log's checkpoints. Neither file is ever
overwritten: an existing one is refused before anything is written.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "origin", Required: true, Usage: "the log's `ORIGIN`, e.g. ledger.example.com/log"},
			&cli.StringFlag{Name: "out", Required: true, TakesFile: true, Usage: "write the secret signer key to `FILE` (created with mode 0600), and the verifier key beside it (FILE.key: FILE.pub)"},
		},
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			if err := ledger.CheckOrigin(c.String("origin")); err != nil {
				return cli.Exit("--origin: "+err.Error(), 2)
			}
			out := c.String("out")
			pub := verifierKeyPath(out)
			// Both files are new, or neither is written.
			for _, f := range []struct{ path, what string }{{out, "a key"}, {pub, "a verifier key file"}} {
				if _, err := os.Lstat(f.path); err == nil {
					return fmt.Errorf("%s already exists; refusing to overwrite %s (remove it or choose another --out)", f.path, f.what)
				} else if !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("check --out: %w", err)
				}
			}
			skey, vkey, err := ledger.GenerateLogKey(c.String("origin"))
			if err != nil {
				return err
			}
			if err := writeSecretFile(out, []byte(skey+"\n")); err != nil {
				return err
			}
			if err := atomicfile.Create(pub, []byte(vkey+"\n"), 0o644); err != nil {
				// Nothing used the new key yet: take it back, so that the
				// same command can be run again.
				if rerr := os.Remove(out); rerr != nil {
					return fmt.Errorf("write the verifier key to %s: %w (and remove the new secret key %s: %v)", pub, err, out, rerr)
				}
				if errors.Is(err, fs.ErrExist) {
					return fmt.Errorf("%s already exists; refusing to overwrite a verifier key file (remove it or choose another --out)", pub)
				}
				return fmt.Errorf("write the verifier key to %s (no key was kept): %w", pub, err)
			}
			fmt.Fprintln(c.App.Writer, vkey)
			fmt.Fprintf(c.App.ErrWriter, "The secret signer key is in %s (mode 0600): keep it secret. A log key goes to every node of the log (--log-key %s);\na witness's key stays with its witness (chipledger witness --key %s).\nThe verifier key above is in %s; it is public: clients and auditors check checkpoints with it (--log-key %s).\n", out, out, out, pub, pub)
			return nil
		},
	}
}

// verifierKeyPath is where keys --out FILE writes the verifier key: FILE
// with its .key suffix replaced by .pub (log.key: log.pub, the names
// node --dev uses), or FILE.pub.
func verifierKeyPath(out string) string {
	return strings.TrimSuffix(out, ".key") + ".pub"
}
