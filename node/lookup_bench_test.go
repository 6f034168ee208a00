package node

import (
	"context"
	"sync"
	"testing"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/internal/testpki"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
)

// BenchmarkLookupChip measures the LookupChip handler, called in process,
// on a one-node log of 1,000 chips: the chip index proof, the receipt of
// each of the chip's entries and the signed checkpoint they are under.
func BenchmarkLookupChip(b *testing.B) {
	const chips = 1000
	c := newConfiguredCluster(b, 1, nil, func(cfg *Config) { cfg.NoSync = true })
	c.registerStation()
	leaves := c.escrowLeaves(0, chips)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < chips; i += 16 {
				if _, err := c.append(context.Background(), 0, leaves[i]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	s := &ledgerService{c.nodes[0]}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		resp, err := s.LookupChip(ctx, connect.NewRequest(&v1.LookupChipRequest{ChipId: testpki.ChipID(uint64(i % chips))}))
		if err != nil {
			b.Fatal(err)
		}
		if len(resp.Msg.Entries) != 1 {
			b.Fatalf("chip %d has %d entries, want 1", i%chips, len(resp.Msg.Entries))
		}
		i++
	}
}
