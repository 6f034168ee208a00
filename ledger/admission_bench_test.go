package ledger

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"testing"
)

// benchEntries returns n valid escrow entries of distinct chips, each with
// its own device certificate and key, signed by p's station.
func benchEntries(b *testing.B, p *testPKI, n int) []*EscrowEntry {
	b.Helper()
	entries := make([]*EscrowEntry, n)
	for i := range entries {
		entries[i] = p.escrowEntry(b, testChipID(i), 1)
	}
	return entries
}

// BenchmarkCheckEscrowEntry measures the per-entry admission cost of a node:
// CheckEscrowEntryWithStation with the station verified once beforehand. It
// should cost about two BenchmarkECDSAVerifyP256: the station signature and
// the device certificate's signature by its CA.
func BenchmarkCheckEscrowEntry(b *testing.B) {
	p := newTestPKI(b)
	entries := benchEntries(b, p, 256)
	station, err := p.trust.VerifyStation(p.station.Raw, testPKITime)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := CheckEscrowEntryWithStation(entries[i%len(entries)], station, p.trust); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkCheckEscrowEntryParallel runs CheckEscrowEntryWithStation on every
// CPU (GOMAXPROCS) and reports the admission rate the machine sustains.
func BenchmarkCheckEscrowEntryParallel(b *testing.B) {
	p := newTestPKI(b)
	entries := benchEntries(b, p, 256)
	station, err := p.trust.VerifyStation(p.station.Raw, testPKITime)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if err := CheckEscrowEntryWithStation(entries[i%len(entries)], station, p.trust); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkCheckEscrowEntryAllInOne measures CheckEscrowEntry, which verifies
// the station certificate on every call: about three ECDSA verifications.
func BenchmarkCheckEscrowEntryAllInOne(b *testing.B) {
	p := newTestPKI(b)
	entries := benchEntries(b, p, 256)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := CheckEscrowEntry(entries[i%len(entries)], p.station, p.trust); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkVerifyDeviceCertificate compares the device certificate check
// anchored at the verified issuers (one signature) with a full chain
// verification through the device CA to the root (two signatures), the way
// it was done before intermediates were verified once.
func BenchmarkVerifyDeviceCertificate(b *testing.B) {
	p := newTestPKI(b)
	chip := testChipID(1)
	ids := testIdentities(chip)
	der := p.deviceCert(b, chip, ids, testPKITime)
	b.Run("issuers", func(b *testing.B) {
		for b.Loop() {
			if _, err := p.trust.VerifyDeviceCertificate(der, chip, ids, testPKITime); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fullChain", func(b *testing.B) {
		for b.Loop() {
			if err := fullChainVerify(der, p.trust.Roots(), p.trust.Intermediates(), testPKITime); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkECDSAVerifyP256 is the unit BenchmarkCheckEscrowEntry is measured
// in: one ecdsa.VerifyASN1 on P-256.
func BenchmarkECDSAVerifyP256(b *testing.B) {
	key := testKey(b)
	digest := sha256.Sum256([]byte("chipledger/escrow/v1"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
			b.Fatal("signature does not verify")
		}
	}
}

// BenchmarkParseEscrowEntry measures parsing a 1,536-byte escrow leaf, as
// the leader's checks and every replica's state machine do for each append:
// with copies of its fields (ParseEscrowEntry) and without
// (ParseEscrowEntryNoCopy, the append path's).
func BenchmarkParseEscrowEntry(b *testing.B) {
	leaf := fakeEscrowLeaf(b, chipN(0), 1, 1536)
	for _, bc := range []struct {
		name  string
		parse func([]byte) (*EscrowEntry, error)
	}{{"copy", ParseEscrowEntry}, {"nocopy", ParseEscrowEntryNoCopy}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.parse(leaf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
