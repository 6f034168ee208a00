package ledger

import (
	"bytes"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
)

// FuzzParseTrustPEM checks the trust bundle parser: ParseTrustPEM never
// panics, every error wraps ErrInvalidTrust, and a bundle it accepts
// round-trips through PEM: ParseTrustPEM(t.PEM()) succeeds with the same
// roots and intermediates in the same order, and PEM is a fixed point.
func FuzzParseTrustPEM(f *testing.F) {
	p, q := newTestPKI(f), newTestPKI(f)
	f.Add(p.trust.PEM())
	f.Add(pemOf(p.deviceCA, p.root))
	f.Add(pemOf(p.root))
	f.Add(pemOf(p.root, p.deviceCA, q.root, q.deviceCA))
	f.Add(append(append([]byte(" \r\n"), pemOf(p.root)...), "\n\t"...))
	f.Add(pemOf(p.deviceCA))         // no root
	f.Add(pemOf(p.root, p.station))  // not a CA
	f.Add(pemOf(p.root, q.deviceCA)) // an intermediate of another root
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := ParseTrustPEM(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidTrust) {
				t.Fatalf("ParseTrustPEM error %v does not wrap ErrInvalidTrust", err)
			}
			return
		}
		if err := tr.Err(); err != nil {
			t.Fatalf("ParseTrustPEM accepted a bundle whose Err is %v", err)
		}
		if len(tr.Roots()) == 0 {
			t.Fatalf("ParseTrustPEM accepted a bundle without a root")
		}
		again, err := ParseTrustPEM(tr.PEM())
		if err != nil {
			t.Fatalf("accepted %q, whose PEM\n%s\nis refused: %v", b, tr.PEM(), err)
		}
		if !sameCerts(again.Roots(), tr.Roots()) || !sameCerts(again.Intermediates(), tr.Intermediates()) {
			t.Fatalf("accepted %q: ParseTrustPEM(PEM()) has %d roots and %d intermediates, want the same %d and %d",
				b, len(again.Roots()), len(again.Intermediates()), len(tr.Roots()), len(tr.Intermediates()))
		}
		if !bytes.Equal(again.PEM(), tr.PEM()) {
			t.Fatalf("PEM is not a fixed point:\n%s\nthen\n%s", tr.PEM(), again.PEM())
		}
	})
}

// bindingIdentities returns the identities a certificate with binding b is
// meant to carry: a first identity whose DisplayValue is the subject
// serialNumber (the IMEI it names when the SAN lists that IMEI's URN, else a
// serial number), then one IMEI per other URN. It returns false when no
// valid identity list can match b (too many URNs, or a serialNumber that is
// no valid serial).
func bindingIdentities(t *testing.T, b *DeviceBinding) (Identities, bool) {
	var urnIDs Identities
	for _, urn := range b.IMEIURNs {
		id, err := parseIMEIURN(urn)
		if err != nil {
			t.Fatalf("ParseDeviceBinding accepted URN %q, which does not parse: %v", urn, err)
		}
		if got, _ := id.IMEIURN(); got != urn {
			t.Fatalf("ParseDeviceBinding accepted URN %q, whose canonical form is %q", urn, got)
		}
		urnIDs = append(urnIDs, id)
	}
	var ids Identities
	for i, id := range urnIDs {
		if id.DisplayValue() == b.SerialNumber {
			ids = append(Identities{id}, append(urnIDs[:i:i], urnIDs[i+1:]...)...)
			break
		}
	}
	if ids == nil {
		first, err := NewSerial(b.SerialNumber)
		if err != nil {
			return nil, false
		}
		ids = append(Identities{first}, urnIDs...)
	}
	return ids, ids.Validate() == nil
}

