package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
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
	// Ambiguous appends failed without a verdict (timed out, no node
	// available, a connection lost), or with an error that is no verdict
	// and no transient failure either (see Attempt.Unexpected): they may or
	// may not be in the log.
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
	// Unexpected is the first error of a call that a node answered with
	// neither a verdict on the entry (INVALID_ARGUMENT, FAILED_PRECONDITION,
	// ALREADY_EXISTS) nor a transient failure (see noVerdict): INTERNAL,
	// UNKNOWN, NOT_FOUND, … A node misbehaved; the append is Ambiguous.
	Unexpected error
}

// maxCalls bounds the Append calls for one chip.
const maxCalls = 3

// resubmitAfter is how long an ambiguous append waits to be sent again.
const resubmitAfter = 2 * time.Second

// A Workload is the appends of a run: one escrow entry for each of a set
// of chips, made beforehand, and what became of each; and, for a sample of
// the chips, a second leaf (an Extra) that exercises the log's admission
// rules under faults.
type Workload struct {
	Chips  []ledger.ChipID
	Leaves [][]byte
	// Extras are the second leaves sent for some chips, at most one per
	// chip.
	Extras []Extra

	acked, failed atomic.Int64 // calls, for progress reports

	extraOf map[int]int // Extras' index by chip

	mu            sync.Mutex
	next          int       // the next chip never sent
	attempts      []Attempt // by chip
	extraAttempts []Attempt // by Extras' index
	resubmit      []resubmission
	followUps     []int               // Extras (NextEpoch) due to be sent
	checkpoints   map[string]struct{} // signed checkpoints the clients verified
	reads         ReadTally
}

// An ExtraKind says what the second leaf sent for a chip is.
type ExtraKind int

const (
	// Conflicting is another epoch-1 entry of the chip (a fresh device key
	// and certificate, so other bytes), sent from another client at the
	// same time as the chip's first Append call: at most one of the two
	// may be in the log, and the log must refuse the other (ALREADY_EXISTS,
	// the epoch reused) unless its call ended ambiguous.
	Conflicting ExtraKind = iota + 1
	// Copy is the chip's own leaf, sent from another client at the same
	// time as its first Append call: it lands once, and every call
	// acknowledged gets that one index.
	Copy
	// NextEpoch is an epoch-2 entry of the chip, sent once its epoch-1
	// entry is acknowledged: the log must take it, after epoch 1.
	NextEpoch
)

func (k ExtraKind) String() string {
	switch k {
	case Conflicting:
		return "conflicting epoch-1 entry"
	case Copy:
		return "concurrent copy"
	case NextEpoch:
		return "epoch-2 entry"
	}
	return fmt.Sprintf("ExtraKind(%d)", int(k))
}

// An Extra is a second leaf sent for a chip of the workload; its Append
// call is made once, without resending.
type Extra struct {
	Chip int
	Kind ExtraKind
	Leaf []byte
}

// extraKind returns the kind of extra chip i gets, or 0: 5% of the chips
// each get a conflicting entry, a concurrent copy and an epoch-2 entry.
func extraKind(i int) ExtraKind {
	switch i % 20 {
	case 7:
		return Conflicting
	case 13:
		return Copy
	case 3:
		return NextEpoch
	}
	return 0
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
	// answered in time, see noVerdict): they check nothing.
	Unavailable int
	// Wrong are the lookups that found something else, or that the SDK
	// refused (a fork, a rollback, a bad proof).
	Wrong []error
	// Unexpected are the lookups that failed with an error that is no
	// transient failure (INTERNAL, NOT_FOUND, …): a node misbehaved.
	Unexpected []error
}

