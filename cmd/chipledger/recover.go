package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/internal/atomicfile"
	"github.com/chipledger/chipledger/internal/devicelink"
	"github.com/chipledger/chipledger/internal/loadgen"
)

// recoverCommand is `chipledger recover`.
func recoverCommand() *cli.Command {
	return &cli.Command{
		Name:  "recover",
		Usage: "restore a device's keys from its backup in the ledger, verifying every proof",
		UsageText: `chipledger recover --device HOST:PORT --ledger ADDR --log-key KEY [--json]
chipledger recover --device HOST:PORT --device HOST:PORT ... --ledger ADDR --log-key KEY   # a repair shop's bench
chipledger recover --devices-file FILE [--concurrency 8] --ledger ADDR --log-key KEY`,
		Description: `Reads the chip ID from the device, fetches the chip's latest entry from the
ledger and checks, trusting no ledger node: the checkpoint's signature with the
log key and its consistency with every checkpoint seen before; the chip index
in that checkpoint, which proves the entry is the chip's latest (a node cannot
hide a newer backup, nor deny that the chip has one); the inclusion
proof of the entry; that its station was registered in the log before it, is
certified by a manufacturer root in the device's ROM, and signed it; that the
device certificate chains to that ROM trust and binds this chip and these
identities; and that the entry is not older than the device's epoch counter.
Only then is the backup handed to the device with its receipt and lookup proof;
the device verifies both again against the log key in its ROM (it refuses a
backup older than the chip index names), decrypts the backup with its own
chip key and restores its keys. Any failed check stops the recovery before the
device is touched, and the command exits non-zero.

With several devices (--device repeated, or --devices-file) it recovers them
concurrently (a device listed twice once), shows progress on a terminal, and
prints one line per device and a summary: devices recovered (verified, with
--verify-only) and failed, with the failures by cause; --json prints an array
of reports. It exits non-zero if any device failed, naming them.

--trusted keeps the largest checkpoint verified in a file, so a later run
refuses a ledger that rolled back or forked since. --witness-policy (the
nodes' c2sp.org/tlog-policy file) also requires the checkpoint to be a prefix
of one that the policy's quorum of witnesses cosigned, with no newer entry of
the chip in between: a ledger that shows this repair shop a history of its
own, hiding a newer backup, is caught even on a first run.`,
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "device", Usage: "device agent `ADDRESS` (host:port or URL, as printed by `chipledger device serve`; repeatable)"},
			&cli.StringFlag{Name: "devices-file", TakesFile: true, Usage: "`FILE` of device agent addresses, one a line (blank lines and # comments ignored)"},
			&cli.IntFlag{Name: "concurrency", Value: 8, Usage: "devices recovered at once"},
			&cli.DurationFlag{Name: "timeout", Value: time.Minute, Usage: "give up on one device after this long"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON (an array of reports for several devices)"},
			&cli.BoolFlag{Name: "verify-only", Usage: "run every check but hand nothing to the device"},
			&cli.StringFlag{Name: "trusted", TakesFile: true, EnvVars: env("trusted"),
				Usage: "checkpoint `FILE`: start from the checkpoint it holds, if any, and save the largest one verified"},
		}, append(witnessFlags(), ledgerFlags()...)...),
		Action: runRecover,
	}
}

// deviceRecovery is one device's recovery as the command reports it.
type deviceRecovery struct {
	Device string `json:"device"`
	*client.RecoveryReport
	err error
}

