package ledger

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// encodeOIDArcs is an independent DER encoder of OID content bytes: the first
// two arcs as 40·a+b, then every arc in base 128, most significant group
// first, with the high bit set on all groups but the last.
func encodeOIDArcs(t *testing.T, dotted string) []byte {
	t.Helper()
	parts := strings.Split(dotted, ".")
	arcs := make([]*big.Int, len(parts))
	for i, p := range parts {
		n, ok := new(big.Int).SetString(p, 10)
		if !ok {
			t.Fatalf("bad arc %q", p)
		}
		arcs[i] = n
	}
	first := new(big.Int).Mul(arcs[0], big.NewInt(40))
	first.Add(first, arcs[1])
	var out []byte
	for _, arc := range append([]*big.Int{first}, arcs[2:]...) {
		var groups []byte
		n := new(big.Int).Set(arc)
		for {
			groups = append([]byte{byte(new(big.Int).And(n, big.NewInt(0x7f)).Int64())}, groups...)
			n.Rsh(n, 7)
			if n.Sign() == 0 {
				break
			}
		}
		for i := 0; i < len(groups)-1; i++ {
			groups[i] |= 0x80
		}
		out = append(out, groups...)
	}
	return out
}

func TestProjectOIDs(t *testing.T) {
	for _, tt := range []struct {
		oid    x509.OID
		dotted string
	}{
		{OIDChipFamily, "2.25.144312216418632237235149399241930038450.1"},
		{OIDDeviceCertPolicy, "2.25.144312216418632237235149399241930038450.2"},
		{OIDStationCertPolicy, "2.25.144312216418632237235149399241930038450.3"},
	} {
		if tt.oid.String() != tt.dotted {
			t.Errorf("OID %s, want %s", tt.oid, tt.dotted)
		}
		if got, want := oidContent(tt.oid), encodeOIDArcs(t, tt.dotted); !bytes.Equal(got, want) {
			t.Errorf("%s: content bytes %x, independent encoder gives %x", tt.dotted, got, want)
		}
	}
	if got := oidContent(OIDChipFamily); got[0] != 2*40+25 {
		t.Errorf("first byte %#x, want 2·40+25", got[0])
	}
}

func testIMEIIdentities(t testing.TB, texts ...string) Identities {
	t.Helper()
	var ids Identities
	for _, s := range texts {
		ids = append(ids, mustIdentity(t, s))
	}
	if err := ids.Validate(); err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestDeviceCertificateFollowsProfile(t *testing.T) {
	p := newTestPKI(t)
	chip := testChipID(7)
	ids := testIMEIIdentities(t, "imei:352099001761481", "imei:490154203237518", "serial:SN-7")
	der := p.deviceCert(t, chip, ids, testPKITime)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}

	if !slices.Equal(cert.Subject.Organization, []string{testManufacturer}) || cert.Subject.SerialNumber != "352099001761481" {
		t.Errorf("subject %q, want O=%s, serialNumber=IMEI with check digit", cert.Subject, testManufacturer)
	}
	if !cert.NotBefore.Equal(testPKITime) || !cert.NotAfter.Equal(deviceNotAfter) {
		t.Errorf("validity %s to %s", cert.NotBefore, cert.NotAfter)
	}
	if !bytes.Contains(cert.RawTBSCertificate, []byte("99991231235959Z")) {
		t.Error("notAfter is not the GeneralizedTime 99991231235959Z")
	}
	if cert.SerialNumber.Sign() <= 0 || cert.SerialNumber.BitLen() > 127 {
		t.Errorf("serial %x: want positive, 16 bytes with the top bit clear", cert.SerialNumber)
	}
	if cert.KeyUsage != x509.KeyUsageDigitalSignature || !isCritical(cert, oidKeyUsage) {
		t.Error("keyUsage is not critical digitalSignature")
	}
	if !cert.BasicConstraintsValid || cert.IsCA || !isCritical(cert, oidBasicConstraints) {
		t.Error("basicConstraints is not critical CA:FALSE")
	}
	if len(cert.Policies) != 1 || !cert.Policies[0].Equal(OIDDeviceCertPolicy) {
		t.Errorf("policies %v, want [%s]", cert.Policies, OIDDeviceCertPolicy)
	}
	skid, _ := SubjectKeyID(cert.PublicKey)
	if !bytes.Equal(cert.SubjectKeyId, skid) || len(skid) != 20 {
		t.Errorf("SKI %x, want %x", cert.SubjectKeyId, skid)
	}
	if !bytes.Equal(cert.AuthorityKeyId, p.deviceCA.SubjectKeyId) || len(cert.AuthorityKeyId) == 0 {
		t.Errorf("AKI %x, want the device CA's SKI %x", cert.AuthorityKeyId, p.deviceCA.SubjectKeyId)
	}
	if isCritical(cert, oidSubjectAltName) {
		t.Error("SAN is critical")
	}
	var uris []string
	for _, u := range cert.URIs {
		uris = append(uris, u.String())
	}
	if want := []string{"urn:gsma:imei:35209900-176148-0", "urn:gsma:imei:49015420-323751-0"}; !slices.Equal(uris, want) {
		t.Errorf("Go sees SAN URIs %v, want %v", uris, want)
	}
	b, err := ParseDeviceBinding(cert)
	if err != nil {
		t.Fatal(err)
	}
	if !b.ChipID.Equal(chip) || b.SerialNumber != "352099001761481" || !slices.Equal(b.IMEIURNs, uris) {
		t.Errorf("binding %+v", b)
	}
	if err := CheckDeviceBinding(cert, chip, ids); err != nil {
		t.Errorf("CheckDeviceBinding: %v", err)
	}
}