// NewWorkload makes n escrow entries (epoch 1 of chips 0 … n-1), and the
// extras of the sampled chips (see extraKind), in parallel.
func NewWorkload(pki *testpki.PKI, n int) (*Workload, error) {
	w := &Workload{
		Chips:       make([]ledger.ChipID, n),
		Leaves:      make([][]byte, n),
		attempts:    make([]Attempt, n),
		extraOf:     make(map[int]int),
		checkpoints: make(map[string]struct{}),
	}
	extras := make([][]byte, n) // by chip, for Conflicting and NextEpoch
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
				switch extraKind(i) {
				case Conflicting:
					extras[i], errs[g] = pki.EscrowLeaf(w.Chips[i], 1, 0)
				case NextEpoch:
					extras[i], errs[g] = pki.EscrowLeaf(w.Chips[i], 2, 0)
				}
				if errs[g] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for i := range n {
		switch k := extraKind(i); k {
		case Conflicting, NextEpoch:
			w.addExtra(i, k, extras[i])
		case Copy:
			w.addExtra(i, k, w.Leaves[i])
		}
	}
	return w, nil
}

// addExtra adds an extra leaf for chip i.
func (w *Workload) addExtra(i int, kind ExtraKind, leaf []byte) {
	w.extraOf[i] = len(w.Extras)
	w.Extras = append(w.Extras, Extra{Chip: i, Kind: kind, Leaf: leaf})
	w.extraAttempts = append(w.extraAttempts, Attempt{})
}

// ExtraOf returns the extra of chip i, if it has one.
func (w *Workload) ExtraOf(i int) (Extra, bool) {
	x, ok := w.extraOf[i]
	if !ok {
		return Extra{}, false
	}
	return w.Extras[x], true
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

// A job is what a client sends next: chip's own leaf, or, if extra >= 0,
// that extra.
type job struct {
	chip, extra int
}

// Run appends from one goroutine per client, together at most rate Append
// calls a second, until stop is closed or the entries run out: first the
// ambiguous appends due to be sent again, then the epoch-2 entries due,
// then new ones. A chip's Conflicting or Copy extra is sent from the next
// client at the same time as the chip's first call (outside the rate).
// Calls in flight when stop closes run to their end. It returns when all
// have ended.
func (w *Workload) Run(clients []*client.Client, rate float64, stop <-chan struct{}) {
	tokens := make(chan struct{})
	go pace(rate, tokens, stop)
	var wg, extras sync.WaitGroup
	for k, c := range clients {
		other := clients[(k+1)%len(clients)]
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-tokens:
				}
				j, ok := w.take()
				if !ok {
					return
				}
				if j.extra >= 0 {
					w.sendExtra(c, j.extra)
					continue
				}
				i := j.chip
				if x, ok := w.extraOf[i]; ok && w.Extras[x].Kind != NextEpoch && w.firstCall(i) {
					extras.Go(func() { w.sendExtra(other, x) })
				}
				a := w.finish(i, w.call(c, w.Leaves[i]))
				if a.Outcome != Acked {
					w.failed.Add(1)
					continue
				}
				if x, ok := w.extraOf[i]; ok && w.Extras[x].Kind == NextEpoch {
					w.followUp(x)
				}
				if w.acked.Add(1)%readEvery == 0 {
					w.readBack(c, i, a.Index)
				}
			}
		})
	}
	wg.Wait()
	extras.Wait()
}

// take returns what to send next.
func (w *Workload) take() (job, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.resubmit) > 0 && time.Now().After(w.resubmit[0].after) {
		i := w.resubmit[0].chip
		w.resubmit = w.resubmit[1:]
		return job{i, -1}, true
	}
	if len(w.followUps) > 0 {
		x := w.followUps[0]
		w.followUps = w.followUps[1:]
		return job{w.Extras[x].Chip, x}, true
	}
	if w.next >= len(w.Leaves) {
		return job{}, false
	}
	w.next++
	return job{w.next - 1, -1}, true
}

// firstCall reports whether chip i's own leaf was never sent before.
func (w *Workload) firstCall(i int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.attempts[i].Calls == 0
}

