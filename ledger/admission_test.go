package ledger

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"slices"
	"testing"
	"time"
)

// admissionErrors are the sentinels an admission check can fail with; each
// failure below must match exactly one of them.
var admissionErrors = []error{
	ErrMalformed, ErrInvalidChipID, ErrInvalidIdentity, ErrInvalidEntry, ErrInvalidEpoch,
	ErrLeafTooLarge, ErrFieldTooLarge, ErrChipIDMismatch, ErrIdentityMismatch,
	ErrUntrustedCertificate, ErrCertificateProfile, ErrStationIDMismatch, ErrBadStationSignature,
}

// checkOnly fails unless err matches want and no other admission sentinel.
func checkOnly(t *testing.T, name string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: error %v, want %v", name, err, want)
		return
	}
	for _, other := range admissionErrors {
		if other != want && errors.Is(err, other) {
			t.Errorf("%s: error %v also matches %v", name, err, other)
		}
	}
}

func TestCheckEscrowEntryAcceptsValidEntry(t *testing.T) {
	p := newTestPKI(t)
	for epoch := uint32(1); epoch <= 3; epoch++ {
		e := p.escrowEntry(t, testChipID(1), epoch)
		if err := CheckEscrowEntry(e, p.station, p.trust); err != nil {
			t.Fatalf("epoch %d: %v", epoch, err)
		}
	}
}

