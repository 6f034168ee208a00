package main

import (
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/chipledger/chipledger/internal/clustertls"
	"github.com/chipledger/chipledger/internal/hostport"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/node"
	"github.com/chipledger/chipledger/provisioner"
)

// Defaults of `chipledger node`.
const (
	defaultRaftAddr = "127.0.0.1:7000"
	defaultAPIAddr  = "127.0.0.1:8080"

	devDataDir      = "./chipledger-data"
	devNodeID       = "dev"
	devOrigin       = "dev.chipledger.local/log"
	devManufacturer = "Dev Devices"
	devLogKeyFile   = "log.key"
	devLogPubFile   = "log.pub"
	devCADir        = "ca"
)

// nodeFlags are the flags of `chipledger node` as given.
type nodeFlags struct {
	ID            string
	DataDir       string
	RaftAddr      string
	RaftAdvertise string
	APIAddr       string
	APIAdvertise  string
	Bootstrap     bool
	Peers         []string
	Join          []string
	LogKey        string
	Trust         string
	Dev           bool
	// TLS: the cluster CA, this node's certificate and key; or Insecure.
	TLSCA, TLSCert, TLSKey string
	Insecure               bool
	AdminTokenHash         string
	// Limits.
	MaxAppendsInFlight int
	StationRate        float64
	StationBurst       int
	// Witnessing: a c2sp.org/tlog-policy file and the least time between
	// two rounds.
	WitnessPolicy   string
	WitnessInterval time.Duration
	WitnessRefresh  time.Duration
	ShutdownDrain   time.Duration
}

// devSetup describes what `node --dev` prepared, for the banner it prints.
type devSetup struct {
	DataDir string
	// LogPub is the file holding the verifier key, for --log-key of the
	// other commands.
	LogPub string
	// LogKey is the log key file; LogKeyState says whether it was
	// "created", "reused" or "given" with --log-key.
	LogKey, LogKeyState string
	// CADir is the development CA's directory (empty when --trust was
	// given); CAState says whether it was "created" or "reused".
	CADir, CAState string
	TrustPath      string
}

// nodeRunner runs a node with cfg until c.Context is cancelled; dev is set
// for `node --dev`.
type nodeRunner func(c *cli.Context, cfg node.Config, dev *devSetup) error

// logSignerKeyEnv is the environment variable of the node's --log-key: the
// secret signer key file. CHIPLEDGER_LOG_KEY, which env would give, is the
// public verifier key of the other commands.
const logSignerKeyEnv = "CHIPLEDGER_LOG_SIGNER_KEY"

