package client

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/proofs"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// Options configure a Client. Addrs and LogKey are required.
type Options struct {
	// Addrs are the nodes' API addresses, "host:port" (plain HTTP) or a
	// full "http://" or "https://" URL. Appends go to Addrs[0] until a node
	// shows another one leads.
	Addrs []string

	// LogKey is the log's C2SP signed-note verifier key,
	// "<origin>+<hash>+<key>", obtained out of band and pinned: only
	// checkpoints it verifies are accepted.
	LogKey string

	// Trusted is a signed checkpoint of the log saved from an earlier run
	// (see Client.Trusted). The client starts trusting it, so every
	// checkpoint it later accepts is proven to extend it. Without it, the
	// first checkpoint the client verifies becomes trusted.
	Trusted []byte

	// Witnesses, if set, is the log's witness policy (c2sp.org/tlog-policy,
	// from proofs.ParseWitnessPolicy): LookupChip, and so Recover, then
	// accept a chip's history only within a checkpoint that the policy's
	// quorum of witnesses cosigned, so that a log showing this client a
	// history of its own (a split view) is caught. WitnessedCheckpoint
	// needs it.
	Witnesses *proofs.WitnessPolicy
	// WitnessMaxAge is how old the quorum's cosignatures of a witnessed
	// checkpoint may be: a cosignature says the checkpoint was the latest
	// its witness had seen as of its time, so only recent ones show the
	// checkpoint is current rather than an old one a node passes off as
	// current. Nodes have an idle log's checkpoint cosigned again every
	// minute (node.DefaultWitnessRefresh). Zero means
	// DefaultWitnessMaxAge; negative accepts any age.
	WitnessMaxAge time.Duration

	// HTTPClient carries the Connect protocol. The default speaks HTTP/2
	// without TLS (h2c) to "http://" addresses, as the nodes do, and HTTP/2
	// or HTTP/1.1, whichever the server offers, over TLS to "https://"
	// ones.
	HTTPClient *http.Client

	// Logger receives retries and verification failures; nil discards
	// them.
	Logger *slog.Logger

	// Retry bounds the retries of one call; the zero value is
	// DefaultRetryPolicy.
	Retry RetryPolicy
}

// A RetryPolicy bounds how a call is retried on transient errors:
// UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED and ABORTED from a node,
// and transport failures (which Connect reports as UNAVAILABLE, UNKNOWN or,
// for a connection reset by a node that died, CANCELED) while the caller's
// context is alive. Zero fields take the DefaultRetryPolicy value; set
// MaxAttempts to 1 to disable retries.
type RetryPolicy struct {
	// MaxAttempts is the most requests one call makes.
	MaxAttempts int
	// MaxElapsed is how long after its first request a call may still
	// start another.
	MaxElapsed time.Duration
	// AttemptTimeout bounds each request, so a node that hangs does not
	// hold a call until its context ends. Nodes bound their own waits (for
	// a leader or a tree size) to 10 seconds.
	AttemptTimeout time.Duration
	// InitialBackoff and MaxBackoff bound the pause before a retry: it
	// doubles from InitialBackoff up to MaxBackoff, and a random half of it
	// is jitter.
	InitialBackoff, MaxBackoff time.Duration
}

// DefaultWitnessMaxAge is the default Options.WitnessMaxAge: ten refresh
// periods of the nodes' default.
const DefaultWitnessMaxAge = 10 * time.Minute

// DefaultRetryPolicy rides out a leader election: about 10 seconds of
// retries and pauses.
var DefaultRetryPolicy = RetryPolicy{
	MaxAttempts:    10,
	MaxElapsed:     15 * time.Second,
	AttemptTimeout: 12 * time.Second,
	InitialBackoff: 50 * time.Millisecond,
	MaxBackoff:     2 * time.Second,
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	d := DefaultRetryPolicy
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.MaxElapsed <= 0 {
		p.MaxElapsed = d.MaxElapsed
	}
	if p.AttemptTimeout <= 0 {
		p.AttemptTimeout = d.AttemptTimeout
	}
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = d.InitialBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = max(d.MaxBackoff, p.InitialBackoff)
	}
	return p
}

// maxResponseBytes bounds every response: a page of 1000 leaves of at most
// 65,535 bytes, with room to spare.
const maxResponseBytes = 96 << 20

// maxHintedNodes bounds the leader addresses, beyond Addrs, the client
// remembers from leader hints.
const maxHintedNodes = 16

// leaderHeader is the response or error metadata naming the leader's API
// address ("host:port").
const leaderHeader = "Chipledger-Leader"

// A Client talks to the nodes of one log and verifies what they answer. It
// is safe for concurrent use. It starts no goroutine of its own; Close ends
// the calls in flight and then closes its connections.
type Client struct {
	verifier  *proofs.LogVerifier
	witnesses *proofs.WitnessPolicy // nil: checkpoints need the log's signature only
	maxAge    time.Duration         // of the witnesses' cosignatures; negative: any
	logKey    string
	http      *http.Client
	ownHTTP   bool
	log       *slog.Logger
	retry     RetryPolicy
	nodes     []*endpoint // as configured, in order
	trust     *trust

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc

	mu       sync.Mutex
	leader   *endpoint // where appends go next
	reader   *endpoint // where reads go next
	hinted   map[string]*endpoint
	closed   bool
	inflight int // calls running
}

