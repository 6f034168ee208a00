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
	"strings"
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
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, ue) // already names the command
		} else {
			fmt.Fprintf(os.Stderr, "chipledger: %v\n", err)
		}
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
	app := &cli.App{
		Name:  "chipledger",
		Usage: "a replicated, verifiable ledger of device key backups",
		UsageText: `chipledger [--log-level LEVEL] COMMAND [command options]

   chipledger demo                                        # the whole story in one process
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

To see it all work, run "chipledger demo": with no setup it runs a ledger
cluster, a factory station and emulated devices in one process, recovers a
wiped device and audits the log. To try the commands one by one, run
"chipledger node --dev": it creates a log key and a development CA in
./chipledger-data and serves a single-node ledger on 127.0.0.1:8080.

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
			witnessCommand(),
		},
	}
	setupUsageErrors(app)
	return app
}

// setupLogger makes the slog text logger on stderr at --log-level that the
// commands get through logger.
func setupLogger(c *cli.Context) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return cli.Exit(fmt.Sprintf("--log-level %q: want debug, info, warn or error", c.String("log-level")), exitUsage)
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

// exitUsage is the exit status of a usage error: an unknown command or
// flag, a bad flag value or a missing required flag.
const exitUsage = 2

// asUsageError makes err, an error in the flags, exit with exitUsage,
// unless it already says how to exit.
func asUsageError(err error) error {
	var ec cli.ExitCoder
	if err == nil || errors.As(err, &ec) {
		return err
	}
	return cli.Exit(err.Error(), exitUsage)
}

// usageError is a usage error of the command named by cmd ("pool fill";
// "" for chipledger itself): one line, printed as it is, pointing at the
// command's help.
type usageError struct {
	cmd string
	msg string
}

func (e *usageError) Error() string {
	name := strings.TrimSpace("chipledger " + e.cmd)
	return fmt.Sprintf("%s: %s; see `%s --help`", name, e.msg, name)
}

// ExitCode makes a usageError a cli.ExitCoder.
func (e *usageError) ExitCode() int { return exitUsage }

// setupUsageErrors makes every usage error one short line on stderr with
// exit status 2, instead of urfave/cli's whole help on stdout and status 1:
// it sets OnUsageError on the app and on every command (each needs its own),
// checks required flags itself (urfave/cli v2 prints the help before
// returning a missing-flag error, with no way to turn that off), and refuses
// unknown commands.
func setupUsageErrors(app *cli.App) {
	app.OnUsageError = onUsageError("")
	app.Action = unknownCommand("")
	// Commands may share flag values (admin's subcommands share --ledger):
	// a flag unmarked for one command is still required by the next.
	unmarked := make(map[cli.Flag]bool)
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, cmd := range cmds {
			name := strings.TrimSpace(path + " " + cmd.Name)
			cmd.OnUsageError = onUsageError(name)
			var required []cli.Flag
			for _, f := range cmd.Flags {
				if unrequire(f) {
					unmarked[f] = true
				}
				if unmarked[f] {
					required = append(required, f)
				}
			}
			switch {
			case cmd.Action != nil && len(required) > 0:
				action := cmd.Action
				cmd.Action = func(c *cli.Context) error {
					if err := checkRequired(c, name, required); err != nil {
						return err
					}
					return action(c)
				}
			case cmd.Action == nil && len(cmd.Subcommands) > 0:
				cmd.Action = unknownCommand(name)
			}
			walk(name, cmd.Subcommands)
		}
	}
	walk("", app.Commands)
}

// unrequire takes the Required mark off f, for setupUsageErrors to check it
// instead, and reports whether f had it. It knows the flag types this
// command line uses; a required flag of another type keeps its mark (and
// urfave/cli's own check).
func unrequire(f cli.Flag) bool {
	switch f := f.(type) {
	case *cli.StringFlag:
		return unmark(&f.Required)
	case *cli.PathFlag:
		return unmark(&f.Required)
	case *cli.StringSliceFlag:
		return unmark(&f.Required)
	case *cli.IntFlag:
		return unmark(&f.Required)
	case *cli.Uint64Flag:
		return unmark(&f.Required)
	case *cli.DurationFlag:
		return unmark(&f.Required)
	case *cli.BoolFlag:
		return unmark(&f.Required)
	}
	return false
}

// unmark clears *required and reports whether it was set.
func unmark(required *bool) bool {
	was := *required
	*required = false
	return was
}

// onUsageError returns the OnUsageError handler of the command name (""
// for the app itself).
func onUsageError(name string) cli.OnUsageErrorFunc {
	return func(c *cli.Context, err error, _ bool) error {
		msg := err.Error()
		// "flag provided but not defined: -bogus": suggest a near flag.
		if bad, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
			msg = fmt.Sprintf("unknown flag --%s", bad)
			flags := c.App.Flags
			if name != "" && c.Command != nil {
				flags = c.Command.Flags
			}
			var names []string
			for _, f := range flags {
				names = append(names, f.Names()...)
			}
			if s := nearest(bad, names); s != "" {
				msg += fmt.Sprintf(" (did you mean --%s?)", s)
			}
		}
		return &usageError{cmd: name, msg: msg}
	}
}

// checkRequired reports the required flags that are neither given nor set
// by their environment variable.
func checkRequired(c *cli.Context, name string, flags []cli.Flag) error {
	var missing []string
	for _, f := range flags {
		set := false
		for _, n := range f.Names() {
			set = set || c.IsSet(n)
		}
		if !set {
			m := "--" + f.Names()[0]
			if ev, ok := f.(interface{ GetEnvVars() []string }); ok && len(ev.GetEnvVars()) > 0 {
				m += " (or $" + ev.GetEnvVars()[0] + ")"
			}
			missing = append(missing, m)
		}
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return &usageError{cmd: name, msg: "missing required flag " + missing[0]}
	}
	return &usageError{cmd: name, msg: "missing required flags " + strings.Join(missing, ", ")}
}

// unknownCommand is the action of the app and of command groups: help
// without arguments, a usage error for an unknown command.
func unknownCommand(name string) cli.ActionFunc {
	return func(c *cli.Context) error {
		if !c.Args().Present() || c.Args().First() == "help" {
			if name == "" {
				return cli.ShowAppHelp(c)
			}
			return cli.ShowSubcommandHelp(c)
		}
		bad := c.Args().First()
		msg := fmt.Sprintf("unknown command %q", bad)
		var cmds []*cli.Command
		if name == "" {
			cmds = c.App.Commands
		} else if c.Command != nil {
			cmds = c.Command.Subcommands
		}
		var names []string
		for _, cmd := range cmds {
			if !cmd.Hidden {
				names = append(names, cmd.Names()...)
			}
		}
		if s := nearest(bad, names); s != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", s)
		}
		return &usageError{cmd: name, msg: msg}
	}
}

// nearest returns the name closest to s if it is a likely typo of it: at
// most two edits away (one for short names), or "".
func nearest(s string, names []string) string {
	best, bestD := "", 3
	if len(s) <= 4 {
		bestD = 2
	}
	for _, n := range names {
		if d := editDistance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
