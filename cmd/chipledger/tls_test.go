package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/internal/clustertls"
	"github.com/chipledger/chipledger/node"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// TestTLSCommandsSecureANode makes a cluster CA, a node certificate, an
// admin certificate and a token with `chipledger tls`, starts a node with
// the flags, and checks that `chipledger admin` works with either
// credential and is refused without one.
func TestTLSCommandsSecureANode(t *testing.T) {
	clearEnv(t)
	for _, name := range []string{"CHIPLEDGER_TLS_CA", "CHIPLEDGER_TLS_CERT", "CHIPLEDGER_TLS_KEY", "CHIPLEDGER_INSECURE",
		"CHIPLEDGER_ADMIN_TOKEN_HASH", "CHIPLEDGER_ADMIN_TOKEN", "CHIPLEDGER_ADMIN_TLS_CERT", "CHIPLEDGER_ADMIN_TLS_KEY", "CHIPLEDGER_LEDGER"} {
		t.Setenv(name, "")
	}
	dir := filepath.Join(t.TempDir(), "tls")
	for _, args := range [][]string{
		{"tls", "init", "--dir", dir},
		{"tls", "node", "--dir", dir, "--id", "n1", "--host", "127.0.0.1"},
		{"tls", "admin", "--dir", dir, "--name", "ops"},
	} {
		if r := runCLI(t, args...); r.err != nil {
			t.Fatalf("%s: %v", strings.Join(args, " "), r.err)
		}
	}
	tok := runCLI(t, "tls", "token")
	fields := strings.Fields(tok.stdout)
	if tok.err != nil || len(fields) != 4 || fields[0] != "token" || fields[2] != "hash" {
		t.Fatalf("tls token: %q, %v", tok.stdout, tok.err)
	}
	token, hash := fields[1], fields[3]

	logKey, trust := nodeFiles(t)
	ca := filepath.Join(dir, "ca.pem")
	r := runCLI(t, "node", "--id", "n1", "--data-dir", t.TempDir(), "--raft-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0",
		"--log-key", logKey, "--trust", trust, "--bootstrap",
		"--tls-ca", ca, "--tls-cert", filepath.Join(dir, "n1.pem"), "--tls-key", filepath.Join(dir, "n1.key"), "--admin-token-hash", hash)
	if r.err != nil {
		t.Fatal(r.err)
	}
	n, err := node.New(*r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	tc, err := clustertls.ClientConfig(ca, "", "")
	if err != nil {
		t.Fatal(err)
	}
	ledgerAPI := chipledgerv1connect.NewLedgerServiceClient(&http.Client{Transport: &http.Transport{TLSClientConfig: tc}}, "https://"+n.APIAddr())
	pki, _ := sharedPKI()
	// The new node elects itself; appends before that are unavailable.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, err := ledgerAPI.Append(ctx, connect.NewRequest(&v1.AppendRequest{Leaf: pki.StationLeaf()}))
		if err == nil {
			break
		}
		if connect.CodeOf(err) != connect.CodeUnavailable {
			t.Fatalf("register the station over TLS: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("register the station over TLS: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	id := pki.StationID()
	base := []string{"--ledger", n.APIAddr(), "--tls-ca", ca}
	revoke := func(extra ...string) cliResult {
		return runCLI(t, append(append([]string{"admin", "revoke-station", "--station-id", hexID(id)}, base...), extra...)...)
	}
	// Without credentials the error names the flags that give them.
	if r := revoke(); r.err == nil || !strings.Contains(r.err.Error(), "permission_denied") ||
		!strings.Contains(r.err.Error(), "--tls-cert and --tls-key") || !strings.Contains(r.err.Error(), "chipledger tls admin") ||
		!strings.Contains(r.err.Error(), "--admin-token (or CHIPLEDGER_ADMIN_TOKEN") {
		t.Fatalf("revoke without credentials: %v, want permission_denied naming --tls-cert/--tls-key and --admin-token", r.err)
	}
	if r := revoke("--admin-token", "not-the-token"); r.err == nil || !strings.Contains(r.err.Error(), "refused the admin token") {
		t.Fatalf("revoke with a wrong token: %v, want the token refused", r.err)
	}
	if r := revoke("--admin-token", token, "--at", "2026-01-01T00:00:00Z"); r.err != nil || !strings.Contains(r.stdout, "revoked at index") {
		t.Fatalf("revoke with the token: %q, %v", r.stdout, r.err)
	}
	withCert := revoke("--tls-cert", filepath.Join(dir, "admin-ops.pem"), "--tls-key", filepath.Join(dir, "admin-ops.key"), "--at", "2026-01-01T00:00:00Z")
	if withCert.err != nil || !strings.Contains(withCert.stdout, "already revoked") {
		t.Fatalf("the same revocation with the admin certificate: %q, %v", withCert.stdout, withCert.err)
	}
	// A client without --tls-ca, or with another CA, is told so at once,
	// not after retries.
	vkey := r.cfg.Signer.VerifierKey()
	otherCA := filepath.Join(t.TempDir(), "other")
	if r := runCLI(t, "tls", "init", "--dir", otherCA); r.err != nil {
		t.Fatal(r.err)
	}
	const servesTLS = "serves TLS: pass --tls-ca (the cluster CA"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"admin", "status", "--ledger", n.APIAddr()}, servesTLS},
		{[]string{"admin", "status", "--ledger", "https://" + n.APIAddr()}, servesTLS},
		{[]string{"admin", "status", "--ledger", n.APIAddr(), "--tls-ca", filepath.Join(otherCA, "ca.pem")}, "is not issued by --tls-ca"},
		{[]string{"monitor", "--ledger", n.APIAddr(), "--log-key", vkey, "--chip", "00112233445566778899aabbccddeeff"}, servesTLS},
		{[]string{"monitor", "--ledger", "https://" + n.APIAddr(), "--log-key", vkey, "--chip", "00112233445566778899aabbccddeeff"}, servesTLS},
	} {
		start := time.Now()
		r := runCLI(t, c.args...)
		if r.err == nil || !strings.Contains(r.err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", strings.Join(c.args, " "), r.err, c.want)
		} else if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s: failed after %s: retried", strings.Join(c.args, " "), d)
		}
	}

	// Status is open to monitoring, over TLS.
	if r := runCLI(t, append([]string{"admin", "status"}, base...)...); r.err != nil || !strings.Contains(r.stdout, "node n1: leader") {
		t.Fatalf("status: %q, %v", r.stdout, r.err)
	}
}

