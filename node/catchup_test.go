package node

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestLastCommandSkipsEntriesTheStateMachineNeverSees: the catch-up gate
// waits for the state machine to apply the last command entry, not the
// log's last entry, which may be a no-op or a configuration change that
// never reaches it (and would keep an idle node from ever serving reads).
func TestLastCommandSkipsEntriesTheStateMachineNeverSees(t *testing.T) {
	logs := raft.NewInmemStore()
	entries := []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogConfiguration},
		{Index: 2, Term: 1, Type: raft.LogCommand},
		{Index: 3, Term: 1, Type: raft.LogCommand},
		{Index: 4, Term: 2, Type: raft.LogNoop},
		{Index: 5, Term: 2, Type: raft.LogConfiguration},
	}
	if err := logs.StoreLogs(entries); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		i, floor, want uint64
	}{
		{i: 5, floor: 0, want: 3},
		{i: 3, floor: 0, want: 3},
		{i: 2, floor: 0, want: 2},
		{i: 1, floor: 0, want: 0}, // no command at all
		{i: 5, floor: 3, want: 0}, // the state machine has it already
		{i: 5, floor: 2, want: 3},
		{i: 9, floor: 0, want: 0}, // past the log: not in it, as if compacted
	} {
		if got, err := lastCommand(logs, tc.i, tc.floor); err != nil || got != tc.want {
			t.Errorf("lastCommand(%d, floor %d) = %d, %v, want %d", tc.i, tc.floor, got, err, tc.want)
		}
	}
	// Compacted into a snapshot: the state machine holds what is gone.
	if err := logs.DeleteRange(1, 3); err != nil {
		t.Fatal(err)
	}
	if got, err := lastCommand(logs, 5, 0); err != nil || got != 0 {
		t.Errorf("after compaction lastCommand(5) = %d, %v, want 0", got, err)
	}
	if got, want := termAt(logs, 4), uint64(2); got != want {
		t.Errorf("termAt(4) = %d, want %d", got, want)
	}
	if got := termAt(logs, 2); got != 0 {
		t.Errorf("termAt(2) of a compacted entry = %d, want 0", got)
	}
}

// TestRestartedNodeGatesReadsOnItsStateMachine restarts a node and checks
// that it opens its read gate, and only once its state machine holds the
// last command of the log it started with, so that it serves at least the
// checkpoint it served before. The crash case (a store behind its Raft log)
// is the chaos suite's; the tests around this one pin down its pieces.
func TestRestartedNodeGatesReadsOnItsStateMachine(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	n := c.nodes[c.waitLeader()]
	c.registerStation()
	c.appendEscrow(0, 0, 20)
	before := n.fsm.checkpoint().Size
	c.stop(0)
	c.restart(0)
	n = c.nodes[0]
	waitFor(t, "the restarted node to serve reads", 10*time.Second, n.caughtUp.Load)
	if got := n.fsm.checkpoint().Size; got < before {
		t.Fatalf("caught up at checkpoint size %d, below the %d served before the restart", got, before)
	}
	last, err := lastCommand(n.fsm.logs, n.startLastIndex, 0)
	if err != nil {
		t.Fatal(err)
	}
	if applied := n.fsm.applied.Load(); applied < last {
		t.Fatalf("caught up with the state machine at Raft index %d, the log's last command is at %d", applied, last)
	}
}

// TestStateMachineProgressCountsOnlyAppliedEntries: fsm.applied, which the
// catch-up gate reads, moves only once an entry's effect is in the state
// machine. (Raft's own AppliedIndex moves as soon as an entry is queued
// for it, which let a restarted node serve reads, and a smaller checkpoint
// than before, while the state machine was still replaying.)
func TestStateMachineProgressCountsOnlyAppliedEntries(t *testing.T) {
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := testLogKey(t)
	writing := make(chan struct{})
	release := make(chan struct{})
	hook := func(op string) error {
		if op == "write" {
			close(writing)
			<-release
		}
		return nil
	}
	f, err := newFSM(t.TempDir(), signer, true, hook, testLogger(t), newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	data, err := encodeBatch([][]byte{pki.StationLeaf()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan any, 1)
	go func() { done <- f.Apply(&raft.Log{Index: 7, Term: 1, Type: raft.LogCommand, Data: data}) }()
	<-writing
	if got := f.applied.Load(); got != 0 {
		t.Errorf("applied = %d while the entry is still being written, want 0", got)
	}
	close(release)
	if res, ok := (<-done).(*applyResult); !ok || len(res.results) != 1 || res.results[0].Err != nil {
		t.Fatalf("apply: %+v", res)
	}
	if got := f.applied.Load(); got != 7 {
		t.Errorf("applied = %d after the entry was applied, want 7", got)
	}
}

// brokenLogs is a Raft log whose reads fail, as on a failing disk.
type brokenLogs struct{ raft.LogStore }

func (brokenLogs) GetLog(uint64, *raft.Log) error { return errors.New("input/output error") }

// TestLastCommandOnAnUnreadableLogWaits: if the log cannot be read, the
// gate waits for the state machine to pass the index itself (and says
// why), rather than open on a guess.
func TestLastCommandOnAnUnreadableLogWaits(t *testing.T) {
	got, err := lastCommand(brokenLogs{raft.NewInmemStore()}, 9, 2)
	if err == nil || got != 9 {
		t.Fatalf("lastCommand on an unreadable log = %d, %v; want 9 and an error", got, err)
	}
}