func TestGoVerifyAcceptsDeviceCertificate(t *testing.T) {
	p := newTestPKI(t)
	for _, ids := range []Identities{
		testIMEIIdentities(t, "imei:352099001761481"),
		testIMEIIdentities(t, "serial:no IMEI, so the SAN holds only the otherName"),
	} {
		cert, err := x509.ParseCertificate(p.deviceCert(t, testChipID(1), ids, testPKITime))
		if err != nil {
			t.Fatal(err)
		}
		if len(cert.UnhandledCriticalExtensions) != 0 {
			t.Errorf("%s: unhandled critical extensions %v", ids, cert.UnhandledCriticalExtensions)
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(p.root)
		inter.AddCert(p.deviceCA)
		if _, err := cert.Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, CurrentTime: testPKITime.Add(time.Hour),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		}); err != nil {
			t.Errorf("%s: Go rejects the device certificate: %v", ids, err)
		}
	}
}

// TestGoVerifyRejectsCriticalOtherNameOnlySAN pins the Go behaviour that
// makes the device SAN non-critical (DESIGN.md §3.5): a critical SAN holding
// only an otherName is an unhandled critical extension.
func TestGoVerifyRejectsCriticalOtherNameOnlySAN(t *testing.T) {
	p := newTestPKI(t)
	ids := testIMEIIdentities(t, "serial:SN-1")
	tmpl, err := DeviceCertificateTemplate(testManufacturer, testChipID(1), ids, testPKITime, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.ExtraExtensions[0].Critical = true
	cert, err := x509.ParseCertificate(p.issueDevice(t, tmpl))
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.UnhandledCriticalExtensions) == 0 {
		t.Fatal("Go handles a critical otherName-only SAN; the profile note in DESIGN.md §3.5 is out of date")
	}
	_, err = p.trust.VerifyDeviceCertificate(cert.Raw, testChipID(1), ids, testPKITime)
	if !errors.Is(err, ErrUntrustedCertificate) {
		t.Fatalf("VerifyDeviceCertificate = %v, want ErrUntrustedCertificate", err)
	}
}

func TestDeviceCertificateTemplateRejectsBadInput(t *testing.T) {
	ids := testIMEIIdentities(t, "imei:352099001761481")
	chip := testChipID(1)
	if _, err := DeviceCertificateTemplate("", chip, ids, testPKITime, rand.Reader); !errors.Is(err, ErrCertificateProfile) {
		t.Errorf("empty manufacturer: %v", err)
	}
	if _, err := DeviceCertificateTemplate(strings.Repeat("m", 65), chip, ids, testPKITime, rand.Reader); !errors.Is(err, ErrCertificateProfile) {
		t.Errorf("65-byte manufacturer: %v", err)
	}
	if _, err := DeviceCertificateTemplate(testManufacturer, chip[:7], ids, testPKITime, rand.Reader); !errors.Is(err, ErrInvalidChipID) {
		t.Errorf("short chip: %v", err)
	}
	if _, err := DeviceCertificateTemplate(testManufacturer, chip, nil, testPKITime, rand.Reader); !errors.Is(err, ErrInvalidIdentity) {
		t.Errorf("no identities: %v", err)
	}
	if _, err := DeviceCertificateTemplate(testManufacturer, chip, ids, testPKITime, bytes.NewReader(make([]byte, 16))); err == nil {
		t.Error("an all-zero serial was accepted")
	}
	if _, err := DeviceCertificateTemplate(testManufacturer, chip, ids, testPKITime, bytes.NewReader(nil)); err == nil {
		t.Error("a failing random source was accepted")
	}
	p := newTestPKI(t)
	tmpl, _ := DeviceCertificateTemplate(testManufacturer, chip, ids, testPKITime, rand.Reader)
	if _, err := IssueDeviceCertificate(rand.Reader, tmpl, nil, p.deviceCA, p.deviceCAKey); !errors.Is(err, ErrCertificateProfile) {
		t.Errorf("IssueDeviceCertificate without a P-256 key: %v", err)
	}
}

