package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/internal/hostport"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// defaultDeviceAddr is where `chipledger device serve` listens by default.
const defaultDeviceAddr = "127.0.0.1:9000"

// deviceCommand is `chipledger device`: an emulated device.
func deviceCommand() *cli.Command {
	// Each subcommand gets its own flag: urfave/cli keeps state in flags.
	// CHIPLEDGER_STATE, the first name, still works.
	stateFlag := func(usage string) cli.Flag {
		return &cli.StringFlag{Name: "state", Required: true, TakesFile: true,
			EnvVars: append(env("device-state"), env("state")...), Usage: usage}
	}
	return &cli.Command{
		Name:  "device",
		Usage: "run an emulated device: a software chip, ROM and memory kept in a state file",
		UsageText: `chipledger device new --state FILE --identity imei:DIGITS [--identity ...] --trust FILE --log-key KEY
chipledger device serve --state FILE [--addr HOST:PORT]
chipledger device show --state FILE [--json]`,
		Description: `An emulated device is what a factory station provisions and a recovering
client restores: a chip with a chip ID and a secret chip key (in software
here), a ROM holding the device's identities, the manufacturer trust bundle
and the log's verifier key, and memory holding the keys, the device
certificate and the receipt of the keys' ledger entry.

"device new" manufactures one into a state file, "device serve" runs its
agent, the protocol stations and recovering clients speak, and "device show"
prints what it holds. The state file holds the chip key: keep it private
(it is written with mode 0600).`,
		HideHelpCommand: true,
		Subcommands: []*cli.Command{
			{
				Name:  "new",
				Usage: "manufacture an emulated device into a new state file",
				UsageText: `chipledger device new --state FILE --identity imei:DIGITS [--identity ...] --trust FILE --log-key KEY

   chipledger device new --state phone.json --identity imei:352099001761481 \
       --trust ca/trust.pem --log-key "dev.chipledger.local/log+1a2b3c4d+AT..."`,
				Description: `Makes a new chip (a random 16-byte chip ID and 32-byte chip key) and burns
the identities, the manufacturer trust bundle and the log's verifier key into
the device's ROM. The device accepts packages, backups and certificates only
for exactly these identities, in this order; certificates only if they chain
to the trust bundle; receipts only if signed with the log key.

Writes the state file with mode 0600 and refuses to replace an existing one.
Prints the chip ID.`,
				Flags: []cli.Flag{
					stateFlag("create the device's state `FILE` (must not exist)"),
					&cli.StringSliceFlag{Name: "identity", Required: true, EnvVars: env("identity"),
						Usage: "an `IDENTITY` of the device: imei:<14 or 15 digits>, meid:<14 hex digits> or serial:<text>; repeat for up to 4 (a dual-SIM phone has two IMEIs)"},
					&cli.StringFlag{Name: "trust", Required: true, TakesFile: true, EnvVars: env("trust"),
						Usage: "PEM `FILE` of the manufacturer roots and device CAs, e.g. trust.pem from \"chipledger ca init\""},
					&cli.StringFlag{Name: "log-key", Required: true, EnvVars: env("log-key"),
						Usage: "the log's verifier `KEY` (printed by \"chipledger keys\" and \"node --dev\"), or a file holding it"},
				},
				Action: runDeviceNew,
			},
			{
				Name:  "serve",
				Usage: "serve an emulated device's agent until interrupted",
				UsageText: `chipledger device serve --state FILE [--addr HOST:PORT]

   chipledger device serve --state phone.json --addr 127.0.0.1:9000`,
				Description: `Serves the device agent (chipledger.v1.DeviceService over Connect, gRPC and
gRPC-Web, on HTTP/1.1 and h2c) and /healthz on --addr. Every change is
written to the state file before it is acknowledged. Prints the agent's URL
on stdout once it listens, and stops gracefully on SIGINT or SIGTERM.

One agent per state file: the agent locks FILE.lock while it runs, and a
second agent of the same file fails.`,
				Flags: []cli.Flag{
					stateFlag("the device's state `FILE`"),
					&cli.StringFlag{Name: "addr", Value: defaultDeviceAddr, EnvVars: append(env("device-addr"), env("addr")...), // CHIPLEDGER_ADDR: the first name
						Usage: "listen on `HOST:PORT` (port 0 picks a free port)"},
				},
				Action: runDeviceServe,
			},
			{
				Name:  "show",
				Usage: "print what an emulated device holds (never its chip key)",
				UsageText: `chipledger device show --state FILE [--json]

   chipledger device show --state phone.json --json`,
				Description: `Prints the chip ID, the identities, the epoch counter, the installed keys
(their public key, a check value of the channel key, the certificate and the
receipt, verified against the log key in ROM), any provisioning in progress,
and the ROM. It prints no secret. It can run while "device serve" runs.`,
				Flags: []cli.Flag{
					stateFlag("the device's state `FILE`"),
					&cli.BoolFlag{Name: "json", Usage: "print a JSON object"},
				},
				Action: runDeviceShow,
			},
		},
	}
}