func hexID(id [32]byte) string { return hex.EncodeToString(id[:]) }

// TestNodeTransportTellsTLSApart checks the advice for a client and a
// node that disagree about TLS, and that a plain node that drops
// connections gets none.
func TestNodeTransportTellsTLSApart(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	tlsNode := httptest.NewTLSServer(ok)
	defer tlsNode.Close()
	plainNode := httptest.NewServer(ok)
	defer plainNode.Close()
	dropper, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dropper.Close()
	go func() {
		for {
			c, err := dropper.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	tlsHost := strings.TrimPrefix(tlsNode.URL, "https://")
	hc := func(ca string) *http.Client {
		return &http.Client{Transport: &nodeTransport{plain: http.DefaultTransport, secure: http.DefaultTransport, ca: ca}}
	}
	for _, c := range []struct {
		client *http.Client
		url    string
		want   string // "" for no advice
	}{
		{hc(""), "http://" + tlsHost, "the node at " + tlsHost + " serves TLS: pass --tls-ca"},
		{hc(""), tlsNode.URL, "the node at " + tlsHost + " serves TLS: pass --tls-ca"},
		{hc("other.pem"), tlsNode.URL, "is not issued by --tls-ca other.pem"},
		{hc("ca.pem"), strings.Replace(plainNode.URL, "http:", "https:", 1), "does not serve TLS"},
		{hc(""), "http://" + dropper.Addr().String(), ""},
	} {
		resp, err := c.client.Post(c.url, "text/plain", strings.NewReader("x"))
		var tm *tlsMismatchError
		switch {
		case c.want == "" && errors.As(err, &tm):
			t.Errorf("%s: advice %q for a node that is not TLS", c.url, tm)
		case c.want == "" && err == nil:
			resp.Body.Close()
			t.Errorf("%s: answered", c.url)
		case c.want != "" && (!errors.As(err, &tm) || !strings.Contains(tm.Error(), c.want)):
			t.Errorf("%s: %v, want advice %q", c.url, err, c.want)
		case c.want != "" && connect.CodeOf(err) != connect.CodeFailedPrecondition:
			t.Errorf("%s: code %s, want failed_precondition (not retried)", c.url, connect.CodeOf(err))
		}
	}
	// A plain node answering 400 for its own reasons keeps its answer.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "bad input", http.StatusBadRequest) }))
	defer bad.Close()
	resp, err := hc("").Post(bad.URL, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || string(body) != "bad input\n" {
		t.Errorf("a plain 400: %d %q", resp.StatusCode, body)
	}
}

// recordingListener keeps every byte its connections receive.
type recordingListener struct {
	net.Listener
	mu  sync.Mutex
	got bytes.Buffer
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{c, l}, nil
}

type recordingConn struct {
	net.Conn
	l *recordingListener
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.l.mu.Lock()
	c.l.got.Write(b[:n])
	c.l.mu.Unlock()
	return n, err
}

// TestAdminTokenIsNotSentInTheClearToATLSNode: an operator of a TLS
// cluster who runs `chipledger admin` with CHIPLEDGER_ADMIN_TOKEN but
// without --tls-ca (a new shell, a missing variable) must be told to pass
// --tls-ca before the token goes anywhere, not after it crossed the
// network over plain HTTP.
func TestAdminTokenIsNotSentInTheClearToATLSNode(t *testing.T) {
	clearEnv(t)
	for _, name := range []string{"CHIPLEDGER_TLS_CA", "CHIPLEDGER_ADMIN_TLS_CERT", "CHIPLEDGER_ADMIN_TLS_KEY", "CHIPLEDGER_LEDGER"} {
		t.Setenv(name, "")
	}
	const token = "TOP-SECRET-ADMIN-TOKEN"
	t.Setenv("CHIPLEDGER_ADMIN_TOKEN", token)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	rec := &recordingListener{Listener: srv.Listener}
	srv.Listener = rec
	srv.StartTLS() // like a node with --tls-*
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")

	r := runCLI(t, "admin", "leave", "--ledger", host, "--node-id", "n3")
	if r.err == nil || exitCode(r.err) != 2 || !strings.Contains(r.err.Error(), "--tls-ca") {
		t.Fatalf("leave with a token and no --tls-ca: %v, want a usage error naming --tls-ca", r.err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if bytes.Contains(rec.got.Bytes(), []byte(token)) {
		t.Fatalf("the admin token crossed the network in plaintext:\n%s", rec.got.String())
	}
}

// TestAdminStatusShowsAnUnansweringPeerAsUnknown: a peer that did not
// answer has no tree size, applied index or lag to show; zeros would read
// as a peer in sync.
func TestAdminStatusShowsAnUnansweringPeerAsUnknown(t *testing.T) {
	down := peerRow(&v1.Peer{NodeId: "b", Role: "follower", Suffrage: "voter", Error: "unavailable: connection refused"})
	if got := strings.Join(down[3:6], " "); got != "- - -" {
		t.Errorf("a peer that did not answer shows tree size, applied, lag %q, want - - -", got)
	}
	up := peerRow(&v1.Peer{NodeId: "a", TreeSize: 7, AppliedIndex: 9, Lag: 0})
	if got := strings.Join(up[3:6], " "); got != "7 9 0" {
		t.Errorf("a peer that answered shows %q, want 7 9 0", got)
	}
}
