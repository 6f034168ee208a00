package ledger

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
)

func pemOf(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func TestTrustPEMRoundTrip(t *testing.T) {
	p := newTestPKI(t)
	// Intermediates first in the input: ParseTrustPEM sorts by self-signature.
	bundle := append(pemOf(p.deviceCA), pemOf(p.root)...)
	tr, err := ParseTrustPEM(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if !sameCerts(tr.Roots(), []*x509.Certificate{p.root}) || !sameCerts(tr.Intermediates(), []*x509.Certificate{p.deviceCA}) {
		t.Fatalf("roots %d, intermediates %d: not split by self-signature", len(tr.Roots()), len(tr.Intermediates()))
	}
	if want := pemOf(p.root, p.deviceCA); !bytes.Equal(tr.PEM(), want) {
		t.Fatalf("PEM() =\n%s\nwant\n%s", tr.PEM(), want)
	}
	again, err := ParseTrustPEM(tr.PEM())
	if err != nil || !bytes.Equal(again.PEM(), tr.PEM()) {
		t.Fatalf("ParseTrustPEM(PEM()) = %v", err)
	}
	if !bytes.Equal(p.trust.PEM(), tr.PEM()) {
		t.Fatal("NewTrust and ParseTrustPEM of the same certificates differ")
	}
}

func TestParseTrustPEMRejectsBadBundles(t *testing.T) {
	p := newTestPKI(t)
	root := pemOf(p.root)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name   string
		bundle []byte
	}{
		{"empty", nil},
		{"white space only", []byte(" \n\t\n")},
		{"garbage", []byte("not a certificate")},
		{"garbage before the root", cat([]byte("junk\n"), root)},
		{"garbage after the root", cat(root, []byte("junk"))},
		{"garbage between blocks", cat(root, []byte("junk\n"), pemOf(p.deviceCA))},
		{"DER instead of PEM", p.root.Raw},
		{"another block type", cat(root, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}))},
		{"a certificate that does not parse", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}})},
		{"unterminated block", root[:len(root)-20]},
		{"a station certificate (not a CA)", cat(root, pemOf(p.station))},
		{"intermediates only", pemOf(p.deviceCA)},
		{"the root twice", cat(root, root)},
	}
	for _, tt := range tests {
		if tr, err := ParseTrustPEM(tt.bundle); !errors.Is(err, ErrInvalidTrust) {
			t.Errorf("%s: ParseTrustPEM = %v, %v; want ErrInvalidTrust", tt.name, tr, err)
		}
	}
}

func TestTrustWithoutAnchorsTrustsNothing(t *testing.T) {
	p := newTestPKI(t)
	chip := testChipID(1)
	ids := testIdentities(chip)
	der := p.deviceCert(t, chip, ids, testPKITime)
	for name, tr := range map[string]*Trust{"nil": nil, "zero": {}, "empty": NewTrust(nil, nil), "intermediates only": NewTrust(nil, p.trust.Intermediates())} {
		if _, err := tr.VerifyDeviceCertificate(der, chip, ids, testPKITime); !errors.Is(err, ErrUntrustedCertificate) {
			t.Errorf("%s trust: VerifyDeviceCertificate = %v, want ErrUntrustedCertificate", name, err)
		}
		if _, err := tr.VerifyStationCertificate(p.station.Raw, testPKITime); !errors.Is(err, ErrUntrustedCertificate) {
			t.Errorf("%s trust: VerifyStationCertificate = %v, want ErrUntrustedCertificate", name, err)
		}
	}
}

func TestVerifyCertificatesCheckTheirOwnPolicy(t *testing.T) {
	p := newTestPKI(t)
	chip := testChipID(1)
	ids := testIdentities(chip)
	device := p.deviceCert(t, chip, ids, testPKITime)
	if _, err := p.trust.VerifyStationCertificate(device, provisionedAt(1)); !errors.Is(err, ErrCertificateProfile) {
		t.Errorf("a device certificate as a station certificate: %v, want ErrCertificateProfile", err)
	}
	if _, err := p.trust.VerifyDeviceCertificate(p.station.Raw, chip, ids, provisionedAt(1)); !errors.Is(err, ErrCertificateProfile) {
		t.Errorf("a station certificate as a device certificate: %v, want ErrCertificateProfile", err)
	}
	if _, err := p.trust.VerifyDeviceCertificate([]byte("not DER"), chip, ids, provisionedAt(1)); !errors.Is(err, ErrCertificateProfile) {
		t.Errorf("garbage as a device certificate: %v, want ErrCertificateProfile", err)
	}
	if _, err := p.trust.VerifyDeviceCertificate(append(device, 0), chip, ids, provisionedAt(1)); !errors.Is(err, ErrCertificateProfile) {
		t.Errorf("a device certificate with a trailing byte: %v, want ErrCertificateProfile", err)
	}
}