// FuzzParseDeviceBinding checks ParseDeviceBinding on arbitrary certificates
// (DER that x509 parses, signature unchecked): it never panics; every error
// wraps ErrCertificateProfile; and CheckDeviceBinding agrees with what it
// accepts: it passes for the binding's chip and the identities the binding
// names (when a valid identity list can name them), and fails for another
// chip (ErrChipIDMismatch) and for one IMEI more (ErrIdentityMismatch).
func FuzzParseDeviceBinding(f *testing.F) {
	p := newTestPKI(f)
	for i, ids := range []Identities{
		testIdentities(testChipID(1)),
		testIMEIIdentities(f, "imei:352099001761481"),
		testIMEIIdentities(f, "imei:352099001761481", "imei:260531793113837"),
		testIMEIIdentities(f, "meid:a0000000002329"),
		testIMEIIdentities(f, "serial:Gerät 42", "imei:352099001761481"),
	} {
		f.Add(p.deviceCert(f, testChipID(i), ids, testPKITime))
	}
	f.Add(p.station.Raw)
	f.Fuzz(func(t *testing.T, der []byte) {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return
		}
		b, err := ParseDeviceBinding(cert)
		if err != nil {
			if !errors.Is(err, ErrCertificateProfile) {
				t.Fatalf("ParseDeviceBinding error %v does not wrap ErrCertificateProfile", err)
			}
			return
		}
		if err := b.ChipID.Validate(); err != nil {
			t.Fatalf("ParseDeviceBinding accepted chip ID %x: %v", b.ChipID, err)
		}
		ids, ok := bindingIdentities(t, b)
		if !ok {
			return
		}
		if err := CheckDeviceBinding(cert, b.ChipID, ids); err != nil {
			t.Fatalf("binding %+v: CheckDeviceBinding with its own chip and identities %s: %v", b, ids, err)
		}
		other := bytes.Clone(b.ChipID)
		other[0] ^= 1
		if err := CheckDeviceBinding(cert, other, ids); !errors.Is(err, ErrChipIDMismatch) {
			t.Fatalf("binding %+v: CheckDeviceBinding with chip %s = %v, want ErrChipIDMismatch", b, ChipID(other), err)
		}
		extra, err := NewIMEI("35209900000000")
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if id == extra {
				extra.Value = "35209900000001"
			}
		}
		if more := append(ids[:len(ids):len(ids)], extra); more.Validate() == nil {
			if err := CheckDeviceBinding(cert, b.ChipID, more); !errors.Is(err, ErrIdentityMismatch) {
				t.Fatalf("binding %+v: CheckDeviceBinding with the extra IMEI %s = %v, want ErrIdentityMismatch", b, extra, err)
			}
		}
	})
}

// FuzzParseChipID checks ParseChipID: it never panics, errors wrap
// ErrInvalidChipID, and a chip ID it accepts is valid and round-trips
// through its text form: ParseChipID(c.String()) is c. The text form is
// lower-case hex and ParseChipID also takes upper-case digits (documented),
// so an accepted input is c.String() up to case, and nothing else.
func FuzzParseChipID(f *testing.F) {
	for _, s := range []string{
		"00112233445566778899aabbccddeeff", "00112233445566778899AABBCCDDEEFF",
		strings.Repeat("01", 8), strings.Repeat("fe", 32), strings.Repeat("01", 7),
		strings.Repeat("01", 33), "", "0x0011223344556677", "00112233 44556677", "0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseChipID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidChipID) {
				t.Fatalf("ParseChipID(%q) error %v does not wrap ErrInvalidChipID", s, err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseChipID(%q) = %x, which is not valid: %v", s, c, err)
		}
		if !strings.EqualFold(s, c.String()) || strings.ToLower(s) != c.String() {
			t.Fatalf("ParseChipID(%q) = %s: the input is not its text form up to case", s, c)
		}
		again, err := ParseChipID(c.String())
		if err != nil || !again.Equal(c) {
			t.Fatalf("ParseChipID(%q) = %v, %v; want %s", c.String(), again, err, c)
		}
	})
}
