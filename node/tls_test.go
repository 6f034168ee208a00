package node

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/chipledger/chipledger/internal/clustertls"
	"github.com/chipledger/chipledger/ledger"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// tlsDir makes a cluster CA, node certificates for 127.0.0.1 and an admin
// certificate.
func tlsDir(t *testing.T, nodes ...string) string {
	t.Helper()
	dir := t.TempDir()
	if err := clustertls.InitCA(dir); err != nil {
		t.Fatal(err)
	}
	for _, id := range nodes {
		if err := clustertls.IssueNode(dir, id, []string{"127.0.0.1"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := clustertls.IssueAdmin(dir, "ops"); err != nil {
		t.Fatal(err)
	}
	return dir
}

func nodeTLS(t *testing.T, dir, id string) *TLSConfig {
	t.Helper()
	pool, err := clustertls.LoadCAPool(filepath.Join(dir, clustertls.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, id+".pem"), filepath.Join(dir, id+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return &TLSConfig{CA: pool, Certificate: pair}
}

// httpsClient trusts the cluster CA of dir and presents the certificate
// named cert ("" for none).
func httpsClient(t *testing.T, dir, cert string) *http.Client {
	t.Helper()
	certFile, keyFile := "", ""
	if cert != "" {
		certFile, keyFile = filepath.Join(dir, cert+".pem"), filepath.Join(dir, cert+".key")
	}
	tc, err := clustertls.ClientConfig(filepath.Join(dir, clustertls.CACertFile), certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, Protocols: &p}}
}

// TestTLSClusterRefusesIntruders runs three nodes over mutual TLS and
// checks that appends work through every node, that a node with a
// certificate from another CA can neither join nor talk Raft, that admin
// calls need an admin certificate or the token, and that anonymous clients
// can still read and append.
func TestTLSClusterRefusesIntruders(t *testing.T) {
	dir := tlsDir(t, "n0", "n1", "n2")
	token := "s3cret-admin-token"
	tokenHash := sha256.Sum256([]byte(token))
	c := newTestCluster(t, 0, nil)
	var nodes []*Node
	for i := range 3 {
		cfg := Config{
			ID: fmt.Sprintf("n%d", i), DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0",
			Signer: c.signer, Trust: c.pki.Trust, Logger: testLogger(t),
			TLS: nodeTLS(t, dir, fmt.Sprintf("n%d", i)), AdminTokenHash: tokenHash[:],
		}
		if i == 0 {
			cfg.Bootstrap = true
		} else {
			cfg.Join = []string{nodes[0].APIAddr()}
		}
		n, err := New(cfg)
		if err != nil {
			t.Fatalf("start n%d: %v", i, err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}
	anonymous := httpsClient(t, dir, "")
	ctx := context.Background()
	ledgerAt := func(hc *http.Client, n *Node) chipledgerv1connect.LedgerServiceClient {
		return chipledgerv1connect.NewLedgerServiceClient(hc, "https://"+n.APIAddr())
	}
	// Anonymous clients append through every node, followers forwarding
	// over TLS.
	if _, err := ledgerAt(anonymous, nodes[0]).Append(ctx, connect.NewRequest(&v1.AppendRequest{Leaf: c.pki.StationLeaf()})); err != nil {
		t.Fatal(err)
	}
	for i, leaf := range c.escrowLeaves(0, 6) {
		if _, err := ledgerAt(anonymous, nodes[i%3]).Append(ctx, connect.NewRequest(&v1.AppendRequest{Leaf: leaf})); err != nil {
			t.Fatalf("append through n%d: %v", i%3, err)
		}
	}
	waitFor(t, "the nodes to agree", 10*time.Second, func() bool {
		a, b, d := nodes[0].Checkpoint(), nodes[1].Checkpoint(), nodes[2].Checkpoint()
		return string(a.Signed) == string(b.Signed) && string(b.Signed) == string(d.Signed) && payload(t, nodes[2]) == 7
	})

	// Admin calls: refused anonymously, allowed with the admin
	// certificate or the token.
	adminAt := func(hc *http.Client) chipledgerv1connect.AdminServiceClient {
		return chipledgerv1connect.NewAdminServiceClient(hc, "https://"+nodes[1].APIAddr())
	}
	leave := connect.NewRequest(&v1.LeaveRequest{NodeId: "nobody"})
	if _, err := adminAt(anonymous).Leave(ctx, leave); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("anonymous Leave: %v, want PermissionDenied", err)
	}
	if _, err := adminAt(anonymous).Status(ctx, connect.NewRequest(&v1.StatusRequest{})); err != nil {
		t.Fatalf("anonymous Status: %v", err)
	}
	withToken := connect.NewRequest(&v1.TransferLeadershipRequest{})
	withToken.Header().Set("Authorization", "Bearer "+token)
	if _, err := adminAt(anonymous).TransferLeadership(ctx, withToken); err != nil {
		t.Fatalf("TransferLeadership with the admin token: %v", err)
	}
	badToken := connect.NewRequest(&v1.TransferLeadershipRequest{})
	badToken.Header().Set("Authorization", "Bearer wrong")
	if _, err := adminAt(anonymous).TransferLeadership(ctx, badToken); connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "token was refused") {
		t.Fatalf("TransferLeadership with a wrong token: %v, want PermissionDenied saying the token was refused", err)
	}
	if _, err := adminAt(httpsClient(t, dir, "admin-ops")).TransferLeadership(ctx, connect.NewRequest(&v1.TransferLeadershipRequest{})); err != nil {
		t.Fatalf("TransferLeadership with the admin certificate: %v", err)
	}

	// A node with a certificate from another CA cannot join...
	other := tlsDir(t, "intruder")
	_, err := New(Config{
		ID: "intruder", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0",
		Signer: c.signer, Trust: c.pki.Trust, TLS: nodeTLS(t, other, "intruder"), Join: []string{nodes[0].APIAddr()},
		Raft: func(conf *raft.Config) {},
	})
	if err == nil {
		t.Fatal("a node with another CA's certificate joined")
	}
	// ...nor open a Raft connection.
	raftAddr := nodes[0].RaftAddr()
	intruder := nodeTLS(t, other, "intruder")
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", raftAddr, &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{intruder.Certificate}, InsecureSkipVerify: true,
	})
	if err == nil {
		// TLS 1.3 reports the client certificate's rejection on first read.
		conn.SetDeadline(time.Now().Add(time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Fatal("a Raft connection with another CA's certificate was accepted")
	}
	// And plain TCP to the API is refused as such.
	plain := &http.Client{Timeout: time.Second}
	if resp, err := plain.Get("http://" + nodes[0].APIAddr() + "/healthz"); err == nil && resp.StatusCode == 200 {
		t.Fatal("the TLS API answered plain HTTP")
	}
}

// TestDevModeNeedsNoTLS checks that a node without TLS serves everything,
// admin calls included, as in --dev.
func TestDevModeNeedsNoTLS(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	_, err := c.admin(0).TransferLeadership(context.Background(), connect.NewRequest(&v1.TransferLeadershipRequest{}))
	// A single node has nobody to transfer to; what matters is that the
	// call was not refused for lack of credentials.
	if connect.CodeOf(err) == connect.CodePermissionDenied {
		t.Fatalf("admin call refused without TLS: %v", err)
	}
	var ce *connect.Error
	if err != nil && !errors.As(err, &ce) {
		t.Fatal(err)
	}
	_ = ledger.MaxLeafSize
}

// TestRaftListenerDropsSilentConnections checks that a connection to the
// Raft port that never completes its TLS handshake is closed, not held.
func TestRaftListenerDropsSilentConnections(t *testing.T) {
	dir := tlsDir(t, "n0")
	s, err := newStreamLayer("127.0.0.1:0", nil, nodeTLS(t, dir, "n0"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Listener.(*handshakeListener).timeout = 100 * time.Millisecond
	silent, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	conn, err := s.Accept()
	if err != nil {
		t.Fatal(err)
	}
	// Raft's transport reads the first byte of every connection at once.
	done := make(chan error, 1)
	go func() {
		_, err := conn.Read(make([]byte, 1))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a read on a connection without a handshake succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a connection that sent nothing is still held after 10 s")
	}
}

// TestRaftRefusesAdminCertificates: an operator's admin certificate
// (`chipledger tls admin`) chains to the cluster CA but is no node's. The
// Raft listener must refuse it: its holder could otherwise act as a leader
// and write any command into the state machine, past admission (here, a
// member record pointing at another address).
func TestRaftRefusesAdminCertificates(t *testing.T) {
	dir := tlsDir(t, "node0")
	c := newConfiguredCluster(t, 1, nil, func(cfg *Config) { cfg.TLS = nodeTLS(t, dir, cfg.ID) })
	n := c.nodes[0]
	waitFor(t, "the genesis checkpoint", 10*time.Second, func() bool { return n.Checkpoint().Size > 0 })

	stream, err := newStreamLayer("127.0.0.1:0", nil, nodeTLS(t, dir, "admin-ops"))
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: stream, MaxPool: 1, Timeout: 5 * time.Second})
	defer trans.Close()
	forged, err := encodeMember("ghost", "attacker.example:443")
	if err != nil {
		t.Fatal(err)
	}
	last := n.raft.LastIndex()
	var prev raft.Log
	if err := n.fsm.logs.GetLog(last, &prev); err != nil {
		t.Fatal(err)
	}
	term := n.raft.CurrentTerm() + 1
	var resp raft.AppendEntriesResponse
	err = trans.AppendEntries(raft.ServerID(n.ID()), raft.ServerAddress(n.RaftAddr()), &raft.AppendEntriesRequest{
		RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte(stream.Addr().String())},
		Term:              term,
		PrevLogEntry:      last,
		PrevLogTerm:       prev.Term,
		Entries:           []*raft.Log{{Index: last + 1, Term: term, Type: raft.LogCommand, Data: forged}},
		LeaderCommitIndex: last + 1,
	}, &resp)
	if err == nil {
		t.Fatalf("Raft answered an AppendEntries over an admin certificate (success %v)", resp.Success)
	}
	if m, _ := n.fsm.members(); m["ghost"] != "" {
		t.Fatalf("the admin certificate wrote a member record: %v", m)
	}
	if n.raft.CurrentTerm() >= term {
		t.Fatalf("the admin certificate moved the node's term to %d", n.raft.CurrentTerm())
	}
}