// env names the environment variable of a node flag.
func env(name string) []string {
	return []string{"CHIPLEDGER_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
}

// nodeCommand is `chipledger node`: run a ledger replica.
func nodeCommand(run nodeRunner) *cli.Command {
	return &cli.Command{
		Name:  "node",
		Usage: "run a ledger node (one Raft replica of the log)",
		UsageText: `chipledger node --dev [--data-dir DIR]
chipledger node --id ID --data-dir DIR --log-key FILE --trust FILE [--bootstrap [--peer PEER ...] | --join HOST:PORT ...]

   # development: a single node with generated keys in ./chipledger-data
   chipledger node --dev

   # production: three nodes, each started with the same peer list, over TLS
   # (chipledger tls init --dir tls; chipledger tls node --dir tls --id n1 --host 10.0.0.1)
   chipledger node --id n1 --data-dir /var/lib/chipledger --log-key log.key --trust trust.pem \
       --tls-ca tls/ca.pem --tls-cert tls/n1.pem --tls-key tls/n1.key \
       --raft-addr 10.0.0.1:7000 --api-addr 10.0.0.1:8080 --bootstrap \
       --peer n1=10.0.0.1:7000=10.0.0.1:8080 --peer n2=10.0.0.2:7000=10.0.0.2:8080 \
       --peer n3=10.0.0.3:7000=10.0.0.3:8080

   # add a node to a running cluster
   chipledger node --id n4 --data-dir /var/lib/chipledger --log-key log.key --trust trust.pem \
       --tls-ca tls/ca.pem --tls-cert tls/n4.pem --tls-key tls/n4.key \
       --raft-addr 10.0.0.4:7000 --api-addr 10.0.0.4:8080 --join 10.0.0.1:8080`,
		Description: `Runs one replica of the log: a Raft member that validates and sequences
entries, stores the Merkle tree, signs checkpoints with the log key and serves
the Connect API (Connect, gRPC, gRPC-Web), the C2SP tlog-tiles read API
(/checkpoint, /tile/...), /healthz, /readyz and /metrics on --api-addr.
It stops gracefully on SIGINT or SIGTERM.

A new cluster is founded once with --bootstrap: alone (no --peer), or as a
fixed set of nodes, each started with the same --peer list, itself included.
Restarting a node with the same flags is safe: bootstrapping a node that has
Raft state does nothing. A node joins a running cluster with --join.

--dev needs no other flag: it uses ./chipledger-data (or --data-dir),
creates log.key (origin dev.chipledger.local/log) and a development CA
("Dev Devices") in it if missing, and runs a single bootstrapped node.

Raft runs over mutual TLS between nodes holding certificates from the
cluster CA (--tls-ca, --tls-cert, --tls-key; see "chipledger tls"), and the
API over TLS. A node refuses to start without them unless given --insecure
(plain TCP, only on a network you trust) or --dev.

Every flag can also be set by its environment variable (shown in brackets);
list flags take comma-separated values there.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "dev", EnvVars: env("dev"),
				Usage: "run a single development node, with a log key and a CA generated in --data-dir (" + devDataDir + " unless given)"},
			&cli.StringFlag{Name: "id", EnvVars: env("id"),
				Usage: "this node's `ID` in the Raft cluster; stable across restarts (required; --dev: " + devNodeID + ")"},
			&cli.StringFlag{Name: "data-dir", EnvVars: env("data-dir"), TakesFile: true,
				Usage: "`DIR` for the Raft log, snapshots and ledger store (required; --dev: " + devDataDir + ")"},
			&cli.StringFlag{Name: "raft-addr", EnvVars: env("raft-addr"), Value: defaultRaftAddr,
				Usage: "`HOST:PORT` Raft listens on"},
			&cli.StringFlag{Name: "raft-advertise", EnvVars: env("raft-advertise"),
				Usage: "`HOST:PORT` other nodes reach Raft at (default: --raft-addr)"},
			&cli.StringFlag{Name: "api-addr", EnvVars: env("api-addr"), Value: defaultAPIAddr,
				Usage: "`HOST:PORT` the API, tiles, health and metrics are served on"},
			&cli.StringFlag{Name: "api-advertise", EnvVars: env("api-advertise"),
				Usage: "`HOST:PORT` other nodes and clients reach the API at (default: --api-addr)"},
			&cli.BoolFlag{Name: "bootstrap", EnvVars: env("bootstrap"),
				Usage: "found a new cluster: of the --peer nodes, or of this node alone"},
			&cli.StringSliceFlag{Name: "peer", EnvVars: env("peer"),
				Usage: "a founding member for --bootstrap, `PEER` = ID=RAFT_ADDR=API_ADDR; repeat for each node, this one included"},
			&cli.StringSliceFlag{Name: "join", EnvVars: env("join"),
				Usage: "join the cluster through the member whose API is at `HOST:PORT`; repeat to try several"},
			// Not $CHIPLEDGER_LOG_KEY: for every other command that is the
			// public verifier key, which a node cannot sign with.
			&cli.StringFlag{Name: "log-key", EnvVars: []string{logSignerKeyEnv}, TakesFile: true,
				Usage: "`FILE` with the secret log key checkpoints are signed with, from \"chipledger keys --out\" (required; --dev: DIR/log.key)"},
			&cli.StringFlag{Name: "trust", EnvVars: env("trust"), TakesFile: true,
				Usage: "PEM `FILE` of the manufacturer roots and CAs that device and station certificates must chain to, e.g. trust.pem from \"chipledger ca init\" (required; --dev: DIR/ca/trust.pem)"},
			&cli.StringFlag{Name: "tls-ca", EnvVars: env("tls-ca"), TakesFile: true,
				Usage: "cluster CA certificate `FILE` (from \"chipledger tls init\"): Raft runs over mutual TLS with peers holding certificates from it, the API over TLS"},
			&cli.StringFlag{Name: "tls-cert", EnvVars: env("tls-cert"), TakesFile: true,
				Usage: "this node's certificate `FILE` (from \"chipledger tls node\"), naming the addresses peers and clients reach it at"},
			&cli.StringFlag{Name: "tls-key", EnvVars: env("tls-key"), TakesFile: true,
				Usage: "this node's TLS key `FILE`"},
			&cli.BoolFlag{Name: "insecure", EnvVars: env("insecure"),
				Usage: "run Raft and the API over plain TCP, without TLS (only on a network you trust; --dev implies it)"},
			&cli.StringFlag{Name: "admin-token-hash", EnvVars: env("admin-token-hash"),
				Usage: "hex SHA-256 of a bearer token that authorises admin calls for clients without an admin certificate (from \"chipledger tls token\"; needs TLS)"},
			&cli.IntFlag{Name: "max-appends-in-flight", EnvVars: env("max-appends-in-flight"), Value: node.DefaultMaxAppendsInFlight,
				Usage: "appends handled at once; more are refused with RESOURCE_EXHAUSTED and a retry hint (bounds memory under load)"},
			&cli.Float64Flag{Name: "station-rate", EnvVars: env("station-rate"),
				Usage: "limit each station to this many appends a second (0: no limit)"},
			&cli.IntFlag{Name: "station-burst", EnvVars: env("station-burst"), Value: 100,
				Usage: "with --station-rate, the appends a station may make at once"},
			&cli.StringFlag{Name: "witness-policy", EnvVars: env("witness-policy"), TakesFile: true,
				Usage: "a c2sp.org/tlog-policy `FILE` naming the witnesses (cosignature/v1 keys and URLs) and their quorum: the leader has each new checkpoint cosigned by them and every node serves the latest cosigned one (give clients the same file)"},
			&cli.DurationFlag{Name: "witness-interval", EnvVars: env("witness-interval"), Value: node.DefaultWitnessInterval,
				Usage: "with --witness-policy, the least time between two checkpoints sent to the witnesses"},
			&cli.DurationFlag{Name: "witness-refresh", EnvVars: env("witness-refresh"), Value: node.DefaultWitnessRefresh,
				Usage: "with --witness-policy, have an idle log's checkpoint cosigned again this often, so clients find recent cosignatures (see recover --witness-max-age)"},
			&cli.DurationFlag{Name: "shutdown-drain", EnvVars: env("shutdown-drain"),
				Usage: "on SIGTERM, keep serving this long with /readyz answering 503 before closing the API, for a load balancer to take the node out of rotation (a leader first hands its leadership to another node)"},
		},
		Subcommands: []*cli.Command{nodeVerifyCommand()},
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			f := nodeFlagsFrom(c)
			var dev *devSetup
			if f.Dev {
				var err error
				if dev, err = prepareDev(&f); err != nil {
					return err
				}
			}
			cfg, err := nodeConfig(f, logger(c))
			if err != nil {
				return asUsageError(err) // every error of nodeConfig is one of its flags
			}
			return run(c, cfg, dev)
		},
	}
}

func nodeFlagsFrom(c *cli.Context) nodeFlags {
	return nodeFlags{
		ID:             c.String("id"),
		DataDir:        c.String("data-dir"),
		RaftAddr:       c.String("raft-addr"),
		RaftAdvertise:  c.String("raft-advertise"),
		APIAddr:        c.String("api-addr"),
		APIAdvertise:   c.String("api-advertise"),
		Bootstrap:      c.Bool("bootstrap"),
		Peers:          c.StringSlice("peer"),
		Join:           c.StringSlice("join"),
		LogKey:         c.String("log-key"),
		Trust:          c.String("trust"),
		Dev:            c.Bool("dev"),
		TLSCA:          c.String("tls-ca"),
		TLSCert:        c.String("tls-cert"),
		TLSKey:         c.String("tls-key"),
		Insecure:       c.Bool("insecure"),
		AdminTokenHash: c.String("admin-token-hash"),

		MaxAppendsInFlight: c.Int("max-appends-in-flight"),
		StationRate:        c.Float64("station-rate"),
		StationBurst:       c.Int("station-burst"),
		WitnessPolicy:      c.String("witness-policy"),
		WitnessInterval:    c.Duration("witness-interval"),
		WitnessRefresh:     c.Duration("witness-refresh"),
		ShutdownDrain:      c.Duration("shutdown-drain"),
	}
}

// prepareDev fills in the defaults of --dev and creates the log key and the
// development CA in the data directory if they are missing. Flags given
// explicitly win.
func prepareDev(f *nodeFlags) (*devSetup, error) {
	if len(f.Peers) > 0 || len(f.Join) > 0 {
		return nil, errors.New("--dev runs a single node; it cannot be combined with --peer or --join")
	}
	if f.DataDir == "" {
		f.DataDir = devDataDir
	}
	if f.ID == "" {
		f.ID = devNodeID
	}
	f.Bootstrap = true
	if err := os.MkdirAll(f.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create the data directory: %w", err)
	}
	d := &devSetup{DataDir: f.DataDir, LogKeyState: "given"}
	if f.LogKey == "" {
		f.LogKey, d.LogKeyState = filepath.Join(f.DataDir, devLogKeyFile), "reused"
		if _, err := os.Stat(f.LogKey); errors.Is(err, os.ErrNotExist) {
			skey, _, err := ledger.GenerateLogKey(devOrigin)
			if err != nil {
				return nil, err
			}
			if err := writeSecretFile(f.LogKey, []byte(skey+"\n")); err != nil {
				return nil, err
			}
			d.LogKeyState = "created"
		}
	}
	d.LogKey = f.LogKey
	// The verifier key beside it, for the commands that take --log-key.
	if skey, err := os.ReadFile(f.LogKey); err == nil {
		if signer, err := ledger.NewLogSigner(string(skey)); err == nil {
			d.LogPub = filepath.Join(f.DataDir, devLogPubFile)
			if err := os.WriteFile(d.LogPub, []byte(signer.VerifierKey()+"\n"), 0o644); err != nil {
				return nil, fmt.Errorf("write the verifier key: %w", err)
			}
		}
	}
	if f.Trust == "" {
		d.CADir, d.CAState = filepath.Join(f.DataDir, devCADir), "reused"
		ca, err := provisioner.LoadCA(d.CADir)
		if errors.Is(err, provisioner.ErrNoCA) {
			ca, err = provisioner.InitCA(d.CADir, devManufacturer)
			d.CAState = "created"
		}
		if err != nil {
			return nil, fmt.Errorf("development CA: %w", err)
		}
		f.Trust = ca.TrustPath()
	}
	d.TrustPath = f.Trust
	return d, nil
}

// requiredNodeFlags are the flags a node needs without --dev, with what they
// are for.
var requiredNodeFlags = []struct {
	name, env, purpose string
	value              func(*nodeFlags) string
}{
	{"id", env("id")[0], "this node's name in the Raft cluster, stable across restarts", func(f *nodeFlags) string { return f.ID }},
	{"data-dir", env("data-dir")[0], "where the node keeps its Raft log and ledger", func(f *nodeFlags) string { return f.DataDir }},
	{"log-key", logSignerKeyEnv, "the secret log key file from \"chipledger keys\", to sign checkpoints", func(f *nodeFlags) string { return f.LogKey }},
	{"trust", env("trust")[0], "the manufacturer trust bundle (PEM) from \"chipledger ca init\", to check certificates", func(f *nodeFlags) string { return f.Trust }},
}

// nodeConfig maps the flags to a node.Config: it checks that they fit
// together, parses the peers, and reads the log key and the trust bundle.
func nodeConfig(f nodeFlags, log *slog.Logger) (node.Config, error) {
	var missing []string
	for _, r := range requiredNodeFlags {
		if r.value(&f) == "" {
			missing = append(missing, fmt.Sprintf("  --%s [$%s]: %s", r.name, r.env, r.purpose))
		}
	}
	if f.LogKey == "" && os.Getenv("CHIPLEDGER_LOG_KEY") != "" {
		missing = append(missing, "  (CHIPLEDGER_LOG_KEY is set, but a node does not read it: for the other commands it names the\n  public verifier key; give the node its secret key file with $"+logSignerKeyEnv+")")
	}
	if len(missing) > 0 {
		return node.Config{}, cli.Exit(fmt.Sprintf("missing required flags:\n%s\n(or run \"chipledger node --dev\" for a local development node; see \"chipledger node --help\")", strings.Join(missing, "\n")), exitUsage)
	}
	cfg := node.Config{
		ID:            f.ID,
		DataDir:       f.DataDir,
		RaftAddr:      f.RaftAddr,
		RaftAdvertise: f.RaftAdvertise,
		APIAddr:       f.APIAddr,
		APIAdvertise:  f.APIAdvertise,
		Bootstrap:     f.Bootstrap,
		Join:          f.Join,
		Logger:        log,

		MaxAppendsInFlight: f.MaxAppendsInFlight,
		StationRate:        f.StationRate,
		StationBurst:       f.StationBurst,
		WitnessInterval:    f.WitnessInterval,
		WitnessRefresh:     f.WitnessRefresh,
		// A graceful stop (SIGTERM) hands leadership over, so that the
		// cluster is not without a leader for an election timeout.
		HandOverOnClose: true,
		DrainDelay:      f.ShutdownDrain,
	}
	if f.ShutdownDrain < 0 {
		return node.Config{}, fmt.Errorf("--shutdown-drain %s cannot be negative", f.ShutdownDrain)
	}
	if f.WitnessPolicy != "" {
		p, err := readWitnessPolicy(f.WitnessPolicy)
		if err != nil {
			return node.Config{}, fmt.Errorf("--witness-policy: %w", err)
		}
		cfg.Witnesses = p
	}
	if f.WitnessInterval < 0 || f.WitnessRefresh < 0 {
		return node.Config{}, fmt.Errorf("--witness-interval %s and --witness-refresh %s cannot be negative", f.WitnessInterval, f.WitnessRefresh)
	}
	if f.MaxAppendsInFlight < 1 || f.StationRate < 0 || f.StationBurst < 1 {
		return node.Config{}, fmt.Errorf("--max-appends-in-flight (%d) and --station-burst (%d) must be at least 1, --station-rate (%g) not negative",
			f.MaxAppendsInFlight, f.StationBurst, f.StationRate)
	}
	for _, a := range []struct{ flag, addr string }{
		{"raft-addr", f.RaftAddr}, {"raft-advertise", f.RaftAdvertise},
		{"api-addr", f.APIAddr}, {"api-advertise", f.APIAdvertise},
	} {
		if a.addr == "" {
			continue
		}
		if err := hostport.Check(a.addr, a.flag == "raft-addr" || a.flag == "api-addr"); err != nil {
			return node.Config{}, fmt.Errorf("--%s %q: %w", a.flag, a.addr, err)
		}
	}
	if cfg.RaftAddr == "" || cfg.APIAddr == "" {
		return node.Config{}, errors.New("--raft-addr and --api-addr must not be empty")
	}
	if err := setMembership(&cfg, f.Peers); err != nil {
		return node.Config{}, err
	}
	for _, j := range f.Join {
		if err := hostport.Check(j, false); err != nil {
			return node.Config{}, fmt.Errorf("--join %q: %w", j, err)
		}
	}

	skey, err := os.ReadFile(f.LogKey)
	if err != nil {
		return node.Config{}, fmt.Errorf("--log-key: %w (make one with \"chipledger keys --origin ORIGIN --out FILE\")", err)
	}
	if cfg.Signer, err = ledger.NewLogSigner(string(skey)); err != nil {
		return node.Config{}, fmt.Errorf("--log-key %s: %w", f.LogKey, err)
	}
	if fi, err := os.Stat(f.LogKey); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the log key file is accessible by other users; chmod 600 it", "file", f.LogKey, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
	}
	trustPEM, err := os.ReadFile(f.Trust)
	if err != nil {
		return node.Config{}, fmt.Errorf("--trust: %w (a CA's trust.pem comes from \"chipledger ca init\")", err)
	}
	if cfg.Trust, err = ledger.ParseTrustPEM(trustPEM); err != nil {
		return node.Config{}, fmt.Errorf("--trust %s: %w", f.Trust, err)
	}
	if err := setTransport(&cfg, f, log); err != nil {
		return node.Config{}, err
	}
	return cfg, nil
}

// setTransport sets TLS from --tls-ca, --tls-cert and --tls-key, or allows
// plain TCP with --insecure or --dev, and the admin token hash.
func setTransport(cfg *node.Config, f nodeFlags, log *slog.Logger) error {
	if f.AdminTokenHash != "" {
		h, err := hex.DecodeString(f.AdminTokenHash)
		if err != nil || len(h) != 32 {
			return fmt.Errorf("--admin-token-hash must be 64 hex digits (a SHA-256), as \"chipledger tls token\" prints")
		}
		cfg.AdminTokenHash = h
	}
	given := f.TLSCA != "" || f.TLSCert != "" || f.TLSKey != ""
	switch {
	case given && (f.TLSCA == "" || f.TLSCert == "" || f.TLSKey == ""):
		return errors.New("TLS needs all of --tls-ca, --tls-cert and --tls-key")
	case given && f.Insecure:
		return errors.New("--insecure and the --tls-* flags exclude each other")
	case given:
		pool, err := clustertls.LoadCAPool(f.TLSCA)
		if err != nil {
			return fmt.Errorf("--tls-ca: %w", err)
		}
		pair, err := tls.LoadX509KeyPair(f.TLSCert, f.TLSKey)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.TLS = &node.TLSConfig{CA: pool, Certificate: pair}
	case cfg.AdminTokenHash != nil:
		return errors.New("--admin-token-hash needs TLS (--tls-ca, --tls-cert, --tls-key): over plain TCP the token would cross the network in the clear, and without TLS every admin call is open anyway")
	case f.Dev:
		if isUnspecified(f.RaftAddr) || isUnspecified(f.APIAddr) {
			log.Warn("--dev listens on every interface without TLS: anyone who reaches this machine can write to its Raft log and make admin calls (join, leave, revoke a station); listen on 127.0.0.1 unless that is what you want",
				"raft", f.RaftAddr, "api", f.APIAddr)
		}
	case f.Insecure:
		log.Warn("running without TLS (--insecure): Raft and the API are plain TCP; use only on a network you trust")
	default:
		return errors.New("no transport security: give --tls-ca, --tls-cert and --tls-key (make them with \"chipledger tls init\" and \"chipledger tls node\"), or --insecure for plain TCP on a network you trust")
	}
	return nil
}

// setMembership checks --bootstrap, --peer and --join together and sets
// cfg.Peers. When this node listens on an unspecified address (0.0.0.0 or
// [::]) and has no advertise address, it advertises the addresses its own
// --peer entry gives.
func setMembership(cfg *node.Config, peerFlags []string) error {
	if cfg.Bootstrap && len(cfg.Join) > 0 {
		return errors.New("--bootstrap founds a new cluster and --join joins an existing one: give only one of them")
	}
	if len(peerFlags) == 0 {
		return nil
	}
	if !cfg.Bootstrap {
		return errors.New("--peer lists the founding members of a new cluster and needs --bootstrap (to add a node to a running cluster, use --join)")
	}
	peers, err := parsePeers(peerFlags)
	if err != nil {
		return err
	}
	self := -1
	for i, p := range peers {
		if p.ID == cfg.ID {
			self = i
		}
	}
	if self < 0 {
		return fmt.Errorf("the --peer list must include this node (--id %s), with the same list on every founding node", cfg.ID)
	}
	me := peers[self]
	if cfg.RaftAdvertise == "" && isUnspecified(cfg.RaftAddr) {
		cfg.RaftAdvertise = me.RaftAddr
	}
	if cfg.APIAdvertise == "" && isUnspecified(cfg.APIAddr) {
		cfg.APIAdvertise = me.APIAddr
	}
	for _, a := range []struct{ flag, label, advertise, listen, peer string }{
		{"raft", "Raft", cfg.RaftAdvertise, cfg.RaftAddr, me.RaftAddr},
		{"api", "API", cfg.APIAdvertise, cfg.APIAddr, me.APIAddr},
	} {
		addr, flag := a.advertise, "--"+a.flag+"-advertise"
		if addr == "" {
			addr, flag = a.listen, "--"+a.flag+"-addr"
		}
		if addr != a.peer {
			return fmt.Errorf("--peer gives this node's %s address as %s, but %s is %s: make them the same (set --%s-advertise if the node listens on another address)", a.label, a.peer, flag, addr, a.flag)
		}
	}
	cfg.Peers = peers
	return nil
}

// parsePeers parses --peer values, ID=RAFT_ADDR=API_ADDR, and rejects
// repeated IDs and addresses.
func parsePeers(values []string) ([]node.Peer, error) {
	var peers []node.Peer
	ids, addrs := map[string]bool{}, map[string]bool{}
	for _, v := range values {
		p, err := parsePeer(v)
		if err != nil {
			return nil, err
		}
		if ids[p.ID] {
			return nil, fmt.Errorf("--peer %q: node ID %s is listed twice", v, p.ID)
		}
		if addrs[p.RaftAddr] || addrs[p.APIAddr] {
			return nil, fmt.Errorf("--peer %q: an address of %s is already used by another peer", v, p.ID)
		}
		ids[p.ID], addrs[p.RaftAddr], addrs[p.APIAddr] = true, true, true
		peers = append(peers, p)
	}
	return peers, nil
}

func parsePeer(v string) (node.Peer, error) {
	parts := strings.Split(v, "=")
	if len(parts) != 3 || parts[0] == "" {
		return node.Peer{}, fmt.Errorf("--peer %q: want ID=RAFT_ADDR=API_ADDR, e.g. n1=10.0.0.1:7000=10.0.0.1:8080", v)
	}
	p := node.Peer{ID: parts[0], RaftAddr: parts[1], APIAddr: parts[2]}
	if len(p.ID) > hostport.MaxLen {
		return node.Peer{}, fmt.Errorf("--peer %q: node ID of %d bytes: at most %d", v, len(p.ID), hostport.MaxLen)
	}
	if err := hostport.Check(p.RaftAddr, false); err != nil {
		return node.Peer{}, fmt.Errorf("--peer %q: Raft address %q: %w", v, p.RaftAddr, err)
	}
	if err := hostport.Check(p.APIAddr, false); err != nil {
		return node.Peer{}, fmt.Errorf("--peer %q: API address %q: %w", v, p.APIAddr, err)
	}
	if isUnspecified(p.RaftAddr) || isUnspecified(p.APIAddr) {
		return node.Peer{}, fmt.Errorf("--peer %q: give the addresses other nodes reach %s at, not 0.0.0.0 or [::]", v, p.ID)
	}
	return p, nil
}

// isUnspecified reports whether a HOST:PORT listens on every interface.
func isUnspecified(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// runNode starts a node, reports where it is, and closes it when the
// command's context is cancelled (SIGINT or SIGTERM).
func runNode(c *cli.Context, cfg node.Config, dev *devSetup) error {
	log := logger(c)
	n, err := node.Start(c.Context, cfg)
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w\n(another process uses that address: stop it, or pick free ports with --raft-addr and --api-addr)", err)
	}
	if errors.Is(err, bolterrors.ErrTimeout) {
		// bbolt gives up waiting for the lock another process holds.
		return fmt.Errorf("%w\n(is another node running with this --data-dir %s? stop it, or give this node its own --data-dir)", err, cfg.DataDir)
	}
	if err != nil {
		return err
	}
	log.Info("node running",
		"id", n.ID(), "raft", n.RaftAddr(), "api", n.APIAddr(), "data_dir", cfg.DataDir,
		"origin", cfg.Signer.Origin(), "verifier_key", cfg.Signer.VerifierKey())
	if dev != nil {
		printDevBanner(c.App.Writer, n, cfg, dev)
	}
	<-c.Context.Done()
	log.Info("shutting down")
	if err := n.Close(); err != nil {
		return fmt.Errorf("stop node: %w", err)
	}
	return nil
}

func printDevBanner(w io.Writer, n *node.Node, cfg node.Config, dev *devSetup) {
	ca := "none (--trust given)"
	if dev.CADir != "" {
		ca = fmt.Sprintf("%s (%s; manufacturer %q)", dev.CADir, dev.CAState, devManufacturer)
	}
	base := "http://" + n.APIAddr()
	if cfg.TLS != nil {
		base = "https://" + n.APIAddr()
	}
	fmt.Fprintf(w, `
chipledger development node is running: one node, not for production.

  verifier key   %s
                 (also in %s, for the --log-key of other commands)
  API            %s  (Connect, gRPC, gRPC-Web; /healthz, /metrics)
  tiles          %s/checkpoint  (C2SP tlog-tiles: %s/tile/...)
  Raft           %s
  data dir       %s
  log key        %s (%s)
  CA             %s
  trust bundle   %s

Stop with Ctrl-C; running "chipledger node --dev" again reuses all of it.

`, cfg.Signer.VerifierKey(), dev.LogPub, base, base, base, n.RaftAddr(), dev.DataDir,
		dev.LogKey, dev.LogKeyState, ca, dev.TrustPath)
}

// nodeVerifyCommand is `chipledger node verify`: rehash a stopped node's
// ledger store.
func nodeVerifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "rehash a stopped node's ledger store and report the first bad leaf or tree node",
		UsageText: "chipledger node verify --data-dir /var/lib/chipledger",
		Description: `Reads every leaf of the node's ledger, checks it against its recorded offset
and stored hash, recomputes every stored tree hash from its children and the
root from them. A node refuses to start on a store whose root does not match
its hashes; a store that fails here can be rebuilt: stop the node, move its
data directory's ledger/ away and start it again, and it rebuilds the ledger
from its Raft snapshot and log (or remove the whole data directory and join
the cluster again, to copy everything from the other nodes).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Required: true, EnvVars: env("data-dir"), Usage: "the node's data `DIR`"},
		},
		Action: func(c *cli.Context) error {
			path, err := node.LedgerPath(c.String("data-dir"))
			if err != nil {
				return err
			}
			bar := newProgress(c.App.ErrWriter, 1, "rehashing", "leaves")
			rep, err := ledger.VerifyStore(path, func(done, total uint64) {
				bar.ChangeMax64(int64(total))
				bar.Set64(int64(done))
			})
			bar.Finish()
			if err != nil {
				return err
			}
			if !rep.OK() {
				return cli.Exit(fmt.Sprintf("the ledger in %s is corrupt after %d good leaves: %s", path, rep.Leaves, rep.Problem), 1)
			}
			fmt.Fprintf(c.App.Writer, "the ledger in %s is sound: %d leaves and %d tree hashes rehashed, root %x\n", path, rep.Leaves, rep.Hashes, rep.Root)
			return nil
		},
	}
}
