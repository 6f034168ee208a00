package main

import (
	"context"
	"encoding/hex"
	"net/http"
	"path/filepath"
	"strings"
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
	if r := revoke(); r.err == nil || !strings.Contains(r.err.Error(), "permission_denied") {
		t.Fatalf("revoke without credentials: %v, want permission_denied", r.err)
	}
	if r := revoke("--admin-token", "not-the-token"); r.err == nil {
		t.Fatal("revoke with a wrong token succeeded")
	}
	if r := revoke("--admin-token", token, "--at", "2026-01-01T00:00:00Z"); r.err != nil || !strings.Contains(r.stdout, "revoked at index") {
		t.Fatalf("revoke with the token: %q, %v", r.stdout, r.err)
	}
	withCert := revoke("--tls-cert", filepath.Join(dir, "admin-ops.pem"), "--tls-key", filepath.Join(dir, "admin-ops.key"), "--at", "2026-01-01T00:00:00Z")
	if withCert.err != nil || !strings.Contains(withCert.stdout, "already revoked") {
		t.Fatalf("the same revocation with the admin certificate: %q, %v", withCert.stdout, withCert.err)
	}
	// Status is open to monitoring, over TLS.
	if r := runCLI(t, append([]string{"admin", "status"}, base...)...); r.err != nil || !strings.Contains(r.stdout, "node n1: leader") {
		t.Fatalf("status: %q, %v", r.stdout, r.err)
	}
}

func hexID(id [32]byte) string { return hex.EncodeToString(id[:]) }
