package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	"github.com/chipledger/chipledger/internal/clustertls"
)

// tlsCommand is `chipledger tls`: TLS material for a cluster.
func tlsCommand() *cli.Command {
	dirFlag := func() cli.Flag {
		return &cli.StringFlag{Name: "dir", Required: true, EnvVars: env("tls-dir"), Usage: "the cluster's TLS `DIR`"}
	}
	return &cli.Command{
		Name:  "tls",
		Usage: "make the cluster CA, node and admin certificates, and admin tokens",
		UsageText: `chipledger tls init --dir DIR
chipledger tls node --dir DIR --id ID --host ADDRESS [--host ...]
chipledger tls admin --dir DIR --name NAME
chipledger tls token

   # the cluster CA, a certificate for each node, one for an operator
   chipledger tls init --dir tls
   chipledger tls node --dir tls --id n1 --host 10.0.0.1 --host n1.example.com
   chipledger tls admin --dir tls --name alice`,
		Description: `For operators without a PKI of their own. Nodes run Raft over mutual TLS 1.3
with peers whose certificates chain to the cluster CA, and serve the API over
TLS; admin calls (join, leave, leadership transfer, station revocation) need
a client certificate from the cluster CA or the admin token. Clients reach
such nodes with --tls-ca (the CA's ca.pem).`,
		Subcommands: []*cli.Command{
			{
				Name:      "init",
				Usage:     "create the cluster CA (ca.pem, ca.key) in --dir",
				UsageText: "chipledger tls init --dir tls",
				Flags:     []cli.Flag{dirFlag()},
				Action: func(c *cli.Context) error {
					if err := clustertls.InitCA(c.String("dir")); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "cluster CA in %s; give %s to every node (--tls-ca) and client; keep ca.key offline\n",
						c.String("dir"), filepath.Join(c.String("dir"), clustertls.CACertFile))
					return nil
				},
			},
			{
				Name:      "node",
				Usage:     "issue a node certificate (<id>.pem, <id>.key) naming the node's addresses",
				UsageText: "chipledger tls node --dir tls --id n1 --host 10.0.0.1 --host n1.example.com",
				Flags: []cli.Flag{
					dirFlag(),
					&cli.StringFlag{Name: "id", Required: true, Usage: "the node's `ID`"},
					&cli.StringSliceFlag{Name: "host", Required: true, Usage: "an IP address or DNS name peers and clients reach the node at (repeatable)"},
				},
				Action: func(c *cli.Context) error {
					dir, id := c.String("dir"), c.String("id")
					if err := clustertls.IssueNode(dir, id, c.StringSlice("host")); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "node certificate %s, key %s\n", filepath.Join(dir, id+".pem"), filepath.Join(dir, id+".key"))
					return nil
				},
			},
			{
				Name:      "admin",
				Usage:     "issue an admin client certificate (admin-<name>.pem, .key)",
				UsageText: "chipledger tls admin --dir tls --name alice",
				Flags:     []cli.Flag{dirFlag(), &cli.StringFlag{Name: "name", Required: true, Usage: "the admin's `NAME`"}},
				Action: func(c *cli.Context) error {
					dir, name := c.String("dir"), c.String("name")
					if err := clustertls.IssueAdmin(dir, name); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "admin certificate %s\n", filepath.Join(dir, "admin-"+name+".pem"))
					return nil
				},
			},
			{
				Name:      "token",
				Usage:     "make a random admin token and print it and its hash (for --admin-token-hash)",
				UsageText: "chipledger tls token",
				Action: func(c *cli.Context) error {
					b := make([]byte, 32)
					if _, err := rand.Read(b); err != nil {
						return err
					}
					token := base64.RawURLEncoding.EncodeToString(b)
					sum := sha256.Sum256([]byte(token))
					fmt.Fprintf(c.App.Writer, "token  %s\nhash   %s\n", token, hex.EncodeToString(sum[:]))
					fmt.Fprintln(c.App.ErrWriter, "give the hash to the nodes (--admin-token-hash); keep the token secret: nodes store only its hash")
					return nil
				},
			},
		},
	}
}

// tlsMismatchError is the error of a request to a node that does not use
// TLS the way the client was told to: it says which flag to change.
type tlsMismatchError struct{ msg string }

func (e *tlsMismatchError) Error() string { return e.msg }

