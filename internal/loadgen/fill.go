package loadgen

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// How a log is filled fast. A fresh escrow entry costs the load generator a
// device key pair, a certificate and a station signature (about 180 µs of
// CPU), and a million of them would compete for the cores with the nodes
// being measured. So the fill makes a device certificate once for each chip
// of a fixed set (fillChips), then appends entries for those chips epoch
// after epoch: epoch e+1 of a chip is a new, valid entry, and costs one
// station signature (about 25 µs). Entry number s is for chip s mod K at
// epoch s/K + 1, and the entries are appended in windows of at most K
// consecutive numbers, each window by many concurrent clients (so the
// leader batches them) and each only after the previous one is
// acknowledged, so that every window holds distinct chips and each chip's
// epochs arrive in order. The log's chip index then holds K chips, not one
// per entry; the timed appends that follow a fill use fresh chips.

// FillStats describes how a log was filled before a measurement.
type FillStats struct {
	// Entries is the escrow entries appended (the tree also holds the index
	// roots the log writes, one per batch).
	Entries int `json:"entries"`
	// Seconds is the wall time of the fill, signing included, and
	// PerSecond Entries per second of it.
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"entries_per_second"`
	// Chips is the size of the chip set the entries cycle through, and
	// Clients the concurrent appenders.
	Chips   int `json:"chips"`
	Clients int `json:"clients"`
}

// fillChips is the chip set of a fill: epoch 1 of an escrow entry for each
// chip, made once.
type fillChips struct {
	pki     *testpki.PKI
	station []byte // the registration of pki's station
	base    []*ledger.EscrowEntry
}

// newFillChips makes entries for n fresh chips of about leafSize bytes.
func newFillChips(ctx context.Context, pki *testpki.PKI, n, leafSize int, p Progress) (*fillChips, error) {
	station, err := registration(pki)
	if err != nil {
		return nil, err
	}
	first := uint64(time.Now().UnixNano()) // fresh chips, also on a running cluster
	base := make([]*ledger.EscrowEntry, n)
	phase := fmt.Sprintf("certificates for %d fill chips", n)
	var done atomic.Int64
	err = parallel(ctx, n, func(i int) error {
		e, err := pki.EscrowEntry(testpki.ChipID(first+uint64(i)), 1, leafSize)
		base[i] = e
		if d := done.Add(1); d%500 == 0 {
			p.count(phase, int(d), n)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("make fill chips: %w", err)
	}
	p.count(phase, n, n)
	return &fillChips{pki: pki, station: station, base: base}, nil
}

// leaf returns entry number seq of the fill: chip seq mod K at epoch
// seq/K + 1, signed by the station. The load generator does not check its
// own signature (ledger.EscrowEntry.Sign does): the nodes do.
func (c *fillChips) leaf(seq uint64) ([]byte, error) {
	k := uint64(len(c.base))
	e := *c.base[seq%k]
	e.Epoch = uint32(seq/k) + 1
	d, err := e.Digest()
	if err != nil {
		return nil, err
	}
	if e.Signature, err = ecdsa.SignASN1(rand.Reader, c.pki.StationKey, d[:]); err != nil {
		return nil, err
	}
	return e.MarshalLeaf()
}

// filler fills one cluster with a chip set's entries.
type filler struct {
	chips   *fillChips
	clients int
	hc      *http.Client
	leader  string
	next    uint64 // entries appended so far
	// perLeaf is the entries per leaf the tree grew by in the last window:
	// the log adds an index root per batch, and batches are smaller than
	// their cap when the leader keeps up.
	perLeaf float64
	// checkpoints is a sample of the signed checkpoints in the appends'
	// receipts, oldest first, for the consistency proofs.
	checkpoints [][]byte
}

// maxFillCheckpoints bounds filler.checkpoints.
const maxFillCheckpoints = 512

// filler registers the station at addrs and returns a filler for the
// cluster, appending from clients concurrent clients.
func (c *fillChips) filler(ctx context.Context, hc *http.Client, addrs []string, clients int) (*filler, error) {
	leader, err := register(ctx, hc, addrs, c.station)
	if err != nil {
		return nil, err
	}
	return &filler{chips: c, clients: clients, hc: hc, leader: leader, perLeaf: 0.8}, nil
}

// fill appends entries until the tree has at least size leaves.
func (f *filler) fill(ctx context.Context, size uint64, p Progress) (FillStats, error) {
	st := FillStats{Chips: len(f.chips.base), Clients: f.clients}
	start := time.Now()
	phase := fmt.Sprintf("filling the log to %d leaves", size)
	have, err := treeSize(ctx, f.hc, f.leader)
	for err == nil && have < size {
		p.count(phase, int(have), int(size))
		// Ask for the entries that make up the difference at the last
		// window's ratio, and top up if they fall short.
		n := min(uint64(len(f.chips.base)), max(1, uint64(float64(size-have)*f.perLeaf)))
		if err = f.window(ctx, int(n)); err != nil {
			break
		}
		st.Entries += int(n)
		before := have
		if have, err = treeSize(ctx, f.hc, f.leader); err == nil && have > before {
			f.perLeaf = float64(n) / float64(have-before)
		}
	}
	if err != nil {
		return st, err
	}
	p.count(phase, int(size), int(size))
	st.Seconds = time.Since(start).Seconds()
	if st.Seconds > 0 {
		st.PerSecond = float64(st.Entries) / st.Seconds
	}
	return st, nil
}

// window signs the next n entries (n at most the number of chips) and
// appends them concurrently.
func (f *filler) window(ctx context.Context, n int) error {
	leaves := make([][]byte, n)
	err := parallel(ctx, n, func(i int) (err error) {
		leaves[i], err = f.chips.leaf(f.next + uint64(i))
		return err
	})
	if err != nil {
		return err
	}
	lc := chipledgerv1connect.NewLedgerServiceClient(f.hc, "http://"+f.leader)
	var mu sync.Mutex
	sample := make(map[int][]byte)
	st := measure(ctx, n, f.clients, func(ctx context.Context, _, i int) error {
		resp, err := lc.Append(ctx, connect.NewRequest(&v1.AppendRequest{Leaf: leaves[i]}))
		if err != nil {
			return err
		}
		if i%max(n/16, 1) == 0 {
			mu.Lock()
			sample[i] = resp.Msg.GetReceipt().GetCheckpoint()
			mu.Unlock()
		}
		return nil
	})
	if err := st.err(); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f.next += uint64(n)
	for i := 0; i < n; i++ {
		if cp, ok := sample[i]; ok && len(f.checkpoints) < maxFillCheckpoints {
			f.checkpoints = append(f.checkpoints, cp)
		}
	}
	return nil
}

// treeSize asks the node at addr for the size of its tree.
func treeSize(ctx context.Context, hc *http.Client, addr string) (uint64, error) {
	st, err := chipledgerv1connect.NewAdminServiceClient(hc, "http://"+addr).Status(ctx, connect.NewRequest(&v1.StatusRequest{}))
	if err != nil {
		return 0, fmt.Errorf("status of %s: %w", addr, err)
	}
	return st.Msg.TreeSize, nil
}

// caughtUp waits until every node has applied the leader's tree and
// returns its size, so that proofs at that size can be asked of any node.
func caughtUp(ctx context.Context, hc *http.Client, addrs []string, leader string) (uint64, error) {
	size, err := treeSize(ctx, hc, leader)
	if err != nil {
		return 0, err
	}
	for _, a := range addrs {
		for {
			have, err := treeSize(ctx, hc, a)
			if err != nil {
				return 0, err
			}
			if have >= size {
				break
			}
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return size, nil
}

// parallel calls f(i) for each i in [0, n) on every core and returns the
// first error.
func parallel(ctx context.Context, n int, f func(i int) error) error {
	workers := runtime.GOMAXPROCS(0)
	var next atomic.Int64
	var once sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				err := ctx.Err()
				if err == nil {
					err = f(i)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}