// TestCheckEscrowEntryFailsWithDistinctErrors builds one entry per failure,
// each otherwise valid and properly signed, and checks each is told apart.
func TestCheckEscrowEntryFailsWithDistinctErrors(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t)
	chip := testChipID(1)
	ids := testIMEIIdentities(t, "imei:352099001761481", "serial:SN-1")
	at := provisionedAt(1)

	// deviceCert issues a certificate for chip and ids after modify changes
	// the template.
	deviceCert := func(modify func(*x509.Certificate)) []byte {
		tmpl, err := DeviceCertificateTemplate(testManufacturer, chip, ids, at, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		modify(tmpl)
		return p.issueDevice(t, tmpl)
	}
	valid := p.deviceCert(t, chip, ids, at)
	tests := []struct {
		name  string
		entry func() *EscrowEntry
		want  error
	}{
		{"certificate binds another chip ID", func() *EscrowEntry {
			return p.signedEntry(t, chip, ids, 1, p.deviceCert(t, testChipID(2), ids, at))
		}, ErrChipIDMismatch},
		{"certificate binds another IMEI", func() *EscrowEntry {
			return p.signedEntry(t, chip, ids, 1, p.deviceCert(t, chip, testIMEIIdentities(t, "imei:490154203237518", "serial:SN-1"), at))
		}, ErrIdentityMismatch},
		{"certificate serialNumber has an invalid Luhn digit", func() *EscrowEntry {
			return p.signedEntry(t, chip, ids, 1, deviceCert(func(c *x509.Certificate) { c.Subject.SerialNumber = "352099001761480" }))
		}, ErrInvalidIdentity},
		{"certificate from another manufacturer's CA", func() *EscrowEntry {
			return p.signedEntry(t, chip, ids, 1, other.deviceCert(t, chip, ids, at))
		}, ErrUntrustedCertificate},
		{"certificate issued after provisioning", func() *EscrowEntry {
			return p.signedEntry(t, chip, ids, 1, p.deviceCert(t, chip, ids, at.Add(time.Hour)))
		}, ErrUntrustedCertificate},
		{"certificate with a critical SAN", func() *EscrowEntry {
			return p.signedEntry(t, chip, ids, 1, deviceCert(func(c *x509.Certificate) {
				i := slices.IndexFunc(c.ExtraExtensions, func(e pkix.Extension) bool { return e.Id.Equal(oidSubjectAltName) })
				if i < 0 {
					t.Fatal("the device certificate template has no subjectAltName")
				}
				c.ExtraExtensions[i].Critical = true
			}))
		}, ErrCertificateProfile},
		{"certificate without the device policy", func() *EscrowEntry {
			return p.signedEntry(t, chip, ids, 1, deviceCert(func(c *x509.Certificate) { c.Policies = nil }))
		}, ErrCertificateProfile},
		{"certificate with extra key usage", func() *EscrowEntry {
			return p.signedEntry(t, chip, ids, 1, deviceCert(func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageKeyEncipherment }))
		}, ErrCertificateProfile},
		{"certificate with a finite notAfter", func() *EscrowEntry {
			return p.signedEntry(t, chip, ids, 1, deviceCert(func(c *x509.Certificate) { c.NotAfter = at.AddDate(10, 0, 0) }))
		}, ErrCertificateProfile},
		{"certificate for a P-384 device key", func() *EscrowEntry {
			k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			tmpl, _ := DeviceCertificateTemplate(testManufacturer, chip, ids, at, rand.Reader)
			der, err := x509.CreateCertificate(rand.Reader, tmpl, p.deviceCA, &k.PublicKey, p.deviceCAKey)
			if err != nil {
				t.Fatal(err)
			}
			return p.signedEntry(t, chip, ids, 1, der)
		}, ErrCertificateProfile},
		{"bad station signature", func() *EscrowEntry {
			e := p.signedEntry(t, chip, ids, 1, valid)
			e.Backup = append(e.Backup, '!') // after signing
			return e
		}, ErrBadStationSignature},
		{"signed by another key", func() *EscrowEntry {
			e := p.signedEntry(t, chip, ids, 1, valid)
			if err := e.Sign(rand.Reader, other.stationKey); err != nil {
				t.Fatal(err)
			}
			return e
		}, ErrBadStationSignature},
		{"station_id of another station", func() *EscrowEntry {
			e := p.signedEntry(t, chip, ids, 1, valid)
			e.StationID = StationID(other.station.Raw)
			if err := e.Sign(rand.Reader, p.stationKey); err != nil { // properly signed, wrong ID
				t.Fatal(err)
			}
			return e
		}, ErrStationIDMismatch},
		{"certificate over MaxCertificateSize", func() *EscrowEntry {
			return p.signedEntry(t, chip, ids, 1, make([]byte, MaxCertificateSize+1))
		}, ErrFieldTooLarge},
		{"epoch 0", func() *EscrowEntry {
			e := p.signedEntry(t, chip, ids, 1, valid)
			e.Epoch = 0
			return e
		}, ErrInvalidEpoch},
	}
	vs, err := p.trust.VerifyStation(p.station.Raw, testPKITime)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.entry()
			checkOnly(t, tt.name, CheckEscrowEntry(e, p.station, p.trust), tt.want)
			checkOnly(t, tt.name+" (verified station)", CheckEscrowEntryWithStation(e, vs, p.trust), tt.want)
		})
	}

	if err := CheckEscrowEntry(p.signedEntry(t, chip, ids, 1, valid), p.station, p.trust); err != nil {
		t.Fatalf("the valid entry the cases start from fails: %v", err)
	}
}

func TestCheckEscrowEntryStationChecks(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t)
	chip := testChipID(1)

	// A station of another manufacturer, whose entry is otherwise consistent.
	e := other.escrowEntry(t, chip, 1)
	e.Certificate = p.deviceCert(t, chip, testIdentities(chip), provisionedAt(1))
	if err := e.Sign(rand.Reader, other.stationKey); err != nil {
		t.Fatal(err)
	}
	checkOnly(t, "untrusted station", CheckEscrowEntry(e, other.station, p.trust), ErrUntrustedCertificate)

	// Provisioned after the station certificate expired (2035).
	e = p.escrowEntry(t, chip, 1)
	e.ProvisionedAtMs = uint64(time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	if err := e.Sign(rand.Reader, p.stationKey); err != nil {
		t.Fatal(err)
	}
	checkOnly(t, "expired station", CheckEscrowEntry(e, p.station, p.trust), ErrUntrustedCertificate)

	checkOnly(t, "no station", CheckEscrowEntry(p.escrowEntry(t, chip, 1), nil, p.trust), ErrUntrustedCertificate)

	e = p.escrowEntry(t, chip, 1)
	e.Backup = make([]byte, MaxBackupSize+1)
	if err := e.Sign(rand.Reader, p.stationKey); err != nil {
		t.Fatal(err)
	}
	checkOnly(t, "backup over MaxBackupSize", CheckEscrowEntry(e, p.station, p.trust), ErrFieldTooLarge)
}

