package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/node"
	"github.com/chipledger/chipledger/provisioner"
)

const testOrigin = "test.chipledger.example/log"

var sharedPKI = sync.OnceValues(testpki.New)

// nodeEnvVars are the environment variables of every node flag, and the
// global log level.
var nodeEnvVars = []string{
	"CHIPLEDGER_DEV", "CHIPLEDGER_ID", "CHIPLEDGER_DATA_DIR", "CHIPLEDGER_RAFT_ADDR",
	"CHIPLEDGER_RAFT_ADVERTISE", "CHIPLEDGER_API_ADDR", "CHIPLEDGER_API_ADVERTISE",
	"CHIPLEDGER_BOOTSTRAP", "CHIPLEDGER_PEER", "CHIPLEDGER_JOIN", "CHIPLEDGER_LOG_KEY", "CHIPLEDGER_LOG_SIGNER_KEY",
	"CHIPLEDGER_TRUST", "CHIPLEDGER_LOG_LEVEL",
}

// clearEnv unsets the CHIPLEDGER_ variables for the test, so the caller's
// environment cannot change what the flags mean.
func clearEnv(t *testing.T) {
	for _, name := range nodeEnvVars {
		t.Setenv(name, "") // restores the old value after the test
		os.Unsetenv(name)
	}
}

