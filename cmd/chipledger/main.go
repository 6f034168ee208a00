// Command chipledger is the single binary of chipledger: a ledger node, the
// manufacturer CA and log key tools, and (later) the station, the emulated
// device, recovery and auditing. Each command group lives in its own file
// and only wires flags to the packages that do the work.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is the release version, set at build time with
// -ldflags "-X main.version=v1.2.3"; without it the module version is used.
var version string

func main() {
	// The first SIGINT or SIGTERM cancels the context, which stops the
	// running command gracefully; after that the signals get their default
	// behaviour back, so a second Ctrl-C ends the process at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	err := newApp(os.Stdout, os.Stderr, runNode).RunContext(ctx, os.Args)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "chipledger: %v\n", err)
		code := 1
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		os.Exit(code)
	}
}

// newApp builds the command line: stdout receives results meant for the
// user or a script, stderr logs and help for errors. run starts a node for
// `chipledger node` (tests replace it to check the flag mapping).
func newApp(stdout, stderr io.Writer, run nodeRunner) *cli.App {
	return &cli.App{
		Name:  "chipledger",
		Usage: "a replicated, verifiable ledger of device key backups",
		UsageText: `chipledger [--log-level LEVEL] COMMAND [command options]

   chipledger node --dev                                  # a local single-node ledger
   chipledger keys --origin ledger.example.com/log --out log.key
   chipledger ca init --dir ./ca --manufacturer "Example Devices Ltd"
   chipledger node --id n1 --data-dir /var/lib/chipledger --log-key log.key \
       --trust ./ca/trust.pem --bootstrap --peer n1=10.0.0.1:7000=10.0.0.1:8080 ...`,
		Description: `chipledger escrows device-specific keys in a permanent, public, verifiable
ledger. A factory station provisions each device, the device's chip encrypts
its keys into a backup only that chip can decrypt, and the backup is published
in a Raft-replicated Merkle log together with the chip ID, the device identity
and a device certificate. Years later the device or a repair shop fetches the
backup by chip ID with a proof that it is in the log.

To try it, run "chipledger node --dev": it creates a log key and a development
CA in ./chipledger-data and serves a single-node ledger on 127.0.0.1:8080.

Global options (such as --log-level) go before the command name.`,
		Version:         appVersion(),
		Writer:          stdout,
		ErrWriter:       stderr,
		Metadata:        map[string]any{},
		Suggest:         true,
		HideHelpCommand: true,
		// Errors go back to main (or a test), which prints them and
		// chooses the exit code; the default handler would exit the process.
		ExitErrHandler: func(*cli.Context, error) {},
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "log-level",
				Value:   "info",
				Usage:   "log `LEVEL` on stderr: debug, info, warn or error",
				EnvVars: []string{"CHIPLEDGER_LOG_LEVEL"},
			},
		},
		Before: setupLogger,
		Commands: []*cli.Command{
			demoCommand(),
			nodeCommand(run),
			keysCommand(),
			tlsCommand(),
			caCommand(),
			benchCommand(),
			masterKeyCommand(),
			poolCommand(),
			stationCommand(),
			provisionCommand(),
			deviceCommand(),
			recoverCommand(),
			auditCommand(),
			monitorCommand(),
			adminCommand(),
		},
	}
}

// setupLogger makes the slog text logger on stderr at --log-level that the
// commands get through logger.
func setupLogger(c *cli.Context) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	c.App.Metadata["logger"] = slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: level}))
	return nil
}

// logger returns the logger setupLogger made.
func logger(c *cli.Context) *slog.Logger {
	if l, ok := c.App.Metadata["logger"].(*slog.Logger); ok {
		return l
	}
	return slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
}

// appVersion returns version, or the main module's version when the binary
// was built with `go install module@version`.
func appVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// noArgs rejects positional arguments, which are almost always flags typed
// after an argument (and so not parsed) or a typo.
func noArgs(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("%s takes no arguments, got %q (flags go before any argument; see --help)", c.Command.FullName(), c.Args().Slice()), 2)
	}
	return nil
}