// TestCheckEscrowEntryIsIndependentOfTheClock checks an entry provisioned long
// ago with a device CA that has since expired: admission and re-validation
// use provisioned_at, never the current time.
func TestCheckEscrowEntryIsIndependentOfTheClock(t *testing.T) {
	p := newTestPKI(t)
	caKey := testKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          p.deviceCA.SerialNumber,
		Subject:               p.deviceCA.Subject,
		NotBefore:             time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2003, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	p.deviceCA, p.deviceCAKey = testIssue(t, tmpl, p.root, &caKey.PublicKey, p.rootKey), caKey
	p.trust = NewTrust([]*x509.Certificate{p.root}, []*x509.Certificate{p.deviceCA})
	// The station certificate starts in 2025, so use a station from 2001.
	stTmpl, err := StationCertificateTemplate(testManufacturer, "old station",
		time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2003, 1, 1, 0, 0, 0, 0, time.UTC), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.station = testIssue(t, stTmpl, p.root, &p.stationKey.PublicKey, p.rootKey)

	at := time.Date(2002, 6, 1, 0, 0, 0, 0, time.UTC)
	chip := testChipID(1)
	ids := testIdentities(chip)
	e := p.signedEntry(t, chip, ids, 1, p.deviceCert(t, chip, ids, at))
	e.StationID = StationID(p.station.Raw)
	e.ProvisionedAtMs = uint64(at.UnixMilli())
	if err := e.Sign(rand.Reader, p.stationKey); err != nil {
		t.Fatal(err)
	}
	if err := CheckEscrowEntry(e, p.station, p.trust); err != nil {
		t.Fatalf("an entry provisioned in 2002 by CAs valid then: %v", err)
	}
	vs, err := p.trust.VerifyStation(p.station.Raw, at)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckEscrowEntryWithStation(e, vs, p.trust); err != nil {
		t.Fatalf("an entry provisioned in 2002 by CAs valid then, verified station: %v", err)
	}
}

