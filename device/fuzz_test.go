package device

import (
	"bytes"
	"testing"
)

// FuzzParsePackage checks that ParsePackage never panics and that whatever
// it accepts is the one encoding of its result.
func FuzzParsePackage(f *testing.F) {
	raw, err := goldenPackage(f).MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add(raw[:40])
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePackage(b)
		if err != nil {
			return
		}
		again, err := p.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("ParsePackage accepted %x, which re-encodes to %x (%v)", b, again, err)
		}
	})
}

// FuzzParseBackupHeader checks that ParseBackupHeader never panics and that
// whatever it accepts is header ‖ ciphertext with the one encoding of the
// header.
func FuzzParseBackupHeader(f *testing.F) {
	_, _, backup := goldenBackup(f)
	f.Add(backup)
	f.Add(backup[:60])
	f.Add([]byte("CLB1\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ciphertext, err := ParseBackupHeader(b)
		if err != nil {
			return
		}
		header, err := h.MarshalBinary()
		if err != nil || !bytes.Equal(append(header, ciphertext...), b) {
			t.Fatalf("ParseBackupHeader accepted %x, which re-encodes differently (%v)", b, err)
		}
	})
}

// FuzzDeviceInputs feeds arbitrary bytes to every operation of a device that
// takes input, in every state of the handshake: none may panic; a device
// that refused an input is left exactly as it was (its state file's
// contents, chip epoch included, are unchanged); and a device that accepted
// one has a state that loads back to the same status. Every iteration
// starts from fresh copies of the same devices, loaded from their state, so
// a failure reproduces from its one input.
//
// op picks the device (op % 4: 0 manufactured, 1 provisioned at epoch 1,
// 2 pending at epoch 1 and certified, 3 the provisioned one wiped) and the
// operation (op / 4 % 6, see the switch). The seeds route each genuine
// input to the operation and device that accept it.
func FuzzDeviceInputs(f *testing.F) {
	fx := newFixture(f)
	base := fx.manufacture()
	p := fx.provision(base)
	pending, pp := pendingDevice(f, fx)
	ppReceipt := marshalReceipt(f, fx.receipt(fx.leaf(pending.chip.ID(), fx.ids, 1, pp.cert, pp.backup)))
	wiped, err := parseState(marshalStateOf(f, base), LoadOptions{})
	if err != nil {
		f.Fatal(err)
	}
	if err := wiped.Wipe(ctx); err != nil {
		f.Fatal(err)
	}
	var states [][]byte
	for _, d := range []*Device{fx.manufacture(), base, pending, wiped} {
		states = append(states, marshalStateOf(f, d))
	}
	const (
		devFresh, devProvisioned, devPending, devWiped                                    = 0, 1, 2, 3
		opPackage, opCheckBackup, opCertificate, opReceipt, opRestoreAll, opRestoreLookup = 0, 1, 2, 3, 4, 5
	)
	route := func(op, dev uint8) uint8 { return op*uint8(len(states)) + dev }
	for _, s := range [][]byte{p.pkg, pp.pkg} {
		f.Add(route(opPackage, devFresh), s) // accepted: epoch 1
		f.Add(route(opPackage, devPending), s)
	}
	f.Add(route(opCheckBackup, devPending), pp.backup) // accepted
	f.Add(route(opCheckBackup, devPending), p.backup)  // another chip's
	f.Add(route(opCertificate, devPending), pp.cert)   // accepted (replaces)
	f.Add(route(opCertificate, devPending), p.cert)    // another key's
	f.Add(route(opReceipt, devPending), ppReceipt)     // accepted: installs the keys
	f.Add(route(opReceipt, devPending), p.receipt)     // another entry's
	f.Add(route(opReceipt, devProvisioned), p.receipt) // nothing pending
	f.Add(route(opRestoreAll, devWiped), p.backup)     // the backup, but not as a cert
	f.Add(route(opRestoreLookup, devWiped), p.lookup)  // accepted: restores epoch 1
	f.Add(route(opRestoreLookup, devProvisioned), p.lookup)
	f.Add(route(opRestoreLookup, devPending), p.lookup) // another chip
	for _, s := range [][]byte{nil, {0}} {
		for op := range uint8(6) {
			f.Add(route(op, devWiped), s)
		}
	}
	f.Fuzz(func(t *testing.T, op uint8, in []byte) {
		state := states[int(op)%len(states)]
		d, err := parseState(state, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		switch op / uint8(len(states)) % 6 {
		case opPackage:
			_, err = d.StorePackage(ctx, in)
		case opCheckBackup:
			err = d.CheckBackup(ctx, in)
		case opCertificate:
			err = d.StoreCertificate(ctx, in)
		case opReceipt:
			err = d.StoreReceipt(ctx, in)
		case opRestoreAll:
			err = d.RestoreBackup(ctx, in, in, in, in)
		case opRestoreLookup:
			// A genuine backup and certificate, so that the lookup
			// proof's parser and checks are reached.
			err = d.RestoreBackup(ctx, p.backup, p.cert, nil, in)
		}
		after := marshalStateOf(t, d)
		if err != nil {
			if !bytes.Equal(after, state) {
				t.Fatalf("a refused input (%v) changed the device's state from\n%s\nto\n%s", err, state, after)
			}
			return
		}
		reloaded, err := parseState(after, LoadOptions{})
		if err != nil {
			t.Fatalf("after an accepted input the state does not load: %v\n%s", err, after)
		}
		sameStatus(t, "reloaded after an accepted input", statusOf(t, reloaded), statusOf(t, d))
	})
}