func runDeviceNew(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	var ids ledger.Identities
	for _, text := range c.StringSlice("identity") {
		id, err := ledger.ParseIdentity(text)
		if err != nil {
			return fmt.Errorf("--identity %q: %w", text, err)
		}
		ids = append(ids, id)
	}
	if err := ids.Validate(); err != nil {
		return fmt.Errorf("--identity: %w", err)
	}
	trustPEM, err := os.ReadFile(c.String("trust"))
	if err != nil {
		return fmt.Errorf("--trust: %w (a CA's trust.pem comes from \"chipledger ca init\")", err)
	}
	trust, err := ledger.ParseTrustPEM(trustPEM)
	if err != nil {
		return fmt.Errorf("--trust %s: %w", c.String("trust"), err)
	}
	logKey, err := parseVerifierKey(c.String("log-key"), "the device's ROM takes the verifier key")
	if err != nil {
		return err
	}
	state := c.String("state")
	d, err := device.Manufacture(device.ManufactureOptions{
		Identities:     ids,
		Trust:          trust,
		LogVerifierKey: logKey,
		StatePath:      state,
	})
	if err != nil {
		return err
	}
	in, err := d.ChipInfo(c.Context)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, in.ChipID)
	fmt.Fprintf(c.App.ErrWriter, `Manufactured an emulated device in %s (mode 0600; it holds the chip key):
  chip        %s (printed above)
  identities  %s
  log key     %s
Serve it to stations and recovering clients with:
  chipledger device serve --state %s
`, state, in.ChipID, ids, logKey, state)
	return nil
}

// verifierKey returns the note verifier key given by --log-key: the key
// itself, or the name of a file holding it.
func verifierKey(value string) (string, error) {
	return parseVerifierKey(value, "clients check the log with the verifier key")
}

// parseVerifierKey is verifierKey; who says who takes the verifier key
// instead of the secret key, for the error.
func parseVerifierKey(value, who string) (string, error) {
	if _, err := proofs.NewLogVerifier(value); err == nil {
		return value, nil
	}
	data, err := os.ReadFile(value)
	if err != nil {
		return "", fmt.Errorf("--log-key %q is neither a verifier key (<origin>+<hash>+<key>) nor a readable file: %w", value, err)
	}
	key := strings.TrimSpace(string(data))
	if strings.HasPrefix(key, "PRIVATE+KEY+") {
		return "", fmt.Errorf("--log-key %s holds the log's secret signer key, which only the nodes need; %s that \"chipledger keys\" printed and wrote beside it (log.key: log.pub): pass that instead", value, who)
	}
	if _, err := proofs.NewLogVerifier(key); err != nil {
		// Not the error's own text: it quotes the whole file (a trust
		// bundle, say), which buries what went wrong.
		return "", fmt.Errorf("--log-key %s does not hold a log verifier key (%s): want one line origin+hash+key, as \"chipledger keys\" prints it and writes it beside the secret key (log.key: log.pub; \"node --dev\" too, in its data directory): %w",
			value, describeContent(key), proofs.ErrBadKey)
	}
	return key, nil
}

// describeContent says what a file holding s (trimmed) looks like, quoting
// at most its first few characters.
func describeContent(s string) string {
	const maxQuote = 32
	if s == "" {
		return "it is empty"
	}
	first, _, more := strings.Cut(s, "\n")
	first = strings.TrimSpace(first)
	if r := []rune(first); len(r) > maxQuote {
		first, more = string(r[:maxQuote]), true
	}
	kind := ""
	if strings.HasPrefix(first, "-----BEGIN ") {
		kind = "PEM, "
	}
	if more {
		return fmt.Sprintf("%sstarting %q…", kind, first)
	}
	return fmt.Sprintf("%s%q", kind, first)
}

