package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/internal/localcluster"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// startWitnessCommand runs `chipledger witness` until the test ends and
// returns the policy line it printed.
func startWitnessCommand(t *testing.T, args ...string) (line string, stderr *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout syncBuffer
	stderr = new(syncBuffer)
	done := make(chan error, 1)
	go func() {
		done <- newApp(&stdout, stderr, runNode).RunContext(ctx, append([]string{"chipledger", "witness"}, args...))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("witness returned %v after cancellation", err)
			}
			if !strings.Contains(stderr.String(), "shutting down") {
				t.Errorf("no shutdown message: %s", stderr.String())
			}
		case <-time.After(10 * time.Second):
			t.Error("witness did not stop")
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		select {
		case err := <-done:
			t.Fatalf("witness stopped: %v\n%s", err, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if l, _, ok := strings.Cut(stdout.String(), "\n"); ok {
			return l, stderr
		}
		if time.Now().After(deadline) {
			t.Fatalf("witness printed no policy line\n%s", stderr.String())
		}
	}
}

func TestWitnessCommandCosignsTheLedgersCheckpoints(t *testing.T) {
	dir := t.TempDir()
	skey, vkey, err := ledger.GenerateLogKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ledger.NewLogSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	logPub := filepath.Join(dir, "log.pub")
	if err := os.WriteFile(logPub, []byte(vkey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wkey := filepath.Join(dir, "w1.key")
	if r := runCLI(t, "keys", "--origin", "witness.example/w1", "--out", wkey); r.err != nil {
		t.Fatalf("keys: %v\n%s", r.err, r.stderr)
	}

	line, _ := startWitnessCommand(t, "--key", wkey, "--log-key", logPub, "--state-dir", filepath.Join(dir, "w1"), "--addr", "127.0.0.1:0")
	fields := strings.Fields(line)
	if len(fields) != 4 || fields[0] != "witness" || fields[1] != "w1" || !strings.HasPrefix(fields[3], "http://127.0.0.1:") {
		t.Fatalf("policy line %q, want \"witness w1 <vkey> http://127.0.0.1:PORT\"", line)
	}
	policy := filepath.Join(dir, "policy")
	if err := os.WriteFile(policy, []byte(line+"\nquorum w1\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// The node command reads the policy.
	logKey, trust := nodeFiles(t)
	r := runCLI(t, "node", "--id", "n1", "--data-dir", dir, "--log-key", logKey, "--trust", trust, "--insecure",
		"--witness-policy", policy, "--witness-interval", "50ms")
	if r.err != nil || r.cfg == nil || r.cfg.Witnesses == nil || r.cfg.WitnessInterval != 50*time.Millisecond {
		t.Fatalf("node --witness-policy: %v, config %+v", r.err, r.cfg)
	}
	p := r.cfg.Witnesses

	// A ledger with that policy gets its checkpoints cosigned.
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := localcluster.Start(ctx, localcluster.Options{Nodes: 1, Dir: filepath.Join(dir, "ledger"), Signer: signer, Trust: pki.Trust,
		Witnesses: p, WitnessInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	api := chipledgerv1connect.NewLedgerServiceClient(http.DefaultClient, "http://"+cl.Addrs()[0])
	resp, err := api.GetCheckpoint(ctx, connect.NewRequest(&v1.GetCheckpointRequest{Witnessed: true, MinSize: 1}))
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := proofs.NewLogVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifier.VerifyWitnessedCheckpoint(resp.Msg.GetCheckpoint(), p); err != nil {
		t.Fatalf("the witnessed checkpoint: %v\n%s", err, resp.Msg.GetCheckpoint())
	}

	// The auditor checks it against the log it audits.
	roots := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(roots, pki.Trust.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, "audit", "--ledger", cl.Addrs()[0], "--log-key", logPub, "--roots", roots, "--state", filepath.Join(dir, "audit.state"), "--witness-policy", policy)
	if r.err != nil || !strings.Contains(r.stdout, "witnessed") || !strings.Contains(r.stdout, "cosigned by the witness policy") || !strings.Contains(r.stdout, "none") {
		t.Fatalf("audit --witness-policy: %v\n%s%s", r.err, r.stdout, r.stderr)
	}
}

func TestWitnessFlagErrorsSayWhatIsWrong(t *testing.T) {
	dir := t.TempDir()
	logKey, trust := nodeFiles(t)
	_, vkey, err := ledger.GenerateLogKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "policy")
	if err := os.WriteFile(bad, []byte("witness w1 nonsense http://x\nquorum w1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"node", "--id", "n1", "--data-dir", dir, "--log-key", logKey, "--trust", trust, "--insecure", "--witness-policy", bad}, "--witness-policy"},
		{[]string{"node", "--id", "n1", "--data-dir", dir, "--log-key", logKey, "--trust", trust, "--insecure", "--witness-policy", filepath.Join(dir, "missing")}, "no such file"},
		{[]string{"witness", "--key", logKey + ".missing", "--log-key", logKey, "--state-dir", dir}, "chipledger keys"},
		{[]string{"witness", "--key", trust, "--log-key", logKey, "--state-dir", dir}, "not a secret note key"},
		{[]string{"witness", "--key", logKey, "--log-key", vkey, "--state-dir", dir, "--url", "ftp://w1.example"}, "--url"},
		{[]string{"recover", "--device", "127.0.0.1:1", "--ledger", "127.0.0.1:1", "--log-key", vkey, "--witness-policy", bad, "--witness-max-age", "0s"}, "--witness"},
		{[]string{"recover", "--device", "127.0.0.1:1", "--ledger", "127.0.0.1:1", "--log-key", vkey, "--witness-policy", bad}, "--witness-policy"},
		{[]string{"monitor", "--chip", "0102030405060708", "--ledger", "127.0.0.1:1", "--log-key", vkey, "--witness-policy", bad}, "--witness-policy"},
	} {
		r := runCLI(t, tc.args...)
		if r.err == nil {
			t.Errorf("%v: no error", tc.args)
			continue
		}
		if !strings.Contains(r.err.Error(), tc.want) {
			t.Errorf("%v: %v, want it to mention %q", tc.args, r.err, tc.want)
		}
	}
}

func TestWitnessCommandPrintsTheURLTheNodesReach(t *testing.T) {
	dir := t.TempDir()
	_, vkey, err := ledger.GenerateLogKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	wkey := filepath.Join(dir, "w2.key")
	if r := runCLI(t, "keys", "--origin", "witness.example/w2", "--out", wkey); r.err != nil {
		t.Fatal(r.err)
	}
	line, _ := startWitnessCommand(t, "--key", wkey, "--log-key", vkey, "--state-dir", filepath.Join(dir, "a"), "--addr", "127.0.0.1:0", "--url", "https://w2.example.org")
	if !strings.HasPrefix(line, "witness w2 ") || !strings.HasSuffix(line, " https://w2.example.org") {
		t.Fatalf("policy line %q, want it to name --url", line)
	}
	_, stderr := startWitnessCommand(t, "--key", wkey, "--log-key", vkey, "--state-dir", filepath.Join(dir, "b"), "--addr", "0.0.0.0:0")
	if !strings.Contains(stderr.String(), "cannot reach") {
		t.Fatalf("listening on every address, no hint to set the URL:\n%s", stderr.String())
	}
}

// TestWitnessPolicyLineNamesParse: the policy line the witness prints
// parses whatever its key name, including one whose last part is a
// keyword of the policy format (witness, group, quorum, log, any, all,
// none), which cannot name a witness.
func TestWitnessPolicyLineNamesParse(t *testing.T) {
	for _, keyName := range []string{"witness.example/w1", "witness.example", "witness.example/", "example.org/witness", "example.org/log", "example.org/all", "quorum"} {
		skey, _, err := ledger.GenerateLogKey(keyName)
		if err != nil {
			t.Fatal(err)
		}
		_, vkey, err := witnessSigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		name := policyName(keyName)
		text := fmt.Sprintf("witness %s %s http://127.0.0.1:8090\nquorum %s\n", name, vkey, name)
		if _, err := proofs.ParseWitnessPolicy([]byte(text)); err != nil {
			t.Errorf("key name %q: the printed line names it %q: %v", keyName, name, err)
		}
	}
}
