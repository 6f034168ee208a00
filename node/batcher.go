package node

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// The batcher coalesces concurrent appends on the leader into Raft entries.
// There is no timer: a batch is proposed as soon as no other batch is in
// flight, so an idle log commits a lone append after one Raft round trip,
// and under load the next batch fills while the previous one commits. A
// batch that reaches the size cap is proposed at once, up to maxInFlight
// batches in flight, so that throughput rises with concurrency.
//
// One wait is allowed: when nothing is in flight, the batcher also waits
// for the appends whose checks (signatures, certificate chains) are under
// way, since they will be queued within a check's time, rather than
// propose the few already queued and leave the rest for another Raft round
// and another fsync on every node. It waits until no check is under way,
// or until maxLeaves checks have ended since it began to wait (checks that
// keep beginning, a flood of bad appends say, cannot hold a batch back
// longer than that: about 4 ms on two saturated cores). On a single node
// at 256 clients this doubles the batch size (from about 5 to about 9)
// and raises throughput by about a tenth; a lone append has nothing to
// wait for.
type batcher struct {
	raft        *raft.Raft
	queue       chan *pending
	maxLeaves   int
	maxBytes    int
	maxInFlight int
	timeout     time.Duration
	metrics     *metrics
	stopped     <-chan struct{} // closed when the node stops: enqueue refuses
	exited      chan struct{}   // closed when run returns, having answered what it drained
	checks      checks
	// faulted returns a channel closed while the state machine cannot
	// write its store: appends waiting then give up (their batch may
	// still commit, through another node; a retry is a duplicate).
	faulted func() (<-chan struct{}, error)
}

// pending is one append waiting for its batch.
type pending struct {
	leaf []byte
	done chan batchOutcome // buffered, receives exactly once
}

// batchOutcome is the result of a pending append: the leaf's result and the
// checkpoint of its batch, or an error for the whole batch.
type batchOutcome struct {
	leaf       leafResult
	checkpoint *Checkpoint
	err        error
}

// errQueueFull is returned when the leader has more appends queued than it
// accepts; the client should retry later.
var errQueueFull = errors.New("too many appends in flight")

// queueFullRetry is the pause an append refused for load is told to wait:
// a few batches' time.
const queueFullRetry = 100 * time.Millisecond

func newBatcher(r *raft.Raft, m *metrics, stopped <-chan struct{}) *batcher {
	return &batcher{
		raft:        r,
		queue:       make(chan *pending, 1<<14),
		maxLeaves:   64,
		maxBytes:    4 << 20,
		maxInFlight: 4,
		timeout:     10 * time.Second,
		metrics:     m,
		stopped:     stopped,
		exited:      make(chan struct{}),
		checks:      checks{nudge: make(chan struct{}, 1)},
	}
}

// enqueue queues a leaf for the next batch; wait then waits for its
// outcome.
func (b *batcher) enqueue(leaf []byte) (*pending, error) {
	p := &pending{leaf: leaf, done: make(chan batchOutcome, 1)}
	select {
	case <-b.stopped:
		return nil, ErrShuttingDown
	default:
	}
	select {
	case b.queue <- p:
	default:
		return nil, &retryAfterError{err: errQueueFull, after: queueFullRetry}
	}
	b.metrics.inFlight.Inc()
	return p, nil
}

// wait waits for the outcome of a queued leaf.
func (b *batcher) wait(ctx context.Context, p *pending) (batchOutcome, error) {
	defer b.metrics.inFlight.Dec()
	var faulted <-chan struct{}
	if b.faulted != nil {
		faulted, _ = b.faulted()
	}
	select {
	case o := <-p.done:
		return o, nil
	case <-faulted:
		_, err := b.faulted()
		if err == nil {
			// The store recovered between the signal and this read.
			err = fmt.Errorf("%w: it failed while this append waited (and has recovered: retry)", ErrStoreFault)
		}
		return batchOutcome{}, err
	case <-b.exited:
		// run answered every append it drained from the queue; one queued
		// after its last drain (enqueue checks stopped, then queues) has
		// no one left to answer it.
		select {
		case o := <-p.done:
			return o, nil
		default:
			return batchOutcome{}, ErrShuttingDown
		}
	case <-ctx.Done():
		// The batch may still commit; a retry is answered as a duplicate.
		return batchOutcome{}, ctx.Err()
	}
}

