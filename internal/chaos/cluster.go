package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/internal/subproc"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// NodeIP returns the loopback address node i binds and dials from.
func NodeIP(i int) string { return fmt.Sprintf("127.0.0.%d", 11+i) }

// ClusterOptions describe a cluster to start.
type ClusterOptions struct {
	// Bin is the chipledger binary.
	Bin string
	// Dir holds the nodes' data directories and log files.
	Dir string
	// Nodes is the number of nodes.
	Nodes int
	// LogKey and Trust are the files of the secret log key and the
	// manufacturer trust bundle.
	LogKey, Trust string
	// WitnessPolicy, if set, is the nodes' witness policy file
	// (--witness-policy), with WitnessInterval.
	WitnessPolicy   string
	WitnessInterval time.Duration
}

// A Cluster is a Raft cluster of `chipledger node` processes bootstrapped
// as a fixed peer set, each reached by its peers and clients through a
// proxy of Net.
type Cluster struct {
	Net   *Network
	Nodes []*Node
	http  *http.Client
}

// A Node is one node process and its addresses.
type Node struct {
	Index int
	ID    string
	// RaftAddr and APIAddr are where the process listens.
	RaftAddr, APIAddr string
	// RaftProxy and APIProxy are where it is reached, through the network,
	// and what it advertises.
	RaftProxy, APIProxy string
	Proc                *subproc.Process

	// ledger and admin reach the node directly, for the harness's own
	// questions, which no fault should touch.
	ledger chipledgerv1connect.LedgerServiceClient
	admin  chipledgerv1connect.AdminServiceClient
}

// Ledger returns a client of the node's API that bypasses the network.
func (n *Node) Ledger() chipledgerv1connect.LedgerServiceClient { return n.ledger }

// StartCluster starts the proxies and the node processes. It does not wait
// for a leader. Close stops everything, also after an error.
func StartCluster(o ClusterOptions) (*Cluster, error) {
	hosts := make(map[string]Endpoint)
	for i := range o.Nodes {
		hosts[NodeIP(i)] = Endpoint(i)
	}
	c := &Cluster{Net: NewNetwork(hosts), http: h2cClient(time.Second)}
	var peers []string
	for i := range o.Nodes {
		n, err := c.layOut(i)
		if err != nil {
			return c, err
		}
		c.Nodes = append(c.Nodes, n)
		peers = append(peers, "--peer", fmt.Sprintf("%s=%s=%s", n.ID, n.RaftProxy, n.APIProxy))
	}
	for _, n := range c.Nodes {
		args := []string{"node", "--id", n.ID, "--data-dir", filepath.Join(o.Dir, n.ID),
			"--raft-addr", n.RaftAddr, "--raft-advertise", n.RaftProxy,
			"--api-addr", n.APIAddr, "--api-advertise", n.APIProxy,
			"--log-key", o.LogKey, "--trust", o.Trust, "--bootstrap", "--insecure"}
		if o.WitnessPolicy != "" {
			args = append(args, "--witness-policy", o.WitnessPolicy, "--witness-interval", o.WitnessInterval.String())
		}
		n.Proc = subproc.NewProcess(n.ID, filepath.Join(o.Dir, n.ID+".log"), o.Bin, append(args, peers...)...)
		if err := n.Proc.Start(); err != nil {
			return c, err
		}
	}
	return c, nil
}

// layOut picks node i's addresses and starts its proxies.
func (c *Cluster) layOut(i int) (*Node, error) {
	ip := NodeIP(i)
	n := &Node{Index: i, ID: Endpoint(i).String()}
	var err error
	if n.RaftAddr, err = freeAddr(ip); err != nil {
		return nil, err
	}
	if n.APIAddr, err = freeAddr(ip); err != nil {
		return nil, err
	}
	raft, err := c.Net.Listen(ip+":0", Endpoint(i), n.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("node %d's Raft proxy (is %s usable? the harness needs Linux's 127.0.0.0/8 loopback): %w", i+1, ip, err)
	}
	api, err := c.Net.Listen(ip+":0", Endpoint(i), n.APIAddr)
	if err != nil {
		return nil, err
	}
	n.RaftProxy, n.APIProxy = raft.Addr(), api.Addr()
	base := "http://" + n.APIAddr
	n.ledger = chipledgerv1connect.NewLedgerServiceClient(c.http, base)
	n.admin = chipledgerv1connect.NewAdminServiceClient(c.http, base)
	return n, nil
}

// freeAddr returns an address on ip for a node process to listen on: a
// port free now, below the ephemeral range, so that the proxies (on ":0")
// cannot be handed it before the node binds it.
func freeAddr(ip string) (string, error) {
	addrs, err := subproc.FreeAddrs(ip, 1)
	if err != nil {
		return "", err
	}
	return addrs[0], nil
}

// h2cClient speaks HTTP/2 without TLS, as the nodes do.
func h2cClient(dialTimeout time.Duration) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	d := &net.Dialer{Timeout: dialTimeout}
	return &http.Client{Transport: &http.Transport{Protocols: &p, DialContext: d.DialContext}}
}

// Close kills every node and stops the network.
func (c *Cluster) Close() {
	for _, n := range c.Nodes {
		if n.Proc != nil {
			n.Proc.Kill()
		}
	}
	c.Net.Close()
	c.http.CloseIdleConnections()
}