func runDeviceServe(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	addr := c.String("addr")
	if err := hostport.Check(addr, true); err != nil {
		return fmt.Errorf("--addr %q: %w", addr, err)
	}
	state := c.String("state")
	lock, err := device.LockState(state)
	if errors.Is(err, device.ErrStateInUse) {
		return fmt.Errorf("%w\n(another \"chipledger device serve --state %s\" runs: use that agent, or stop it first)", err, state)
	}
	if err != nil {
		return missingStateHint(err, state)
	}
	defer lock.Unlock()
	d, err := device.Load(state, device.LoadOptions{})
	if err != nil {
		return missingStateHint(err, state)
	}
	in, err := d.ChipInfo(c.Context)
	if err != nil {
		return err
	}
	ln, err := listenAddr(addr)
	if err != nil {
		return err
	}
	srv := deviceServer(d)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()

	url := "http://" + ln.Addr().String()
	logger(c).Info("device agent running", "url", url, "chip", in.ChipID, "identities", in.Identities.String(), "epoch", in.Epoch, "state", state)
	fmt.Fprintln(c.App.Writer, url)

	return serveUntilInterrupted(c, srv, done, "device agent")
}

// listenAddr listens on addr, the --addr of a serving command, saying
// what to do when another process has it.
func listenAddr(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("%w\n(another process uses that address: stop it, or pick a free port with --addr)", err)
	}
	return ln, err
}

// serveUntilInterrupted waits until the server fails (served delivers
// Serve's error) or the command is interrupted (SIGINT or SIGTERM), then
// shuts the server down gracefully, giving requests in flight 5 seconds.
func serveUntilInterrupted(c *cli.Context, srv *http.Server, served <-chan error, what string) error {
	select {
	case err := <-served:
		return fmt.Errorf("%s stopped: %w", what, err)
	case <-c.Context.Done():
	}
	logger(c).Info("shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		// Requests still in flight after the grace period (a client that
		// stalls) are cut: the command was asked to stop, and stops.
		logger(c).Warn("closing the connections still busy after 5 s", "err", err)
		srv.Close()
	}
	return nil
}

// deviceServer is the HTTP server of a device agent: the DeviceService and
// /healthz, on HTTP/1.1 and h2c.
func deviceServer(d *device.Device) *http.Server {
	mux := http.NewServeMux()
	mux.Handle(device.NewAgentHandler(d))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           mux,
		Protocols:         &protocols,
		ReadHeaderTimeout: 5 * time.Second,
		// Requests are small (at most device.MaxAgentRequestBytes): one
		// whose body stalls must not hold the agent, nor its shutdown.
		ReadTimeout:    30 * time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 16 << 10,
	}
}

// deviceReport is what `device show` prints.
type deviceReport struct {
	State          string             `json:"state"`
	ChipID         string             `json:"chip_id"`
	Identities     []string           `json:"identities"`
	Epoch          uint32             `json:"epoch"`
	Keys           *deviceKeysReport  `json:"keys"`
	Pending        *devicePendingInfo `json:"pending"`
	LogVerifierKey string             `json:"log_verifier_key"`
	Trust          []string           `json:"trust"`
}

type deviceKeysReport struct {
	Epoch             uint32               `json:"epoch"`
	MasterKeyVersion  uint32               `json:"master_key_version"`
	KeyOrigin         string               `json:"key_origin"`
	DevicePublicKey   []byte               `json:"device_public_key"`
	DeviceKeySHA256   string               `json:"device_key_sha256"`
	ChannelKeyCheck   string               `json:"channel_key_check"`
	Certificate       []byte               `json:"certificate"`
	CertificateSerial string               `json:"certificate_serial"`
	CertificateIssuer string               `json:"certificate_issuer"`
	Receipt           *deviceReceiptReport `json:"receipt"`
}

type deviceReceiptReport struct {
	Index    uint64 `json:"index"`
	TreeSize uint64 `json:"tree_size"`
	Origin   string `json:"origin"`
	Verified bool   `json:"verified"`
	Error    string `json:"error,omitempty"`
}

type devicePendingInfo struct {
	Epoch     uint32 `json:"epoch"`
	Certified bool   `json:"certified"`
}

func runDeviceShow(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	state := c.String("state")
	d, err := device.Load(state, device.LoadOptions{})
	if err != nil {
		return missingStateHint(err, state)
	}
	st, err := d.Status(c.Context)
	if err != nil {
		return err
	}
	r, err := newDeviceReport(state, st)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printDeviceReport(c.App.Writer, r)
	return nil
}

