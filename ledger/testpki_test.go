package ledger

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"math/big"
	"testing"
	"time"
)

// testPKI is a manufacturer PKI for tests: a self-signed root CA, a device CA
// under it that issues device certificates, and a station certificate issued
// by the root, with the Trust that holds the root and the device CA. Other
// tests in the package (the store's too) use it to make valid, signed leaves.
type testPKI struct {
	rootKey, deviceCAKey, stationKey *ecdsa.PrivateKey
	root, deviceCA, station          *x509.Certificate
	trust                            *Trust
}

// testPKITime is when the test PKI provisions: every entry it signs has a
// provisioned_at derived from it, so tests do not depend on the clock.
var testPKITime = time.Date(2026, time.January, 2, 3, 4, 5, 0, time.UTC)

const testManufacturer = "Example Devices Ltd"

// newTestPKI builds a fresh test PKI with new keys.
func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{
		rootKey:     testKey(t),
		deviceCAKey: testKey(t),
		stationKey:  testKey(t),
	}
	p.root = testCA(t, "Example Root CA", nil, nil, p.rootKey)
	p.deviceCA = testCA(t, "Example Device CA", p.root, p.rootKey, p.deviceCAKey)
	tmpl, err := StationCertificateTemplate(testManufacturer, "station-1",
		time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.station = testIssue(t, tmpl, p.root, &p.stationKey.PublicKey, p.rootKey)
	p.trust = NewTrust([]*x509.Certificate{p.root}, []*x509.Certificate{p.deviceCA})
	return p
}

func testKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testCA makes a CA certificate for key, self-signed when parent is nil.
func testCA(t testing.TB, name string, parent *x509.Certificate, parentKey, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{testManufacturer}, CommonName: name},
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              deviceNotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	} else {
		tmpl.MaxPathLenZero = true
	}
	return testIssue(t, tmpl, parent, &key.PublicKey, parentKey)
}

func testIssue(t testing.TB, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, parentKey *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// testIdentities returns the identities the test PKI gives chip: an IMEI
// derived from the chip ID (TAC 35209900) and a serial with the chip ID in it.
func testIdentities(chip ChipID) Identities {
	h := sha256.Sum256(chip)
	snr := binary.BigEndian.Uint32(h[:4]) % 1_000_000
	imei, err := NewIMEI(fmt.Sprintf("35209900%06d", snr))
	if err != nil {
		panic(err)
	}
	return Identities{imei, {Type: IdentitySerial, Value: "SN-" + chip.String()}}
}

// deviceCert issues a device certificate binding chip and ids, for a fresh
// device key, at the given time.
func (p *testPKI) deviceCert(t testing.TB, chip ChipID, ids Identities, at time.Time) []byte {
	t.Helper()
	tmpl, err := DeviceCertificateTemplate(testManufacturer, chip, ids, at, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return p.issueDevice(t, tmpl)
}

// issueDevice signs a device certificate template with the device CA.
func (p *testPKI) issueDevice(t testing.TB, tmpl *x509.Certificate) []byte {
	t.Helper()
	der, err := IssueDeviceCertificate(rand.Reader, tmpl, &testKey(t).PublicKey, p.deviceCA, p.deviceCAKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// provisionedAt is the provisioning time of the test PKI's entries for an
// epoch: one day per epoch after testPKITime.
func provisionedAt(epoch uint32) time.Time {
	return testPKITime.Add(time.Duration(epoch) * 24 * time.Hour)
}

// escrowEntry returns a valid, signed escrow entry for chip at epoch, with
// testIdentities(chip), a fresh device certificate and a dummy backup.
func (p *testPKI) escrowEntry(t testing.TB, chip ChipID, epoch uint32) *EscrowEntry {
	t.Helper()
	ids := testIdentities(chip)
	at := provisionedAt(epoch)
	return p.signedEntry(t, chip, ids, epoch, p.deviceCert(t, chip, ids, at))
}

// signedEntry returns an escrow entry with the given fields, provisioned at
// provisionedAt(epoch) and signed by the station.
func (p *testPKI) signedEntry(t testing.TB, chip ChipID, ids Identities, epoch uint32, cert []byte) *EscrowEntry {
	t.Helper()
	e := &EscrowEntry{
		ChipID:          chip,
		Identities:      ids,
		Epoch:           epoch,
		Certificate:     cert,
		Backup:          []byte(fmt.Sprintf("CLB1 backup of %s epoch %d", chip, epoch)),
		StationID:       StationID(p.station.Raw),
		ProvisionedAtMs: uint64(provisionedAt(epoch).UnixMilli()),
	}
	if err := e.Sign(rand.Reader, p.stationKey); err != nil {
		t.Fatal(err)
	}
	return e
}

// escrowLeaf returns the leaf of escrowEntry(t, chip, epoch).
func (p *testPKI) escrowLeaf(t testing.TB, chip ChipID, epoch uint32) []byte {
	t.Helper()
	leaf, err := p.escrowEntry(t, chip, epoch).MarshalLeaf()
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// stationRegistration returns the registration of the test station, at
// testPKITime.
func (p *testPKI) stationRegistration() *StationRegistration {
	return &StationRegistration{Certificate: p.station.Raw, RegisteredAtMs: uint64(testPKITime.UnixMilli())}
}

// stationLeaf returns the leaf of stationRegistration().
func (p *testPKI) stationLeaf(t testing.TB) []byte {
	t.Helper()
	leaf, err := p.stationRegistration().MarshalLeaf()
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// testChipID returns a valid chip ID of DefaultChipIDLen bytes derived from n.
func testChipID(n int) ChipID {
	h := sha256.Sum256([]byte(fmt.Sprintf("chip %d", n)))
	return ChipID(h[:DefaultChipIDLen])
}
