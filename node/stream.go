package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// TLSConfig is a node's transport security: the cluster CA every node's
// certificate chains to, and this node's certificate. With it, Raft runs
// over mutual TLS 1.3 (a peer must present a certificate from the cluster
// CA), and the API is served over TLS, asking clients for a certificate
// without requiring one (admin calls need one, or the admin token).
type TLSConfig struct {
	// CA is the cluster CA.
	CA *x509.CertPool
	// Certificate is this node's certificate and key; its SANs must name
	// the addresses peers and clients reach it at.
	Certificate tls.Certificate
}

// serverConfig is the TLS configuration of a listener. Raft (forRaft) requires
// a node's certificate from the cluster CA; the API only verifies a client
// certificate if given (a node's or an operator's).
func (t *TLSConfig) serverConfig(forRaft bool) *tls.Config {
	c := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{t.Certificate},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    t.CA,
	}
	if forRaft {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.VerifyConnection = verifyRaftPeer
	}
	return c
}

// verifyRaftPeer admits a Raft peer only with a node's certificate: one
// for server use too (serverAuth), as `chipledger tls node` issues them. An
// operator's client certificate (`chipledger tls admin`) chains to the same
// CA, but speaking Raft would let its holder write commands into every
// replica's state machine, past admission.
func verifyRaftPeer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("raft peer presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return fmt.Errorf("raft peer %q presented a certificate that is not a node's (no serverAuth extended key usage): admin certificates cannot join Raft", leaf.Subject)
	}
	return nil
}

// clientConfig is the TLS configuration of connections to other nodes.
func (t *TLSConfig) clientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{t.Certificate},
		RootCAs:      t.CA,
	}
}

// streamLayer carries Raft over TCP, or over mutual TLS when tlsc is set.
// It dials from the address it listens on (port 0), so that on a host with
// several addresses peers see connections from the node's own address.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	dialer    net.Dialer
	tls       *TLSConfig
}

func newStreamLayer(bind string, advertise net.Addr, tlsc *TLSConfig) (*streamLayer, error) {
	l, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		advertise = l.Addr()
	}
	tcp, ok := advertise.(*net.TCPAddr)
	if !ok || tcp.IP == nil || tcp.IP.IsUnspecified() {
		l.Close()
		return nil, fmt.Errorf("raft address %s is not advertisable: give the address peers reach this node at", advertise)
	}
	s := &streamLayer{Listener: l, advertise: advertise, tls: tlsc}
	if ip := l.Addr().(*net.TCPAddr).IP; !ip.IsUnspecified() {
		s.dialer.LocalAddr = &net.TCPAddr{IP: ip}
	}
	if tlsc != nil {
		s.Listener = &handshakeListener{tls.NewListener(l, tlsc.serverConfig(true)), raftHandshakeTimeout}
	}
	return s, nil
}

// raftHandshakeTimeout bounds a Raft connection's TLS handshake: a
// connection that does not complete one (no certificate, or nothing sent)
// is closed rather than held.
const raftHandshakeTimeout = 10 * time.Second

// handshakeListener returns connections that complete their TLS handshake
// within raftHandshakeTimeout of their first read or write, which Raft's
// transport does at once, or fail. (Accept itself does not handshake, so
// that one slow client does not hold up the others.)
type handshakeListener struct {
	net.Listener
	timeout time.Duration
}

func (l *handshakeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &handshakeConn{Conn: c.(*tls.Conn), timeout: l.timeout}, nil
}

type handshakeConn struct {
	*tls.Conn
	timeout time.Duration
	once    sync.Once
	err     error
}

func (c *handshakeConn) handshake() error {
	c.once.Do(func() {
		c.Conn.SetDeadline(time.Now().Add(c.timeout))
		if c.err = c.Conn.Handshake(); c.err == nil {
			c.err = c.Conn.SetDeadline(time.Time{})
		}
	})
	return c.err
}

func (c *handshakeConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *handshakeConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// Addr returns the address peers reach this node at.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to a peer.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := s.dialer
	d.Timeout = timeout
	if s.tls == nil {
		return d.Dial("tcp", string(address))
	}
	conn, err := tls.DialWithDialer(&d, "tcp", string(address), s.tls.clientConfig())
	if err != nil {
		var cv *tls.CertificateVerificationError
		if errors.As(err, &cv) {
			return nil, fmt.Errorf("raft peer %s: its certificate does not chain to the cluster CA or name this address: %w", address, err)
		}
		return nil, err
	}
	return conn, nil
}
