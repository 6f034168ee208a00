package main

import (
	"connectrpc.com/connect"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/internal/clustertls"
	"github.com/chipledger/chipledger/internal/loadgen"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/provisioner"
)

// ledgerFlags are the flags of commands that talk to a ledger.
func ledgerFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "ledger", Required: true, EnvVars: env("ledger"),
			Usage: "API `ADDRESS` of a ledger node (repeatable, or comma-separated); any node of the cluster will do"},
		&cli.StringFlag{Name: "log-key", Required: true, EnvVars: env("log-key"),
			Usage: "the log's verifier `KEY` (or a file holding it), as printed by `chipledger keys` or `node --dev`"},
		&cli.StringFlag{Name: "tls-ca", EnvVars: env("tls-ca"), TakesFile: true,
			Usage: "cluster CA certificate `FILE` to reach nodes that serve TLS (https:// --ledger addresses, or host:port made https)"},
	}
}

// ledgerHTTPClient is the HTTP client of the ledger commands: h2c to
// http:// addresses, HTTP/2 or HTTP/1.1 over TLS to https:// ones (trusting
// the cluster CA of --tls-ca, if given), as the SDK's default client does;
// and a node that serves TLS to a plain client, or plain HTTP to a TLS one,
// fails the call at once with the flag to change.
func ledgerHTTPClient(c *cli.Context) (*http.Client, error) {
	ca := c.String("tls-ca")
	var tc *tls.Config
	if ca != "" {
		var err error
		if tc, err = clustertls.ClientConfig(ca, "", ""); err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
	}
	plain, secure := client.NewTransports(tc)
	plain.MaxIdleConnsPerHost, secure.MaxIdleConnsPerHost = 64, 64
	return &http.Client{Transport: &nodeTransport{ca: ca, plain: plain, secure: secure}}, nil
}

// ledgerAddrs is the --ledger addresses, made https:// under --tls-ca.
func ledgerAddrs(c *cli.Context) []string {
	var addrs []string
	for _, a := range c.StringSlice("ledger") {
		for _, s := range strings.Split(a, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			if c.String("tls-ca") != "" && !strings.Contains(s, "://") {
				s = "https://" + s
			}
			addrs = append(addrs, s)
		}
	}
	return addrs
}

// newLedgerClient makes the verifying SDK client of --ledger and --log-key.
func newLedgerClient(c *cli.Context) (*client.Client, error) {
	opts, err := ledgerClientOptions(c)
	if err != nil {
		return nil, err
	}
	return client.New(opts)
}

// ledgerClientOptions are the SDK client options of --ledger, --log-key and
// the TLS flags.
func ledgerClientOptions(c *cli.Context) (client.Options, error) {
	vkey, err := verifierKey(c.String("log-key"))
	if err != nil {
		return client.Options{}, err
	}
	hc, err := ledgerHTTPClient(c)
	if err != nil {
		return client.Options{}, err
	}
	o := client.Options{Addrs: ledgerAddrs(c), LogKey: vkey, Logger: logger(c), HTTPClient: hc}
	if path := c.String("witness-policy"); path != "" {
		if o.Witnesses, err = readWitnessPolicy(path); err != nil {
			return client.Options{}, fmt.Errorf("--witness-policy: %w", err)
		}
		o.WitnessMaxAge = c.Duration("witness-max-age")
		if o.WitnessMaxAge <= 0 {
			return client.Options{}, fmt.Errorf("--witness-max-age %s: must be positive", o.WitnessMaxAge)
		}
	}
	return o, nil
}

// witnessFlags are --witness-policy and --witness-max-age of the commands
// that look chips up: with them, a chip's history counts only within a
// checkpoint the policy's witnesses cosigned recently.
func witnessFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "witness-policy", EnvVars: env("witness-policy"), TakesFile: true,
			Usage: "a c2sp.org/tlog-policy `FILE` (the one the nodes run with): accept a chip's history only within a checkpoint its quorum of witnesses cosigned, so a ledger showing this client a history of its own is caught"},
		&cli.DurationFlag{Name: "witness-max-age", EnvVars: env("witness-max-age"), Value: client.DefaultWitnessMaxAge,
			Usage: "with --witness-policy, how old the quorum's cosignatures may be (nodes renew an idle log's every minute): older ones do not show the checkpoint is current"},
	}
}

