package node

import (
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// raftTransport is the node's Raft transport: the network transport, whose
// RPCs it hands to Raft after noting the largest commit index a leader's
// AppendEntries announce (a leader sends one at least every CommitTimeout,
// entries or not). Raft tells a follower only what it holds itself (its
// commit index never passes its own log), so a follower that fell behind
// the leader's log, waiting for a snapshot say, would otherwise look caught
// up (watchReadiness).
type raftTransport struct {
	*raft.NetworkTransport // its methods, RequestPreVote among them
	leaderCommit           atomic.Uint64
	rpcs                   chan raft.RPC
	stop                   chan struct{}
	closeOnce              sync.Once
}

func newRaftTransport(nt *raft.NetworkTransport) *raftTransport {
	t := &raftTransport{NetworkTransport: nt, rpcs: make(chan raft.RPC), stop: make(chan struct{})}
	go t.forward()
	return t
}

// Consumer implements raft.Transport.
func (t *raftTransport) Consumer() <-chan raft.RPC { return t.rpcs }

// forward hands the network transport's RPCs to Raft until Close.
func (t *raftTransport) forward() {
	in := t.NetworkTransport.Consumer()
	for {
		select {
		case rpc := <-in:
			if a, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
				t.noteCommit(a.LeaderCommitIndex)
			}
			select {
			case t.rpcs <- rpc:
			case <-t.stop:
				return // the transport's shutdown answers the caller
			}
		case <-t.stop:
			return
		}
	}
}

func (t *raftTransport) noteCommit(i uint64) {
	for {
		cur := t.leaderCommit.Load()
		if i <= cur || t.leaderCommit.CompareAndSwap(cur, i) {
			return
		}
	}
}

// Close implements raft.WithClose: it stops forwarding and closes the
// network transport. It may be called more than once.
func (t *raftTransport) Close() error {
	t.closeOnce.Do(func() { close(t.stop) })
	return t.NetworkTransport.Close()
}
