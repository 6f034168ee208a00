package proofs_test

import (
	"fmt"
	"os"

	"github.com/chipledger/chipledger/proofs"
)

// A third party checks, with no network, that an entry is in the log: it
// needs only the log's verifier key, published out of band, and the receipt
// the device holds.
func ExampleReceipt_Verify() {
	const vkey = "example.com/escrow-test+ee5744bd+Aat1KQYsJ+N7bAnOuAK3472OstHs3Zwd58qaxrbomY7I"
	v, err := proofs.NewLogVerifier(vkey)
	if err != nil {
		panic(err)
	}

	b, err := os.ReadFile("testdata/escrow-test-leaf7.receipt")
	if err != nil {
		panic(err)
	}
	r, err := proofs.ParseReceipt(b)
	if err != nil {
		fmt.Println("not a receipt:", err)
		return
	}
	c, err := r.Verify(v)
	if err != nil {
		fmt.Println("receipt rejected:", err)
		return
	}
	fmt.Printf("leaf %d (%d bytes) is in %s at size %d\n", r.Index, len(r.Leaf), c.Origin, c.Size)

	// A receipt for another leaf, or under another key, does not verify.
	r.Index = 6
	_, err = r.Verify(v)
	fmt.Println(err != nil)
	// Output:
	// leaf 7 (16 bytes) is in example.com/escrow-test at size 8
	// true
}

func ExampleLogVerifier_VerifyCheckpoint() {
	v, err := proofs.NewLogVerifier("example.com/escrow-test+ee5744bd+Aat1KQYsJ+N7bAnOuAK3472OstHs3Zwd58qaxrbomY7I")
	if err != nil {
		panic(err)
	}
	signed := []byte("example.com/escrow-test\n" +
		"8\n" +
		"XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n" +
		"\n" +
		"— example.com/escrow-test 7ldEvT2z13kkFW4BqcifKDKcsz4SA3/jcvf94BuPcCJDigh1YMFLvAa75IDir/IXE/iU/2gTyKdMtGFhv+wap1KibAI=\n")
	c, err := v.VerifyCheckpoint(signed)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s has %d leaves, root %x…\n", c.Origin, c.Size, c.Hash[:4])
	// Output:
	// example.com/escrow-test has 8 leaves, root 5dc9da79…
}
