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
// takes input, in every state of the handshake: none may panic, and a
// device that refused an input is left as it was.
func FuzzDeviceInputs(f *testing.F) {
	fx := newFixture(f)
	base := fx.manufacture()
	p := fx.provision(base)
	pending, pp := pendingDevice(f, fx)
	for _, s := range [][]byte{p.pkg, p.backup, p.cert, p.receipt, p.lookup, pp.pkg, pp.backup, pp.cert, nil, {0}} {
		f.Add(uint8(0), s)
	}
	f.Add(uint8(16), p.lookup) // base, a genuine backup with this lookup proof
	devices := []*Device{fx.manufacture(), base, pending}
	f.Fuzz(func(t *testing.T, op uint8, in []byte) {
		d := devices[int(op)%len(devices)]
		before := statusOf(t, d)
		var err error
		switch op / 3 % 6 {
		case 0:
			_, err = d.StorePackage(ctx, in)
		case 1:
			err = d.CheckBackup(ctx, in)
		case 2:
			err = d.StoreCertificate(ctx, in)
		case 3:
			err = d.StoreReceipt(ctx, in)
		case 4:
			err = d.RestoreBackup(ctx, in, in, in, in)
		case 5:
			// A genuine backup and certificate, so that the lookup
			// proof's parser and checks are reached.
			err = d.RestoreBackup(ctx, p.backup, p.cert, nil, in)
		}
		if err != nil {
			sameStatus(t, "after a refused input", statusOf(t, d), before)
		}
	})
}
