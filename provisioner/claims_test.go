package provisioner

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/chipledger/chipledger/device"
	"github.com/chipledger/chipledger/ledger"
)

// The tests of this file show elements of the seed claims
// (/work/shared/reference/seed-claims.txt, mapped in docs/claims.md) at the
// secure processing point, each with an assertion that fails if the element
// breaks.

// newDeviceOnChip manufactures a device around a chip the test holds, so it
// can compare what the station published with what is in the chip itself.
func (f *stationFixture) newDeviceOnChip(ids ledger.Identities) (*device.Device, *device.SoftChip) {
	f.t.Helper()
	chip, err := device.NewSoftChip(nil)
	if err != nil {
		f.t.Fatal(err)
	}
	d, err := device.Manufacture(device.ManufactureOptions{Identities: ids, Trust: f.ca.Trust(), LogVerifierKey: f.vkey, Chip: chip})
	if err != nil {
		f.t.Fatal(err)
	}
	return d, chip
}

func imeis(t *testing.T, digits ...string) ledger.Identities {
	t.Helper()
	var ids ledger.Identities
	for _, s := range digits {
		id, err := ledger.NewIMEI(s)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// TestTheLedgerHoldsTheChipsBackupUnderItsChipID shows claims 1, 9 and 25
// (and the device side of 18): the entry the station publishes is keyed by
// the chip ID in the chip's read-only storage; its backup is the data
// package the device holds, encrypted by that chip (the chip opens it to
// exactly the package installed in the device); no other chip opens it; and
// the public database returns it when asked by that chip ID.
func TestTheLedgerHoldsTheChipsBackupUnderItsChipID(t *testing.T) {
	f := newStationFixture(t, false)
	ctx := context.Background()
	dev, chip := f.newDeviceOnChip(imeis(t, imeiN(61)))
	res, err := f.station.Provision(ctx, dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.ChipID.Equal(chip.ID()) {
		t.Fatalf("the station provisioned chip %s, the chip's ROM holds %s", res.ChipID, chip.ID())
	}
	// The public database, asked by the chip ID, returns the association.
	entries := f.entries(chip.ID())
	if len(entries) != 1 {
		t.Fatalf("%d entries under the chip ID, want 1", len(entries))
	}
	e := entries[0]
	if !e.ChipID.Equal(chip.ID()) {
		t.Fatalf("entry for chip %s, want %s", e.ChipID, chip.ID())
	}
	// The backup is the device's data package, sealed by this chip's key.
	keys, err := dev.Keys()
	if err != nil {
		t.Fatal(err)
	}
	stored, err := keys.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ids, epoch, plain, err := chip.Open(e.Backup)
	if err != nil {
		t.Fatalf("the chip cannot open the published backup: %v", err)
	}
	if !bytes.Equal(plain, stored) || epoch != 1 || !ids.Equal(e.Identities) {
		t.Fatal("the published backup does not open to the data package stored in the device")
	}
	if bytes.Contains(e.Backup, keys.ChannelKey[:]) || bytes.Contains(e.Backup, keys.DeviceKey) {
		t.Fatal("the published backup holds the package's keys in the clear")
	}
	// Only that chip can decrypt it.
	other, err := device.NewSoftChip(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := other.Open(e.Backup); !errors.Is(err, device.ErrWrongChip) {
		t.Fatalf("another chip opening the backup: err = %v, want ErrWrongChip", err)
	}
}

// TestTheStationCertifiesTheIMEIForTheChip shows claims 2, 8, 10, 16 and 26
// (and the station side of 19 and 24): the station binds the device
// identity, the IMEI(s) that identify the wireless terminal in the network,
// to the chip ID in a certificate signed with the manufacturer's device CA
// key, whose public key is in the device's read-only memory; the
// certificate is stored in the device, and the identities and that same
// certificate are stored with the chip ID and backup in the ledger.
func TestTheStationCertifiesTheIMEIForTheChip(t *testing.T) {
	f := newStationFixture(t, false)
	other, err := InitCA(filepath.Join(f.dir, "other-ca"), "Other Devices Ltd")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		ids  ledger.Identities
	}{
		{"one IMEI", imeis(t, imeiN(62))},
		{"dual SIM, two IMEIs", imeis(t, imeiN(63), imeiN(64))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev, chip := f.newDeviceOnChip(tc.ids)
			if _, err := f.station.Provision(ctx, dev, nil); err != nil {
				t.Fatal(err)
			}
			e := f.entries(chip.ID())[0]
			// The identities stored in the ledger are the device's IMEIs.
			if !e.Identities.Equal(tc.ids) {
				t.Fatalf("ledger identities %s, want %s", e.Identities, tc.ids)
			}
			for _, id := range e.Identities {
				if id.Type != ledger.IdentityIMEI {
					t.Fatalf("ledger identity %s is not an IMEI", id)
				}
			}
			// The certificate stored in the device is the one in the ledger.
			st, err := dev.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Keys == nil || !bytes.Equal(st.Keys.Certificate, e.Certificate) {
				t.Fatal("the device does not hold the certificate the ledger holds")
			}
			cert, err := x509.ParseCertificate(e.Certificate)
			if err != nil {
				t.Fatal(err)
			}
			// It binds exactly this chip ID and these IMEIs.
			if err := ledger.CheckDeviceBinding(cert, chip.ID(), tc.ids); err != nil {
				t.Fatalf("the certificate does not bind the chip to its IMEIs: %v", err)
			}
			b, err := ledger.ParseDeviceBinding(cert)
			if err != nil {
				t.Fatal(err)
			}
			want15, _ := tc.ids[0].IMEIWithCheckDigit()
			if !b.ChipID.Equal(chip.ID()) || b.SerialNumber != want15 || len(b.IMEIURNs) != len(tc.ids) {
				t.Fatalf("certificate binding %+v, want chip %s, serialNumber %s and %d IMEI URNs", b, chip.ID(), want15, len(tc.ids))
			}
			// Signed with the manufacturer's device CA key, whose public
			// key the device's ROM holds; it verifies against the ROM
			// trust, and not against another manufacturer's.
			if err := cert.CheckSignatureFrom(f.ca.DeviceCA()); err != nil {
				t.Fatalf("the certificate is not signed by the manufacturer's device CA: %v", err)
			}
			rom, err := ledger.ParseTrustPEM(st.Trust)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(rom.Intermediates(), func(c *x509.Certificate) bool { return c.Equal(f.ca.DeviceCA()) }) {
				t.Fatal("the device's ROM does not hold the device CA's public key")
			}
			at := time.UnixMilli(int64(e.ProvisionedAtMs))
			if _, err := rom.VerifyDeviceCertificate(e.Certificate, chip.ID(), tc.ids, at); err != nil {
				t.Fatalf("the certificate does not verify against the device's ROM: %v", err)
			}
			if _, err := other.Trust().VerifyDeviceCertificate(e.Certificate, chip.ID(), tc.ids, at); !errors.Is(err, ledger.ErrUntrustedCertificate) {
				t.Fatalf("another manufacturer's trust accepts the certificate: %v", err)
			}
			// The certified key is the device key pair of the package.
			keys, err := dev.Keys()
			if err != nil {
				t.Fatal(err)
			}
			key, err := keys.PrivateKey()
			if err != nil {
				t.Fatal(err)
			}
			if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
				t.Fatal("the certificate certifies another key than the device's")
			}
		})
	}
}

// poolWatchingDevice records, when the station stores the data package in
// it, whether the chip's key pair is still in the key pool.
type poolWatchingDevice struct {
	device.Conn
	pool         *Pool
	inPoolAtSeal bool
}

func (d *poolWatchingDevice) StorePackage(ctx context.Context, pkg []byte) ([]byte, error) {
	info, err := d.Conn.ChipInfo(ctx)
	if err != nil {
		return nil, err
	}
	_, d.inPoolAtSeal, err = d.pool.Reservation(info.ChipID)
	if err != nil {
		return nil, err
	}
	return d.Conn.StorePackage(ctx, pkg)
}

// TestTheKeyPairIsGeneratedAtTheStationOrDrawnFromThePool shows claims 6,
// 7, 14, 15 and 23: the data package holds a private/public key pair (the
// certificate certifies its public key) that is either generated by the
// station while it provisions the device, a new one for each device, or
// drawn from the pool of keys generated in advance, where it stays until
// the device has returned its backup and is removed after.
func TestTheKeyPairIsGeneratedAtTheStationOrDrawnFromThePool(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pool   bool
		origin device.KeyOrigin
	}{
		{"generated during assembly", false, device.KeyGenerated},
		{"drawn from the pre-generated pool", true, device.KeyFromPool},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStationFixture(t, tc.pool)
			ctx := context.Background()
			var pubs []*ecdsa.PublicKey
			for i := range 2 {
				dev := f.newDevice(imeiN(65 + i))
				conn := device.Conn(dev)
				info, _ := dev.ChipInfo(ctx)
				var poolKey *ecdsa.PrivateKey
				var watch *poolWatchingDevice
				if tc.pool {
					var err error
					if _, poolKey, err = f.cfg.Pool.Reserve(info.ChipID); err != nil { // the key the station will draw
						t.Fatal(err)
					}
					watch = &poolWatchingDevice{Conn: dev, pool: f.cfg.Pool}
					conn = watch
				}
				if _, err := f.station.Provision(ctx, conn, nil); err != nil {
					t.Fatal(err)
				}
				keys, err := dev.Keys()
				if err != nil {
					t.Fatal(err)
				}
				key, err := keys.PrivateKey()
				if err != nil {
					t.Fatal(err)
				}
				if keys.KeyOrigin != tc.origin {
					t.Fatalf("key origin %s, want %s", keys.KeyOrigin, tc.origin)
				}
				cert, err := x509.ParseCertificate(f.entries(info.ChipID)[0].Certificate)
				if err != nil {
					t.Fatal(err)
				}
				if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
					t.Fatal("the published certificate does not certify the device's key pair")
				}
				if tc.pool {
					if !key.Equal(poolKey) {
						t.Fatal("the device's key pair is not the one drawn from the pool")
					}
					if !watch.inPoolAtSeal {
						t.Fatal("the pool key was gone before the device returned its backup")
					}
					if _, held, _ := f.cfg.Pool.Reservation(info.ChipID); held {
						t.Fatal("the pool key is still in the pool after the backup was received")
					}
				}
				pubs = append(pubs, &key.PublicKey)
			}
			if pubs[0].Equal(pubs[1]) {
				t.Fatal("two devices were given the same key pair")
			}
			if tc.pool {
				if s, _ := f.cfg.Pool.Status(); s.Consumed != 2 || s.Reserved != 0 || s.Available != 3 {
					t.Fatalf("pool %+v, want the two drawn keys removed and the other three left", s)
				}
			}
		})
	}
}
