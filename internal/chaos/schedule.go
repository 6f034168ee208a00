package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// An Action is a kind of fault, or its repair.
type Action int

const (
	// Kill sends SIGKILL to a node; a later Restart step starts it again.
	Kill Action = iota
	// Restart restarts the node a Kill step killed.
	Restart
	// PartitionLeader cuts or stalls every link between the leader (and
	// perhaps one follower) and the other nodes, both ways.
	PartitionLeader
	// Isolate cuts or stalls every link between one node and the others,
	// and perhaps the clients.
	Isolate
	// Delay delays some links.
	Delay
	// DropConns closes live connections.
	DropConns
	// Heal lifts every network fault.
	Heal
)

var actionNames = [...]string{"kill", "restart", "partition-leader", "isolate", "delay", "drop-conns", "heal"}

func (a Action) String() string { return actionNames[a] }

// A Target chooses a node when a step runs, since which node leads is
// known only then: the leader if Leader and there is one, else the Pick-th
// (modulo their number) of the nodes that run.
type Target struct {
	Leader bool
	Pick   int
}

func (t Target) String() string {
	if t.Leader {
		return fmt.Sprintf("the leader (else running #%d)", t.Pick)
	}
	return fmt.Sprintf("running #%d", t.Pick)
}

// A LinkDelay delays the data from node A to node B, and from B to A if
// Both.
type LinkDelay struct {
	A, B  int
	Both  bool
	Delay time.Duration
}

// A Step is one fault, or repair, of a plan.
type Step struct {
	// At is when it happens, from the start of the fault phase.
	At     time.Duration
	Action Action
	// Target is the node a Kill, PartitionLeader or Isolate step hits.
	Target Target
	// Kill numbers a Kill step, from 1; a Restart step undoes that one.
	Kill int
	// Stall makes a partition or isolation hold the data rather than cut
	// the connections.
	Stall bool
	// Buddy, if not -1, puts one more node on the leader's side of a
	// partition: the Buddy-th (modulo their number) of the others.
	Buddy int
	// Clients makes an isolation cut the clients off the node too.
	Clients bool
	// Delays are the delayed links of a Delay step; int(Client) stands for
	// the clients.
	Delays []LinkDelay
	// Nodes scopes a DropConns step: every connection if empty, a node's
	// (clients' included) if one, a pair's if two.
	Nodes []int
}

func (s Step) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%7.2fs %s", s.At.Seconds(), s.Action)
	mode := "cut"
	if s.Stall {
		mode = "stall"
	}
	switch s.Action {
	case Kill:
		fmt.Fprintf(&b, " #%d: %s", s.Kill, s.Target)
	case Restart:
		fmt.Fprintf(&b, " the node of kill #%d", s.Kill)
	case PartitionLeader:
		fmt.Fprintf(&b, " (%s): %s", mode, s.Target)
		if s.Buddy >= 0 {
			fmt.Fprintf(&b, " with follower #%d", s.Buddy)
		}
	case Isolate:
		fmt.Fprintf(&b, " (%s): %s", mode, s.Target)
		if s.Clients {
			b.WriteString(", clients too")
		}
	case Delay:
		for _, d := range s.Delays {
			arrow := "→"
			if d.Both {
				arrow = "↔"
			}
			fmt.Fprintf(&b, " %s%s%s %s", Endpoint(d.A), arrow, Endpoint(d.B), d.Delay)
		}
	case DropConns:
		switch len(s.Nodes) {
		case 0:
			b.WriteString(" all")
		case 1:
			fmt.Fprintf(&b, " of %s", Endpoint(s.Nodes[0]))
		default:
			fmt.Fprintf(&b, " between %s and %s", Endpoint(s.Nodes[0]), Endpoint(s.Nodes[1]))
		}
	}
	return b.String()
}

// Pacing of a plan.
const (
	// firstFault leaves the cluster a moment of calm to start appending.
	firstFault = 2 * time.Second
	// minGap and maxGap bound the time between two steps.
	minGap, maxGap = time.Second, 4 * time.Second
	// minDown and maxDown bound how long a killed node stays down.
	minDown, maxDown = time.Second, 8 * time.Second
)

// actionWeights says how often Plan draws each action; Restart steps
// follow kills.
var actionWeights = []struct {
	a Action
	w int
}{{Kill, 3}, {PartitionLeader, 2}, {Isolate, 2}, {Delay, 2}, {DropConns, 2}, {Heal, 1}}

