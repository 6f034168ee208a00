package client_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/internal/localcluster"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/proofs"
)

// A station appends an escrow entry and checks the receipt it will store in
// the device. It knows the nodes' addresses and the log's verifier key,
// published out of band; it trusts nothing else.
func ExampleClient_Append() {
	addrs, logKey, pki, stop := startExampleLedger()
	defer stop()
	ctx := context.Background()

	c, err := client.New(client.Options{Addrs: addrs, LogKey: logKey})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// The station registers once, then appends entries it signed.
	if _, err := c.Append(ctx, pki.StationLeaf()); err != nil {
		log.Fatal(err)
	}
	leaf, err := pki.EscrowLeaf(testpki.ChipID(1), 1, 0)
	if err != nil {
		log.Fatal(err)
	}
	res, err := c.Append(ctx, leaf)
	if err != nil {
		log.Fatal(err) // a *client.NodeError; connect.CodeOf says why
	}
	// Append verified the receipt; anyone holding the log key can check it
	// again offline, as the device will.
	v, err := proofs.NewLogVerifier(logKey)
	if err != nil {
		log.Fatal(err)
	}
	cp, err := res.Receipt.Verify(v)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("leaf %d is in %s at size %d (duplicate: %v)\n", res.Receipt.Index, cp.Origin, cp.Size, res.Duplicate)

	// The log starts with the genesis index root, and the ledger closes
	// every batch with an index root over the leaves before it (DESIGN.md
	// §3.7): leaf 0 is the genesis root, 1 the station, 2 its root, 3 the
	// entry and 4 its root. Every checkpoint ends with one.
	last, err := c.Entries(ctx, cp.Size-1, cp.Size)
	if err != nil {
		log.Fatal(err)
	}
	covered, chips, _, err := proofs.ParseIndexRootLeaf(last[0])
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("leaf %d: the chip index over %d leaves, %d chips\n", cp.Size-1, covered, chips)

	// Keep the trusted checkpoint to start from next time
	// (Options.Trusted), so a log that forks or rolls back is caught.
	trusted, saved := c.Trusted()
	fmt.Println(trusted.Size, len(saved) > 0)
	// Output:
	// leaf 3 is in example.chipledger.test/log at size 5 (duplicate: false)
	// leaf 4: the chip index over 4 leaves, 1 chips
	// 5 true
}

// A repair shop fetches a chip's escrow entries with receipts, all verified
// against one checkpoint, and takes the latest backup.
func ExampleClient_LookupChip() {
	addrs, logKey, pki, stop := startExampleLedger()
	defer stop()
	ctx := context.Background()
	c, err := client.New(client.Options{Addrs: addrs, LogKey: logKey})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	chip := testpki.ChipID(42)
	if _, err := c.Append(ctx, pki.StationLeaf()); err != nil {
		log.Fatal(err)
	}
	for epoch := uint32(1); epoch <= 2; epoch++ { // provisioned, then re-keyed
		leaf, err := pki.EscrowLeaf(chip, epoch, 0)
		if err != nil {
			log.Fatal(err)
		}
		if _, err := c.Append(ctx, leaf); err != nil {
			log.Fatal(err)
		}
	}

	h, err := c.LookupChip(ctx, chip)
	if err != nil {
		log.Fatal(err) // ErrBadProof, ErrMismatch, *ForkError, … if a node lied
	}
	for _, e := range h.Entries {
		fmt.Printf("epoch %d at leaf %d\n", e.Entry.Epoch, e.Receipt.Index)
	}
	// The lookup proof, checked against the index root the checkpoint
	// ends with, shows that no newer entry is hidden.
	fmt.Printf("the chip index at size %d: latest epoch %d at leaf %d\n", h.Index.Checkpoint.Size, h.Index.Value.Epoch, h.Index.Value.LeafIndex)
	latest := h.Latest()
	fmt.Printf("restore %q\n", latest.Entry.Backup)

	unknown, err := c.LookupChip(ctx, testpki.ChipID(7))
	fmt.Println(len(unknown.Entries), unknown.Index.Present, err)
	// Output:
	// epoch 1 at leaf 3
	// epoch 2 at leaf 5
	// the chip index at size 7: latest epoch 2 at leaf 5
	// restore "backup of 84244a834f411fe4dec36b9347846685 at epoch 2"
	// 0 false <nil>
}

// startExampleLedger runs a one-node ledger in this process, standing in
// for a production cluster, and returns its addresses, its verifier key, a
// manufacturer PKI it trusts, and a function that stops it.
func startExampleLedger() (addrs []string, logKey string, pki *testpki.PKI, stop func()) {
	pki, err := testpki.New()
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "chipledger-example")
	if err != nil {
		log.Fatal(err)
	}
	signer, logKey, err := ledgerKey("example.chipledger.test/log")
	if err != nil {
		log.Fatal(err)
	}
	cl, err := localcluster.Start(context.Background(), localcluster.Options{Nodes: 1, Dir: dir, Signer: signer, Trust: pki.Trust})
	if err != nil {
		log.Fatal(err)
	}
	return cl.Addrs(), logKey, pki, func() { cl.Close(); os.RemoveAll(dir) }
}
