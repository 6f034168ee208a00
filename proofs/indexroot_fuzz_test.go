package proofs_test

import (
	"testing"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// FuzzParseIndexRootLeaf checks the verifier's parser of kind-3 leaves
// against the ledger's own, an independent implementation of the same
// format: they accept exactly the same leaves and read the same values.
func FuzzParseIndexRootLeaf(f *testing.F) {
	for _, r := range []ledger.IndexRoot{{}, {CoveredSize: 1, ChipCount: 0}, {CoveredSize: 1 << 40, ChipCount: 12345, Root: [32]byte{1, 2, 3}}} {
		leaf, err := r.MarshalLeaf()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(leaf)
	}
	f.Add([]byte{0, 3})
	f.Fuzz(func(t *testing.T, leaf []byte) {
		size, count, root, err := proofs.ParseIndexRootLeaf(leaf)
		want, werr := ledger.ParseIndexRoot(leaf)
		if (err == nil) != (werr == nil) {
			t.Fatalf("proofs says %v, ledger says %v for %x", err, werr, leaf)
		}
		if err != nil {
			return
		}
		if size != want.CoveredSize || count != want.ChipCount || root != want.Root {
			t.Fatalf("proofs read (%d, %d, %x), ledger (%d, %d, %x)", size, count, root, want.CoveredSize, want.ChipCount, want.Root)
		}
	})
}
