// Package demo runs the whole chipledger story in one process, for
// `chipledger demo`: a manufacturer CA, an in-process ledger cluster on
// loopback whose checkpoints in-process witnesses cosign, a registered
// station, emulated devices provisioned concurrently, one device wiped and
// recovered from the ledger with every check spelled out (the witnesses'
// among them), and an audit of the whole log.
package demo

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/internal/localcluster"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/provisioner"
)

// The demo's witnesses: three, of which two must cosign.
const (
	demoWitnesses     = 3
	demoWitnessQuorum = 2
)

// Options configure a demo run.
type Options struct {
	// Nodes is the size of the ledger cluster (default 3).
	Nodes int
	// Devices is how many devices to provision (default 200).
	Devices int
	// Concurrency is how many devices are provisioned at once (default 64).
	Concurrency int
	// Dir holds everything; empty makes a temporary directory that is
	// removed at the end unless Keep is set.
	Dir  string
	Keep bool
	// Out receives the story; Logger the components' logs (nil discards).
	Out    io.Writer
	Logger *slog.Logger
	// Progress, if not nil, is called as devices are provisioned, with the
	// number done and the total (the command draws a progress bar with it).
	Progress func(done, total int)
}

// Summary is what a demo run measured.
type Summary struct {
	Nodes         int `json:"nodes"`
	Witnesses     int `json:"witnesses"`
	WitnessQuorum int `json:"witness_quorum"`
	Devices       int `json:"devices"`
	Provisioned   int `json:"provisioned"`
	Failed        int `json:"failed"`
	// EscrowEntries is the escrow entries the demo published: one for
	// each device provisioned.
	EscrowEntries uint64 `json:"escrow_entries"`
	// TreeSize is the leaves in the log: the escrow entries, the station
	// registration and the chip index roots.
	TreeSize           uint64        `json:"tree_size"`
	DevicesPerSecond   float64       `json:"devices_per_second"`
	ProvisionP50       time.Duration `json:"provision_p50_ns"`
	ProvisionP99       time.Duration `json:"provision_p99_ns"`
	RecoveredChip      string        `json:"recovered_chip"`
	RecoveredKeysEqual bool          `json:"recovered_keys_equal"`
	RecoveryTime       time.Duration `json:"recovery_ns"`
	// WitnessedSize is the size of the checkpoint the witnesses cosigned
	// that the recovery's lookup was proven a prefix of.
	WitnessedSize uint64 `json:"witnessed_size"`
	// AuditedLeaves is the leaves of every kind the audit re-validated.
	AuditedLeaves uint64 `json:"audited_leaves"`
	AuditFindings int    `json:"audit_findings"`
	Checkpoint    string `json:"checkpoint"`
	Dir           string `json:"dir"`
	Kept          bool   `json:"kept"`
}

// ErrDirInUse reports an Options.Dir that holds files already: the demo
// makes its CA, keys and ledger anew each run.
var ErrDirInUse = errors.New("the demo directory is in use")

