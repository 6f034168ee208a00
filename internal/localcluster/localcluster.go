// Package localcluster runs a chipledger cluster inside one process, on
// loopback TCP, for the demo, the benchmarks and tests.
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/node"
	"github.com/chipledger/chipledger/proofs"
)

// Options configure a local cluster.
type Options struct {
	// Nodes is the number of nodes (default 3).
	Nodes int
	// Dir holds one data directory per node.
	Dir string
	// Signer and Trust are the log key and the manufacturer trust.
	Signer *ledger.LogSigner
	Trust  *ledger.Trust
	// Logger receives the nodes' logs; nil discards them.
	Logger *slog.Logger
	// Raft tunes Raft, as node.Config.Raft.
	Raft func(*raft.Config)
	// Witnesses and WitnessInterval are the witness policy and interval of
	// every node (node.Config); nil runs without witnesses.
	Witnesses       *proofs.WitnessPolicy
	WitnessInterval time.Duration
}

// Cluster is a running local cluster.
type Cluster struct {
	Nodes []*node.Node
}

// Start starts the nodes: the first bootstraps, the others join it. It
// returns when every node has joined and a leader is elected.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.Nodes <= 0 {
		o.Nodes = 3
	}
	c := &Cluster{}
	for i := range o.Nodes {
		cfg := node.Config{
			ID:       fmt.Sprintf("node%d", i+1),
			DataDir:  filepath.Join(o.Dir, fmt.Sprintf("node%d", i+1)),
			RaftAddr: "127.0.0.1:0",
			APIAddr:  "127.0.0.1:0",
			Signer:   o.Signer,
			Trust:    o.Trust,
			Logger:   o.Logger,
			Raft:     o.Raft,

			Witnesses:       o.Witnesses,
			WitnessInterval: o.WitnessInterval,
		}
		if i == 0 {
			cfg.Bootstrap = true
		} else {
			cfg.Join = []string{c.Nodes[0].APIAddr()}
		}
		n, err := node.New(cfg)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("start %s: %w", cfg.ID, err)
		}
		c.Nodes = append(c.Nodes, n)
		if i == 0 {
			if _, err := c.WaitLeader(ctx); err != nil {
				c.Close()
				return nil, err
			}
		}
	}
	return c, nil
}

// WaitLeader waits until a node is leader and returns it.
func (c *Cluster) WaitLeader(ctx context.Context) (*node.Node, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		for _, n := range c.Nodes {
			if n.IsLeader() {
				return n, nil
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for a leader: %w", ctx.Err())
		}
	}
}

// Addrs returns the nodes' API addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.APIAddr()
	}
	return out
}

// Close stops every node.
func (c *Cluster) Close() error {
	var errs []error
	for _, n := range c.Nodes {
		errs = append(errs, n.Close())
	}
	return errors.Join(errs...)
}