// Plan draws the faults of a run of duration d on a cluster of the given
// number of nodes from seed: the same seed gives the same plan. Network
// faults replace one another (each partition, isolation or set of delays
// starts from a healed network); kills overlap, but never leave fewer
// than a majority of nodes running. Killed nodes still down at d, and
// network faults still in force, are left for the caller to repair.
func Plan(seed int64, d time.Duration, nodes int) []Step {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x63686170736c6564))
	maxKilled := (nodes - 1) / 2
	type restart struct {
		at   time.Duration
		kill int
	}
	var (
		steps    []Step
		restarts []restart
		kills    int
	)
	restartsDue := func(t time.Duration) {
		slices.SortFunc(restarts, func(a, b restart) int { return int(a.at - b.at) })
		for len(restarts) > 0 && restarts[0].at <= t {
			steps = append(steps, Step{At: restarts[0].at, Action: Restart, Kill: restarts[0].kill})
			restarts = restarts[1:]
		}
	}
	for t := firstFault; t < d; t += between(rng, minGap, maxGap) {
		restartsDue(t)
		s := Step{At: t, Action: drawAction(rng, len(restarts) < maxKilled), Buddy: -1}
		switch s.Action {
		case Kill:
			kills++
			s.Kill = kills
			s.Target = Target{Leader: rng.IntN(10) < 6, Pick: rng.IntN(nodes)}
			restarts = append(restarts, restart{t + between(rng, minDown, maxDown), kills})
		case PartitionLeader:
			s.Target = Target{Leader: true, Pick: rng.IntN(nodes)}
			s.Stall = rng.IntN(2) == 0
			if nodes > 3 && rng.IntN(10) < 3 {
				s.Buddy = rng.IntN(nodes - 1)
			}
		case Isolate:
			s.Target = Target{Leader: rng.IntN(10) < 3, Pick: rng.IntN(nodes)}
			s.Stall = rng.IntN(2) == 0
			s.Clients = rng.IntN(10) < 3
		case Delay:
			s.Delays = drawDelays(rng, nodes)
		case DropConns:
			switch rng.IntN(3) {
			case 0:
			case 1:
				s.Nodes = []int{rng.IntN(nodes)}
			case 2:
				a, b := drawPair(rng, nodes)
				s.Nodes = []int{a, b}
			}
		}
		steps = append(steps, s)
	}
	restartsDue(d)
	return steps
}

// drawAction draws an action by actionWeights, Kill only if mayKill.
func drawAction(rng *rand.Rand, mayKill bool) Action {
	total := 0
	for _, aw := range actionWeights {
		if aw.a != Kill || mayKill {
			total += aw.w
		}
	}
	n := rng.IntN(total)
	for _, aw := range actionWeights {
		if aw.a == Kill && !mayKill {
			continue
		}
		if n < aw.w {
			return aw.a
		}
		n -= aw.w
	}
	panic("unreachable")
}

// drawDelays draws a slow node (every link to and from it delayed), a node
// slow to answer clients (long enough for a client to give up on an append
// that commits), or one to four delayed pairs of nodes.
func drawDelays(rng *rand.Rand, nodes int) []LinkDelay {
	var ds []LinkDelay
	switch rng.IntN(3) {
	case 0:
		return []LinkDelay{{A: int(Client), B: rng.IntN(nodes), Both: true, Delay: between(rng, 200*time.Millisecond, 2*time.Second)}}
	case 1:
		slow := rng.IntN(nodes)
		delay := between(rng, 20*time.Millisecond, 400*time.Millisecond)
		for other := range nodes {
			if other != slow {
				ds = append(ds, LinkDelay{A: slow, B: other, Both: true, Delay: delay})
			}
		}
		return ds
	}
	for range 1 + rng.IntN(4) {
		a, b := drawPair(rng, nodes)
		d := LinkDelay{A: a, B: b, Both: rng.IntN(2) == 0, Delay: between(rng, 5*time.Millisecond, 300*time.Millisecond)}
		if !slices.ContainsFunc(ds, func(o LinkDelay) bool { return (o.A == a && o.B == b) || (o.A == b && o.B == a) }) {
			ds = append(ds, d)
		}
	}
	return ds
}

func drawPair(rng *rand.Rand, nodes int) (int, int) {
	a := rng.IntN(nodes)
	b := (a + 1 + rng.IntN(nodes-1)) % nodes
	return a, b
}

// between draws a duration in [lo, hi), in milliseconds.
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	ms := int64((hi - lo) / time.Millisecond)
	return lo + time.Duration(rng.Int64N(ms))*time.Millisecond
}
