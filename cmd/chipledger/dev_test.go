package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// httpGet fetches url, retrying until the server answers or timeout passes.
func httpGet(t *testing.T, url string, timeout time.Duration) (int, string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				return resp.StatusCode, string(body)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: no answer within %s: %v", url, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitReady polls base+"/readyz" until it answers 200, failing the test at
// the deadline.
func waitReady(t *testing.T, base string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, body := httpGet(t, base+"/readyz", time.Until(deadline))
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz: still %d %q after %s", base, code, body, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDevNodeServesHealthAndCheckpointAndStopsOnSIGINT(t *testing.T) {
	bin := chipledgerBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	var verifierKey string
	for run, wantState := range []string{"created", "reused"} {
		addrs := freePorts(t, 2)
		p := startProc(t, "dev", bin, "node", "--dev", "--data-dir", data, "--raft-addr", addrs[0], "--api-addr", addrs[1])
		base := "http://" + addrs[1]

		if code, body := httpGet(t, base+"/healthz", 15*time.Second); code != http.StatusOK || body != "ok\n" {
			t.Fatalf("run %d: /healthz: %d %q", run, code, body)
		}
		skey, err := os.ReadFile(filepath.Join(data, devLogKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		signer, err := ledger.NewLogSigner(string(skey))
		if err != nil {
			t.Fatal(err)
		}
		if run == 0 {
			verifierKey = signer.VerifierKey()
		} else if signer.VerifierKey() != verifierKey {
			t.Fatal("the second run made a new log key")
		}
		// A restarted node serves no reads until it has applied its log
		// again (it has to elect itself first); /readyz says when.
		waitReady(t, base, 15*time.Second)
		code, body := httpGet(t, base+"/checkpoint", 5*time.Second)
		if code != http.StatusOK {
			t.Fatalf("run %d: /checkpoint: %d %q", run, code, body)
		}
		v, err := proofs.NewLogVerifier(verifierKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.VerifyCheckpoint([]byte(body)); err != nil {
			t.Fatalf("run %d: /checkpoint does not verify with the log key: %v\n%s", run, err, body)
		}

		// The banner is printed after the node started, so it is complete
		// once the API answers.
		out := p.Output()
		for _, want := range []string{verifierKey, base + "/checkpoint", filepath.Join(data, devCADir, "trust.pem"), "(" + wantState} {
			if !strings.Contains(out, want) {
				t.Errorf("run %d: output does not show %q:\n%s", run, want, out)
			}
		}

		if err := p.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(15 * time.Second); err != nil {
			t.Fatalf("run %d: after SIGINT: %v", run, err)
		}
		if out := p.Output(); !strings.Contains(out, "node stopped") {
			t.Errorf("run %d: no graceful shutdown in the output:\n%s", run, p.Tail(10))
		}
	}
}