// followUp queues extra x to be sent, once: the epoch-2 entry of a chip
// whose epoch-1 entry was just acknowledged.
func (w *Workload) followUp(x int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.extraAttempts[x].Calls == 0 && !slices.Contains(w.followUps, x) {
		w.followUps = append(w.followUps, x)
	}
}

// sendExtra makes extra x's one Append call with c, and records it.
func (w *Workload) sendExtra(c *client.Client, x int) {
	w.mu.Lock()
	if w.extraAttempts[x].Calls > 0 {
		w.mu.Unlock()
		return
	}
	w.extraAttempts[x].Calls = 1 // claimed
	w.mu.Unlock()
	a := w.call(c, w.Extras[x].Leaf)
	a.Calls = 1
	if a.Outcome == Acked {
		w.acked.Add(1)
	} else {
		w.failed.Add(1)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.extraAttempts[x] = a
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
	if prev.Unexpected != nil {
		call.Unexpected = prev.Unexpected
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
		return failedCall(err)
	}
	w.Observe(res.Receipt.Checkpoint)
	return Attempt{Outcome: Acked, Index: res.Receipt.Index, Duplicate: res.Duplicate}
}

// failedCall classifies the error of an Append call.
func failedCall(err error) Attempt {
	a := Attempt{Outcome: Ambiguous, Err: err}
	switch {
	case isVerification(err):
		a.Verification = true
	case isVerdict(err):
		a.Outcome = Refused
	case !noVerdict(err):
		a.Unexpected = err
	}
	return a
}

// isVerdict reports whether err is a verdict on the entry: the log refuses
// it.
func isVerdict(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeAlreadyExists:
		return true
	}
	return false
}

// noVerdict reports whether err says nothing of the request, but that it
// could not be answered now: the call's context ended, the transport
// failed (an error the Connect client made up, not one a node sent), or a
// node answered UNAVAILABLE, DEADLINE_EXCEEDED, CANCELED, ABORTED or
// RESOURCE_EXHAUSTED. Any other error a node sends (INTERNAL, UNKNOWN,
// NOT_FOUND, …) is an answer it should not give to a valid request.
func noVerdict(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, client.ErrClosed) {
		return true
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		var ne net.Error
		return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
	}
	if !connect.IsWireError(ce) {
		return true
	}
	switch ce.Code() {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeCanceled, connect.CodeAborted, connect.CodeResourceExhausted:
		return true
	}
	return false
}

// isEpochReused reports whether err is the log's refusal of an escrow
// entry for an epoch its chip already used with another leaf.
func isEpochReused(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeAlreadyExists, connect.CodeFailedPrecondition:
		return strings.Contains(err.Error(), ledger.ErrEpochReused.Error())
	}
	return false
}

// Progress returns how many Append calls have been acknowledged and how
// many have failed so far.
func (w *Workload) Progress() (acked, failed int64) { return w.acked.Load(), w.failed.Load() }

