package chaos

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// An Endpoint is a party on the network: a node, by its index, or Client.
type Endpoint int

// Client is the endpoint of every connection that comes from an address no
// node binds: the harness's clients. A node dials its peers from its own
// address, Raft and API calls alike, so an append a follower forwards to
// the leader is node-to-node traffic (the follower's link to the leader),
// not Client's.
const Client Endpoint = -1

func (e Endpoint) String() string {
	if e == Client {
		return "client"
	}
	return fmt.Sprintf("n%d", int(e)+1)
}

// A Link is one direction of traffic: the data From sends To, on
// connections either of them opened.
type Link struct{ From, To Endpoint }

func (l Link) String() string { return l.From.String() + "→" + l.To.String() }

// A Fault is what a link does to the data sent over it. The zero Fault
// delivers everything at once.
type Fault struct {
	// Cut makes the two endpoints unreachable from each other: a TCP
	// connection needs both directions, so a cut in either direction
	// refuses new connections between them and closes the live ones.
	Cut bool
	// Stall holds the data, as a network that drops every packet while
	// TCP retransmits: it is delivered, in order, once the stall is lifted.
	// Connections stay open.
	Stall bool
	// Delay is added to the delivery of every chunk of data.
	Delay time.Duration
}

// A Network is a set of proxies, one in front of each listener of each
// node, and the faults of the links between endpoints. It tells endpoints
// apart by the source IP of the connections it accepts. It is safe for
// concurrent use.
type Network struct {
	hosts map[string]Endpoint // by IP

	mu      sync.Mutex
	faults  map[Link]Fault
	changed chan struct{} // closed and replaced when faults change
	conns   map[*proxyConn]struct{}
	proxies []*Proxy
	closed  bool

	refused, dropped atomic.Int64
	wg               sync.WaitGroup
}

// NewNetwork returns a network with no faults, in which a connection from
// IP address ip comes from hosts[ip], and from Client if ip is not there.
func NewNetwork(hosts map[string]Endpoint) *Network {
	return &Network{
		hosts:   hosts,
		faults:  make(map[Link]Fault),
		changed: make(chan struct{}),
		conns:   make(map[*proxyConn]struct{}),
	}
}

// Set makes l behave as f, replacing its fault; the zero Fault heals it.
// Live connections between endpoints that f cuts are closed.
func (n *Network) Set(l Link, f Fault) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if f == (Fault{}) {
		delete(n.faults, l)
	} else {
		n.faults[l] = f
	}
	n.notifyLocked()
	if f.Cut {
		n.dropLocked(func(a, b Endpoint) bool { return (a == l.From && b == l.To) || (a == l.To && b == l.From) })
	}
}

// Heal lifts every fault. Stalled data is delivered; cut connections stay
// closed.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.faults)
	n.notifyLocked()
}

// Faults returns the current faults.
func (n *Network) Faults() map[Link]Fault {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[Link]Fault, len(n.faults))
	for l, f := range n.faults {
		out[l] = f
	}
	return out
}

// Drop closes the live connections between dialer a and listener b for
// which match(a, b) holds, and returns how many it closed.
func (n *Network) Drop(match func(a, b Endpoint) bool) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dropLocked(match)
}

func (n *Network) dropLocked(match func(a, b Endpoint) bool) int {
	dropped := 0
	for pc := range n.conns {
		if match(pc.from, pc.to) {
			pc.close()
			delete(n.conns, pc)
			dropped++
		}
	}
	n.dropped.Add(int64(dropped))
	return dropped
}

// Stats returns how many connections the network refused because of a cut,
// and how many live ones it closed (cuts and Drop).
func (n *Network) Stats() (refused, dropped int64) {
	return n.refused.Load(), n.dropped.Load()
}

func (n *Network) notifyLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// link returns l's fault and a channel closed when the faults next change.
func (n *Network) link(l Link) (Fault, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.faults[l], n.changed
}

func (n *Network) cutLocked(a, b Endpoint) bool {
	return n.faults[Link{a, b}].Cut || n.faults[Link{b, a}].Cut
}

func (n *Network) endpointOf(addr net.Addr) Endpoint {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return Client
	}
	if e, ok := n.hosts[tcp.IP.String()]; ok {
		return e
	}
	return Client
}

// Listen starts a proxy on addr that forwards the connections it accepts
// to target, the listener of endpoint to.
func (n *Network) Listen(addr string, to Endpoint, target string) (*Proxy, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{n: n, l: l, to: to, target: target}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		l.Close()
		return nil, errors.New("chaos: network closed")
	}
	n.proxies = append(n.proxies, p)
	n.wg.Add(1)
	n.mu.Unlock()
	go p.serve()
	return p, nil
}

