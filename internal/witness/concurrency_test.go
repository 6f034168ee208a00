package witness

import (
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"
)

// TestConcurrentSameCheckpointCosignedOnce sends one request from many
// goroutines at once: the first moves the witness to size 8, after which
// old size 0 is stale, so exactly one is cosigned.
func TestConcurrentSameCheckpointCosignedOnce(t *testing.T) {
	l := newTestLog(t, "example.com/log", 8)
	w := newTestWitness(t, t.TempDir(), l)
	body := l.request(t, 0, 8)
	codes := race(16, func(int) int { return post(w.Handler(), body).Code })
	if codes[http.StatusOK] != 1 || codes[http.StatusConflict] != 15 {
		t.Fatalf("status counts %v, want one 200 and fifteen 409", codes)
	}
	checkLatest(t, w, l, 8)
}

// TestConcurrentForksCosignOne sends checkpoints of two forks of a log,
// both from the size the witness holds, at once: the witness must cosign
// one and refuse the rest, and keep the winner across a restart.
func TestConcurrentForksCosignOne(t *testing.T) {
	dir := t.TempDir()
	a := newTestLog(t, "example.com/log", 32)
	b := newForkedLog(t, "example.com/log", 4, 32, "fork")
	w := newTestWitness(t, dir, a)
	advance(t, w, a, 4)

	codes := race(16, func(i int) int {
		l := a
		if i%2 == 1 {
			l = b
		}
		return post(w.Handler(), l.request(t, 4, uint64(8+i))).Code
	})
	if codes[http.StatusOK] != 1 || codes[http.StatusConflict] != 15 {
		t.Fatalf("status counts %v, want one 200 and fifteen 409", codes)
	}
	size, root, _ := w.Latest(a.origin)
	winner := a
	if root != a.root(size) {
		winner = b
	}
	checkLatest(t, w, winner, size)
	w.Close() // a restart
	checkLatest(t, newTestWitness(t, dir, a), winner, size)
}

// TestConcurrentClimbNeverRollsBack has writers race up one log, each
// proposing a step from the size it last saw, while a reader watches
// Latest. The state must only grow, and the cosigned steps must form one
// chain: with check and store not atomic, two steps from the same size
// could both succeed and the later store could undo the earlier.
func TestConcurrentClimbNeverRollsBack(t *testing.T) {
	const top = 64
	l := newTestLog(t, "example.com/log", top)
	w := newTestWitness(t, t.TempDir(), l)

	var mu sync.Mutex
	steps := map[uint64]uint64{} // cosigned old size -> new size
	stop := make(chan struct{})
	watched := make(chan error, 1)
	go func() { watched <- watchLatest(w, l, stop) }()

	race(8, func(i int) int {
		old := uint64(0)
		for old < top {
			next := min(top, old+1+uint64(i%3))
			rec := post(w.Handler(), l.request(t, old, next))
			switch rec.Code {
			case http.StatusOK:
				mu.Lock()
				if prev, dup := steps[old]; dup {
					t.Errorf("cosigned %d -> %d and %d -> %d", old, prev, old, next)
				}
				steps[old] = next
				mu.Unlock()
				old = next
			case http.StatusConflict:
				n, err := strconv.ParseUint(rec.Body.String()[:rec.Body.Len()-1], 10, 64)
				if err != nil || n <= old {
					t.Errorf("409 %q to a writer at %d", rec.Body, old)
					return 0
				}
				old = n
			default:
				t.Errorf("%d -> %d: %d %s", old, next, rec.Code, rec.Body)
				return 0
			}
		}
		return 0
	})
	close(stop)
	if err := <-watched; err != nil {
		t.Fatal(err)
	}
	for size := uint64(0); size != top; {
		next, ok := steps[size]
		if !ok {
			t.Fatalf("cosigned steps %v do not chain from 0 to %d: none from %d", steps, top, size)
		}
		size = next
	}
	checkLatest(t, w, l, top)
}

// watchLatest polls w.Latest until stop closes and reports a size that
// shrinks or a root that is not the log's.
func watchLatest(w *Witness, l *testLog, stop <-chan struct{}) error {
	var last uint64
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		runtime.Gosched()
		size, root, ok := w.Latest(l.origin)
		if !ok {
			continue
		}
		if size < last || root != l.root(size) {
			return &rollbackError{last, size}
		}
		last = size
	}
}

type rollbackError struct{ from, to uint64 }

func (e *rollbackError) Error() string {
	return "Latest went from size " + strconv.FormatUint(e.from, 10) + " to " + strconv.FormatUint(e.to, 10)
}

// race runs f(0..n-1) in n goroutines released together and counts the
// values they return.
func race(n int, f func(i int) int) map[int]int {
	var (
		mu     sync.Mutex
		counts = map[int]int{}
		start  = make(chan struct{})
		wg     sync.WaitGroup
	)
	for i := range n {
		wg.Go(func() {
			<-start
			v := f(i)
			mu.Lock()
			counts[v]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return counts
}
