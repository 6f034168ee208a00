package ledger

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"slices"
	"testing"
	"time"
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
	other := newTestPKI(t)
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
		{"an intermediate of another root", cat(root, pemOf(p.deviceCA), pemOf(other.deviceCA))},
		{"a broken header before the root", cat([]byte("-----BEGIN X\n"), root)},
		{"a certificate block of garbage before the root", cat([]byte("-----BEGIN CERTIFICATE-----\ngarbage\n"), root)},
		{"text in a broken block between blocks", cat(root, []byte("-----BEGIN \nthis is not white space\n"), pemOf(p.deviceCA))},
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

// TestNewTrustIssuesOnlyFromCAs: x509 does not check that an anchor may
// sign, so NewTrust must: a station certificate (not a CA) given as an
// intermediate, or as a root, issues nothing, and Err says why.
func TestNewTrustIssuesOnlyFromCAs(t *testing.T) {
	p := newTestPKI(t)
	chip := testChipID(1)
	ids := testIdentities(chip)
	tmpl, err := DeviceCertificateTemplate(testManufacturer, chip, ids, testPKITime, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// Issued by the station's key, naming the station as its issuer.
	der, err := IssueDeviceCertificate(rand.Reader, tmpl, &testKey(t).PublicKey, p.station, p.stationKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, tr := range map[string]*Trust{
		"as an intermediate": NewTrust([]*x509.Certificate{p.root}, []*x509.Certificate{p.station}),
		"as a root":          NewTrust([]*x509.Certificate{p.root, p.station}, nil),
	} {
		if !errors.Is(tr.Err(), ErrInvalidTrust) {
			t.Errorf("station certificate %s: Err() = %v, want ErrInvalidTrust", name, tr.Err())
		}
		if _, err := tr.VerifyDeviceCertificate(der, chip, ids, testPKITime.Add(time.Hour)); !errors.Is(err, ErrUntrustedCertificate) {
			t.Errorf("station certificate %s: a device certificate it signed verifies (%v)", name, err)
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

func year(y int) time.Time { return time.Date(y, time.January, 1, 0, 0, 0, 0, time.UTC) }

// testCAValid makes a CA certificate for key valid from notBefore to
// notAfter, self-signed when parent is nil, after modify (if any) changes
// its template.
func testCAValid(t testing.TB, name string, parent *x509.Certificate, parentKey, key *ecdsa.PrivateKey, notBefore, notAfter time.Time, modify func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	serial, err := randomSerial(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{testManufacturer}, CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if modify != nil {
		modify(tmpl)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	return testIssue(t, tmpl, parent, &key.PublicKey, parentKey)
}

// withDeviceCA returns a copy of p whose device certificates are issued by
// ca with key, and whose trust is trust.
func (p *testPKI) withDeviceCA(ca *x509.Certificate, key *ecdsa.PrivateKey, trust *Trust) *testPKI {
	q := *p
	q.deviceCA, q.deviceCAKey, q.trust = ca, key, trust
	return &q
}

// fullChainVerify is the reference the one-signature check must agree with:
// x509 chain building from der through every intermediate to a root at at,
// the way Trust verified certificates before it cached intermediates.
func fullChainVerify(der []byte, roots, intermediates []*x509.Certificate, at time.Time) error {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	rp, ip := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range roots {
		rp.AddCert(c)
	}
	for _, c := range intermediates {
		ip.AddCert(c)
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: rp, Intermediates: ip, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

func TestTrustVerifiesIntermediatesOnce(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t)
	if err := p.trust.Err(); err != nil {
		t.Fatalf("the test PKI's trust: %v", err)
	}
	chip := testChipID(1)
	ids := testIdentities(chip)

	// The issuers are the root and the device CA, and the device CA's
	// window is its chain's: the intersection with the root's validity.
	if got := p.trust.windows[string(p.deviceCA.Raw)]; !slices.Equal(got, []Validity{{year(2000), deviceNotAfter}}) {
		t.Errorf("device CA windows %v", got)
	}

	rootKey, caKey := testKey(t), testKey(t)
	root := testCAValid(t, "Root 2010", nil, nil, rootKey, year(2010), year(2020), nil)
	pathLenZeroRoot := testCAValid(t, "Root pathlen 0", nil, nil, rootKey, year(2000), deviceNotAfter, func(c *x509.Certificate) { c.MaxPathLenZero = true })
	constrainedRoot := testCAValid(t, "Constrained root", nil, nil, rootKey, year(2000), deviceNotAfter, func(c *x509.Certificate) { c.PermittedURIDomains = []string{"example.com"} })
	tests := []struct {
		name  string
		roots []*x509.Certificate
		ca    *x509.Certificate
		caKey *ecdsa.PrivateKey
	}{
		{"an intermediate of another root", []*x509.Certificate{p.root}, other.deviceCA, other.deviceCAKey},
		{"an intermediate valid only after its root expired", []*x509.Certificate{root},
			testCAValid(t, "CA 2021", root, rootKey, caKey, year(2021), year(2030), nil), caKey},
		{"an intermediate valid only before its root", []*x509.Certificate{root},
			testCAValid(t, "CA 2001", root, rootKey, caKey, year(2001), year(2009), nil), caKey},
		{"an intermediate whose root has path length 0", []*x509.Certificate{pathLenZeroRoot},
			testCAValid(t, "CA under pathlen 0", pathLenZeroRoot, rootKey, caKey, year(2000), deviceNotAfter, nil), caKey},
		{"an intermediate under a root with name constraints", []*x509.Certificate{constrainedRoot},
			testCAValid(t, "CA under constraints", constrainedRoot, rootKey, caKey, year(2000), deviceNotAfter, nil), caKey},
		{"no roots", nil, p.deviceCA, p.deviceCAKey},
	}
	for _, tt := range tests {
		tr := NewTrust(tt.roots, []*x509.Certificate{tt.ca})
		if err := tr.Err(); !errors.Is(err, ErrInvalidTrust) {
			t.Errorf("%s: NewTrust(...).Err() = %v, want ErrInvalidTrust", tt.name, err)
		}
		if len(tt.roots) > 0 {
			if _, err := ParseTrustPEM(pemOf(append(tt.roots, tt.ca)...)); !errors.Is(err, ErrInvalidTrust) {
				t.Errorf("%s: ParseTrustPEM = %v, want ErrInvalidTrust", tt.name, err)
			}
			// The same roots alone make a valid trust.
			if err := NewTrust(tt.roots, nil).Err(); err != nil {
				t.Errorf("%s: roots alone: %v", tt.name, err)
			}
		}
		// Nothing the refused intermediate issued is trusted, at any time.
		q := p.withDeviceCA(tt.ca, tt.caKey, tr)
		for _, at := range []time.Time{tt.ca.NotBefore, tt.ca.NotBefore.Add(time.Hour), tt.ca.NotAfter} {
			der := q.deviceCert(t, chip, ids, at)
			if _, err := tr.VerifyDeviceCertificate(der, chip, ids, at); !errors.Is(err, ErrUntrustedCertificate) {
				t.Errorf("%s: device certificate at %s: %v, want ErrUntrustedCertificate", tt.name, at, err)
			}
		}
	}

	// The path length case is refused because x509 itself would refuse
	// every device certificate through it.
	pl := tests[3]
	der := p.withDeviceCA(pl.ca, caKey, nil).deviceCert(t, chip, ids, testPKITime)
	if err := fullChainVerify(der, pl.roots, []*x509.Certificate{pl.ca}, testPKITime); err == nil {
		t.Error("x509 accepts a device certificate under a root with path length 0; the refusal is needlessly strict")
	}
}

// TestVerifyDeviceCertificateChecksTheWholeChainsValidity checks that a
// device certificate is refused when its issuing CA, or the root behind it,
// is not valid at the time it is checked at, and that the one-signature
// check agrees with a full chain verification at every time.
func TestVerifyDeviceCertificateChecksTheWholeChainsValidity(t *testing.T) {
	p := newTestPKI(t)
	chip := testChipID(1)
	ids := testIdentities(chip)
	rootKey, caKey := testKey(t), testKey(t)

	// An issuing CA valid 2001 to 2003 and one valid from 2030, under the
	// test root (valid 2000 to 9999).
	expiring := testCAValid(t, "CA 2001-2003", p.root, p.rootKey, caKey, year(2001), year(2003), nil)
	future := testCAValid(t, "CA from 2030", p.root, p.rootKey, caKey, year(2030), deviceNotAfter, nil)
	// A root valid 2000 to 2030 with an issuing CA valid to 9999.
	shortRoot := testCAValid(t, "Root 2000-2030", nil, nil, rootKey, year(2000), year(2030), nil)
	underShort := testCAValid(t, "CA under a short root", shortRoot, rootKey, caKey, year(2000), deviceNotAfter, nil)
	// A root valid from 2027 with an issuing CA valid from 2020: the CA is
	// verified at the root's notBefore, not only at its own.
	lateRoot := testCAValid(t, "Root from 2027", nil, nil, rootKey, year(2027), deviceNotAfter, nil)
	underLate := testCAValid(t, "CA under a late root", lateRoot, rootKey, caKey, year(2020), deviceNotAfter, nil)
	// A root re-issued with the same key and name: 2000 to 2030, then 2029
	// to 2060.
	oldRoot := testCAValid(t, "Rolled root", nil, nil, rootKey, year(2000), year(2030), nil)
	newRoot := testCAValid(t, "Rolled root", nil, nil, rootKey, year(2029), year(2060), nil)
	underRolled := testCAValid(t, "CA under a rolled root", oldRoot, rootKey, caKey, year(2000), deviceNotAfter, nil)

	tests := []struct {
		name           string
		roots          []*x509.Certificate
		ca             *x509.Certificate
		accept, refuse []time.Time
	}{
		{"issuing CA expired", []*x509.Certificate{p.root}, expiring, []time.Time{year(2002)}, []time.Time{year(2004), testPKITime}},
		{"issuing CA not yet valid", []*x509.Certificate{p.root}, future, []time.Time{year(2031)}, []time.Time{testPKITime, year(2029)}},
		{"root expired behind a valid CA", []*x509.Certificate{shortRoot}, underShort, []time.Time{testPKITime, year(2030)}, []time.Time{year(2030).Add(time.Second), year(2031), year(2100)}},
		{"root not yet valid behind a valid CA", []*x509.Certificate{lateRoot}, underLate, []time.Time{year(2027), year(2028)}, []time.Time{year(2020), testPKITime, year(2027).Add(-time.Second)}},
		{"root re-issued", []*x509.Certificate{oldRoot, newRoot}, underRolled, []time.Time{testPKITime, year(2045), year(2060)}, []time.Time{year(2060).Add(time.Second), year(2100)}},
	}
	for _, tt := range tests {
		tr := NewTrust(tt.roots, []*x509.Certificate{tt.ca})
		if err := tr.Err(); err != nil {
			t.Errorf("%s: NewTrust: %v", tt.name, err)
			continue
		}
		q := p.withDeviceCA(tt.ca, caKey, tr)
		check := func(at time.Time, accept bool) {
			t.Helper()
			der := q.deviceCert(t, chip, ids, at)
			_, err := tr.VerifyDeviceCertificate(der, chip, ids, at)
			ref := fullChainVerify(der, tt.roots, []*x509.Certificate{tt.ca}, at)
			if accept {
				if err != nil || ref != nil {
					t.Errorf("%s at %s: %v (full chain: %v), want accepted", tt.name, at.Format(time.RFC3339), err, ref)
				}
				return
			}
			checkOnly(t, tt.name+" at "+at.Format(time.RFC3339), err, ErrUntrustedCertificate)
			if ref == nil {
				t.Errorf("%s at %s: the full chain verifies; the test case is wrong", tt.name, at.Format(time.RFC3339))
			}
		}
		for _, at := range tt.accept {
			check(at, true)
		}
		for _, at := range tt.refuse {
			check(at, false)
		}
		// Every year from 1999 to 2101 (and the second before it), both
		// checks agree.
		for y := 1999; y <= 2101; y++ {
			for _, at := range []time.Time{year(y), year(y).Add(-time.Second)} {
				der := q.deviceCert(t, chip, ids, at)
				_, err := tr.VerifyDeviceCertificate(der, chip, ids, at)
				ref := fullChainVerify(der, tt.roots, []*x509.Certificate{tt.ca}, at)
				if (err == nil) != (ref == nil) {
					t.Errorf("%s at %s: VerifyDeviceCertificate %v, full chain %v", tt.name, at.Format(time.RFC3339), err, ref)
				}
			}
		}
	}
}

// TestVerifyStationFindsEveryWindow checks the windows of a station
// certificate through a re-issued root and through an intermediate whose
// root expires before the certificate does.
func TestVerifyStationFindsEveryWindow(t *testing.T) {
	p := newTestPKI(t)
	rootKey, caKey, stationKey := testKey(t), testKey(t), testKey(t)
	oldRoot := testCAValid(t, "Rolled root", nil, nil, rootKey, year(2000), year(2030), nil)
	newRoot := testCAValid(t, "Rolled root", nil, nil, rootKey, year(2029), year(2060), nil)
	shortRoot := testCAValid(t, "Root 2000-2030", nil, nil, rootKey, year(2000), year(2030), nil)
	stationCA := testCAValid(t, "Station CA", shortRoot, rootKey, caKey, year(2000), deviceNotAfter, nil)
	station := func(issuer *x509.Certificate, key *ecdsa.PrivateKey) *x509.Certificate {
		tmpl, err := StationCertificateTemplate(testManufacturer, "station-w", year(2025), year(2040), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return testIssue(t, tmpl, issuer, &stationKey.PublicKey, key)
	}
	tests := []struct {
		name    string
		trust   *Trust
		station *x509.Certificate
		want    []Validity
	}{
		{"the test station", p.trust, p.station, []Validity{{year(2025), year(2035)}}},
		{"through a re-issued root", NewTrust([]*x509.Certificate{oldRoot, newRoot}, nil), station(oldRoot, rootKey), []Validity{{year(2025), year(2030)}, {year(2029), year(2040)}}},
		{"through a CA whose root expires first", NewTrust([]*x509.Certificate{shortRoot}, []*x509.Certificate{stationCA}), station(stationCA, caKey), []Validity{{year(2025), year(2030)}}},
	}
	for _, tt := range tests {
		vs, err := tt.trust.VerifyStation(tt.station.Raw, year(2026))
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got := vs.Validity(); !slices.Equal(got, tt.want) {
			t.Errorf("%s: Validity() = %v, want %v", tt.name, got, tt.want)
		}
		if vs.ID() != StationID(tt.station.Raw) || !vs.Certificate().Equal(tt.station) || vs.Trust() != tt.trust || !vs.PublicKey().Equal(tt.station.PublicKey) {
			t.Errorf("%s: VerifiedStation does not describe the certificate", tt.name)
		}
		// ValidAt agrees with a full verification of the certificate.
		for y := 2024; y <= 2041; y++ {
			for _, at := range []time.Time{year(y), year(y).Add(-time.Second)} {
				_, err := tt.trust.VerifyStationCertificate(tt.station.Raw, at)
				ref := fullChainVerify(tt.station.Raw, tt.trust.Roots(), tt.trust.Intermediates(), at)
				if vs.ValidAt(at) != (err == nil) || (err == nil) != (ref == nil) {
					t.Errorf("%s at %s: ValidAt %v, VerifyStationCertificate %v, full chain %v", tt.name, at.Format(time.RFC3339), vs.ValidAt(at), err, ref)
				}
			}
		}
	}

	other := newTestPKI(t)
	for name, c := range map[string]struct {
		der  []byte
		at   time.Time
		want error
	}{
		"another manufacturer's station": {other.station.Raw, testPKITime, ErrUntrustedCertificate},
		"before the certificate":         {p.station.Raw, year(2024), ErrUntrustedCertificate},
		"after the certificate":          {p.station.Raw, year(2036), ErrUntrustedCertificate},
		"a CA certificate":               {p.deviceCA.Raw, testPKITime, ErrCertificateProfile},
		"not a certificate":              {[]byte("station"), testPKITime, ErrCertificateProfile},
	} {
		vs, err := p.trust.VerifyStation(c.der, c.at)
		checkOnly(t, name, err, c.want)
		if vs != nil {
			t.Errorf("%s: VerifyStation returned a station with an error", name)
		}
	}
	var nilTrust *Trust
	if _, err := nilTrust.VerifyStation(p.station.Raw, testPKITime); !errors.Is(err, ErrUntrustedCertificate) {
		t.Errorf("nil trust: VerifyStation = %v, want ErrUntrustedCertificate", err)
	}
}
