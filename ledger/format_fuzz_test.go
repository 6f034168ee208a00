package ledger

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
)

// FuzzParseEntry checks that ParseEntry never panics and that every leaf it
// accepts is the one encoding of its entry: MarshalLeaf(ParseEntry(x)) == x.
// PeekKind and PeekEscrow must agree with it on every accepted leaf.
func FuzzParseEntry(f *testing.F) {
	for _, name := range []string{"escrow-entry.hex", "station-registration.hex", "index-root.hex", "station-revocation.hex"} {
		f.Add(readGolden(f, name))
	}
	p := newTestPKI(f)
	f.Add(p.escrowLeaf(f, testChipID(1), 1))
	f.Add(p.stationLeaf(f))
	f.Add([]byte{0, 1})
	f.Add([]byte{0, 5, 1, 2})
	f.Fuzz(func(t *testing.T, leaf []byte) {
		e, err := ParseEntry(leaf)
		if k, _ := PeekKind(leaf); k == KindEscrow {
			nc, ncErr := ParseEscrowEntryNoCopy(leaf)
			if fmt.Sprint(ncErr) != fmt.Sprint(err) || (err == nil && !reflect.DeepEqual(nc, e)) {
				t.Fatalf("ParseEscrowEntryNoCopy = %+v, %v; ParseEntry = %+v, %v", nc, ncErr, e, err)
			}
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseEntry error %v does not wrap ErrMalformed", err)
			}
			return
		}
		again, err := e.MarshalLeaf()
		if err != nil {
			t.Fatalf("MarshalLeaf of a parsed entry: %v", err)
		}
		if !bytes.Equal(again, leaf) {
			t.Fatalf("MarshalLeaf(ParseEntry(%x)) = %x", leaf, again)
		}
		if k, err := PeekKind(leaf); err != nil || k != e.Kind() {
			t.Fatalf("PeekKind = %v, %v; ParseEntry gives %v", k, err, e.Kind())
		}
		if esc, ok := e.(*EscrowEntry); ok {
			chip, epoch, err := PeekEscrow(leaf)
			if err != nil || !chip.Equal(esc.ChipID) || epoch != esc.Epoch {
				t.Fatalf("PeekEscrow = %s, %d, %v; ParseEscrowEntry = %s, %d", chip, epoch, err, esc.ChipID, esc.Epoch)
			}
			msg, err := esc.SignedMessage()
			if err != nil || !bytes.Equal(msg, leaf[:len(leaf)-2-len(esc.Signature)]) {
				t.Fatalf("SignedMessage = %x, %v; want the leaf before the signature", msg, err)
			}
			d, err := esc.Digest()
			if want := sha256.Sum256(append([]byte("chipledger/escrow/v1\x00"), msg...)); err != nil || d != want {
				t.Fatalf("Digest = %x, %v; want %x", d, err, want)
			}
		}
	})
}

// FuzzParseIdentities checks that ParseIdentities never panics and that
// MarshalBinary(ParseIdentities(x)) == x.
func FuzzParseIdentities(f *testing.F) {
	f.Add(mustHex(f, identitiesVector))
	f.Add(mustHex(f, "10 010e 3335323039393030313736313438"))
	f.Add(mustHex(f, "0c 0301 41 0301 42 0301 43 0301 44"))
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ids, err := ParseIdentities(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseIdentities error %v does not wrap ErrMalformed", err)
			}
			return
		}
		again, err := ids.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("MarshalBinary(ParseIdentities(%x)) = %x, %v", b, again, err)
		}
	})
}

// FuzzParseIdentity checks that ParseIdentity never panics, that what it
// accepts is valid, and that its text and binary forms round-trip:
// ParseIdentity(id.String()) == id, and the binary encoding parses back.
func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{
		"imei:260531793113837", "imei:26053179311383", "IMEI:2605317931138301",
		"meid:a0000000002329", "serial:Gerät-42", "serial:a:b", "serial:\x00", "x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		id, err := ParseIdentity(text)
		if err != nil {
			if !errors.Is(err, ErrInvalidIdentity) {
				t.Fatalf("ParseIdentity error %v does not wrap ErrInvalidIdentity", err)
			}
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("ParseIdentity(%q) = %+v, which is invalid: %v", text, id, err)
		}
		again, err := ParseIdentity(id.String())
		if err != nil || again != id {
			t.Fatalf("ParseIdentity(%q) = %+v, %v; want %+v", id.String(), again, err, id)
		}
		b, err := Identities{id}.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary: %v", err)
		}
		ids, err := ParseIdentities(b)
		if err != nil || !reflect.DeepEqual(ids, Identities{id}) {
			t.Fatalf("ParseIdentities(%x) = %v, %v", b, ids, err)
		}
	})
}

// FuzzParseDeviceSAN fuzzes the hand-written parser of the device
// certificate's subjectAltName, which every escrow entry carries: it must
// refuse anything but one hardwareModuleName with a valid chip ID and
// well-formed urn:gsma:imei URIs (errors wrapping ErrCertificateProfile),
// and what it accepts must encode and parse back to the same binding.
func FuzzParseDeviceSAN(f *testing.F) {
	for _, imeis := range [][]string{nil, {"490154203237518"}, {"490154203237518", "352099001761481"}} {
		var urns []string
		for _, s := range imeis {
			id, err := NewIMEI(s)
			if err != nil {
				f.Fatal(err)
			}
			urn, _ := id.IMEIURN()
			urns = append(urns, urn)
		}
		san, err := marshalDeviceSAN(testChipID(7), urns)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(san)
	}
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		b, err := parseDeviceSAN(der)
		if err != nil {
			if !errors.Is(err, ErrCertificateProfile) {
				t.Fatalf("error %v does not wrap ErrCertificateProfile", err)
			}
			return
		}
		if err := b.ChipID.Validate(); err != nil {
			t.Fatalf("accepted an invalid chip ID: %v", err)
		}
		again, err := marshalDeviceSAN(b.ChipID, b.IMEIURNs)
		if err != nil {
			t.Fatalf("an accepted binding does not encode: %v", err)
		}
		b2, err := parseDeviceSAN(again)
		if err != nil {
			t.Fatalf("its own encoding does not parse: %v", err)
		}
		if !bytes.Equal(b2.ChipID, b.ChipID) || !slices.Equal(b2.IMEIURNs, b.IMEIURNs) {
			t.Fatalf("round trip changed the binding: %+v, then %+v", b, b2)
		}
	})
}