func newDeviceReport(state string, st *device.Status) (*deviceReport, error) {
	r := &deviceReport{
		State:          state,
		ChipID:         st.ChipID.String(),
		Epoch:          st.Epoch,
		LogVerifierKey: st.LogVerifierKey,
	}
	for _, id := range st.Identities {
		r.Identities = append(r.Identities, id.String())
	}
	trust, err := ledger.ParseTrustPEM(st.Trust)
	if err != nil {
		return nil, err
	}
	for _, cert := range append(trust.Roots(), trust.Intermediates()...) {
		r.Trust = append(r.Trust, cert.Subject.String())
	}
	if st.PendingEpoch != 0 {
		r.Pending = &devicePendingInfo{Epoch: st.PendingEpoch, Certified: st.PendingCertified}
	}
	if k := st.Keys; k != nil {
		cert, err := x509.ParseCertificate(k.Certificate)
		if err != nil {
			return nil, fmt.Errorf("device certificate: %w", err)
		}
		fp := sha256.Sum256(k.DevicePublicKey)
		r.Keys = &deviceKeysReport{
			Epoch:             k.Epoch,
			MasterKeyVersion:  k.MasterKeyVersion,
			KeyOrigin:         k.KeyOrigin.String(),
			DevicePublicKey:   k.DevicePublicKey,
			DeviceKeySHA256:   hex.EncodeToString(fp[:]),
			ChannelKeyCheck:   hex.EncodeToString(k.ChannelKeyCheck),
			Certificate:       k.Certificate,
			CertificateSerial: hex.EncodeToString(cert.SerialNumber.Bytes()),
			CertificateIssuer: cert.Issuer.String(),
		}
		if k.Receipt != nil {
			r.Keys.Receipt = receiptReport(k.Receipt, st.LogVerifierKey)
		}
	}
	return r, nil
}

// receiptReport describes a stored receipt and whether it verifies against
// the log key.
func receiptReport(receipt []byte, logKey string) *deviceReceiptReport {
	rr := &deviceReceiptReport{}
	r, err := proofs.ParseReceipt(receipt)
	if err != nil {
		rr.Error = err.Error()
		return rr
	}
	rr.Index = r.Index
	v, err := proofs.NewLogVerifier(logKey)
	if err != nil {
		rr.Error = err.Error()
		return rr
	}
	cp, err := r.Verify(v)
	if err != nil {
		rr.Error = err.Error()
		return rr
	}
	rr.TreeSize, rr.Origin, rr.Verified = cp.Size, cp.Origin, true
	return rr
}

func printDeviceReport(w io.Writer, r *deviceReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "state file\t%s\n", r.State)
	fmt.Fprintf(tw, "chip\t%s\n", r.ChipID)
	fmt.Fprintf(tw, "identities\t%s\n", strings.Join(r.Identities, ", "))
	fmt.Fprintf(tw, "epoch counter\t%d\n", r.Epoch)
	if k := r.Keys; k == nil {
		fmt.Fprintf(tw, "keys\tnone\n")
	} else {
		fmt.Fprintf(tw, "keys\tepoch %d, master key version %d, device key %s\n", k.Epoch, k.MasterKeyVersion, k.KeyOrigin)
		fmt.Fprintf(tw, "  device key\tSHA-256 %s\n", k.DeviceKeySHA256)
		fmt.Fprintf(tw, "  channel key\tcheck value %s\n", k.ChannelKeyCheck)
		fmt.Fprintf(tw, "  certificate\tserial %s, issued by %s\n", k.CertificateSerial, k.CertificateIssuer)
		switch rc := k.Receipt; {
		case rc == nil:
			fmt.Fprintf(tw, "  receipt\tnone (keys restored without one)\n")
		case rc.Verified:
			fmt.Fprintf(tw, "  receipt\tleaf %d of %d in %s, verified\n", rc.Index, rc.TreeSize, rc.Origin)
		default:
			fmt.Fprintf(tw, "  receipt\tDOES NOT VERIFY: %s\n", rc.Error)
		}
	}
	if p := r.Pending; p == nil {
		fmt.Fprintf(tw, "provisioning\tnone in progress\n")
	} else {
		next := "certificate"
		if p.Certified {
			next = "receipt"
		}
		fmt.Fprintf(tw, "provisioning\tepoch %d in progress, waiting for the %s\n", p.Epoch, next)
	}
	fmt.Fprintf(tw, "log key\t%s\n", r.LogVerifierKey)
	fmt.Fprintf(tw, "trust\t%s\n", strings.Join(r.Trust, "; "))
	tw.Flush()
}

// missingStateHint adds to err, if it is about a device state file that
// does not exist, the command that makes one.
func missingStateHint(err error, state string) error {
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return fmt.Errorf("%w\n(no device state file %s: manufacture a device into it with \"chipledger device new --state %s --identity imei:DIGITS --trust FILE --log-key KEY\")",
		err, state, shellQuote(state))
}
