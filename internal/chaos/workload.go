package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
)

// An Outcome is what became of an append, as its client knows it.
type Outcome int

const (
	// Unsent appends were never tried.
	Unsent Outcome = iota
	// Acked appends returned a verified receipt.
	Acked
	// Refused appends failed with a verdict on the entry (INVALID_ARGUMENT,
	// FAILED_PRECONDITION, ALREADY_EXISTS): they must not be in the log.
	Refused
	// Ambiguous appends failed otherwise (timed out, no node available):
	// they may or may not be in the log.
	Ambiguous
)

// An Attempt is what became of a chip's append, after one call or more.
type Attempt struct {
	Outcome Outcome
	// Index is the index an acknowledged append's receipt gives.
	Index uint64
	// Duplicate says the log answered that it already held the leaf: an
	// earlier call, or an earlier attempt of the same call whose answer
	// was lost, committed it.
	Duplicate bool
	// Calls counts the Append calls made: an ambiguous append is sent
	// again later, as a station would, up to maxCalls times in all.
	Calls int
	// Err is why the last call failed.
	Err error
	// Verification says a call failed because the client SDK refused a
	// node's answer (a fork, a rollback, a bad proof): a node misbehaved.
	// Err is that error.
	Verification bool
}

// maxCalls bounds the Append calls for one chip.
const maxCalls = 3

// resubmitAfter is how long an ambiguous append waits to be sent again.
const resubmitAfter = 2 * time.Second

// A Workload is the appends of a run: one escrow entry for each of a set
// of chips, made beforehand, and what became of each.
type Workload struct {
	Chips  []ledger.ChipID
	Leaves [][]byte

	acked, failed atomic.Int64 // calls, for progress reports

	mu          sync.Mutex
	next        int       // the next chip never sent
	attempts    []Attempt // by chip
	resubmit    []resubmission
	checkpoints map[string]struct{} // signed checkpoints the clients verified
	reads       ReadTally
}

// A resubmission is an ambiguous append to send again, not before after.
type resubmission struct {
	chip  int
	after time.Time
}

// readEvery is how often a client reads back what it appended: after every
// readEvery-th acknowledged append.
const readEvery = 10

// A ReadTally counts the read-backs: a client that has a receipt looks its
// chip up and must find exactly that entry, from whichever node answers.
type ReadTally struct {
	OK int
	// Unavailable counts lookups that failed without a verdict (no node
	// answered in time): they check nothing.
	Unavailable int
	// Wrong are the lookups that found something else, or that the SDK
	// refused (a fork, a rollback, a bad proof).
	Wrong []error
}

// NewWorkload makes n escrow entries (epoch 1 of chips 0 … n-1) in
// parallel.
func NewWorkload(pki *testpki.PKI, n int) (*Workload, error) {
	w := &Workload{
		Chips:       make([]ledger.ChipID, n),
		Leaves:      make([][]byte, n),
		attempts:    make([]Attempt, n),
		checkpoints: make(map[string]struct{}),
	}
	var next atomic.Int64
	errs := make([]error, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for g := range errs {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				w.Chips[i] = testpki.ChipID(uint64(i))
				if w.Leaves[i], errs[g] = pki.EscrowLeaf(w.Chips[i], 1, 0); errs[g] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return w, errors.Join(errs...)
}

// appendTimeout bounds one Append call, retries included; the client's
// retry policy ends it sooner.
const appendTimeout = 60 * time.Second

// PatientRetry rides out a partition or a leader's death: short attempts,
// so that an append stuck at a node cut off from the others moves on, for
// long enough that an append almost never ends ambiguous.
var PatientRetry = client.RetryPolicy{
	MaxAttempts:    40,
	MaxElapsed:     20 * time.Second,
	AttemptTimeout: 5 * time.Second,
	InitialBackoff: 50 * time.Millisecond,
	MaxBackoff:     time.Second,
}

// ImpatientRetry gives up within a few seconds, so that faults leave
// ambiguous appends, some of them committed, which are sent again later.
var ImpatientRetry = client.RetryPolicy{
	MaxAttempts:    4,
	MaxElapsed:     3 * time.Second,
	AttemptTimeout: 1500 * time.Millisecond,
	InitialBackoff: 50 * time.Millisecond,
	MaxBackoff:     500 * time.Millisecond,
}

// Run appends from one goroutine per client, together at most rate Append
// calls a second, until stop is closed or the entries run out: first the
// ambiguous appends due to be sent again, then new ones. Calls in flight
// when stop closes run to their end. It returns when all have ended.
func (w *Workload) Run(clients []*client.Client, rate float64, stop <-chan struct{}) {
	tokens := make(chan struct{})
	go pace(rate, tokens, stop)
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-tokens:
				}
				i, ok := w.take()
				if !ok {
					return
				}
				a := w.finish(i, w.call(c, w.Leaves[i]))
				if a.Outcome != Acked {
					w.failed.Add(1)
					continue
				}
				if w.acked.Add(1)%readEvery == 0 {
					w.readBack(c, i, a.Index)
				}
			}
		})
	}
	wg.Wait()
}

// take returns the chip to append next.
func (w *Workload) take() (int, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.resubmit) > 0 && time.Now().After(w.resubmit[0].after) {
		i := w.resubmit[0].chip
		w.resubmit = w.resubmit[1:]
		return i, true
	}
	if w.next >= len(w.Leaves) {
		return 0, false
	}
	w.next++
	return w.next - 1, true
}