func runRecover(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	addrs, err := recoverDeviceAddrs(c)
	if err != nil {
		return err
	}
	// Batch mode goes by what was asked for: a device listed twice is
	// recovered once, and still reported as in a batch.
	batch := len(c.StringSlice("device")) > 1 || c.IsSet("devices-file")
	cl, err := newRecoveryClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	defer saveTrusted(c, cl)

	verifyOnly := c.Bool("verify-only")
	opts := client.RecoverOptions{VerifyOnly: verifyOnly}
	if batch {
		// Fetched once for every device: a station registered later is
		// looked up again.
		if opts.LogInfo, err = cl.LogInfo(c.Context); err != nil {
			return fmt.Errorf("read the ledger's registered stations: %w", err)
		}
	}
	hc := loadgen.NewHTTPClient()
	defer hc.CloseIdleConnections()
	recoverOne := func(addr string) deviceRecovery {
		ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
		defer cancel()
		dev := devicelink.ForRecovery(device.NewAgentClient(hc, agentURL(addr)))
		rep, err := client.Recover(ctx, cl, dev, opts)
		return deviceRecovery{Device: addr, RecoveryReport: rep, err: err}
	}

	if !batch {
		r := recoverOne(addrs[0])
		if c.Bool("json") {
			if err := writeRecoveryJSON(c.App.Writer, r); err != nil {
				return err
			}
		} else {
			printRecovery(c.App.Writer, r)
		}
		if r.err != nil {
			return cli.Exit(recoveryFailure(r), 1)
		}
		return nil
	}

	bar := newProgress(c.App.ErrWriter, len(addrs), "recovering", "devices")
	start := time.Now()
	results := recoverAll(addrs, c.Int("concurrency"), func(addr string) deviceRecovery {
		r := recoverOne(addr)
		bar.Add(1)
		return r
	})
	bar.Finish()
	if c.Bool("json") {
		if err := writeRecoveryJSON(c.App.Writer, results); err != nil {
			return err
		}
	} else {
		printRecoverySummary(c.App.Writer, results, verifyOnly, time.Since(start))
	}
	if failed := failedRecoveries(results); len(failed) > 0 {
		return cli.Exit(batchFailure(failed, len(results), verifyOnly), 1)
	}
	return nil
}

// batchFailure is the error message of a run on several devices of which
// some failed: how many of them, which, and what became of their keys
// (nothing was handed to a device that failed a check, and one that
// refused the backup kept its keys: see client.Recover).
func batchFailure(failed []deviceRecovery, total int, verifyOnly bool) string {
	const named = 5
	var addrs []string
	for _, r := range failed[:min(len(failed), named)] {
		addrs = append(addrs, r.Device)
	}
	which := strings.Join(addrs, ", ")
	if len(failed) > named {
		which += fmt.Sprintf(" and %d more", len(failed)-named)
	}
	if verifyOnly {
		return fmt.Sprintf("%d of %d devices failed verification: %s; nothing was handed to any device (--verify-only)", len(failed), total, which)
	}
	lost := 0
	for _, r := range failed {
		if errors.Is(r.err, client.ErrRestoreUnknown) {
			lost++
		}
	}
	if lost > 0 {
		return fmt.Sprintf("%d of %d devices were not recovered: %s; the answer of %d of them to the restore was lost, so they may have restored it (recover them again: taking the same backup twice is harmless); the others' keys are unchanged", len(failed), total, which, lost)
	}
	return fmt.Sprintf("%d of %d devices were not recovered: %s; their keys are unchanged", len(failed), total, which)
}

// recoverDeviceAddrs collects --device and --devices-file, each device
// once: one listed twice would be recovered twice at once, and counted
// twice.
func recoverDeviceAddrs(c *cli.Context) ([]string, error) {
	var addrs []string
	for _, a := range c.StringSlice("device") {
		for _, s := range strings.Split(a, ",") {
			if s = strings.TrimSpace(s); s != "" {
				addrs = append(addrs, s)
			}
		}
	}
	if name := c.String("devices-file"); name != "" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("--devices-file: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line, _, _ := strings.Cut(sc.Text(), "#")
			if line = strings.TrimSpace(line); line != "" {
				addrs = append(addrs, line)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("--devices-file %s: %w", name, err)
		}
	}
	if len(addrs) == 0 {
		return nil, cli.Exit("say which device to recover: --device ADDRESS (repeatable) or --devices-file FILE", 2)
	}
	return uniqueDevices(c, addrs, "recovering it once"), nil
}

// uniqueDevices drops the device agent addresses that name one already
// listed (as an address or as a URL), with a warning that says what is
// done instead.
func uniqueDevices(c *cli.Context, addrs []string, instead string) []string {
	seen := make(map[string]bool, len(addrs))
	var unique []string
	for _, a := range addrs {
		if u := agentURL(a); seen[u] {
			logger(c).Warn("device listed more than once; "+instead, "device", a)
		} else {
			seen[u] = true
			unique = append(unique, a)
		}
	}
	return unique
}