// sanCert issues a device certificate for chip 1 with the given subject and
// a SAN built by build, bypassing the template's SAN.
func sanCert(t *testing.T, p *testPKI, subject pkix.Name, critical bool, build func(b *cryptobyte.Builder)) *x509.Certificate {
	t.Helper()
	tmpl, err := DeviceCertificateTemplate(testManufacturer, testChipID(1), testIMEIIdentities(t, "imei:352099001761481"), testPKITime, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.Subject = subject
	tmpl.ExtraExtensions = nil
	if build != nil {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, build)
		tmpl.ExtraExtensions = []pkix.Extension{{Id: oidSubjectAltName, Critical: critical, Value: b.BytesOrPanic()}}
	}
	cert, err := x509.ParseCertificate(p.issueDevice(t, tmpl))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func addHWName(b *cryptobyte.Builder, hwType asn1.ObjectIdentifier, hwTypeContent []byte, serial []byte) {
	b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(hwType)
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(hwTypeContent) })
				b.AddASN1OctetString(serial)
			})
		})
	})
}

func addURI(b *cryptobyte.Builder, uri string) {
	b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(uri)) })
}

func TestParseDeviceBindingRejectsProfileViolations(t *testing.T) {
	p := newTestPKI(t)
	chip := testChipID(1)
	family := oidContent(OIDChipFamily)
	subject := pkix.Name{Organization: []string{testManufacturer}, SerialNumber: "352099001761481"}
	const urn = "urn:gsma:imei:35209900-176148-0"
	good := func(b *cryptobyte.Builder) { addHWName(b, oidHardwareModuleName, family, chip); addURI(b, urn) }

	if _, err := ParseDeviceBinding(sanCert(t, p, subject, false, good)); err != nil {
		t.Fatalf("the hand-built good SAN is rejected: %v", err)
	}
	tests := []struct {
		name     string
		subject  pkix.Name
		critical bool
		build    func(b *cryptobyte.Builder)
	}{
		{"no SAN", subject, false, nil},
		{"critical SAN", subject, true, good},
		{"no hardwareModuleName", subject, false, func(b *cryptobyte.Builder) { addURI(b, urn) }},
		{"two hardwareModuleNames", subject, false, func(b *cryptobyte.Builder) {
			addHWName(b, oidHardwareModuleName, family, chip)
			addHWName(b, oidHardwareModuleName, family, chip)
		}},
		{"another hwType", subject, false, func(b *cryptobyte.Builder) {
			addHWName(b, oidHardwareModuleName, oidContent(OIDDeviceCertPolicy), chip)
		}},
		{"another otherName type", subject, false, func(b *cryptobyte.Builder) {
			addHWName(b, oidHardwareModuleName, family, chip)
			addHWName(b, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 3}, family, chip)
		}},
		{"hwSerialNum of 7 bytes", subject, false, func(b *cryptobyte.Builder) {
			addHWName(b, oidHardwareModuleName, family, chip[:7])
		}},
		{"a DNS name", subject, false, func(b *cryptobyte.Builder) {
			good(b)
			b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte("device.example")) })
		}},
		{"a URI that is not an IMEI URN", subject, false, func(b *cryptobyte.Builder) { good(b); addURI(b, "https://example.com") }},
		{"an IMEI URN with the check digit as spare", subject, false, func(b *cryptobyte.Builder) {
			addHWName(b, oidHardwareModuleName, family, chip)
			addURI(b, "urn:gsma:imei:35209900-176148-1")
		}},
		{"an IMEI URN with an svn parameter", subject, false, func(b *cryptobyte.Builder) {
			addHWName(b, oidHardwareModuleName, family, chip)
			addURI(b, urn+";svn=42")
		}},
		{"an IMEI URN with an all-zero TAC", subject, false, func(b *cryptobyte.Builder) {
			addHWName(b, oidHardwareModuleName, family, chip)
			addURI(b, "urn:gsma:imei:00000000-176148-0")
		}},
		{"the same IMEI URN twice", subject, false, func(b *cryptobyte.Builder) { good(b); addURI(b, urn) }},
		{"no subject serialNumber", pkix.Name{Organization: []string{testManufacturer}}, false, good},
		{"two subject serialNumbers", pkix.Name{
			Organization: []string{testManufacturer},
			ExtraNames: []pkix.AttributeTypeAndValue{
				{Type: oidSerialNumberAttr, Value: "352099001761481"},
				{Type: oidSerialNumberAttr, Value: "352099001761481"},
			},
		}, false, good},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := sanCert(t, p, tt.subject, tt.critical, tt.build)
			if b, err := ParseDeviceBinding(cert); !errors.Is(err, ErrCertificateProfile) {
				t.Fatalf("ParseDeviceBinding = %+v, %v; want ErrCertificateProfile", b, err)
			}
		})
	}
}