func TestCheckEscrowEntryWithStation(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t)
	chip := testChipID(1)
	vs, err := p.trust.VerifyStation(p.station.Raw, testPKITime)
	if err != nil {
		t.Fatal(err)
	}
	for epoch := uint32(1); epoch <= 3; epoch++ {
		if err := CheckEscrowEntryWithStation(p.escrowEntry(t, chip, epoch), vs, p.trust); err != nil {
			t.Fatalf("epoch %d: %v", epoch, err)
		}
	}

	// signedAt returns a valid entry of p provisioned at at, with a device
	// certificate issued then.
	signedAt := func(at time.Time) *EscrowEntry {
		ids := testIdentities(chip)
		e := p.signedEntry(t, chip, ids, 1, p.deviceCert(t, chip, ids, at))
		e.ProvisionedAtMs = uint64(at.UnixMilli())
		if err := e.Sign(rand.Reader, p.stationKey); err != nil {
			t.Fatal(err)
		}
		return e
	}
	// The station certificate is valid 2025 to 2035, the device CA to 9999:
	// only the station's validity fails these.
	for name, at := range map[string]time.Time{
		"provisioned after the station certificate expired":   time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC),
		"provisioned a second after it expired":               time.Date(2035, 1, 1, 0, 0, 1, 0, time.UTC),
		"provisioned before the station certificate is valid": time.Date(2024, 12, 31, 23, 59, 59, 0, time.UTC),
	} {
		e := signedAt(at)
		checkOnly(t, name, CheckEscrowEntryWithStation(e, vs, p.trust), ErrUntrustedCertificate)
		checkOnly(t, name+" (CheckEscrowEntry)", CheckEscrowEntry(e, p.station, p.trust), ErrUntrustedCertificate)
	}
	for name, at := range map[string]time.Time{
		"provisioned as the station certificate expires": time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC),
		"provisioned as it becomes valid":                time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		if err := CheckEscrowEntryWithStation(signedAt(at), vs, p.trust); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	e := p.escrowEntry(t, chip, 1)
	checkOnly(t, "no station", CheckEscrowEntryWithStation(e, nil, p.trust), ErrUntrustedCertificate)
	checkOnly(t, "zero station", CheckEscrowEntryWithStation(e, &VerifiedStation{}, p.trust), ErrUntrustedCertificate)
	otherVS, err := other.trust.VerifyStation(other.station.Raw, testPKITime)
	if err != nil {
		t.Fatal(err)
	}
	checkOnly(t, "a station of another entry", CheckEscrowEntryWithStation(e, otherVS, other.trust), ErrStationIDMismatch)
	// The same certificates in another Trust value: stations are verified
	// again when the trust changes.
	again := NewTrust(p.trust.Roots(), p.trust.Intermediates())
	checkOnly(t, "a station verified with another trust", CheckEscrowEntryWithStation(e, vs, again), ErrUntrustedCertificate)
	checkOnly(t, "a station verified with another manufacturer's trust", CheckEscrowEntryWithStation(e, otherVS, p.trust), ErrUntrustedCertificate)
	checkOnly(t, "no entry", CheckEscrowEntryWithStation(nil, vs, p.trust), ErrInvalidEntry)

	// A station issued by a station CA whose root expires in 2030, before
	// the station certificate (2025 to 2040): entries after 2030 fail,
	// although the station CA and the station certificate are still valid.
	rootKey, caKey := testKey(t), testKey(t)
	shortRoot := testCAValid(t, "Station root 2000-2030", nil, nil, rootKey, year(2000), year(2030), nil)
	stationCA := testCAValid(t, "Station CA", shortRoot, rootKey, caKey, year(2000), deviceNotAfter, nil)
	tmpl, err := StationCertificateTemplate(testManufacturer, "station-2", year(2025), year(2040), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	q := *p
	q.station = testIssue(t, tmpl, stationCA, &p.stationKey.PublicKey, caKey)
	q.trust = NewTrust([]*x509.Certificate{p.root, shortRoot}, []*x509.Certificate{p.deviceCA, stationCA})
	if err := q.trust.Err(); err != nil {
		t.Fatal(err)
	}
	qvs, err := q.trust.VerifyStation(q.station.Raw, testPKITime)
	if err != nil {
		t.Fatal(err)
	}
	qAt := func(at time.Time) *EscrowEntry {
		ids := testIdentities(chip)
		e := q.signedEntry(t, chip, ids, 1, q.deviceCert(t, chip, ids, at))
		e.ProvisionedAtMs = uint64(at.UnixMilli())
		if err := e.Sign(rand.Reader, q.stationKey); err != nil {
			t.Fatal(err)
		}
		return e
	}
	if err := CheckEscrowEntryWithStation(qAt(year(2029)), qvs, q.trust); err != nil {
		t.Errorf("station behind a root valid to 2030, in 2029: %v", err)
	}
	late := qAt(year(2031))
	checkOnly(t, "station behind an expired root", CheckEscrowEntryWithStation(late, qvs, q.trust), ErrUntrustedCertificate)
	checkOnly(t, "station behind an expired root (CheckEscrowEntry)", CheckEscrowEntry(late, q.station, q.trust), ErrUntrustedCertificate)
}