// nodeFiles writes a log key and a trust bundle and returns their paths.
func nodeFiles(t *testing.T) (logKey, trust string) {
	t.Helper()
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	skey, _, err := ledger.GenerateLogKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	logKey, trust = filepath.Join(dir, "log.key"), filepath.Join(dir, "trust.pem")
	if err := os.WriteFile(logKey, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(trust, pki.Trust.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return logKey, trust
}

// cliResult is what one run of the command line produced.
type cliResult struct {
	cfg            *node.Config // set when the node command reached its runner
	dev            *devSetup
	stdout, stderr string
	err            error
}

// runCLI runs the command line with args; `node` records its configuration
// instead of starting a node.
func runCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	var r cliResult
	var stdout, stderr bytes.Buffer
	record := func(_ *cli.Context, cfg node.Config, dev *devSetup) error {
		r.cfg, r.dev = &cfg, dev
		return nil
	}
	r.err = newApp(&stdout, &stderr, record).RunContext(context.Background(), append([]string{"chipledger"}, args...))
	r.stdout, r.stderr = stdout.String(), stderr.String()
	return r
}

// mappedFields is the part of node.Config the flags set, apart from the
// signer, the trust bundle and the logger, which are checked separately.
type mappedFields struct {
	ID, DataDir, RaftAddr, RaftAdvertise, APIAddr, APIAdvertise string
	Bootstrap                                                   bool
	Peers                                                       []node.Peer
	Join                                                        []string
}

func fieldsOf(c *node.Config) mappedFields {
	return mappedFields{c.ID, c.DataDir, c.RaftAddr, c.RaftAdvertise, c.APIAddr, c.APIAdvertise, c.Bootstrap, c.Peers, c.Join}
}

func TestNodeFlagsMapToConfig(t *testing.T) {
	logKey, trust := nodeFiles(t)
	files := []string{"--log-key", logKey, "--trust", trust, "--insecure"}
	base := append([]string{"node", "--id", "n1", "--data-dir", "/data"}, files...)
	peers := []string{
		"--peer", "n1=10.0.0.1:7000=10.0.0.1:8080",
		"--peer", "n2=10.0.0.2:7000=10.0.0.2:8080",
		"--peer", "n3=10.0.0.3:7000=10.0.0.3:8080",
	}
	threePeers := []node.Peer{
		{ID: "n1", RaftAddr: "10.0.0.1:7000", APIAddr: "10.0.0.1:8080"},
		{ID: "n2", RaftAddr: "10.0.0.2:7000", APIAddr: "10.0.0.2:8080"},
		{ID: "n3", RaftAddr: "10.0.0.3:7000", APIAddr: "10.0.0.3:8080"},
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want mappedFields
	}{
		{
			name: "defaults",
			args: base,
			want: mappedFields{ID: "n1", DataDir: "/data", RaftAddr: "127.0.0.1:7000", APIAddr: "127.0.0.1:8080"},
		},
		{
			name: "every flag",
			args: append(append([]string{}, base...),
				"--raft-addr", "10.0.0.1:7000", "--raft-advertise", "n1.example:7000",
				"--api-addr", "10.0.0.1:8080", "--api-advertise", "n1.example:8080",
				"--join", "10.0.0.2:8080", "--join", "10.0.0.3:8080"),
			want: mappedFields{
				ID: "n1", DataDir: "/data", RaftAddr: "10.0.0.1:7000", RaftAdvertise: "n1.example:7000",
				APIAddr: "10.0.0.1:8080", APIAdvertise: "n1.example:8080", Join: []string{"10.0.0.2:8080", "10.0.0.3:8080"},
			},
		},
		{
			name: "bootstrap alone",
			args: append(append([]string{}, base...), "--bootstrap"),
			want: mappedFields{ID: "n1", DataDir: "/data", RaftAddr: "127.0.0.1:7000", APIAddr: "127.0.0.1:8080", Bootstrap: true},
		},
		{
			name: "bootstrap a fixed peer set",
			args: append(append(append([]string{}, base...), "--bootstrap", "--raft-addr", "10.0.0.1:7000", "--api-addr", "10.0.0.1:8080"), peers...),
			want: mappedFields{ID: "n1", DataDir: "/data", RaftAddr: "10.0.0.1:7000", APIAddr: "10.0.0.1:8080", Bootstrap: true, Peers: threePeers},
		},
		{
			name: "listening on every interface advertises the node's own peer entry",
			args: append(append(append([]string{}, base...), "--bootstrap", "--raft-addr", "0.0.0.0:7000", "--api-addr", ":8080"), peers...),
			want: mappedFields{
				ID: "n1", DataDir: "/data", RaftAddr: "0.0.0.0:7000", RaftAdvertise: "10.0.0.1:7000",
				APIAddr: ":8080", APIAdvertise: "10.0.0.1:8080", Bootstrap: true, Peers: threePeers,
			},
		},
		{
			name: "environment variables",
			args: []string{"node"},
			env: map[string]string{
				"CHIPLEDGER_ID": "n1", "CHIPLEDGER_DATA_DIR": "/data", "CHIPLEDGER_LOG_SIGNER_KEY": logKey, "CHIPLEDGER_TRUST": trust,
				"CHIPLEDGER_RAFT_ADDR": "10.0.0.1:7000", "CHIPLEDGER_API_ADDR": "10.0.0.1:8080", "CHIPLEDGER_BOOTSTRAP": "true", "CHIPLEDGER_INSECURE": "true",
				"CHIPLEDGER_PEER": "n1=10.0.0.1:7000=10.0.0.1:8080,n2=10.0.0.2:7000=10.0.0.2:8080,n3=10.0.0.3:7000=10.0.0.3:8080",
			},
			want: mappedFields{ID: "n1", DataDir: "/data", RaftAddr: "10.0.0.1:7000", APIAddr: "10.0.0.1:8080", Bootstrap: true, Peers: threePeers},
		},
		{
			name: "flags win over environment variables",
			args: append(append([]string{}, base...), "--api-addr", "127.0.0.1:9090"),
			env:  map[string]string{"CHIPLEDGER_ID": "from-env", "CHIPLEDGER_API_ADDR": "127.0.0.1:1111", "CHIPLEDGER_JOIN": "10.0.0.9:8080"},
			want: mappedFields{ID: "n1", DataDir: "/data", RaftAddr: "127.0.0.1:7000", APIAddr: "127.0.0.1:9090", Join: []string{"10.0.0.9:8080"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			r := runCLI(t, tt.args...)
			if r.err != nil {
				t.Fatalf("chipledger %s: %v\n%s", strings.Join(tt.args, " "), r.err, r.stderr)
			}
			if got := fieldsOf(r.cfg); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("config\n got %+v\nwant %+v", got, tt.want)
			}
			if r.cfg.Signer == nil || r.cfg.Signer.Origin() != testOrigin {
				t.Errorf("signer not loaded from --log-key")
			}
			if r.cfg.Trust == nil || len(r.cfg.Trust.Roots()) != 1 {
				t.Errorf("trust not loaded from --trust")
			}
			if r.cfg.Logger == nil {
				t.Errorf("no logger")
			}
			if r.dev != nil {
				t.Errorf("dev setup without --dev")
			}
		})
	}
}

func TestNodeLimitFlagsMapToConfig(t *testing.T) {
	clearEnv(t)
	logKey, trust := nodeFiles(t)
	base := []string{"node", "--id", "n1", "--data-dir", "/data", "--log-key", logKey, "--trust", trust, "--insecure"}
	r := runCLI(t, base...)
	if r.err != nil || r.cfg.MaxAppendsInFlight != node.DefaultMaxAppendsInFlight || r.cfg.StationRate != 0 {
		t.Fatalf("defaults: %+v, %v", r.cfg, r.err)
	}
	t.Setenv("CHIPLEDGER_STATION_RATE", "2.5")
	r = runCLI(t, append(base, "--max-appends-in-flight", "64", "--station-burst", "7")...)
	if r.err != nil || r.cfg.MaxAppendsInFlight != 64 || r.cfg.StationRate != 2.5 || r.cfg.StationBurst != 7 {
		t.Fatalf("limits: in flight %d, rate %g, burst %d (%v); want 64, 2.5, 7", r.cfg.MaxAppendsInFlight, r.cfg.StationRate, r.cfg.StationBurst, r.err)
	}
}

func TestNodeFlagErrorsSayWhatIsWrong(t *testing.T) {
	logKey, trust := nodeFiles(t)
	notAKey := filepath.Join(t.TempDir(), "not-a-key")
	if err := os.WriteFile(notAKey, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"node", "--id", "n1", "--data-dir", "/data", "--log-key", logKey, "--trust", trust, "--insecure"}
	with := func(args ...string) []string { return append(append([]string{}, base...), args...) }
	tests := []struct {
		name string
		args []string
		want []string // substrings of the error
	}{
		{"no flags", []string{"node"}, []string{"--id", "--data-dir", "--log-key", "--trust", "CHIPLEDGER_ID", "--dev"}},
		{"no log key", []string{"node", "--id", "n1", "--data-dir", "/data", "--trust", trust, "--insecure"}, []string{"--log-key", "chipledger keys"}},
		{"no transport security", []string{"node", "--id", "n1", "--data-dir", "/data", "--log-key", logKey, "--trust", trust}, []string{"--tls-ca", "--insecure"}},
		{"half of TLS", with("--tls-ca", trust), []string{"--tls-cert", "--tls-key"}},
		{"bad admin token hash", with("--admin-token-hash", "abc"), []string{"--admin-token-hash", "64 hex digits"}},
		{"admin token without TLS", with("--admin-token-hash", strings.Repeat("ab", 32)), []string{"--admin-token-hash needs TLS"}},
		{"peer without its addresses", with("--bootstrap", "--peer", "n1"), []string{"--peer", "ID=RAFT_ADDR=API_ADDR"}},
		{"peer with too many parts", with("--bootstrap", "--peer", "n1=127.0.0.1:7000=127.0.0.1:8080=x"), []string{"ID=RAFT_ADDR=API_ADDR"}},
		{"peer without an ID", with("--bootstrap", "--peer", "=127.0.0.1:7000=127.0.0.1:8080"), []string{"ID=RAFT_ADDR=API_ADDR"}},
		{"peer Raft address without a port", with("--bootstrap", "--peer", "n1=127.0.0.1=127.0.0.1:8080"), []string{"Raft address", "HOST:PORT"}},
		{"peer API address with a bad port", with("--bootstrap", "--peer", "n1=127.0.0.1:7000=127.0.0.1:http"), []string{"API address", "port"}},
		{"peer on an unspecified address", with("--bootstrap", "--peer", "n1=0.0.0.0:7000=127.0.0.1:8080"), []string{"0.0.0.0"}},
		{"peer listed twice", with("--bootstrap", "--peer", "n1=127.0.0.1:7000=127.0.0.1:8080", "--peer", "n1=127.0.0.2:7000=127.0.0.2:8080"), []string{"listed twice"}},
		{"two peers on one address", with("--bootstrap", "--peer", "n1=127.0.0.1:7000=127.0.0.1:8080", "--peer", "n2=127.0.0.1:7000=127.0.0.2:8080"), []string{"already used"}},
		{"peer port with a leading zero (the same address spelled twice)", with("--bootstrap", "--peer", "n1=127.0.0.1:7000=127.0.0.1:8080", "--peer", "n2=127.0.0.1:07000=127.0.0.2:8080"), []string{"Raft address", "leading zeros"}},
		{"peer with an overlong node ID", with("--bootstrap", "--peer", "n1=127.0.0.1:7000=127.0.0.1:8080", "--peer", strings.Repeat("n", 300)+"=127.0.0.2:7000=127.0.0.2:8080"), []string{"node ID of 300 bytes"}},
		{"join address without a host", with("--join", ":8080"), []string{"--join", "no host"}},
		{"peer list without this node", with("--bootstrap", "--peer", "n2=127.0.0.2:7000=127.0.0.2:8080"), []string{"must include this node", "n1"}},
		{"peer list with another address for this node", with("--bootstrap", "--peer", "n1=127.0.0.1:7001=127.0.0.1:8080"), []string{"--raft-addr", "127.0.0.1:7001"}},
		{"peers without bootstrap", with("--peer", "n1=127.0.0.1:7000=127.0.0.1:8080"), []string{"--bootstrap", "--join"}},
		{"bootstrap and join", with("--bootstrap", "--join", "127.0.0.1:8081"), []string{"--bootstrap", "--join"}},
		{"join without a port", with("--join", "127.0.0.1"), []string{"--join"}},
		{"raft address without a port", with("--raft-addr", "localhost"), []string{"--raft-addr"}},
		{"unreadable log key", []string{"node", "--id", "n1", "--data-dir", "/data", "--log-key", "/nonexistent/log.key", "--trust", trust}, []string{"--log-key", "chipledger keys"}},
		{"log key that is not one", []string{"node", "--id", "n1", "--data-dir", "/data", "--log-key", notAKey, "--trust", trust}, []string{"--log-key", notAKey}},
		{"trust bundle that is not one", []string{"node", "--id", "n1", "--data-dir", "/data", "--log-key", logKey, "--trust", logKey}, []string{"--trust", logKey}},
		{"dev with peers", []string{"node", "--dev", "--data-dir", t.TempDir(), "--peer", "n1=127.0.0.1:7000=127.0.0.1:8080"}, []string{"--dev", "--peer"}},
		{"no appends in flight", with("--max-appends-in-flight", "0"), []string{"--max-appends-in-flight"}},
		{"negative station rate", with("--station-rate", "-1"), []string{"--station-rate"}},
		{"positional argument", with("extra"), []string{"no arguments"}},
		{"bad log level", append([]string{"--log-level", "loud"}, base...), []string{"--log-level"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			r := runCLI(t, tt.args...)
			if r.err == nil {
				t.Fatalf("chipledger %s: no error", strings.Join(tt.args, " "))
			}
			if r.cfg != nil {
				t.Errorf("the node was started")
			}
			for _, w := range tt.want {
				if !strings.Contains(r.err.Error(), w) {
					t.Errorf("error %q does not mention %q", r.err, w)
				}
			}
		})
	}
}

func TestNodeDevCreatesKeysOnceAndReusesThem(t *testing.T) {
	clearEnv(t)
	data := filepath.Join(t.TempDir(), "data")
	first := runCLI(t, "node", "--dev", "--data-dir", data)
	if first.err != nil {
		t.Fatal(first.err)
	}
	want := mappedFields{ID: devNodeID, DataDir: data, RaftAddr: defaultRaftAddr, APIAddr: defaultAPIAddr, Bootstrap: true}
	if got := fieldsOf(first.cfg); !reflect.DeepEqual(got, want) {
		t.Errorf("config\n got %+v\nwant %+v", got, want)
	}
	if first.cfg.Signer.Origin() != devOrigin {
		t.Errorf("origin %q, want %q", first.cfg.Signer.Origin(), devOrigin)
	}
	if first.dev.LogKeyState != "created" || first.dev.CAState != "created" {
		t.Errorf("first run: log key %s, CA %s; want both created", first.dev.LogKeyState, first.dev.CAState)
	}
	ca, err := provisioner.LoadCA(filepath.Join(data, devCADir))
	if err != nil {
		t.Fatal(err)
	}
	if ca.Manufacturer() != devManufacturer {
		t.Errorf("CA manufacturer %q, want %q", ca.Manufacturer(), devManufacturer)
	}
	if fi, err := os.Stat(filepath.Join(data, devLogKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("log key: %v, mode %v; want mode 0600", err, fi.Mode())
	}

	// Environment variables work for --dev too, and addresses can be moved.
	t.Setenv("CHIPLEDGER_DEV", "true")
	second := runCLI(t, "node", "--data-dir", data, "--api-addr", "127.0.0.1:9999")
	if second.err != nil {
		t.Fatal(second.err)
	}
	if second.dev.LogKeyState != "reused" || second.dev.CAState != "reused" {
		t.Errorf("second run: log key %s, CA %s; want both reused", second.dev.LogKeyState, second.dev.CAState)
	}
	if second.cfg.Signer.VerifierKey() != first.cfg.Signer.VerifierKey() {
		t.Error("second run uses another log key")
	}
	if !bytes.Equal(second.cfg.Trust.PEM(), first.cfg.Trust.PEM()) {
		t.Error("second run uses another trust bundle")
	}
	if second.cfg.APIAddr != "127.0.0.1:9999" {
		t.Errorf("--api-addr ignored with --dev: %s", second.cfg.APIAddr)
	}
}

func TestNodeDevUsesAGivenLogKey(t *testing.T) {
	clearEnv(t)
	logKey, _ := nodeFiles(t)
	data := filepath.Join(t.TempDir(), "data")
	r := runCLI(t, "node", "--dev", "--data-dir", data, "--log-key", logKey)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.cfg.Signer.Origin() != testOrigin || r.dev.LogKeyState != "given" {
		t.Errorf("origin %q (%s), want the given key's %q", r.cfg.Signer.Origin(), r.dev.LogKeyState, testOrigin)
	}
	if _, err := os.Stat(filepath.Join(data, devLogKeyFile)); !os.IsNotExist(err) {
		t.Errorf("a log key was created although --log-key was given (%v)", err)
	}
}

func TestKeysWritesTheSecretKeyAndPrintsTheVerifierKey(t *testing.T) {
	clearEnv(t)
	out := filepath.Join(t.TempDir(), "log.key")
	r := runCLI(t, "keys", "--origin", testOrigin, "--out", out)
	if r.err != nil {
		t.Fatal(r.err)
	}
	skey, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ledger.NewLogSigner(string(skey))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(r.stdout); got != signer.VerifierKey() {
		t.Errorf("stdout %q, want the verifier key %q", got, signer.VerifierKey())
	}
	if !strings.Contains(r.stderr, out) {
		t.Errorf("stderr does not say where the key went: %q", r.stderr)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	again := runCLI(t, "keys", "--origin", testOrigin, "--out", out)
	if again.err == nil || !strings.Contains(again.err.Error(), "already exists") {
		t.Errorf("second keys: %v, want a refusal to overwrite", again.err)
	}
	if after, _ := os.ReadFile(out); !bytes.Equal(after, skey) {
		t.Error("the key file was overwritten")
	}
}

// TestKeysWritesTheVerifierKeyBesideTheSecretKey: keys --out FILE writes
// the verifier key to FILE.pub (log.key: log.pub), which --log-key takes,
// says where, and refuses an existing one before writing anything.
func TestKeysWritesTheVerifierKeyBesideTheSecretKey(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct{ out, pub string }{
		{"log.key", "log.pub"},
		{"w1-secret", "w1-secret.pub"},
	} {
		t.Run(tc.out, func(t *testing.T) {
			dir := t.TempDir()
			out, pub := filepath.Join(dir, tc.out), filepath.Join(dir, tc.pub)
			r := runCLI(t, "keys", "--origin", testOrigin, "--out", out)
			if r.err != nil {
				t.Fatal(r.err)
			}
			vkey := strings.TrimSpace(r.stdout)
			got, err := verifierKey(pub)
			if err != nil || got != vkey {
				t.Fatalf("verifier key file %s: %q, %v; want the printed %q", pub, got, err, vkey)
			}
			if !strings.Contains(r.stderr, out) || !strings.Contains(r.stderr, pub) {
				t.Errorf("stderr does not say where both keys went: %q", r.stderr)
			}
		})
	}

	// An existing verifier key file is refused before the secret key is
	// written, and kept.
	dir := t.TempDir()
	out, pub := filepath.Join(dir, "log.key"), filepath.Join(dir, "log.pub")
	if err := os.WriteFile(pub, []byte("another log's key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, "keys", "--origin", testOrigin, "--out", out)
	if r.err == nil || !strings.Contains(r.err.Error(), pub+" already exists") {
		t.Fatalf("keys with %s present: %v, want a refusal naming it", pub, r.err)
	}
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused keys wrote the secret key %s (%v)", out, err)
	}
	if b, _ := os.ReadFile(pub); string(b) != "another log's key\n" {
		t.Errorf("the existing %s was overwritten: %q", pub, b)
	}
}

func TestCAInitPrintsTheTrustBundlePath(t *testing.T) {
	clearEnv(t)
	dir := filepath.Join(t.TempDir(), "ca")
	r := runCLI(t, "ca", "init", "--dir", dir, "--manufacturer", "Example Devices Ltd")
	if r.err != nil {
		t.Fatal(r.err)
	}
	path := strings.TrimSpace(r.stdout)
	if path != filepath.Join(dir, provisioner.TrustFile) {
		t.Errorf("stdout %q, want the trust bundle path", path)
	}
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.ParseTrustPEM(pemBytes); err != nil {
		t.Errorf("trust bundle: %v", err)
	}
	again := runCLI(t, "ca", "init", "--dir", dir, "--manufacturer", "Example Devices Ltd")
	if again.err == nil || !strings.Contains(again.err.Error(), "already exists") {
		t.Errorf("second ca init: %v, want a refusal", again.err)
	}
}

func TestKeysRefusesAnOriginThatCannotNameAKey(t *testing.T) {
	clearEnv(t)
	for _, origin := range []string{"", "bad origin+x", "two words"} {
		out := filepath.Join(t.TempDir(), "log.key")
		r := runCLI(t, "keys", "--origin", origin, "--out", out)
		if r.err == nil || !strings.Contains(r.err.Error(), "--origin") || exitStatus(r.err) != 2 {
			t.Errorf("keys --origin %q: %v (exit %d), want a usage error naming --origin", origin, r.err, exitStatus(r.err))
		}
		if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("keys --origin %q wrote %s", origin, out)
		}
	}
}

func TestNodeLogKeyHasItsOwnEnvironmentVariable(t *testing.T) {
	logKey, trust := nodeFiles(t)
	skey, err := os.ReadFile(logKey)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ledger.NewLogSigner(string(skey))
	if err != nil {
		t.Fatal(err)
	}
	vkeyFile := filepath.Join(t.TempDir(), "log.pub")
	if err := os.WriteFile(vkeyFile, []byte(signer.VerifierKey()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"node", "--id", "n1", "--data-dir", "/data", "--trust", trust, "--insecure"}

	clearEnv(t)
	t.Setenv("CHIPLEDGER_LOG_SIGNER_KEY", logKey)
	if r := runCLI(t, base...); r.err != nil || r.cfg == nil || r.cfg.Signer.Origin() != testOrigin {
		t.Fatalf("with $CHIPLEDGER_LOG_SIGNER_KEY: %v", r.err)
	}

	// $CHIPLEDGER_LOG_KEY is the other commands' public verifier key: the
	// node neither takes it nor stays silent about it.
	clearEnv(t)
	t.Setenv("CHIPLEDGER_LOG_KEY", vkeyFile)
	r := runCLI(t, base...)
	if r.err == nil || r.cfg != nil {
		t.Fatal("the node started with only $CHIPLEDGER_LOG_KEY set")
	}
	for _, w := range []string{"--log-key", "CHIPLEDGER_LOG_SIGNER_KEY", "CHIPLEDGER_LOG_KEY is set"} {
		if !strings.Contains(r.err.Error(), w) {
			t.Errorf("error %q does not mention %q", r.err, w)
		}
	}

	// Given the verifier key file as --log-key, it says what it is.
	clearEnv(t)
	r = runCLI(t, append(base, "--log-key", vkeyFile)...)
	if r.err == nil || !strings.Contains(r.err.Error(), "public verifier key") || !strings.Contains(r.err.Error(), "chipledger keys --out") {
		t.Errorf("--log-key with the verifier key: %v, want it to say it is the public verifier key", r.err)
	}
}

func TestASecondNodeOnADataDirSaysAnotherNodeUsesIt(t *testing.T) {
	clearEnv(t)
	data := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := freePorts(t, 2)
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- newApp(out, &syncBuffer{}, runNode).RunContext(ctx, []string{"chipledger", "--log-level", "error",
			"node", "--dev", "--data-dir", data, "--raft-addr", first[0], "--api-addr", first[1]})
	}()
	awaitLine(t, out, func(line string) bool { return strings.Contains(line, "development node is running") })

	second := freePorts(t, 2)
	var stdout, stderr bytes.Buffer
	err := newApp(&stdout, &stderr, runNode).RunContext(context.Background(), []string{"chipledger", "--log-level", "error",
		"node", "--dev", "--data-dir", data, "--raft-addr", second[0], "--api-addr", second[1]})
	if err == nil || !strings.Contains(err.Error(), "another node running with this --data-dir") {
		t.Errorf("second node on %s: %v, want it to ask whether another node runs there", data, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("first node: %v", err)
	}
}

// TestNodeDevWarnsWhenItListensOnEveryInterface: a development node has
// no TLS and no admin token, so on 0.0.0.0 anyone who reaches the machine
// can make admin calls; it says so (and only then).
func TestNodeDevWarnsWhenItListensOnEveryInterface(t *testing.T) {
	clearEnv(t)
	data := filepath.Join(t.TempDir(), "data")
	for _, tc := range []struct {
		api  string
		warn bool
	}{{"127.0.0.1:8080", false}, {"0.0.0.0:8080", true}, {":8080", true}} {
		r := runCLI(t, "node", "--dev", "--data-dir", data, "--api-addr", tc.api)
		if r.err != nil {
			t.Fatal(r.err)
		}
		if got := strings.Contains(r.stderr, "listens on every interface without TLS"); got != tc.warn {
			t.Errorf("--dev --api-addr %s: warned %v, want %v; stderr:\n%s", tc.api, got, tc.warn, r.stderr)
		}
	}
}