// Run runs the demo and returns its summary; the story goes to o.Out.
func Run(ctx context.Context, o Options) (s *Summary, err error) {
	if o.Nodes <= 0 {
		o.Nodes = 3
	}
	if o.Devices <= 0 {
		o.Devices = 200
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	dir := o.Dir
	if dir != "" {
		// The demo makes a new world (a CA, keys, a ledger) each run.
		if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
			return nil, fmt.Errorf("%w: %s holds files already; give a new or empty directory (or none, for a temporary one)", ErrDirInUse, dir)
		}
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "chipledger-demo-"); err != nil {
			return nil, err
		}
		if !o.Keep {
			defer os.RemoveAll(dir)
		}
	}
	p := &printer{w: o.Out}
	s = &Summary{Nodes: o.Nodes, Witnesses: demoWitnesses, WitnessQuorum: demoWitnessQuorum, Devices: o.Devices, Dir: dir, Kept: o.Keep || o.Dir != ""}

	p.step("The manufacturer")
	ca, err := provisioner.InitCA(filepath.Join(dir, "ca"), "Demo Devices Ltd")
	if err != nil {
		return nil, err
	}
	p.line("created a root CA and a device CA (ECDSA P-256); devices carry the root in ROM")
	skey, vkey, err := ledger.GenerateLogKey("demo.chipledger.local/log")
	if err != nil {
		return nil, err
	}
	signer, err := ledger.NewLogSigner(skey)
	if err != nil {
		return nil, err
	}
	p.line("created the log key; everyone verifies the ledger with %s", vkey)

	p.step("The ledger")
	ws, err := startWitnesses(filepath.Join(dir, "witnesses"), vkey, demoWitnesses, demoWitnessQuorum, o.Logger)
	if err != nil {
		return nil, err
	}
	defer ws.Close()
	if err := os.WriteFile(filepath.Join(dir, "witness-policy"), ws.PolicyText, 0o644); err != nil {
		return nil, err
	}
	cluster, err := localcluster.Start(ctx, localcluster.Options{
		Nodes: o.Nodes, Dir: filepath.Join(dir, "ledger"), Signer: signer, Trust: ca.Trust(), Logger: o.Logger,
		Witnesses: ws.Policy, WitnessInterval: demoWitnessInterval,
	})
	if err != nil {
		return nil, err
	}
	defer cluster.Close()
	for _, n := range cluster.Nodes {
		p.line("node %s serves the API and tiles on http://%s", n.ID(), n.APIAddr())
	}
	p.line("witnesses on %s cosign the leader's checkpoints; the witness policy needs %d of the %d", strings.Join(ws.URLs, ", "), ws.Quorum, len(ws.URLs))
	cl, err := client.New(client.Options{Addrs: cluster.Addrs(), LogKey: vkey, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	defer cl.Close()

	p.step("The factory station")
	st, cleanup, err := newStation(ctx, dir, ca, cl, o.Devices, o.Logger)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	p.line("registered station %x in the ledger, made master key version 1 and a pool of %d device key pairs", st.ID(), o.Devices)

	p.step(fmt.Sprintf("Provisioning %d devices, %d at a time", o.Devices, o.Concurrency))
	devices := make([]*device.Device, o.Devices)
	conns := make([]device.Conn, o.Devices)
	for i := range devices {
		imei, err := ledger.NewIMEI(fmt.Sprintf("35209903%06d", i))
		if err != nil {
			return nil, err
		}
		if devices[i], err = device.Manufacture(device.ManufactureOptions{
			Identities: ledger.Identities{imei}, Trust: ca.Trust(), LogVerifierKey: vkey,
		}); err != nil {
			return nil, err
		}
		conns[i] = devices[i]
	}
	done := 0
	res := st.ProvisionAll(ctx, conns, o.Concurrency, func(error) {
		done++
		if o.Progress != nil {
			o.Progress(done, o.Devices)
		}
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.Provisioned, s.Failed = res.Succeeded, res.Failed
	s.DevicesPerSecond, s.ProvisionP50, s.ProvisionP99 = res.PerSecond, res.P50, res.P99
	p.line("%d provisioned, %d failed, in %s: %.0f devices/s, latency p50 %s, p99 %s",
		res.Succeeded, res.Failed, res.Duration.Round(time.Millisecond), res.PerSecond, res.P50.Round(time.Millisecond), res.P99.Round(time.Millisecond))
	if res.Failed > 0 {
		return s, fmt.Errorf("%d devices failed to provision: %v", res.Failed, res.Failures)
	}

	// The repair shop's client holds the witness policy: it accepts the
	// chip's history only within a checkpoint the witnesses cosigned.
	rcl, err := client.New(client.Options{Addrs: cluster.Addrs(), LogKey: vkey, Logger: o.Logger, Witnesses: ws.Policy})
	if err != nil {
		return s, err
	}
	defer rcl.Close()
	if err := recoverOne(ctx, p, s, rcl, devices[len(devices)/2]); err != nil {
		return s, err
	}
	if err := auditAll(ctx, p, s, cluster.Addrs(), vkey, ca.Trust(), dir); err != nil {
		return s, err
	}

	cp, signed := cl.Trusted()
	s.TreeSize, s.Checkpoint = cp.Size, string(signed)
	s.EscrowEntries = uint64(s.Provisioned)
	p.summary(s)
	return s, nil
}

// newStation registers a station and opens its journal, master keys and a
// filled key pool.
func newStation(ctx context.Context, dir string, ca *provisioner.CA, cl *client.Client, poolSize int, logger *slog.Logger) (*provisioner.Station, func(), error) {
	id, err := provisioner.InitStation(filepath.Join(dir, "station"), ca, "demo-line-1", 24*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	leaf, err := id.RegistrationLeaf()
	if err != nil {
		return nil, nil, err
	}
	if _, err := cl.Append(ctx, leaf); err != nil {
		return nil, nil, fmt.Errorf("register the station: %w", err)
	}
	mkDir := filepath.Join(dir, "master-keys")
	if _, err := provisioner.NewMasterKey(mkDir); err != nil {
		return nil, nil, err
	}
	mk, err := provisioner.LoadMasterKeys(mkDir)
	if err != nil {
		return nil, nil, err
	}
	j, err := provisioner.OpenJournal(filepath.Join(id.Dir, provisioner.JournalFile))
	if err != nil {
		return nil, nil, err
	}
	pool, err := provisioner.OpenPool(filepath.Join(dir, "pool.db"), provisioner.PoolOptions{Create: true})
	if err != nil {
		j.Close()
		return nil, nil, err
	}
	if err := pool.Fill(poolSize, nil); err != nil {
		j.Close()
		pool.Close()
		return nil, nil, err
	}
	st, err := provisioner.NewStation(provisioner.StationConfig{
		Certificate: id.Certificate, Key: id.Key, CA: ca, MasterKeys: mk, Pool: pool,
		Ledger: provisioner.ClientLedger{Client: cl}, Journal: j, Logger: logger,
	})
	if err != nil {
		j.Close()
		pool.Close()
		return nil, nil, err
	}
	return st, func() { j.Close(); pool.Close() }, nil
}

// fingerprint identifies a device's keys without showing them.
func fingerprint(d *device.Device) (string, error) {
	pkg, err := d.Keys()
	if err != nil {
		return "", err
	}
	key, err := pkg.PrivateKey()
	if err != nil {
		return "", err
	}
	pub, err := key.PublicKey.Bytes()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write(pub)
	h.Write(pkg.ChannelKey[:])
	return fmt.Sprintf("%x", h.Sum(nil)[:8]), nil
}

// signsLikeBefore checks that the restored device key still signs for the
// certificate's public key.
func signsLikeBefore(d *device.Device, pub *ecdsa.PublicKey) error {
	pkg, err := d.Keys()
	if err != nil {
		return err
	}
	key, err := pkg.PrivateKey()
	if err != nil {
		return err
	}
	digest := sha256.Sum256([]byte("chipledger demo"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return err
	}
	if !ecdsa.VerifyASN1(pub, digest[:], sig) {
		return errors.New("a signature by the restored device key does not verify under the certificate")
	}
	return nil
}

// printer writes the story.
type printer struct{ w io.Writer }

func (p *printer) step(title string) { fmt.Fprintf(p.w, "\n▸ %s\n", title) }

func (p *printer) line(format string, args ...any) {
	fmt.Fprintf(p.w, "  "+format+"\n", args...)
}

func (p *printer) summary(s *Summary) {
	p.step("Summary")
	rows := [][2]string{
		{"ledger nodes", fmt.Sprintf("%d, with %d witnesses (quorum %d)", s.Nodes, s.Witnesses, s.WitnessQuorum)},
		{"devices provisioned", fmt.Sprintf("%d of %d", s.Provisioned, s.Devices)},
		{"escrow entries", fmt.Sprint(s.EscrowEntries)},
		{"tree size", fmt.Sprintf("%d leaves (the escrow entries, the station registration, chip index roots)", s.TreeSize)},
		{"provisioning throughput", fmt.Sprintf("%.0f devices/s", s.DevicesPerSecond)},
		{"provisioning latency", fmt.Sprintf("p50 %s, p99 %s", s.ProvisionP50.Round(time.Millisecond), s.ProvisionP99.Round(time.Millisecond))},
		{"recovered device", fmt.Sprintf("%s, keys equal the originals: %v (%s)", s.RecoveredChip, s.RecoveredKeysEqual, s.RecoveryTime.Round(time.Microsecond))},
		{"audit", fmt.Sprintf("%d leaves re-validated, %d findings", s.AuditedLeaves, s.AuditFindings)},
		{"data", s.Dir + map[bool]string{true: " (kept)", false: " (removed at exit; --keep keeps it)"}[s.Kept]},
	}
	for _, r := range rows {
		fmt.Fprintf(p.w, "  %-24s %s\n", r[0], r[1])
	}
	fmt.Fprintf(p.w, "  %-24s\n", "checkpoint")
	for _, l := range splitLines(s.Checkpoint) {
		fmt.Fprintf(p.w, "    %s\n", l)
	}
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}