// nodeTransport sends http:// requests through plain and https:// ones
// through secure, and turns the failures of a client and a node that
// disagree about TLS into a *tlsMismatchError. The error is wrapped in a
// FAILED_PRECONDITION Connect error, which neither the SDK nor a caller
// retries: no retry can fix a missing or wrong --tls-ca.
type nodeTransport struct {
	plain, secure http.RoundTripper
	ca            string // --tls-ca, or ""

	mu       sync.Mutex
	speakTLS map[string]bool // by host:port, from probes
}

func (t *nodeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	next := t.plain
	if r.URL.Scheme == "https" {
		next = t.secure
	}
	resp, err := next.RoundTrip(r)
	if err != nil {
		if msg := t.diagnose(r, err); msg != "" {
			return nil, connect.NewError(connect.CodeFailedPrecondition, &tlsMismatchError{msg})
		}
		return nil, err
	}
	if r.URL.Scheme == "http" && resp.StatusCode == http.StatusBadRequest {
		// Go's TLS servers answer an HTTP/1 request on a TLS port so.
		head := make([]byte, 512)
		n, _ := io.ReadFull(resp.Body, head)
		if strings.Contains(string(head[:n]), "HTTP request to an HTTPS server") {
			resp.Body.Close()
			return nil, connect.NewError(connect.CodeFailedPrecondition, &tlsMismatchError{t.servesTLS(r.URL.Host)})
		}
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(head[:n]), resp.Body), resp.Body}
	}
	return resp, nil
}

func (t *nodeTransport) CloseIdleConnections() {
	for _, rt := range []http.RoundTripper{t.plain, t.secure} {
		if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
}

// servesTLS is the advice for a plain client of a TLS node.
func (t *nodeTransport) servesTLS(host string) string {
	return fmt.Sprintf("the node at %s serves TLS: pass --tls-ca (the cluster CA, e.g. tls/ca.pem)", host)
}

// diagnose returns the advice for a request that failed with err because
// the client and the node disagree about TLS, or "".
func (t *nodeTransport) diagnose(r *http.Request, err error) string {
	host := r.URL.Host
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var header tls.RecordHeaderError
	switch {
	case r.URL.Scheme == "https" && errors.As(err, &unknown) && t.ca == "":
		return t.servesTLS(host)
	case r.URL.Scheme == "https" && errors.As(err, &unknown):
		return fmt.Sprintf("the certificate of the node at %s is not issued by --tls-ca %s: pass the cluster's CA (ca.pem of its \"chipledger tls init\" directory)", host, t.ca)
	case r.URL.Scheme == "https" && errors.As(err, &hostname):
		return fmt.Sprintf("the certificate of the node at %s does not name %s: reach the node at an address its certificate names (chipledger tls node --host): %v", host, r.URL.Hostname(), err)
	case r.URL.Scheme == "https" && errors.As(err, &header):
		return fmt.Sprintf("the node at %s does not serve TLS (it runs with --insecure or --dev): drop --tls-ca and https://", host)
	case r.URL.Scheme == "http" && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)):
		// A TLS server closes a connection that does not start with a
		// TLS handshake: ask the node whether it speaks TLS.
		if t.probeTLS(r.Context(), host) {
			return t.servesTLS(host)
		}
	}
	return ""
}

// probeTLS reports whether the node at host answers a TLS handshake,
// remembering the answer.
func (t *nodeTransport) probeTLS(ctx context.Context, host string) bool {
	t.mu.Lock()
	known, ok := t.speakTLS[host]
	t.mu.Unlock()
	if ok {
		return known
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	name, _, _ := net.SplitHostPort(host)
	d := &tls.Dialer{Config: &tls.Config{ServerName: name, MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(ctx, "tcp", host)
	var alert tls.AlertError
	var verify *tls.CertificateVerificationError
	yes := err == nil || errors.As(err, &alert) || errors.As(err, &verify)
	if err == nil {
		conn.Close()
	}
	if ctx.Err() == nil {
		t.mu.Lock()
		if t.speakTLS == nil {
			t.speakTLS = make(map[string]bool)
		}
		t.speakTLS[host] = yes
		t.mu.Unlock()
	}
	return yes
}

// tlsHint returns the advice of a *tlsMismatchError in err's chain, which
// says all there is to say, or err.
func tlsHint(err error) error {
	var tm *tlsMismatchError
	if errors.As(err, &tm) {
		return tm
	}
	return err
}