func TestCheckDeviceBindingMismatches(t *testing.T) {
	p := newTestPKI(t)
	chip := testChipID(1)
	dual := testIMEIIdentities(t, "imei:352099001761481", "imei:490154203237518")
	cert, err := x509.ParseCertificate(p.deviceCert(t, chip, dual, testPKITime))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		chip ChipID
		ids  Identities
		want error
	}{
		{"exact binding", chip, dual, nil},
		{"another chip", testChipID(2), dual, ErrChipIDMismatch},
		{"a prefix of the chip ID", chip[:8], dual, ErrChipIDMismatch},
		{"IMEIs in the other order", chip, Identities{dual[1], dual[0]}, ErrIdentityMismatch},
		{"one IMEI missing", chip, dual[:1], ErrIdentityMismatch},
		{"another second IMEI", chip, testIMEIIdentities(t, "imei:352099001761481", "imei:260531793113837"), ErrIdentityMismatch},
		{"an extra serial", chip, append(dual[:2:2], mustIdentity(t, "serial:x")), nil},
		{"a serial with the first IMEI's digits instead of the IMEI", chip, testIMEIIdentities(t, "serial:352099001761481", "imei:490154203237518"), ErrIdentityMismatch},
	}
	for _, tt := range tests {
		err := CheckDeviceBinding(cert, tt.chip, tt.ids)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: CheckDeviceBinding = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestCheckDeviceBindingOfNonIMEIFirstIdentity(t *testing.T) {
	p := newTestPKI(t)
	chip := testChipID(3)
	for _, ids := range []Identities{
		testIMEIIdentities(t, "meid:a0000000002329"),
		testIMEIIdentities(t, "serial:Gerät 42", "imei:352099001761481"),
	} {
		cert, err := x509.ParseCertificate(p.deviceCert(t, chip, ids, testPKITime))
		if err != nil {
			t.Fatal(err)
		}
		if cert.Subject.SerialNumber != ids[0].DisplayValue() {
			t.Errorf("serialNumber %q, want %q", cert.Subject.SerialNumber, ids[0].DisplayValue())
		}
		if err := CheckDeviceBinding(cert, chip, ids); err != nil {
			t.Errorf("%s: %v", ids, err)
		}
	}
}

func TestStationCertificateTemplate(t *testing.T) {
	p := newTestPKI(t)
	s := p.station
	if len(s.Policies) != 1 || !s.Policies[0].Equal(OIDStationCertPolicy) {
		t.Errorf("policies %v", s.Policies)
	}
	if s.Subject.CommonName != "station-1" || !slices.Equal(s.Subject.Organization, []string{testManufacturer}) {
		t.Errorf("subject %q", s.Subject)
	}
	if s.KeyUsage != x509.KeyUsageDigitalSignature || !s.BasicConstraintsValid || s.IsCA {
		t.Error("not a digitalSignature CA:FALSE certificate")
	}
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := StationCertificateTemplate(testManufacturer, "s", start, start, rand.Reader); !errors.Is(err, ErrCertificateProfile) {
		t.Errorf("empty validity: %v", err)
	}
	if _, err := StationCertificateTemplate(testManufacturer, "", start, start.Add(time.Hour), rand.Reader); !errors.Is(err, ErrCertificateProfile) {
		t.Errorf("empty station name: %v", err)
	}
	if got, want := StationID(s.Raw), p.stationRegistration().StationID(); got != want {
		t.Errorf("StationID %x != registration's %x", got, want)
	}
}
