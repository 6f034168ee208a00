package chaos

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// An Injector carries out a plan's steps on a cluster and counts them.
type Injector struct {
	c         *Cluster
	snapshots *Snapshots
	logf      func(format string, args ...any)

	mu     sync.Mutex
	killed map[int]int    // node by Kill step number, until restarted
	counts map[string]int // steps carried out, by kind
}

// NewInjector returns an injector for c that reports each step to logf,
// and records in snapshots the checkpoint of each node it kills, right
// before the kill.
func NewInjector(c *Cluster, snapshots *Snapshots, logf func(format string, args ...any)) *Injector {
	return &Injector{c: c, snapshots: snapshots, logf: logf, killed: make(map[int]int), counts: make(map[string]int)}
}

// Run carries out the steps at their times from now, and returns at end
// (from now), leaving the faults then in force, or when ctx ends.
func (in *Injector) Run(ctx context.Context, plan []Step, end time.Duration) error {
	start := time.Now()
	for _, s := range plan {
		if err := pause(ctx, start.Add(s.At)); err != nil {
			return err
		}
		if err := in.Apply(ctx, s); err != nil {
			return err
		}
	}
	return pause(ctx, start.Add(end))
}

// pause waits until t. It paces the plan, and is no synchronisation: faults
// happen at their times whatever the cluster does.
func pause(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// Apply carries out one step.
func (in *Injector) Apply(ctx context.Context, s Step) error {
	what, err := in.apply(ctx, s)
	if err != nil {
		return fmt.Errorf("step %s: %w", s, err)
	}
	if what == "" {
		in.logf("fault %s: skipped", s)
		return nil
	}
	in.count(s.Action.String())
	in.logf("fault %s: %s", s, what)
	return nil
}

func (in *Injector) count(kind string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.counts[kind]++
}

// Counts returns how many steps of each kind were carried out; "kill"
// counts every kill and "kill:leader" those that hit the leader.
func (in *Injector) Counts() map[string]int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return maps.Clone(in.counts)
}

// FormatCounts formats counts sorted by kind.
func FormatCounts(counts map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
	}
	return strings.Join(parts, " ")
}

// apply carries out s and says what it did, or "" if there was nothing to
// do it to.
func (in *Injector) apply(ctx context.Context, s Step) (string, error) {
	net := in.c.Net
	switch s.Action {
	case Kill:
		i, role := in.resolve(ctx, s.Target)
		if i < 0 {
			return "", nil
		}
		in.snapshots.Take(ctx, in.c, i)
		in.c.Nodes[i].Proc.Kill()
		in.mu.Lock()
		in.killed[s.Kill] = i
		if role == "leader" {
			in.counts["kill:leader"]++
		}
		in.mu.Unlock()
		return fmt.Sprintf("SIGKILLed %s (%s)", Endpoint(i), role), nil
	case Restart:
		in.mu.Lock()
		i, ok := in.killed[s.Kill]
		delete(in.killed, s.Kill)
		in.mu.Unlock()
		if !ok {
			return "", nil
		}
		return fmt.Sprintf("restarted %s", Endpoint(i)), in.c.Nodes[i].Proc.Start()
	case PartitionLeader:
		leader, role := in.resolve(ctx, s.Target)
		if leader < 0 {
			return "", nil
		}
		side := []int{leader}
		if s.Buddy >= 0 {
			others := slices.DeleteFunc(in.all(), func(i int) bool { return i == leader })
			side = append(side, others[s.Buddy%len(others)])
		}
		net.Heal()
		in.split(side, Fault{Cut: !s.Stall, Stall: s.Stall})
		return fmt.Sprintf("cut off %s from the others (%s: %s)", endpoints(side), Endpoint(leader), role), nil
	case Isolate:
		i, role := in.resolve(ctx, s.Target)
		if i < 0 {
			return "", nil
		}
		f := Fault{Cut: !s.Stall, Stall: s.Stall}
		net.Heal()
		in.split([]int{i}, f)
		if s.Clients {
			net.Set(Link{Client, Endpoint(i)}, f)
			net.Set(Link{Endpoint(i), Client}, f)
		}
		return fmt.Sprintf("isolated %s (%s)", Endpoint(i), role), nil
	case Delay:
		net.Heal()
		for _, d := range s.Delays {
			net.Set(Link{Endpoint(d.A), Endpoint(d.B)}, Fault{Delay: d.Delay})
			if d.Both {
				net.Set(Link{Endpoint(d.B), Endpoint(d.A)}, Fault{Delay: d.Delay})
			}
		}
		return "delayed", nil
	case DropConns:
		var match func(a, b Endpoint) bool
		switch len(s.Nodes) {
		case 0:
			match = func(a, b Endpoint) bool { return true }
		case 1:
			n := Endpoint(s.Nodes[0])
			match = func(a, b Endpoint) bool { return a == n || b == n }
		default:
			x, y := Endpoint(s.Nodes[0]), Endpoint(s.Nodes[1])
			match = func(a, b Endpoint) bool { return (a == x && b == y) || (a == y && b == x) }
		}
		return fmt.Sprintf("closed %d connections", net.Drop(match)), nil
	case Heal:
		net.Heal()
		return "healed the network", nil
	}
	return "", fmt.Errorf("unknown action %d", s.Action)
}

// resolve finds the node t names now, and says whether it is the leader.
func (in *Injector) resolve(ctx context.Context, t Target) (int, string) {
	if t.Leader {
		if i := in.c.Leader(ctx); i >= 0 {
			return i, "leader"
		}
	}
	up := in.c.Running()
	if len(up) == 0 {
		return -1, ""
	}
	i := up[t.Pick%len(up)]
	if t.Leader {
		return i, "no leader found; a running node"
	}
	return i, "running"
}

// split applies f to every link, both ways, between the nodes of side and
// the others.
func (in *Injector) split(side []int, f Fault) {
	for _, a := range side {
		for _, b := range in.all() {
			if slices.Contains(side, b) {
				continue
			}
			in.c.Net.Set(Link{Endpoint(a), Endpoint(b)}, f)
			in.c.Net.Set(Link{Endpoint(b), Endpoint(a)}, f)
		}
	}
}

func (in *Injector) all() []int {
	var all []int
	for i := range in.c.Nodes {
		all = append(all, i)
	}
	return all
}

func endpoints(nodes []int) string {
	var names []string
	for _, i := range nodes {
		names = append(names, Endpoint(i).String())
	}
	return strings.Join(names, ",")
}

// Finish repairs everything: it heals the network and restarts every node
// that is down.
func (in *Injector) Finish() error {
	in.c.Net.Heal()
	in.mu.Lock()
	clear(in.killed)
	in.mu.Unlock()
	for _, n := range in.c.Nodes {
		if !n.Proc.Running() {
			if err := n.Proc.Start(); err != nil {
				return err
			}
			in.logf("restarted %s to finish", n.ID)
		}
	}
	return nil
}