func TestCheckStationRegistration(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t)
	cert, err := CheckStationRegistration(p.stationRegistration(), p.trust)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.Equal(p.station) {
		t.Fatal("CheckStationRegistration returned another certificate")
	}

	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := StationCertificateTemplate(testManufacturer, "p384", testPKITime.AddDate(-1, 0, 0), testPKITime.AddDate(1, 0, 0), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384Station := testIssue(t, tmpl, p.root, &p384.PublicKey, p.rootKey)
	chip := testChipID(1)
	deviceDER := p.deviceCert(t, chip, testIdentities(chip), testPKITime)

	reg := func(der []byte, at time.Time) *StationRegistration {
		return &StationRegistration{Certificate: der, RegisteredAtMs: uint64(at.UnixMilli())}
	}
	tests := []struct {
		name string
		r    *StationRegistration
		want error
	}{
		{"another manufacturer's station", reg(other.station.Raw, testPKITime), ErrUntrustedCertificate},
		{"registered before the certificate is valid", reg(p.station.Raw, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)), ErrUntrustedCertificate},
		{"registered after it expired", reg(p.station.Raw, time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)), ErrUntrustedCertificate},
		{"a device certificate", reg(deviceDER, testPKITime), ErrCertificateProfile},
		{"a P-384 station key", reg(p384Station.Raw, testPKITime), ErrCertificateProfile},
		{"a CA certificate", reg(p.deviceCA.Raw, testPKITime), ErrCertificateProfile},
		{"not a certificate", reg([]byte("station"), testPKITime), ErrCertificateProfile},
		{"empty", reg(nil, testPKITime), ErrInvalidEntry},
		{"over MaxStationCertificateSize", reg(make([]byte, MaxStationCertificateSize+1), testPKITime), ErrFieldTooLarge},
		{"registered_at beyond time.Time", &StationRegistration{Certificate: p.station.Raw, RegisteredAtMs: 1 << 63}, ErrInvalidEntry},
	}
	for _, tt := range tests {
		_, err := CheckStationRegistration(tt.r, p.trust)
		checkOnly(t, tt.name, err, tt.want)
	}
}

func TestDecideEpoch(t *testing.T) {
	h := func(b byte) (x [32]byte) { x[0] = b; return x }
	one := ChipEpoch{Epoch: 1, Index: 10, LeafHash: h(1)}
	two := ChipEpoch{Epoch: 2, Index: 20, LeafHash: h(2)}
	three := ChipEpoch{Epoch: 3, Index: 30, LeafHash: h(3)}
	tests := []struct {
		name      string
		history   []ChipEpoch
		epoch     uint32
		hash      [32]byte
		existing  uint64
		duplicate bool
		err       error
	}{
		{"first entry of a new chip", nil, 1, h(9), 0, false, nil},
		{"new chip starting at epoch 2", nil, 2, h(9), 0, false, ErrEpochGap},
		{"epoch 0", nil, 0, h(9), 0, false, ErrInvalidEpoch},
		{"next epoch", []ChipEpoch{one, two}, 3, h(9), 0, false, nil},
		{"skipping an epoch", []ChipEpoch{one, two}, 4, h(9), 0, false, ErrEpochGap},
		{"retry of the latest entry", []ChipEpoch{one, two}, 2, h(2), 20, true, nil},
		{"retry of an older entry", []ChipEpoch{one, two}, 1, h(1), 10, true, nil},
		{"another leaf for the latest epoch", []ChipEpoch{one, two}, 2, h(9), 0, false, ErrEpochReused},
		{"another leaf for an older epoch", []ChipEpoch{one, two}, 1, h(9), 0, false, ErrEpochReused},
		{"only the latest known: retry", []ChipEpoch{three}, 3, h(3), 30, true, nil},
		{"only the latest known: next", []ChipEpoch{three}, 4, h(9), 0, false, nil},
		{"only the latest known: older epoch", []ChipEpoch{three}, 2, h(2), 0, false, ErrEpochReused},
		{"only the latest known: gap", []ChipEpoch{three}, 5, h(9), 0, false, ErrEpochGap},
		{"history with a hole", []ChipEpoch{one, three}, 4, h(9), 0, false, ErrInvalidHistory},
		{"history out of order", []ChipEpoch{two, one}, 3, h(9), 0, false, ErrInvalidHistory},
		{"history with epoch 0", []ChipEpoch{{Epoch: 0}}, 1, h(9), 0, false, ErrInvalidHistory},
		{"last epoch is the largest uint32", []ChipEpoch{{Epoch: 1<<32 - 1, Index: 5, LeafHash: h(5)}}, 1<<32 - 1, h(5), 5, true, nil},
	}
	for _, tt := range tests {
		existing, dup, err := DecideEpoch(tt.history, tt.epoch, tt.hash)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("%s: DecideEpoch = %d, %v, %v; want %v", tt.name, existing, dup, err, tt.err)
			}
			continue
		}
		if err != nil || existing != tt.existing || dup != tt.duplicate {
			t.Errorf("%s: DecideEpoch = %d, %v, %v; want %d, %v", tt.name, existing, dup, err, tt.existing, tt.duplicate)
		}
	}
}