// APIProxies returns the nodes' API addresses as clients reach them.
func (c *Cluster) APIProxies() []string {
	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, n.APIProxy)
	}
	return addrs
}

// APIAddrs returns the nodes' API addresses as the processes listen on
// them, bypassing the network.
func (c *Cluster) APIAddrs() []string {
	var addrs []string
	for _, n := range c.Nodes {
		addrs = append(addrs, n.APIAddr)
	}
	return addrs
}

// Running returns the indexes of the nodes whose process runs.
func (c *Cluster) Running() []int {
	var up []int
	for i, n := range c.Nodes {
		if n.Proc.Running() {
			up = append(up, i)
		}
	}
	return up
}

// localStatusHeader asks a node for its own status only, without asking
// its peers.
const localStatusHeader = "Chipledger-Local-Status"

// Leader asks every running node for its status and returns the node that
// reports itself leader with the highest term (a deposed leader cut off
// from the others may not know it yet), or -1.
func (c *Cluster) Leader(ctx context.Context) int {
	type answer struct {
		node int
		term uint64
	}
	var mu sync.Mutex
	best := answer{node: -1}
	var wg sync.WaitGroup
	for _, i := range c.Running() {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			req := connect.NewRequest(&v1.StatusRequest{})
			req.Header().Set(localStatusHeader, "1")
			resp, err := c.Nodes[i].admin.Status(ctx, req)
			if err != nil || resp.Msg.GetRole() != "leader" {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if best.node < 0 || resp.Msg.GetTerm() > best.term {
				best = answer{i, resp.Msg.GetTerm()}
			}
		})
	}
	wg.Wait()
	return best.node
}

// WaitLeader waits until a node reports itself leader, and returns it. It
// fails at once if no node process runs.
func (c *Cluster) WaitLeader(ctx context.Context) (int, error) {
	i, err := poll(ctx, 50*time.Millisecond, func() (int, bool) {
		if len(c.Running()) == 0 {
			return -1, true
		}
		i := c.Leader(ctx)
		return i, i >= 0
	})
	if err == nil && i < 0 {
		err = errors.New("no node process runs")
	}
	return i, err
}

// poll calls cond every interval until it reports done, and returns its
// value; or fails when ctx ends.
func poll[T any](ctx context.Context, interval time.Duration, cond func() (T, bool)) (T, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		v, ok := cond()
		if ok {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-t.C:
		}
	}
}

// A Converged cluster is one whose nodes all serve the same signed
// checkpoint.
type Converged struct {
	Signed     []byte
	Checkpoint proofs.Checkpoint
}

// Converge waits until every node serves the same signed checkpoint, of at
// least minSize leaves, and has served it for quiet: the log has stopped
// growing. If ctx ends first, it reports what each node last served.
func (c *Cluster) Converge(ctx context.Context, minSize uint64, quiet time.Duration, v *proofs.LogVerifier) (Converged, error) {
	var (
		served    = make([][]byte, len(c.Nodes)) // by node, the last checkpoint served
		errs      = make([]error, len(c.Nodes))  // by node, the last error, if the last call failed
		same      []byte
		sameSince time.Time
	)
	res, err := poll(ctx, 100*time.Millisecond, func() (Converged, bool) {
		cps, es := c.checkpoints(ctx)
		for i := range cps {
			if errs[i] = es[i]; errs[i] == nil {
				served[i] = cps[i]
			}
		}
		cp, err := v.VerifyCheckpoint(served[0])
		if errors.Join(es...) != nil || err != nil || cp.Size < minSize {
			same = nil
			return Converged{}, false
		}
		for _, s := range served[1:] {
			if !bytes.Equal(s, served[0]) {
				same = nil
				return Converged{}, false
			}
		}
		if !bytes.Equal(same, served[0]) {
			same, sameSince = served[0], time.Now()
		}
		return Converged{served[0], cp}, time.Since(sameSince) >= quiet
	})
	if err != nil {
		var b strings.Builder
		for i, s := range served {
			fmt.Fprintf(&b, "\n  %s: ", c.Nodes[i].ID)
			if cp, err := v.VerifyCheckpoint(s); err == nil {
				fmt.Fprintf(&b, "size %d, root %x", cp.Size, cp.Hash)
			} else {
				fmt.Fprintf(&b, "no valid checkpoint (%v)", err)
			}
			if errs[i] != nil {
				fmt.Fprintf(&b, "; then: %v", errs[i])
			}
		}
		return res, fmt.Errorf("the nodes did not converge on one checkpoint of at least %d leaves: %w; they last served:%s", minSize, err, b.String())
	}
	return res, nil
}

// checkpoints asks every node, directly, for its signed checkpoint.
func (c *Cluster) checkpoints(ctx context.Context) ([][]byte, []error) {
	cps := make([][]byte, len(c.Nodes))
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			resp, err := n.ledger.GetCheckpoint(ctx, connect.NewRequest(&v1.GetCheckpointRequest{}))
			if err != nil {
				errs[i] = err
				return
			}
			cps[i] = resp.Msg.GetCheckpoint()
		})
	}
	wg.Wait()
	return cps, errs
}