// run proposes batches until ctx is done.
func (b *batcher) run(ctx context.Context) {
	defer close(b.exited)
	var waiting []*pending
	var bytes int
	inFlight := 0
	// While idle with appends waiting: the count of ended checks at which
	// to stop waiting for checks under way.
	var mark uint64
	marked := false
	finished := make(chan struct{}, b.maxInFlight)
	for {
		var in chan *pending
		if len(waiting) < 4*b.maxLeaves {
			in = b.queue // stop taking appends while many are waiting
		}
		select {
		case p := <-in:
			waiting = append(waiting, p)
			bytes += len(p.leaf)
		case <-finished:
			inFlight--
		case <-b.checks.nudge:
		case <-ctx.Done():
			for _, p := range waiting {
				p.done <- batchOutcome{err: ErrShuttingDown}
			}
			for range inFlight {
				<-finished
			}
			// Appends queued after this point find no batcher; fail the
			// ones already queued now rather than at their deadline.
			for {
				select {
				case p := <-b.queue:
					p.done <- batchOutcome{err: ErrShuttingDown}
				default:
					return
				}
			}
		}
		// Take whatever else is queued right now.
	drain:
		for len(waiting) < 4*b.maxLeaves {
			select {
			case p := <-b.queue:
				waiting = append(waiting, p)
				bytes += len(p.leaf)
			default:
				break drain
			}
		}
		for len(waiting) > 0 {
			if b.full(waiting, bytes) {
				if inFlight >= b.maxInFlight {
					break
				}
			} else {
				if inFlight > 0 {
					break
				}
				if !marked {
					mark, marked = b.checks.mark(b.maxLeaves), true
				}
				if !b.checks.reached(mark) {
					break
				}
			}
			marked = false
			n, nb := b.cut(waiting)
			batch := waiting[:n:n]
			waiting = waiting[n:]
			bytes -= nb
			inFlight++
			go b.propose(batch, finished)
		}
	}
}

// full reports whether the waiting appends fill a batch.
func (b *batcher) full(waiting []*pending, bytes int) bool {
	return len(waiting) >= b.maxLeaves || bytes >= b.maxBytes
}

// cut returns how many waiting appends go into the next batch, and their
// bytes.
func (b *batcher) cut(waiting []*pending) (n, bytes int) {
	for n < len(waiting) && n < b.maxLeaves {
		if n > 0 && bytes+len(waiting[n].leaf) > b.maxBytes {
			break
		}
		bytes += len(waiting[n].leaf)
		n++
	}
	return n, bytes
}

// propose replicates one batch and hands each append its outcome.
func (b *batcher) propose(batch []*pending, finished chan<- struct{}) {
	defer func() { finished <- struct{}{} }()
	leaves := make([][]byte, len(batch))
	for i, p := range batch {
		leaves[i] = p.leaf
	}
	fail := func(err error) {
		for _, p := range batch {
			p.done <- batchOutcome{err: err}
		}
	}
	data, err := encodeBatch(leaves)
	if err != nil {
		fail(err)
		return
	}
	f := b.raft.Apply(data, b.timeout)
	if err := f.Error(); err != nil {
		fail(err)
		return
	}
	if err, ok := f.Response().(error); ok {
		fail(err) // not applied: a store fault, or a malformed entry
		return
	}
	res, ok := f.Response().(*applyResult)
	if !ok || len(res.results) != len(batch) {
		fail(fmt.Errorf("state machine returned %T for a batch of %d", f.Response(), len(batch)))
		return
	}
	for i, p := range batch {
		p.done <- batchOutcome{leaf: res.results[i], checkpoint: res.checkpoint}
	}
}

// checks counts the appends whose checks are under way, from the start
// of their checks until they are queued or refused, so that an idle
// batcher can wait for them.
type checks struct {
	running atomic.Int64
	ended   atomic.Uint64
	nudge   chan struct{} // signalled as checks end; wakes the batcher
}

// start counts an append whose checks begin; end, which must follow (by
// defer), uncounts it once it is queued or refused.
func (c *checks) start() { c.running.Add(1) }

func (c *checks) end() {
	c.ended.Add(1)
	c.running.Add(-1)
	select {
	case c.nudge <- struct{}{}:
	default:
	}
}

// mark returns the count of ended checks at which n more will have ended.
func (c *checks) mark(n int) uint64 { return c.ended.Load() + uint64(n) }

// reached reports whether no check is under way or the ended checks have
// reached mark.
func (c *checks) reached(mark uint64) bool {
	return c.running.Load() == 0 || c.ended.Load() >= mark
}