// finish records the outcome of a call for chip i, and queues the chip to
// be sent again if it is ambiguous. It returns the chip's attempt.
func (w *Workload) finish(i int, call Attempt) Attempt {
	w.mu.Lock()
	defer w.mu.Unlock()
	prev := w.attempts[i]
	call.Calls = prev.Calls + 1
	if prev.Verification && !call.Verification {
		call.Verification, call.Err = true, prev.Err
	}
	w.attempts[i] = call
	if call.Outcome == Ambiguous && call.Calls < maxCalls {
		w.resubmit = append(w.resubmit, resubmission{i, time.Now().Add(resubmitAfter)})
	}
	return call
}

// pace sends a token on tokens rate times a second until stop closes.
func pace(rate float64, tokens chan<- struct{}, stop <-chan struct{}) {
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		select {
		case tokens <- struct{}{}:
		case <-stop:
			return
		case <-t.C: // every client is busy: this token is lost
		}
	}
}

// call makes one Append call and classifies its outcome.
func (w *Workload) call(c *client.Client, leaf []byte) Attempt {
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	defer cancel()
	res, err := c.Append(ctx, leaf)
	if err != nil {
		a := Attempt{Outcome: Ambiguous, Err: err, Verification: isVerification(err)}
		switch connect.CodeOf(err) {
		case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeAlreadyExists:
			a.Outcome = Refused
		}
		return a
	}
	w.Observe(res.Receipt.Checkpoint)
	return Attempt{Outcome: Acked, Index: res.Receipt.Index, Duplicate: res.Duplicate}
}

// Progress returns how many Append calls have been acknowledged and how
// many have failed so far.
func (w *Workload) Progress() (acked, failed int64) { return w.acked.Load(), w.failed.Load() }

// readBack looks up chip i, just acknowledged at index, with the client
// that appended it, and checks that the answer holds that entry; it also
// fetches the client's checkpoint, as a reader would.
func (w *Workload) readBack(c *client.Client, i int, index uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	defer cancel()
	h, err := c.LookupChip(ctx, w.Chips[i])
	if err == nil {
		switch {
		case len(h.Entries) != 1:
			err = fmt.Errorf("%w: %d entries", errWrongRead, len(h.Entries))
		case h.Entries[0].Receipt.Index != index || !bytes.Equal(h.Entries[0].Receipt.Leaf, w.Leaves[i]):
			err = fmt.Errorf("%w: an entry at index %d", errWrongRead, h.Entries[0].Receipt.Index)
		}
	}
	if err == nil {
		var signed []byte
		if _, signed, err = c.Checkpoint(ctx); err == nil {
			w.Observe(signed)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case err == nil:
		w.reads.OK++
	case errors.Is(err, errWrongRead) || isVerification(err):
		w.reads.Wrong = append(w.reads.Wrong, fmt.Errorf("chip %d, acknowledged at index %d, read back: %w", i, index, err))
	default:
		w.reads.Unavailable++
	}
}

var errWrongRead = errors.New("the lookup does not hold the acknowledged entry")

// isVerification reports whether err is the SDK refusing a node's answer.
func isVerification(err error) bool {
	for _, v := range []error{client.ErrBadSignature, client.ErrFork, client.ErrRollback, client.ErrBadProof, client.ErrMismatch} {
		if errors.Is(err, v) {
			return true
		}
	}
	return false
}

// Reads returns the read-backs' tally.
func (w *Workload) Reads() ReadTally {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.reads
	r.Wrong = append([]error(nil), r.Wrong...)
	return r
}

// Observe records a signed checkpoint a client verified.
func (w *Workload) Observe(signed []byte) {
	if signed == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.checkpoints[string(signed)] = struct{}{}
}

// Checkpoints returns the distinct signed checkpoints the clients verified.
func (w *Workload) Checkpoints() [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([][]byte, 0, len(w.checkpoints))
	for s := range w.checkpoints {
		out = append(out, []byte(s))
	}
	return out
}

// Attempts returns what became of each chip's append so far, by chip.
func (w *Workload) Attempts() []Attempt {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Attempt(nil), w.attempts...)
}

// Tally counts attempts by outcome.
type Tally struct {
	Acked, Refused, Ambiguous, Unsent int
	// Duplicates are acknowledged appends the log recognised as sent
	// before.
	Duplicates int
	// Resent counts the chips whose append was sent more than once,
	// ResentAcked those of them finally acknowledged, and ResentLanded
	// those the log already held: an ambiguous call had committed.
	Resent, ResentAcked, ResentLanded int
	// Verification counts appends the SDK refused to accept.
	Verification int
}

func (t Tally) String() string {
	return fmt.Sprintf("acked=%d (duplicates %d) refused=%d ambiguous=%d unsent=%d; sent again %d (then acked %d, of which already in the log %d); verification-failures=%d",
		t.Acked, t.Duplicates, t.Refused, t.Ambiguous, t.Unsent, t.Resent, t.ResentAcked, t.ResentLanded, t.Verification)
}

// Tally counts the outcomes of the appends.
func (w *Workload) Tally() Tally {
	var t Tally
	for _, a := range w.Attempts() {
		switch a.Outcome {
		case Acked:
			t.Acked++
		case Refused:
			t.Refused++
		case Ambiguous:
			t.Ambiguous++
		case Unsent:
			t.Unsent++
		}
		if a.Duplicate {
			t.Duplicates++
		}
		if a.Calls > 1 {
			t.Resent++
			if a.Outcome == Acked {
				t.ResentAcked++
			}
			if a.Duplicate {
				t.ResentLanded++
			}
		}
		if a.Verification {
			t.Verification++
		}
	}
	return t
}