// stationCommand is `chipledger station`: the factory station's identity.
func stationCommand() *cli.Command {
	return &cli.Command{
		Name:  "station",
		Usage: "manage a factory station's identity",
		UsageText: `chipledger station init --dir DIR --ca DIR --name NAME --ledger ADDR --log-key KEY [--tls-ca FILE]

   chipledger station init --dir station --ca ca --name line-1 \
       --ledger 127.0.0.1:8080 --log-key "dev.chipledger.local/log+1a2b3c4d+AT..."`,
		Description: `A station is the factory's secure processing point, where "chipledger
provision" runs. Its directory holds its key (station.key, mode 0600), its
certificate (station.pem) from the manufacturer CA, and the provisioning
journal. The ledger admits escrow entries only from stations registered in it
and not revoked ("chipledger admin revoke-station"); "station init" makes the
key and certificate and registers them.`,
		Subcommands: []*cli.Command{{
			Name:      "init",
			Usage:     "make a station key and certificate and register the station in the ledger",
			UsageText: `chipledger station init --dir station --ca ca --name line-1 --ledger 127.0.0.1:8080 --log-key KEY`,
			Description: `Creates a P-256 station key (mode 0600) and a certificate for it issued by the
manufacturer CA with the station policy, then appends the station's
registration to the ledger, which admits escrow entries only from registered
stations.

If --dir already holds a station (say its registration failed because the
ledger was down), it registers that station instead of making a new one, or
says that it is already registered. --name must then be the station's name.`,
			Flags: append([]cli.Flag{
				&cli.StringFlag{Name: "dir", Required: true, EnvVars: env("station"), Usage: "station `DIR` to create"},
				&cli.StringFlag{Name: "ca", Required: true, EnvVars: env("ca"), Usage: "manufacturer CA `DIR` (from `chipledger ca init`)"},
				&cli.StringFlag{Name: "name", Required: true, Usage: "station `NAME` for its certificate, e.g. the production line"},
				&cli.DurationFlag{Name: "validity", Value: 5 * 365 * 24 * time.Hour, Usage: "how long the station certificate is valid"},
			}, ledgerFlags()...),
			Action: runStationInit,
		}},
	}
}

func runStationInit(c *cli.Context) error {
	dir, name := c.String("dir"), c.String("name")
	ca, err := provisioner.LoadCA(c.String("ca"))
	if err != nil {
		return err
	}
	cl, err := newLedgerClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	id, err := provisioner.InitStation(dir, ca, name, c.Duration("validity"))
	existing := errors.Is(err, provisioner.ErrStationExists)
	if existing {
		// A station made before: register it, unless it is.
		if id, err = provisioner.LoadStation(dir); err != nil {
			return err
		}
		if id.Name() != name {
			return fmt.Errorf("the station in %s is named %q, not --name %q: give its name to register it, or another --dir for a new station", dir, id.Name(), name)
		}
	}
	if err != nil {
		return err
	}
	stationID := id.ID()
	// The log first: registering in a log whose key is not --log-key would
	// append the registration and then fail to verify the receipt.
	info, err := cl.LogInfo(c.Context)
	if errors.Is(err, client.ErrMismatch) || errors.Is(err, client.ErrBadSignature) {
		return fmt.Errorf("the ledger at --ledger %s does not serve the log of --log-key (nothing was registered; the station's key and certificate are in %s): give the log's verifier key: %w",
			strings.Join(c.StringSlice("ledger"), ","), dir, err)
	}
	if err != nil {
		return tlsHint(notRegisteredError(c, id, err))
	}
	if s := registeredStation(info, stationID); s != nil {
		if s.Revocation != nil {
			return revokedError(s, dir)
		}
		fmt.Fprintf(c.App.Writer, "station %x (%s) already registered at index %d\n", stationID, dir, s.RegistrationIndex)
		return nil
	}
	leaf, err := id.RegistrationLeaf()
	if err != nil {
		return err
	}
	r, err := cl.Append(c.Context, leaf)
	if err != nil {
		return tlsHint(notRegisteredError(c, id, err))
	}
	fmt.Fprintf(c.App.Writer, "station %x registered at index %d\n", stationID, r.Receipt.Index)
	return nil
}

// notRegisteredError is the error of a failed registration of station id:
// its key and certificate stay, and the station init command that
// registers it is the way on.
func notRegisteredError(c *cli.Context, id *provisioner.StationIdentity, err error) error {
	if hint := tlsHint(err); hint != err {
		return hint
	}
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodePermissionDenied:
		// Refused for good: running the command again cannot help.
		return fmt.Errorf("the ledger refused to register station %x (its certificate must chain to a manufacturer root the nodes trust, their --trust): %w\nthe station's key and certificate are in %s",
			id.ID(), err, id.Dir)
	}
	return fmt.Errorf("register station %x in the ledger: %w\nthe station's key and certificate are in %s; once the ledger is reachable, register it with:\n  %s",
		id.ID(), err, id.Dir, stationInitCommand(c, id))
}

