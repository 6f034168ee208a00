package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// deviceEnvVars are the environment variables of the device commands.
var deviceEnvVars = []string{
	"CHIPLEDGER_DEVICE_STATE", "CHIPLEDGER_STATE", "CHIPLEDGER_IDENTITY", "CHIPLEDGER_TRUST", "CHIPLEDGER_LOG_KEY",
	"CHIPLEDGER_DEVICE_ADDR", "CHIPLEDGER_ADDR", "CHIPLEDGER_JSON", "CHIPLEDGER_LOG_LEVEL",
}

func clearDeviceEnv(t *testing.T) {
	for _, name := range deviceEnvVars {
		t.Setenv(name, "") // restores the old value after the test
		os.Unsetenv(name)
	}
}

// deviceFiles writes a trust bundle and a log key pair and returns the
// trust file, the verifier key and the secret signer key file.
func deviceFiles(t *testing.T) (trust, vkey, skeyFile string) {
	t.Helper()
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := ledger.GenerateLogKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	trust, skeyFile = filepath.Join(dir, "trust.pem"), filepath.Join(dir, "log.key")
	if err := os.WriteFile(trust, pki.Trust.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(skeyFile, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return trust, vkey, skeyFile
}

const (
	testIMEI1 = "imei:260531793113837"
	testIMEI2 = "imei:490154203237518"
)

// newDeviceState runs `device new` and returns the state file and chip ID.
func newDeviceState(t *testing.T) (state, chip string) {
	t.Helper()
	state, chip, _ = newDeviceStateWithLog(t)
	return state, chip
}

// newDeviceStateWithLog is newDeviceState that also returns the log's secret
// signer key file.
func newDeviceStateWithLog(t *testing.T) (state, chip, skeyFile string) {
	t.Helper()
	trust, vkey, skeyFile := deviceFiles(t)
	state = filepath.Join(t.TempDir(), "phone.json")
	r := runCLI(t, "device", "new", "--state", state, "--identity", testIMEI1, "--identity", testIMEI2,
		"--trust", trust, "--log-key", vkey)
	if r.err != nil {
		t.Fatalf("device new: %v\n%s", r.err, r.stderr)
	}
	return state, strings.TrimSpace(r.stdout), skeyFile
}

func TestDeviceNewManufacturesIntoAPrivateStateFile(t *testing.T) {
	clearDeviceEnv(t)
	state, chip := newDeviceState(t)
	if _, err := ledger.ParseChipID(chip); err != nil || len(chip) != 32 {
		t.Errorf("stdout %q is not a 16-byte chip ID", chip)
	}
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %04o, want 0600", fi.Mode().Perm())
	}
	d, err := device.Load(state, device.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := d.ChipInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if in.ChipID.String() != chip || in.Identities.String() != testIMEI1+","+testIMEI2 || in.Epoch != 0 {
		t.Errorf("manufactured %+v", in)
	}
}

func TestDeviceNewRefusesToOverwriteAndBadInput(t *testing.T) {
	clearDeviceEnv(t)
	state, _ := newDeviceState(t)
	before, _ := os.ReadFile(state)
	trust, vkey, skeyFile := deviceFiles(t)
	fresh := filepath.Join(t.TempDir(), "d.json")
	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"existing state file", "already exists", []string{"--state", state, "--identity", testIMEI1, "--trust", trust, "--log-key", vkey}},
		{"bad check digit", "check digit", []string{"--state", fresh, "--identity", "imei:260531793113830", "--trust", trust, "--log-key", vkey}},
		{"duplicate identity", "twice", []string{"--state", fresh, "--identity", testIMEI1, "--identity", testIMEI1, "--trust", trust, "--log-key", vkey}},
		{"secret log key", "secret signer key", []string{"--state", fresh, "--identity", testIMEI1, "--trust", trust, "--log-key", skeyFile}},
		{"no log key", "neither a verifier key", []string{"--state", fresh, "--identity", testIMEI1, "--trust", trust, "--log-key", "nope"}},
		{"trust not PEM", "invalid trust", []string{"--state", fresh, "--identity", testIMEI1, "--trust", skeyFile, "--log-key", vkey}},
	} {
		r := runCLI(t, append([]string{"device", "new"}, tc.args...)...)
		if r.err == nil || !strings.Contains(r.err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", tc.name, r.err, tc.want)
		}
	}
	if after, _ := os.ReadFile(state); !bytes.Equal(before, after) {
		t.Error("a refused device new changed the existing state file")
	}
	if _, err := os.Stat(fresh); err == nil {
		t.Error("a refused device new left a state file")
	}
}

