package client_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/internal/localcluster"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

const testOrigin = "test.chipledger.example/log"

var sharedPKI = sync.OnceValues(testpki.New)

func testLogger() *slog.Logger {
	if os.Getenv("CHIPLEDGER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testLog is a chipledger log run in this process on loopback, with the
// keys a test needs to make valid leaves and to forge checkpoints.
type testLog struct {
	t        testing.TB
	pki      *testpki.PKI
	vkey     string
	signer   *ledger.LogSigner
	verifier *proofs.LogVerifier
	cluster  *localcluster.Cluster
}

// startLog starts a cluster of n nodes signing with signer (a fresh key if
// nil).
func startLog(t testing.TB, n int, signer *ledger.LogSigner) *testLog {
	t.Helper()
	return startLogWith(t, signer, func(o *localcluster.Options) { o.Nodes = n })
}

// startLogWith starts a cluster signing with signer (a fresh key if nil),
// with the options opts sets.
func startLogWith(t testing.TB, signer *ledger.LogSigner, opts func(*localcluster.Options)) *testLog {
	t.Helper()
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	if signer == nil {
		signer = newSigner(t)
	}
	verifier, err := proofs.NewLogVerifier(signer.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := localcluster.Options{Dir: t.TempDir(), Signer: signer, Trust: pki.Trust, Logger: testLogger()}
	opts(&o)
	cl, err := localcluster.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return &testLog{t: t, pki: pki, vkey: signer.VerifierKey(), signer: signer, verifier: verifier, cluster: cl}
}

func newSigner(t testing.TB) *ledger.LogSigner {
	t.Helper()
	skey, _, err := ledger.GenerateLogKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ledger.NewLogSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return signer
}

// client returns a client of the log for the given addresses (every node's
// if none), closed when the test ends.
func (l *testLog) client(addrs ...string) *client.Client {
	l.t.Helper()
	return l.clientWith(client.Options{Addrs: addrs})
}

func (l *testLog) clientWith(o client.Options) *client.Client {
	l.t.Helper()
	if len(o.Addrs) == 0 {
		o.Addrs = l.cluster.Addrs()
	}
	o.LogKey = l.vkey
	if o.Logger == nil {
		o.Logger = testLogger()
	}
	c, err := client.New(o)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { c.Close() })
	return c
}

// leader and followers return the index of the leading node and of the
// others.
func (l *testLog) leader() int {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := l.cluster.WaitLeader(ctx)
	if err != nil {
		l.t.Fatal(err)
	}
	for i, m := range l.cluster.Nodes {
		if m == n {
			return i
		}
	}
	panic("leader is not a node of the cluster")
}

// registerStation appends the test station's registration through c.
func (l *testLog) registerStation(c *client.Client) {
	l.t.Helper()
	if _, err := c.Append(context.Background(), l.pki.StationLeaf()); err != nil {
		l.t.Fatalf("register station: %v", err)
	}
}

// escrowLeaf returns a valid escrow leaf for chip number n at epoch.
func (l *testLog) escrowLeaf(n uint64, epoch uint32) []byte {
	l.t.Helper()
	leaf, err := l.pki.EscrowLeaf(testpki.ChipID(n), epoch, 0)
	if err != nil {
		l.t.Fatal(err)
	}
	return leaf
}

// appendEscrow appends a fresh escrow leaf for chip n at epoch 1 and
// returns the result.
func (l *testLog) appendEscrow(c *client.Client, n uint64) *client.AppendResult {
	l.t.Helper()
	res, err := c.Append(context.Background(), l.escrowLeaf(n, 1))
	if err != nil {
		l.t.Fatalf("append chip %d: %v", n, err)
	}
	return res
}

// h2cClient is a plain HTTP client speaking h2c, for tests that talk to
// nodes directly.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// ledgerKey makes a log signer for origin and returns it with its verifier
// key.
func ledgerKey(origin string) (*ledger.LogSigner, string, error) {
	skey, vkey, err := ledger.GenerateLogKey(origin)
	if err != nil {
		return nil, "", err
	}
	s, err := ledger.NewLogSigner(skey)
	return s, vkey, err
}
