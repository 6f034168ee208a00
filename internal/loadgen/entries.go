package loadgen

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/chipledger/chipledger/internal/testpki"
)

// Entries makes n valid escrow leaves of about leafSize bytes for fresh chips
// (numbered from first), signed by the PKI's station, on every core. It is
// the slow part of a benchmark (two signatures and a key pair per entry), so
// it runs before the timed phase; progress, if not nil, is called with the
// number made so far.
func Entries(ctx context.Context, pki *testpki.PKI, first uint64, n, leafSize int, progress func(done int)) ([][]byte, error) {
	leaves := make([][]byte, n)
	workers := runtime.GOMAXPROCS(0)
	var done atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if ctx.Err() != nil {
					once.Do(func() { firstErr = ctx.Err() })
					return
				}
				leaf, err := pki.EscrowLeaf(testpki.ChipID(first+uint64(i)), 1, leafSize)
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				leaves[i] = leaf
				if d := done.Add(1); progress != nil && d%500 == 0 {
					progress(int(d))
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if progress != nil {
		progress(n)
	}
	return leaves, nil
}