// stationInitCommand is the command line that registers the station id
// with the ledger flags of c.
func stationInitCommand(c *cli.Context, id *provisioner.StationIdentity) string {
	words := []string{"chipledger", "station", "init", "--dir", id.Dir, "--ca", c.String("ca"), "--name", id.Name(),
		"--ledger", strings.Join(c.StringSlice("ledger"), ","), "--log-key", c.String("log-key")}
	if ca := c.String("tls-ca"); ca != "" {
		words = append(words, "--tls-ca", ca)
	}
	for i, w := range words {
		words[i] = shellQuote(w)
	}
	return strings.Join(words, " ")
}

// shellQuote quotes w for a POSIX shell if it needs it.
func shellQuote(w string) string {
	if w != "" && strings.Trim(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=/.,:@%") == "" {
		return w
	}
	return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
}

// registeredStation returns the station with the given ID that info lists
// as registered, or nil.
func registeredStation(info *client.LogInfo, id [32]byte) *client.Station {
	for i := range info.Stations {
		if info.Stations[i].ID == id {
			return &info.Stations[i]
		}
	}
	return nil
}

// provisionCommand is `chipledger provision`.
func provisionCommand() *cli.Command {
	return &cli.Command{
		Name:  "provision",
		Usage: "provision devices: store keys in them, publish their backups in the ledger",
		UsageText: `chipledger provision --station DIR --ca DIR --master-keys DIR --ledger ADDR --log-key KEY --device HOST:PORT [--identity imei:DIGITS ...]
chipledger provision ... --device HOST:PORT --device HOST:PORT ...     # several devices concurrently
chipledger provision ... --emulate 1000 --concurrency 64               # in-process emulated devices`,
		Description: `Runs the provisioning handshake with each device: reads its chip ID, chooses
the key pair (from --pool, or generated), derives the channel key from the
current master key and the identity, stores the data package in the device and
checks the backup it returns, issues the device certificate, signs the escrow
entry, appends it to the ledger, and stores the verified receipt in the
device. Each device's progress is journaled in the station directory, so an
interrupted run is resumed by running it again: no entry is ever published
twice and no pool key is ever given to two chips.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "station", Required: true, EnvVars: env("station"), Usage: "station `DIR` (from `chipledger station init`)"},
			&cli.StringFlag{Name: "ca", Required: true, EnvVars: env("ca"), Usage: "manufacturer CA `DIR`, which issues the device certificates"},
			&cli.StringFlag{Name: "master-keys", Required: true, EnvVars: env("master-keys"), Usage: "master key `DIR` (from `chipledger master-key new`)"},
			&cli.StringFlag{Name: "pool", EnvVars: env("pool"), Usage: "key pool `FILE` (from `chipledger pool fill`); without it key pairs are generated"},
			&cli.StringFlag{Name: "pool-key", EnvVars: env("pool-key"), Usage: "pool key `FILE` (default: the pool file + .key)"},
			&cli.StringSliceFlag{Name: "device", Usage: "device agent `ADDRESS` (host:port, or the URL `chipledger device serve` prints; repeatable)"},
			&cli.StringSliceFlag{Name: "identity", Usage: "the device's identity, e.g. imei:490154203237518 (repeatable; one device only); checked against the device"},
			&cli.IntFlag{Name: "emulate", Usage: "provision `N` new emulated devices in this process instead of --device"},
			&cli.IntFlag{Name: "concurrency", Value: 64, Usage: "devices in flight at once"},
			&cli.BoolFlag{Name: "json", Usage: "print the summary as JSON"},
		}, ledgerFlags()...),
		Action: runProvision,
	}
}

func runProvision(c *cli.Context) error {
	var ids ledger.Identities
	for _, s := range c.StringSlice("identity") {
		id, err := ledger.ParseIdentity(s)
		if err != nil {
			return cli.Exit(fmt.Sprintf("--identity %q: %v", s, err), 2)
		}
		ids = append(ids, id)
	}
	devices := uniqueDevices(c, c.StringSlice("device"), "provisioning it once")
	emulate := c.Int("emulate")
	switch {
	case emulate < 0:
		return cli.Exit(fmt.Sprintf("--emulate %d: want a number of devices", emulate), 2)
	case len(devices) == 0 && emulate == 0:
		return cli.Exit("say which devices to provision: --device ADDRESS (repeatable) or --emulate N", 2)
	case len(devices) > 0 && emulate > 0:
		return cli.Exit("--device and --emulate exclude each other", 2)
	case len(ids) > 0 && (len(devices) != 1):
		return cli.Exit("--identity applies to a single --device", 2)
	}

	st, cleanup, vkey, err := openStation(c)
	if err != nil {
		return err
	}
	defer cleanup()

	var conns []device.Conn
	if emulate > 0 {
		ca, _ := provisioner.LoadCA(c.String("ca"))
		if conns, err = emulatedDevices(emulate, ca.Trust(), vkey); err != nil {
			return err
		}
	} else {
		hc := loadgen.NewHTTPClient()
		for _, a := range devices {
			conns = append(conns, device.NewAgentClient(hc, agentURL(a)))
		}
	}

	if len(conns) == 1 && emulate == 0 {
		r, err := st.Provision(c.Context, conns[0], ids)
		if err != nil {
			return err
		}
		resumed := ""
		if r.Resumed {
			resumed = " (finished an interrupted provisioning)"
		}
		fmt.Fprintf(c.App.Writer, "chip %s provisioned at epoch %d: ledger index %d%s\n", r.ChipID, r.Epoch, r.Index, resumed)
		return nil
	}
	bar := newProgress(c.App.ErrWriter, len(conns), "provisioning", "devices")
	res := st.ProvisionAll(c.Context, conns, c.Int("concurrency"), func(error) { bar.Add(1) })
	bar.Finish()
	if c.Bool("json") {
		if err := loadgen.WriteJSON(c.App.Writer, res); err != nil {
			return err
		}
	} else {
		writeBatchSummary(c.App.Writer, res)
	}
	switch {
	case res.Failed+res.NotStarted == 0:
		return nil
	case emulate > 0:
		// Emulated devices lived in this process: nothing can resume them.
		return cli.Exit(fmt.Sprintf("%d of %d emulated devices failed and %d were not started; emulated devices cannot be resumed (a pool key reserved for one that was signed stays reserved: chipledger pool status, pool destroy)",
			res.Failed, res.Devices, res.NotStarted), 1)
	default:
		return cli.Exit(fmt.Sprintf("%d of %d devices failed and %d were not started; run provision again with those devices to resume them", res.Failed, res.Devices, res.NotStarted), 1)
	}
}

// openStation loads everything the station needs from the flags.
func openStation(c *cli.Context) (*provisioner.Station, func(), string, error) {
	var closers []io.Closer
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i].Close()
		}
	}
	fail := func(err error) (*provisioner.Station, func(), string, error) {
		cleanup()
		return nil, nil, "", err
	}
	id, err := provisioner.LoadStation(c.String("station"))
	if err != nil {
		return fail(err)
	}
	ca, err := provisioner.LoadCA(c.String("ca"))
	if err != nil {
		return fail(err)
	}
	mk, err := provisioner.LoadMasterKeys(c.String("master-keys"))
	if err != nil {
		return fail(err)
	}
	vkey, err := verifierKey(c.String("log-key"))
	if err != nil {
		return fail(err)
	}
	cl, err := newLedgerClient(c)
	if err != nil {
		return fail(err)
	}
	closers = append(closers, cl)
	revoked, err := checkRegistered(c, id)
	if err != nil {
		return fail(err)
	}
	j, err := provisioner.OpenJournal(filepath.Join(id.Dir, provisioner.JournalFile))
	if err != nil {
		return fail(err)
	}
	closers = append(closers, j)
	if revoked != nil {
		// The ledger still answers entries the station signed before its
		// revocation (as duplicates, if they are in): those provisionings
		// can be finished; any other would fail after the device took
		// its package.
		counts, err := j.Counts()
		if err != nil {
			return fail(err)
		}
		unfinished := counts[provisioner.StepSigned] + counts[provisioner.StepAppended]
		if unfinished == 0 {
			return fail(fmt.Errorf("%w (no device was contacted)", revoked))
		}
		logger(c).Warn("the station is revoked: only its unfinished provisionings, whose entries it signed before, can be finished; other devices are refused", "unfinished", unfinished, "err", revoked)
	}
	cfg := provisioner.StationConfig{Certificate: id.Certificate, Key: id.Key, CA: ca, MasterKeys: mk,
		Ledger: provisioner.ClientLedger{Client: cl}, Journal: j, Logger: logger(c), Revoked: revoked}
	if p := c.String("pool"); p != "" {
		pool, err := provisioner.OpenPool(p, provisioner.PoolOptions{KeyFile: c.String("pool-key")})
		if err != nil {
			return fail(err)
		}
		closers = append(closers, pool)
		cfg.Pool = pool
	}
	st, err := provisioner.NewStation(cfg)
	if err != nil {
		return fail(err)
	}
	return st, cleanup, vkey, nil
}

// checkRegistered fetches the log info once before any device is
// contacted: the ledger must be reachable, serve the pinned log, and list
// the station as registered, or every device would fail the same way. A
// station that is revoked is reported apart (revoked): it can only finish
// the provisionings it signed before.
func checkRegistered(c *cli.Context, id *provisioner.StationIdentity) (revoked, err error) {
	opts, err := ledgerClientOptions(c)
	if err != nil {
		return nil, err
	}
	// A down ledger is reported in a second or two, not after the
	// retries that ride out a leader election: the check is a read,
	// which any node answers.
	opts.Retry = client.RetryPolicy{MaxAttempts: 3, MaxElapsed: 2 * time.Second}
	cl, err := client.New(opts)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	info, err := cl.LogInfo(c.Context)
	if err != nil {
		return nil, tlsHint(fmt.Errorf("reach the ledger at --ledger %s before provisioning (no device was contacted; check the address and that the nodes run): %w",
			strings.Join(c.StringSlice("ledger"), ","), err))
	}
	s := registeredStation(info, id.ID())
	if s == nil {
		return nil, fmt.Errorf("station %x in %s is not registered in the ledger (no device was contacted); register it with:\n  %s",
			id.ID(), id.Dir, stationInitCommand(c, id))
	}
	if s.Revocation != nil {
		return revokedError(s, id.Dir), nil
	}
	return nil, nil
}

// revokedError says that station s, whose directory is dir, is revoked in
// the ledger, which refuses its escrow entries for good, and how to go on:
// with a new station.
func revokedError(s *client.Station, dir string) error {
	reason := ""
	if r := s.Revocation.Reason; r != "" {
		reason = fmt.Sprintf(" (%q)", r)
	}
	return fmt.Errorf("station %x in %s is revoked in the ledger at index %d%s: the ledger refuses its escrow entries for good; make a new station key and certificate with `chipledger station init` and another --dir, and provision with that",
		s.ID, dir, s.RevocationIndex, reason)
}

// emulatedDevices manufactures n in-memory devices with IMEIs of their own.
func emulatedDevices(n int, trust *ledger.Trust, vkey string) ([]device.Conn, error) {
	base := time.Now().UnixNano() % 900_000
	conns := make([]device.Conn, n)
	for i := range conns {
		imei, err := ledger.NewIMEI(fmt.Sprintf("35209901%06d", (base+int64(i))%1_000_000))
		if err != nil {
			return nil, err
		}
		d, err := device.Manufacture(device.ManufactureOptions{Identities: ledger.Identities{imei}, Trust: trust, LogVerifierKey: vkey})
		if err != nil {
			return nil, err
		}
		conns[i] = d
	}
	return conns, nil
}

func writeBatchSummary(w io.Writer, r provisioner.BatchResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "devices\t%d\n", r.Devices)
	fmt.Fprintf(tw, "provisioned\t%d\n", r.Succeeded)
	fmt.Fprintf(tw, "failed\t%d\n", r.Failed)
	if r.NotStarted > 0 {
		fmt.Fprintf(tw, "not started (interrupted)\t%d\n", r.NotStarted)
	}
	fmt.Fprintf(tw, "time\t%s\n", r.Duration.Round(time.Millisecond))
	fmt.Fprintf(tw, "devices/second\t%.0f\n", r.PerSecond)
	if r.Succeeded > 0 {
		fmt.Fprintf(tw, "latency p50 / p99\t%s / %s\n", r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond))
		fmt.Fprintf(tw, "mean step times\tkey pair %s, package %s, certificate %s, sign %s, ledger %s, receipt %s\n",
			r.Steps.KeyPair.Round(time.Microsecond), r.Steps.Package.Round(time.Microsecond), r.Steps.Certificate.Round(time.Microsecond),
			r.Steps.Sign.Round(time.Microsecond), r.Steps.Ledger.Round(time.Microsecond), r.Steps.Receipt.Round(time.Microsecond))
	} else {
		// No provisioning finished: there is no latency or step time to
		// show, and zeros would read as measured.
		fmt.Fprintf(tw, "latency p50 / p99\t- (no device was provisioned)\n")
	}
	causes := make([]string, 0, len(r.Failures))
	for cause := range r.Failures {
		causes = append(causes, cause)
	}
	sort.Strings(causes)
	for _, cause := range causes {
		fmt.Fprintf(tw, "failed: %s\t%d (first: %s)\n", cause, r.Failures[cause], r.Examples[cause])
	}
	tw.Flush()
}