// agentURL makes a device agent address a URL.
func agentURL(addr string) string {
	if strings.Contains(addr, "://") {
		return strings.TrimSuffix(addr, "/")
	}
	return "http://" + addr
}

// newRecoveryClient is newLedgerClient starting from the --trusted
// checkpoint, if its file exists.
func newRecoveryClient(c *cli.Context) (*client.Client, error) {
	opts, err := ledgerClientOptions(c)
	if err != nil {
		return nil, err
	}
	if name := c.String("trusted"); name != "" {
		// The checkpoint is saved at the end: fail now, not after the work.
		if err := checkFileDir("trusted", name); err != nil {
			return nil, err
		}
		opts.Trusted, err = os.ReadFile(name)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("--trusted: %w", err)
		}
	}
	cl, err := client.New(opts)
	if err != nil && opts.Trusted != nil && errors.Is(err, client.ErrBadSignature) {
		return nil, fmt.Errorf("--trusted %s does not hold a checkpoint signed with this --log-key: it is another log's, or damaged; "+
			"give the log key it was saved with, or move the file away to start afresh (without the rollback protection it gave)", c.String("trusted"))
	}
	return cl, err
}

// checkFileDir checks, before any work is done, that the file given with
// --flag can be written later: that its directory exists and is writable.
func checkFileDir(flag, name string) error {
	dir := filepath.Dir(name)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return cli.Exit(fmt.Sprintf("--%s %s: the directory %s does not exist; create it, or name a file in an existing directory", flag, name, dir), 2)
	case err != nil:
		return fmt.Errorf("--%s %s: %w", flag, name, err)
	case !fi.IsDir():
		return cli.Exit(fmt.Sprintf("--%s %s: %s is not a directory", flag, name, dir), 2)
	}
	if fi, err := os.Stat(name); err == nil && fi.IsDir() {
		return cli.Exit(fmt.Sprintf("--%s %s is a directory; name a file", flag, name), 2)
	}
	probe, err := os.CreateTemp(dir, ".chipledger-write-test-*")
	if err != nil {
		return fmt.Errorf("--%s %s: cannot write in %s: %w", flag, name, dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	return nil
}

// saveTrusted writes the client's trusted checkpoint to --trusted, if set:
// it only ever grows, since the client trusts a larger checkpoint only once
// it is proven to extend the one it had.
func saveTrusted(c *cli.Context, cl *client.Client) {
	name := c.String("trusted")
	_, signed := cl.Trusted()
	if name == "" || signed == nil {
		return
	}
	err := atomicfile.Replace(name, signed, 0o644)
	if err != nil {
		logger(c).Warn("could not save the trusted checkpoint", "file", name, "err", err)
	}
}

// recoverAll recovers every device, at most concurrency at a time, and
// returns the results in the order of addrs.
func recoverAll(addrs []string, concurrency int, recoverOne func(string) deviceRecovery) []deviceRecovery {
	results := make([]deviceRecovery, len(addrs))
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(concurrency, 1) {
		wg.Go(func() {
			for i := range next {
				results[i] = recoverOne(addrs[i])
			}
		})
	}
	for i := range addrs {
		next <- i
	}
	close(next)
	wg.Wait()
	return results
}

func writeRecoveryJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printRecovery prints one device's checks for a technician.
func printRecovery(w io.Writer, r deviceRecovery) {
	for _, s := range r.Steps {
		if s.OK {
			fmt.Fprintf(w, "✓ %s\n", s.Detail)
		} else {
			fmt.Fprintf(w, "✗ %s\n", s.Detail)
		}
	}
	switch {
	case r.err != nil && r.FailedCheck == client.CheckRestore:
		fmt.Fprintln(w, "Recovery failed: the device refused the backup and kept its keys.")
	case r.err != nil:
		fmt.Fprintln(w, "Recovery refused: nothing was handed to the device; its keys are unchanged.")
	case r.Restored:
		fmt.Fprintln(w, "Keys restored.")
	default:
		fmt.Fprintln(w, "Every check passed; nothing was handed to the device (--verify-only).")
	}
}

// recoveryFailure is the error message of a failed recovery: what failed in
// plain words, then the precise error.
func recoveryFailure(r deviceRecovery) string {
	what := "recovery failed"
	if n := len(r.Steps); n > 0 && !r.Steps[n-1].OK {
		what = r.Steps[n-1].Detail
	}
	chip := ""
	if r.ChipID != "" {
		chip = " of chip " + r.ChipID
	}
	return fmt.Sprintf("recovery%s at %s failed: %s.\n%v", chip, r.Device, what, r.err)
}

// printRecoverySummary prints a line per device and the totals, with the
// failures by cause. A device that passed is counted as recovered, or
// with verifyOnly, where nothing is restored, as verified.
func printRecoverySummary(w io.Writer, results []deviceRecovery, verifyOnly bool, elapsed time.Duration) {
	causes := make(map[string]int)
	passed := 0
	for _, r := range results {
		switch {
		case r.err != nil:
			causes[recoveryCause(r)]++
			what := r.Steps[len(r.Steps)-1].Detail
			fmt.Fprintf(w, "✗ %s chip %s: %s: %v\n", r.Device, orUnknown(r.ChipID), what, r.err)
		case r.Restored:
			passed++
			fmt.Fprintf(w, "✓ %s chip %s: keys of epoch %d restored from ledger position %d\n", r.Device, r.ChipID, r.Epoch, r.LedgerIndex)
		default:
			passed++
			fmt.Fprintf(w, "✓ %s chip %s: epoch %d at ledger position %d verified (not restored: --verify-only)\n", r.Device, r.ChipID, r.Epoch, r.LedgerIndex)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "devices\t%d\n", len(results))
	if verifyOnly {
		fmt.Fprintf(tw, "verified\t%d\n", passed)
	} else {
		fmt.Fprintf(tw, "recovered\t%d\n", passed)
	}
	fmt.Fprintf(tw, "failed\t%d\n", len(results)-passed)
	fmt.Fprintf(tw, "time\t%s\n", elapsed.Round(time.Millisecond))
	names := make([]string, 0, len(causes))
	for cause := range causes {
		names = append(names, cause)
	}
	sort.Strings(names)
	for _, cause := range names {
		fmt.Fprintf(tw, "failed: %s\t%d\n", cause, causes[cause])
	}
	tw.Flush()
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

// failedRecoveries returns the results that failed, in order.
func failedRecoveries(results []deviceRecovery) []deviceRecovery {
	var out []deviceRecovery
	for _, r := range results {
		if r.err != nil {
			out = append(out, r)
		}
	}
	return out
}

// recoveryCause names why a recovery failed, for the summary.
func recoveryCause(r deviceRecovery) string {
	for _, c := range []struct {
		err  error
		name string
	}{
		{client.ErrNotInLedger, "not in the ledger"},
		{client.ErrNotLatest, "ledger did not prove the backup is the chip's latest"},
		{client.ErrStaleBackup, "ledger's backup older than the device's keys"},
		{client.ErrBadSignature, "checkpoint not signed by the log"},
		{client.ErrFork, "ledger fork"},
		{client.ErrRollback, "ledger rolled back"},
		{client.ErrBadProof, "proof does not verify"},
		{client.ErrMismatch, "entry is not this device's"},
		{client.ErrUnknownStation, "unregistered station"},
		{client.ErrUntrustedCertificate, "certificate not trusted by the device"},
		{client.ErrWrongLog, "device trusts another log"},
		{client.ErrDeviceRefused, "device refused the backup"},
		{client.ErrRestoreUnknown, "device's answer lost"},
		{context.DeadlineExceeded, "timed out"},
		{context.Canceled, "cancelled"},
	} {
		if errors.Is(r.err, c.err) {
			return c.name
		}
	}
	if r.FailedCheck == client.CheckDevice {
		return "device unreachable"
	}
	return "ledger unreachable"
}