// Close stops every proxy, closes every connection and waits for the
// proxies' goroutines to end.
func (n *Network) Close() {
	n.mu.Lock()
	n.closed = true
	for _, p := range n.proxies {
		p.l.Close()
	}
	for pc := range n.conns {
		pc.close()
	}
	clear(n.conns)
	n.mu.Unlock()
	n.wg.Wait()
}

// A Proxy forwards the connections to one listener of one node.
type Proxy struct {
	n      *Network
	l      net.Listener
	to     Endpoint
	target string
}

// Addr returns the address the proxy listens on.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

func (p *Proxy) serve() {
	defer p.n.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.n.wg.Add(1)
		go p.handle(c)
	}
}

// dialTimeout bounds the proxy's connection to the real listener; a node
// that is down refuses at once.
const dialTimeout = 2 * time.Second

// chunkSize is the most bytes the proxy reads at once.
const chunkSize = 32 << 10

func (p *Proxy) handle(c net.Conn) {
	defer p.n.wg.Done()
	from := p.n.endpointOf(c.RemoteAddr())
	p.n.mu.Lock()
	cut := p.n.cutLocked(from, p.to)
	p.n.mu.Unlock()
	if cut {
		p.n.refused.Add(1)
		c.Close()
		return
	}
	up, err := net.DialTimeout("tcp", p.target, dialTimeout)
	if err != nil {
		c.Close() // as the node itself would: it is down
		return
	}
	pc := &proxyConn{from: from, to: p.to, down: c, up: up, done: make(chan struct{})}
	// Registering and checking for a cut under one lock: a cut set while
	// the proxy dialled closes the connection here or in Set.
	p.n.mu.Lock()
	if p.n.closed || p.n.cutLocked(from, p.to) {
		p.n.mu.Unlock()
		p.n.refused.Add(1)
		pc.close()
		return
	}
	p.n.conns[pc] = struct{}{}
	p.n.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.n.pipe(pc, c, up, Link{from, p.to}) }()
	go func() { defer wg.Done(); p.n.pipe(pc, up, c, Link{p.to, from}) }()
	wg.Wait()
	pc.close()
	p.n.mu.Lock()
	delete(p.n.conns, pc)
	p.n.mu.Unlock()
}

// A proxyConn is a connection from dialer from, accepted by the proxy, and
// the proxy's connection to listener to.
type proxyConn struct {
	from, to Endpoint
	down, up net.Conn
	once     sync.Once
	done     chan struct{}
}

func (pc *proxyConn) close() {
	pc.once.Do(func() {
		close(pc.done)
		pc.down.Close()
		pc.up.Close()
	})
}

// A chunk is data read from one side, and when.
type chunk struct {
	data []byte
	at   time.Time
}

// pipe copies src to dst through link l's fault. A reader goroutine keeps
// reading while delivery waits, so that a delay adds latency without
// lowering throughput, up to a bounded buffer.
func (n *Network) pipe(pc *proxyConn, src, dst net.Conn, l Link) {
	chunks := make(chan chunk, 16)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, chunkSize)
			k, err := src.Read(buf)
			if k > 0 {
				select {
				case chunks <- chunk{buf[:k], time.Now()}:
				case <-pc.done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for ch := range chunks {
		if !n.deliverable(pc, l, ch.at) {
			pc.close()
			break
		}
		if _, err := dst.Write(ch.data); err != nil {
			pc.close()
			break
		}
	}
	for range chunks {
	}
	// src ended its side (or the connection is closed): pass the end on.
	if tcp, ok := dst.(*net.TCPConn); ok {
		tcp.CloseWrite()
	}
}

// deliverable waits until data read at time at may be delivered over l:
// not stalled, and its delay past. It returns false if the connection is
// closed or cut meanwhile.
func (n *Network) deliverable(pc *proxyConn, l Link, at time.Time) bool {
	for {
		f, changed := n.link(l)
		if f.Cut {
			return false
		}
		var timer *time.Timer
		var wait <-chan time.Time // nil while stalled: only a change ends it
		if !f.Stall {
			d := time.Until(at.Add(f.Delay))
			if d <= 0 {
				return true
			}
			timer = time.NewTimer(d)
			wait = timer.C
		}
		select {
		case <-wait:
			return true
		case <-changed: // the fault changed: wait again under the new one
		case <-pc.done:
			return false
		}
		if timer != nil {
			timer.Stop()
		}
	}
}