// New returns a client for the nodes at o.Addrs of the log whose verifier
// key is o.LogKey. It makes no request. It fails if an option is invalid,
// and with ErrBadSignature if o.Trusted is not a checkpoint of that log.
func New(o Options) (*Client, error) {
	if len(o.Addrs) == 0 {
		return nil, errors.New("client: no node addresses")
	}
	if strings.TrimSpace(o.LogKey) == "" {
		return nil, errors.New("client: no log verifier key: it must be pinned")
	}
	v, err := proofs.NewLogVerifier(strings.TrimSpace(o.LogKey))
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	c := &Client{
		verifier:  v,
		logKey:    strings.TrimSpace(o.LogKey),
		witnesses: o.Witnesses,
		maxAge:    cmp.Or(o.WitnessMaxAge, DefaultWitnessMaxAge),
		http:      o.HTTPClient,
		log:       o.Logger,
		retry:     o.Retry.withDefaults(),
		trust:     newTrust(),
		hinted:    make(map[string]*endpoint),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if o.Trusted != nil {
		cp, err := c.verifier.VerifyCheckpoint(o.Trusted)
		if err != nil {
			return nil, fmt.Errorf("%w: Options.Trusted: %w", ErrBadSignature, err)
		}
		c.trust.start(cp, o.Trusted)
	}
	if c.http == nil {
		c.http, c.ownHTTP = defaultHTTPClient(), true
	}
	for _, a := range o.Addrs {
		ep, err := c.newEndpoint(a)
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, ep)
	}
	c.leader, c.reader = c.nodes[0], c.nodes[0]
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// newEndpoint parses an address: "host:port" or an http(s) URL.
func (c *Client) newEndpoint(addr string) (*endpoint, error) {
	base := addr
	if !strings.Contains(addr, "://") {
		base = "http://" + addr
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || !validPort(u.Port()) {
		return nil, fmt.Errorf("client: node address %q: want host:port or an http(s) URL", addr)
	}
	base = strings.TrimSuffix(u.String(), "/")
	api := chipledgerv1connect.NewLedgerServiceClient(c.http, base, connect.WithReadMaxBytes(maxResponseBytes))
	return &endpoint{addr: addr, host: u.Host, scheme: u.Scheme, api: api}, nil
}

// validPort reports whether port, from a URL, is empty or 1 to 65535 (a
// typo such as 80800 would otherwise be retried as a network error).
func validPort(port string) bool {
	if port == "" {
		return true
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

// defaultHTTPClient speaks h2c to http:// URLs, and HTTP/2 or HTTP/1.1 over
// TLS to https:// ones: one http.Transport cannot do both, since it uses
// h2c only when HTTP/1 is disabled.
func defaultHTTPClient() *http.Client {
	plain, secure := NewTransports(nil)
	return &http.Client{Transport: &byScheme{plain: plain, tls: secure}}
}

// NewTransports returns the two HTTP transports the default client uses
// for ledger nodes: plain speaks h2c (for http:// URLs), tls speaks HTTP/2
// or HTTP/1.1 over TLS with tc (for https:// ones; nil tc: the system's
// roots). Both dial with a timeout and ping idle HTTP/2 connections, so a
// node that vanished without a reset is noticed. A program that routes
// requests itself (the command line does, to diagnose TLS mismatches)
// starts from these.
func NewTransports(tc *tls.Config) (plain, secure *http.Transport) {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	h2 := &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 5 * time.Second}
	var plainProtos, tlsProtos http.Protocols
	plainProtos.SetUnencryptedHTTP2(true)
	tlsProtos.SetHTTP1(true)
	tlsProtos.SetHTTP2(true)
	plain = &http.Transport{Protocols: &plainProtos, DialContext: dialer.DialContext, HTTP2: h2, IdleConnTimeout: 90 * time.Second}
	secure = &http.Transport{
		Protocols: &tlsProtos, DialContext: dialer.DialContext, HTTP2: h2, IdleConnTimeout: 90 * time.Second,
		TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment, TLSHandshakeTimeout: 10 * time.Second,
	}
	return plain, secure
}

// byScheme sends http:// requests through plain and https:// ones through
// tls.
type byScheme struct{ plain, tls *http.Transport }

func (t *byScheme) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "https" {
		return t.tls.RoundTrip(r)
	}
	return t.plain.RoundTrip(r)
}

func (t *byScheme) CloseIdleConnections() {
	t.plain.CloseIdleConnections()
	t.tls.CloseIdleConnections()
}

// Close ends the calls in flight (they fail with ErrClosed) and makes later
// calls fail at once. Once the last call has returned, it closes the
// connections of the default HTTP client (not of one passed in Options).
// It does not wait for the calls.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	idle := c.inflight == 0
	c.mu.Unlock()
	c.cancel()
	if idle {
		c.closeConnections()
	}
	return nil
}

func (c *Client) closeConnections() {
	if c.ownHTTP {
		c.http.CloseIdleConnections()
	}
}

// Trusted returns the largest checkpoint the client has verified and proven
// consistent with every other one it accepted, and its signed note, which
// callers save to pass as Options.Trusted next time. Before the client has
// accepted any, it returns a zero Checkpoint and nil.
func (c *Client) Trusted() (proofs.Checkpoint, []byte) {
	t := c.trust.latest()
	return t.cp, t.signed
}

// scope starts a call: it returns ctx, also canceled (with cause ErrClosed)
// when the client closes, and the function that ends the call.
func (c *Client) scope(ctx context.Context) (context.Context, func(), error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, nil, ErrClosed
	}
	c.inflight++
	c.mu.Unlock()
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(c.ctx, func() { cancel(ErrClosed) })
	return ctx, func() {
		stop()
		cancel(nil)
		c.mu.Lock()
		c.inflight--
		last := c.closed && c.inflight == 0
		c.mu.Unlock()
		if last {
			c.closeConnections()
		}
	}, nil
}