// readBack looks up chip i, just acknowledged at index, with the client
// that appended it, and checks that the answer holds that entry (and, for
// a chip sent an epoch-2 entry, perhaps that one after it); it also
// fetches the client's checkpoint, as a reader would.
func (w *Workload) readBack(c *client.Client, i int, index uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	defer cancel()
	h, err := c.LookupChip(ctx, w.Chips[i])
	if err == nil {
		most := 1
		if x, ok := w.ExtraOf(i); ok && x.Kind == NextEpoch {
			most = 2
		}
		switch {
		case len(h.Entries) < 1 || len(h.Entries) > most:
			err = fmt.Errorf("%w: %d entries", errWrongRead, len(h.Entries))
		case h.Entries[0].Receipt.Index != index || !bytes.Equal(h.Entries[0].Receipt.Leaf, w.Leaves[i]):
			err = fmt.Errorf("%w: an entry at index %d", errWrongRead, h.Entries[0].Receipt.Index)
		case len(h.Entries) == 2 && !bytes.Equal(h.Entries[1].Receipt.Leaf, w.Extras[w.extraOf[i]].Leaf):
			err = fmt.Errorf("%w: a second entry at index %d that is not the chip's epoch-2 entry", errWrongRead, h.Entries[1].Receipt.Index)
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
	case noVerdict(err):
		w.reads.Unavailable++
	default:
		w.reads.Unexpected = append(w.reads.Unexpected, fmt.Errorf("chip %d, acknowledged at index %d, read back: %w", i, index, err))
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
	r.Wrong = slices.Clone(r.Wrong)
	r.Unexpected = slices.Clone(r.Unexpected)
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
	return slices.Clone(w.attempts)
}

// ExtraAttempts returns what became of each extra's append so far, by
// Extras' index. An extra whose call is under way has Calls 1 and is
// Unsent.
func (w *Workload) ExtraAttempts() []Attempt {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.extraAttempts)
}

// Tally counts attempts by outcome.
type Tally struct {
	Acked, Refused, Ambiguous, Unsent int
	// Duplicates are acknowledged appends the log recognised as sent
	// before, by the client itself (a lost answer) and not by the
	// concurrent Copy of its leaf.
	Duplicates int
	// Resent counts the chips whose append was sent more than once,
	// ResentAcked those of them finally acknowledged, and ResentLanded
	// those the log already held: an ambiguous call had committed.
	Resent, ResentAcked, ResentLanded int
	// Verification counts appends the SDK refused to accept, Unexpected
	// those a node answered with an error that is neither a verdict nor a
	// transient failure; extras included.
	Verification, Unexpected int
	// Extras counts the extras' calls by outcome.
	Extras ExtraTally
}

// An ExtraTally counts the extras' calls by outcome.
type ExtraTally struct {
	Acked, Refused, Ambiguous, Unsent int
}

func (t Tally) String() string {
	return fmt.Sprintf("acked=%d (duplicates %d) refused=%d ambiguous=%d unsent=%d; sent again %d (then acked %d, of which already in the log %d); verification-failures=%d unexpected-errors=%d; extras: acked=%d refused=%d ambiguous=%d unsent=%d",
		t.Acked, t.Duplicates, t.Refused, t.Ambiguous, t.Unsent, t.Resent, t.ResentAcked, t.ResentLanded, t.Verification, t.Unexpected,
		t.Extras.Acked, t.Extras.Refused, t.Extras.Ambiguous, t.Extras.Unsent)
}

// ExactlyOnce returns how often the exactly-once path was taken: appends
// the log recognised as already held, after a lost answer or an ambiguous
// call sent again.
func (t Tally) ExactlyOnce() int { return t.Duplicates + t.ResentLanded }

// Tally counts the outcomes of the appends.
func (w *Workload) Tally() Tally {
	var t Tally
	for i, a := range w.Attempts() {
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
		copied := false
		if x, ok := w.ExtraOf(i); ok && x.Kind == Copy {
			copied = true
		}
		if a.Duplicate && !copied {
			t.Duplicates++
		}
		if a.Calls > 1 {
			t.Resent++
			if a.Outcome == Acked {
				t.ResentAcked++
			}
			if a.Duplicate && !copied {
				t.ResentLanded++
			}
		}
		if a.Verification {
			t.Verification++
		}
		if a.Unexpected != nil {
			t.Unexpected++
		}
	}
	for _, a := range w.ExtraAttempts() {
		switch a.Outcome {
		case Acked:
			t.Extras.Acked++
		case Refused:
			t.Extras.Refused++
		case Ambiguous:
			t.Extras.Ambiguous++
		case Unsent:
			t.Extras.Unsent++
		}
		if a.Verification {
			t.Verification++
		}
		if a.Unexpected != nil {
			t.Unexpected++
		}
	}
	return t
}