func TestDeviceNewTakesItsFlagsFromTheEnvironment(t *testing.T) {
	clearDeviceEnv(t)
	trust, vkey, _ := deviceFiles(t)
	vkeyFile := filepath.Join(t.TempDir(), "log.pub")
	if err := os.WriteFile(vkeyFile, []byte(vkey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "phone.json")
	t.Setenv("CHIPLEDGER_DEVICE_STATE", state)
	t.Setenv("CHIPLEDGER_IDENTITY", testIMEI1+","+testIMEI2)
	t.Setenv("CHIPLEDGER_TRUST", trust)
	t.Setenv("CHIPLEDGER_LOG_KEY", vkeyFile)
	if r := runCLI(t, "device", "new"); r.err != nil {
		t.Fatal(r.err)
	}
	// The generic CHIPLEDGER_JSON, which other commands read, does not
	// make show print JSON.
	t.Setenv("CHIPLEDGER_JSON", "true")
	if r := runCLI(t, "device", "show"); r.err != nil || !strings.HasPrefix(r.stdout, "state file") {
		t.Fatalf("device show with CHIPLEDGER_JSON set: %q, %v; want the text report", r.stdout, r.err)
	}
	// CHIPLEDGER_STATE, the variable's first name, still works.
	os.Unsetenv("CHIPLEDGER_DEVICE_STATE")
	t.Setenv("CHIPLEDGER_STATE", state)
	r := runCLI(t, "device", "show", "--json")
	if r.err != nil {
		t.Fatal(r.err)
	}
	var rep deviceReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.State != state || len(rep.Identities) != 2 || rep.LogVerifierKey != vkey {
		t.Errorf("device made from the environment: %+v", rep)
	}
}

func TestDeviceShowPrintsNoSecret(t *testing.T) {
	clearDeviceEnv(t)
	state, chip := newDeviceState(t)
	var file struct {
		SoftChip struct{ Key string } `json:"soft_chip"`
	}
	data, _ := os.ReadFile(state)
	if err := json.Unmarshal(data, &file); err != nil || len(file.SoftChip.Key) != 64 {
		t.Fatalf("state file has no chip key to look for (%v)", err)
	}
	text := runCLI(t, "device", "show", "--state", state)
	js := runCLI(t, "device", "show", "--state", state, "--json")
	if text.err != nil || js.err != nil {
		t.Fatal(text.err, js.err)
	}
	for _, out := range []string{text.stdout, js.stdout} {
		if strings.Contains(strings.ToLower(out), file.SoftChip.Key) {
			t.Errorf("device show printed the chip key:\n%s", out)
		}
		if !strings.Contains(out, chip) {
			t.Errorf("device show does not name the chip:\n%s", out)
		}
	}
	if !strings.Contains(text.stdout, "keys           none") || !strings.Contains(text.stdout, "epoch counter  0") {
		t.Errorf("device show of a new device:\n%s", text.stdout)
	}
	var rep deviceReport
	if err := json.Unmarshal([]byte(js.stdout), &rep); err != nil || rep.ChipID != chip || rep.Keys != nil || rep.Pending != nil {
		t.Errorf("device show --json: %+v (%v)", rep, err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader in two
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDeviceServeAnswersAndStopsGracefully(t *testing.T) {
	clearDeviceEnv(t)
	state, chip := newDeviceState(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- newApp(&stdout, &stderr, runNode).RunContext(ctx,
			[]string{"chipledger", "device", "serve", "--state", state, "--addr", "127.0.0.1:0"})
	}()
	// Also when the test fails early.
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Error("device serve did not stop")
		}
	})
	var url string
	for deadline := time.Now().Add(10 * time.Second); url == ""; {
		select {
		case err := <-done:
			t.Fatalf("device serve stopped: %v\n%s", err, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if line, _, ok := strings.Cut(stdout.String(), "\n"); ok {
			url = line
		}
		if time.Now().After(deadline) {
			t.Fatalf("device serve printed no URL\n%s", stderr.String())
		}
	}

	// A second agent of the same state file is refused: the two would
	// overwrite each other's state.
	ctx2, cancel2 := context.WithTimeout(ctx, 5*time.Second) // bounds a second agent that starts
	defer cancel2()
	var out2, err2 syncBuffer
	second := newApp(&out2, &err2, runNode).RunContext(ctx2,
		[]string{"chipledger", "device", "serve", "--state", state, "--addr", "127.0.0.1:0"})
	if second == nil || !strings.Contains(second.Error(), "in use") || !strings.Contains(second.Error(), state) {
		t.Fatalf("a second device serve of %s: %v (printed %q), want an in-use error naming the file", state, second, out2.String())
	}

	c := device.NewAgentClient(http.DefaultClient, url)
	in, err := c.ChipInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if in.ChipID.String() != chip {
		t.Errorf("the agent serves chip %s, want %s", in.ChipID, chip)
	}
	if res, err := http.Get(url + "/healthz"); err != nil {
		t.Errorf("/healthz: %v", err)
	} else {
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("/healthz: %s", res.Status)
		}
	}
	if err := c.Wipe(ctx); err != nil {
		t.Errorf("Wipe over the agent: %v", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("device serve returned %v after cancellation", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("device serve did not stop")
	}
	if !strings.Contains(stderr.String(), "shutting down") {
		t.Errorf("no shutdown message: %s", stderr.String())
	}
}

func TestDeviceServeNeedsAStateFile(t *testing.T) {
	clearDeviceEnv(t)
	missing := filepath.Join(t.TempDir(), "missing.json")
	for _, args := range [][]string{
		{"device", "serve", "--state", missing, "--addr", "127.0.0.1:0"},
		{"device", "show", "--state", missing},
	} {
		r := runCLI(t, args...)
		if r.err == nil || !strings.Contains(r.err.Error(), "no such file") || !strings.Contains(r.err.Error(), "chipledger device new --state "+missing) {
			t.Errorf("%s without a state file: %v, want the command that makes one", strings.Join(args[:2], " "), r.err)
		}
	}
	if r := runCLI(t, "device", "serve", "--state", "x", "--addr", "localhost"); r.err == nil {
		t.Error("serve with --addr without a port succeeded")
	}
}

// provisionState provisions the device in state once, as a station would,
// with the log whose signer key is in skeyFile.
func provisionState(t *testing.T, state, skeyFile string) {
	t.Helper()
	ctx := context.Background()
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	d, err := device.Load(state, device.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := d.ChipInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := device.ChannelKey(bytes.Repeat([]byte{7}, 32), in.Identities, 1)
	if err != nil {
		t.Fatal(err)
	}
	pkg, err := device.NewPackage(in.Identities, in.Epoch+1, 1, ck, key, device.KeyFromPool)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := pkg.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	backup, err := d.StorePackage(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(-time.Minute)
	tmpl, err := ledger.DeviceCertificateTemplate(testpki.Manufacturer, in.ChipID, in.Identities, now, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ledger.IssueDeviceCertificate(rand.Reader, tmpl, &key.PublicKey, pki.DeviceCA, pki.DeviceCAKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.StoreCertificate(ctx, cert); err != nil {
		t.Fatal(err)
	}
	e := &ledger.EscrowEntry{ChipID: in.ChipID, Identities: in.Identities, Epoch: pkg.Epoch, Certificate: cert,
		Backup: backup, StationID: pki.StationID(), ProvisionedAtMs: uint64(now.UnixMilli())}
	if err := e.Sign(rand.Reader, pki.StationKey); err != nil {
		t.Fatal(err)
	}
	leaf, err := e.MarshalLeaf()
	if err != nil {
		t.Fatal(err)
	}
	store, err := ledger.Open(t.TempDir(), ledger.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	res, err := store.Append([][]byte{pki.StationLeaf(), leaf}, nil)
	if err != nil {
		t.Fatal(err)
	}
	proof, err := store.InclusionProof(1, res.State.Size)
	if err != nil {
		t.Fatal(err)
	}
	skey, err := os.ReadFile(skeyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ledger.NewLogSigner(string(skey))
	if err != nil {
		t.Fatal(err)
	}
	cp, err := signer.Sign(res.State.Size, res.State.Root)
	if err != nil {
		t.Fatal(err)
	}
	receipt, err := (&proofs.Receipt{Leaf: leaf, Index: 1, Proof: proof, Checkpoint: cp}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.StoreReceipt(ctx, receipt); err != nil {
		t.Fatal(err)
	}
}

func TestDeviceShowDescribesProvisionedKeys(t *testing.T) {
	clearDeviceEnv(t)
	state, _, skeyFile := newDeviceStateWithLog(t)
	provisionState(t, state, skeyFile)

	text := runCLI(t, "device", "show", "--state", state)
	if text.err != nil {
		t.Fatal(text.err)
	}
	for _, want := range []string{
		"epoch counter  1",
		"keys           epoch 1, master key version 1, device key pool",
		"receipt      leaf 1 of 2 in " + testOrigin + ", verified",
		"provisioning   none in progress",
	} {
		if !strings.Contains(text.stdout, want) {
			t.Errorf("device show lacks %q:\n%s", want, text.stdout)
		}
	}
	js := runCLI(t, "device", "show", "--state", state, "--json")
	var rep deviceReport
	if err := json.Unmarshal([]byte(js.stdout), &rep); err != nil || rep.Keys == nil || rep.Keys.Receipt == nil {
		t.Fatalf("device show --json: %v\n%s", err, js.stdout)
	}
	if r := rep.Keys.Receipt; !r.Verified || r.Index != 1 || r.TreeSize != 2 || len(rep.Keys.ChannelKeyCheck) != 16 {
		t.Errorf("device show --json keys: %+v, receipt %+v", rep.Keys, r)
	}
}

// urlWriter delivers the first line written to it (the agent's URL).
type urlWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	once sync.Once
	url  chan string
}

func (w *urlWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if line, _, ok := strings.Cut(w.buf.String(), "\n"); ok {
		w.once.Do(func() { w.url <- line })
	}
	return len(p), nil
}

// TestDeviceServeStopsCleanlyWithAStalledRequest: a client that sends a
// request's headers and then stalls its body holds a connection and a
// handler; on SIGTERM `device serve` must still stop cleanly after its
// 5 s grace, cutting it, not fail.
func TestDeviceServeStopsCleanlyWithAStalledRequest(t *testing.T) {
	clearDeviceEnv(t)
	state, _ := newDeviceState(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := &urlWriter{url: make(chan string, 1)}
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- newApp(stdout, &stderr, runNode).RunContext(ctx,
			[]string{"chipledger", "device", "serve", "--state", state, "--addr", "127.0.0.1:0"})
	}()
	var url string
	select {
	case url = <-stdout.url:
	case err := <-done:
		t.Fatalf("device serve stopped: %v\n%s", err, stderr.String())
	}

	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Headers, then a body that never comes. Expect: 100-continue makes
	// the server say when the handler starts reading the body.
	fmt.Fprintf(conn, "POST /chipledger.v1.DeviceService/StorePackage HTTP/1.1\r\nHost: x\r\nContent-Type: application/proto\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(line, "100") {
		t.Fatalf("no 100 Continue: %q, %v", line, err)
	}
	conn.Write([]byte{0x0a}) // one byte of the body, then nothing

	start := time.Now()
	cancel() // SIGTERM
	err = <-done
	if err != nil {
		t.Errorf("device serve, stopped with a stalled request open, returned after %v: %v", time.Since(start).Round(time.Millisecond), err)
	}
}

// TestLogKeyFileWithoutAVerifierKey: a --log-key file that holds no
// verifier key (a trust bundle given by mistake, say) is refused with what
// the file should hold and where it comes from, quoting only its start.
func TestLogKeyFileWithoutAVerifierKey(t *testing.T) {
	trust, vkey, _ := deviceFiles(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct {
		name, file, want string
	}{
		{"a PEM trust bundle", trust, `PEM, starting "-----BEGIN CERTIFICATE-----"…`},
		{"an empty file", write("empty", "\n"), "it is empty"},
		{"a truncated key", write("short.pub", vkey[:len(vkey)-10]+"\n"), vkey[:20]},
		{"notes", write("notes.txt", "the log key is on the wiki\nsecond line\n"), `starting "the log key is on the wiki"…`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verifierKey(tc.file)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			for _, want := range []string{"--log-key " + tc.file + " does not hold a log verifier key", "origin+hash+key", "chipledger keys", tc.want} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
			if !errors.Is(err, proofs.ErrBadKey) {
				t.Errorf("error %v is not proofs.ErrBadKey", err)
			}
			if strings.Contains(msg, "-----END") || strings.Contains(msg, "second line") || len(msg) > 400 {
				t.Errorf("the error quotes more than the file's start (%d bytes): %s", len(msg), msg)
			}
		})
	}
}
