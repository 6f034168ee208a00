package client_test

import (
	"bytes"
	"context"
	"testing"

	"connectrpc.com/connect"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

func TestLookupChipReturnsEveryEpochVerified(t *testing.T) {
	l := startLog(t, 1, nil)
	c := l.client()
	l.registerStation(c)
	ctx := context.Background()
	chip := testpki.ChipID(7)
	var leaves [][]byte
	for epoch := range uint32(3) {
		leaf := l.escrowLeaf(7, epoch+1)
		if _, err := c.Append(ctx, leaf); err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, leaf)
		l.appendEscrow(c, 100+uint64(epoch)) // another chip in between
	}

	// A fresh client, as a device or repair shop would use.
	h, err := l.client().LookupChip(ctx, chip)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Entries) != 3 {
		t.Fatalf("%d entries, want 3", len(h.Entries))
	}
	for i, e := range h.Entries {
		if !e.Entry.ChipID.Equal(chip) || e.Entry.Epoch != uint32(i+1) || !bytes.Equal(e.Receipt.Leaf, leaves[i]) {
			t.Errorf("entry %d: chip %s epoch %d", i, e.Entry.ChipID, e.Entry.Epoch)
		}
		cp, err := e.Receipt.Verify(l.verifier)
		if err != nil || cp != h.Checkpoint {
			t.Errorf("entry %d: receipt against %+v, want %+v: %v", i, cp, h.Checkpoint, err)
		}
	}
	if h.Latest().Entry.Epoch != 3 {
		t.Errorf("latest epoch %d, want 3", h.Latest().Entry.Epoch)
	}
	// The encoded lookup proof is kept, for the device to check again.
	lp, err := proofs.ParseLookupProof(h.LookupProof)
	if err != nil {
		t.Fatal(err)
	}
	res, err := lp.Verify(l.verifier, chip)
	if err != nil || res.Checkpoint != h.Checkpoint || res.Value != h.Index.Value {
		t.Errorf("the kept lookup proof: %+v, want the result %+v (%v)", res, h.Index, err)
	}
}

func TestLookupUnknownChipIsEmptyNotAnError(t *testing.T) {
	l := startLog(t, 1, nil)
	c := l.client()
	l.registerStation(c)
	l.appendEscrow(c, 1)
	h, err := c.LookupChip(context.Background(), testpki.ChipID(99))
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Entries) != 0 || h.Latest() != nil {
		t.Fatalf("unknown chip has %d entries", len(h.Entries))
	}
	if h.Checkpoint.Size < 2 { // the station and the other chip
		t.Errorf("answered against a checkpoint of %d leaves", h.Checkpoint.Size)
	}

	_, err = c.LookupChip(context.Background(), ledger.ChipID("short"))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("invalid chip ID: %v, want INVALID_ARGUMENT", err)
	}
}
