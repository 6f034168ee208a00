package provisioner

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/chipledger/chipledger/ledger"
)

// poolRecords returns the raw records of a real pool: the reservation of a
// chip, the audit records of a consumed and a destroyed key, and the
// PKCS#8 DER of a pool key.
func poolRecords(f *testing.F) (reservations, audits [][]byte, key []byte) {
	path := filepath.Join(f.TempDir(), "pool.db")
	p, err := OpenPool(path, PoolOptions{Create: true, LockTimeout: 200 * time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	defer p.Close()
	if err := p.Fill(3, nil); err != nil {
		f.Fatal(err)
	}
	chips := []ledger.ChipID{bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 8), bytes.Repeat([]byte{3}, 32)}
	for _, c := range chips {
		_, k, err := p.Reserve(c)
		if err != nil {
			f.Fatal(err)
		}
		if key == nil {
			if key, err = x509.MarshalPKCS8PrivateKey(k); err != nil {
				f.Fatal(err)
			}
		}
	}
	if err := p.Consume(chips[0]); err != nil {
		f.Fatal(err)
	}
	if err := p.Destroy(chips[1], "the chip failed its receipt check"); err != nil {
		f.Fatal(err)
	}
	err = p.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketReserved).ForEach(func(_, v []byte) error {
			reservations = append(reservations, bytes.Clone(v))
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketAudit).ForEach(func(_, v []byte) error {
			audits = append(audits, bytes.Clone(v))
			return nil
		})
	})
	if err != nil {
		f.Fatal(err)
	}
	if len(reservations) != 1 || len(audits) != 2 {
		f.Fatalf("the pool holds %d reservations and %d audit records, want 1 and 2", len(reservations), len(audits))
	}
	return reservations, audits, key
}

// FuzzParseAuditRecord checks that parseAuditRecord never panics, that its
// errors wrap ErrCorruptRecord, and that a record it accepts is the one
// encoding of its value: encodeAuditRecord(parseAuditRecord(v)) == v, and
// parsing that again gives an equal record.
func FuzzParseAuditRecord(f *testing.F) {
	_, audits, _ := poolRecords(f)
	for _, a := range audits {
		f.Add(uint64(1), a)
	}
	f.Add(uint64(0), encodeAuditRecord(AuditRecord{Outcome: OutcomeConsumed, ReservedAt: time.UnixMilli(-1), At: time.UnixMilli(1 << 62)}))
	f.Add(uint64(7), []byte{1, 2, 0})
	f.Add(uint64(7), []byte{})
	f.Fuzz(func(t *testing.T, seq uint64, v []byte) {
		r, err := parseAuditRecord(seq, v)
		if err != nil {
			if !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("parseAuditRecord error %v does not wrap ErrCorruptRecord", err)
			}
			return
		}
		if r.Seq != seq {
			t.Fatalf("parseAuditRecord(%d, %x) has Seq %d", seq, v, r.Seq)
		}
		again := encodeAuditRecord(r)
		if !bytes.Equal(again, v) {
			t.Fatalf("parseAuditRecord accepted %x, which encodes as %x", v, again)
		}
		r2, err := parseAuditRecord(seq, again)
		if err != nil || !reflect.DeepEqual(r2, r) {
			t.Fatalf("audit record %+v does not round-trip: %+v, %v", r, r2, err)
		}
	})
}

// encodeReservation is the encoding of a reservation record that
// Pool.reserve writes: u64 key_id ‖ u64 reserved_at_ms ‖ the sealed key.
func encodeReservation(r reservation) []byte {
	v := binary.BigEndian.AppendUint64(nil, uint64(r.id))
	v = binary.BigEndian.AppendUint64(v, uint64(r.reservedAt.UnixMilli()))
	return append(v, r.sealed...)
}

// FuzzParseReservation checks that parseReservation never panics, that its
// errors wrap ErrCorruptRecord, and that a record it accepts is the one
// encoding of its value (encoded as Pool.reserve does).
func FuzzParseReservation(f *testing.F) {
	reservations, _, _ := poolRecords(f)
	for _, r := range reservations {
		f.Add(r)
	}
	f.Add(make([]byte, reservationHead+poolNonceLen))
	f.Add(make([]byte, reservationHead+poolNonceLen-1))
	f.Fuzz(func(t *testing.T, v []byte) {
		p := &Pool{path: "fuzz.db"}
		chip := ledger.ChipID(bytes.Repeat([]byte{9}, 16))
		r, err := p.parseReservation(chip, v)
		if err != nil {
			if !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("parseReservation error %v does not wrap ErrCorruptRecord", err)
			}
			return
		}
		if len(r.sealed) < poolNonceLen {
			t.Fatalf("parseReservation(%x) accepted a sealed key of %d bytes, shorter than its nonce", v, len(r.sealed))
		}
		if again := encodeReservation(r); !bytes.Equal(again, v) {
			t.Fatalf("parseReservation accepted %x, which encodes as %x", v, again)
		}
	})
}

// FuzzParsePoolKey checks that parsePoolKey never panics and that a key it
// accepts is a consistent ECDSA P-256 key (its public key is the one its
// scalar gives) that round-trips by value through the encoding the pool
// writes: parsePoolKey(MarshalPKCS8PrivateKey(k)) equals k. PKCS#8 DER has
// more than one encoding per key (x509 ignores data after the structure,
// for one), so the bytes are not compared.
func FuzzParsePoolKey(f *testing.F) {
	_, _, key := poolRecords(f)
	f.Add(key)
	f.Add(key[:len(key)-1])
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		k, err := parsePoolKey(der)
		if err != nil {
			return
		}
		if k.Curve != elliptic.P256() {
			t.Fatalf("parsePoolKey accepted a key on %v", k.Curve.Params().Name)
		}
		raw, err := k.Bytes()
		if err != nil {
			t.Fatalf("parsePoolKey accepted %x, whose scalar does not encode: %v", der, err)
		}
		derived, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), raw)
		if err != nil || !derived.PublicKey.Equal(&k.PublicKey) {
			t.Fatalf("parsePoolKey accepted %x, whose public key is not its scalar's (%v)", der, err)
		}
		again, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatalf("MarshalPKCS8PrivateKey of an accepted key: %v", err)
		}
		k2, err := parsePoolKey(again)
		if err != nil || !k2.Equal(k) {
			t.Fatalf("pool key %x does not round-trip: %v", der, err)
		}
	})
}
