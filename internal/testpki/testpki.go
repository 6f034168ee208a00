// Package testpki makes a throwaway manufacturer PKI and valid, signed log
// entries, for tests and load generators. Its keys live in memory only; it
// is not for production (use the provisioner package for that).
package testpki

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
	"time"

	"github.com/chipledger/chipledger/ledger"
)

// Manufacturer is the organisation name in the PKI's certificates.
const Manufacturer = "Example Devices Ltd"

// PKI is a root CA, a device CA under it, and a station certificate issued
// by the root, with the ledger.Trust holding the root and the device CA.
type PKI struct {
	RootKey, DeviceCAKey, StationKey *ecdsa.PrivateKey
	Root, DeviceCA, Station          *x509.Certificate
	Trust                            *ledger.Trust
}

// New makes a PKI with fresh keys.
func New() (*PKI, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	deviceCAKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	root, err := ca("Example Root CA", nil, nil, rootKey)
	if err != nil {
		return nil, err
	}
	deviceCA, err := ca("Example Device CA", root, rootKey, deviceCAKey)
	if err != nil {
		return nil, err
	}
	return FromCA(root, rootKey, deviceCA, deviceCAKey)
}

// FromCA makes a PKI around an existing root and device CA (for example a
// manufacturer CA made by `chipledger ca init`, to load a running ledger
// that trusts it), with a new station certificate issued by the root.
func FromCA(root *x509.Certificate, rootKey *ecdsa.PrivateKey, deviceCA *x509.Certificate, deviceCAKey *ecdsa.PrivateKey) (*PKI, error) {
	p := &PKI{Root: root, RootKey: rootKey, DeviceCA: deviceCA, DeviceCAKey: deviceCAKey}
	var err error
	if p.StationKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	// The station is valid from when the CA is (a CA made today is not valid
	// in 2020), for as long as the root allows.
	notBefore := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []*x509.Certificate{root, deviceCA} {
		if c.NotBefore.After(notBefore) {
			notBefore = c.NotBefore
		}
	}
	notAfter := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	if root.NotAfter.Before(notAfter) {
		notAfter = root.NotAfter
	}
	tmpl, err := ledger.StationCertificateTemplate(Manufacturer, "station-1", notBefore, notAfter, rand.Reader)
	if err != nil {
		return nil, err
	}
	if p.Station, err = issue(tmpl, p.Root, &p.StationKey.PublicKey, p.RootKey); err != nil {
		return nil, err
	}
	p.Trust = ledger.NewTrust([]*x509.Certificate{p.Root}, []*x509.Certificate{p.DeviceCA})
	return p, p.Trust.Err()
}

func ca(name string, parent *x509.Certificate, parentKey, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{Manufacturer}, CommonName: name},
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	} else {
		tmpl.MaxPathLenZero = true
	}
	return issue(tmpl, parent, &key.PublicKey, parentKey)
}

func issue(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, parentKey *ecdsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// StationID is the ID of the PKI's station.
func (p *PKI) StationID() [32]byte { return ledger.StationID(p.Station.Raw) }

// StationLeaf returns the registration leaf of the PKI's station.
func (p *PKI) StationLeaf() []byte {
	// Registered just after the station certificate starts: a fixed time,
	// so that registering twice is an exact duplicate.
	at := p.Station.NotBefore.Add(time.Second).UnixMilli()
	leaf, err := (&ledger.StationRegistration{Certificate: p.Station.Raw, RegisteredAtMs: uint64(at)}).MarshalLeaf()
	if err != nil {
		panic(err) // a fixed, valid registration
	}
	return leaf
}

// ChipID returns a chip ID of the default length derived from n.
func ChipID(n uint64) ledger.ChipID {
	h := sha256.Sum256(binary.BigEndian.AppendUint64([]byte("chip"), n))
	return ledger.ChipID(h[:ledger.DefaultChipIDLen])
}

// Identities returns the identities the PKI gives a chip: an IMEI derived
// from the chip ID.
func Identities(chip ledger.ChipID) ledger.Identities {
	h := sha256.Sum256(chip)
	imei, err := ledger.NewIMEI(fmt.Sprintf("35209900%06d", binary.BigEndian.Uint32(h[:4])%1_000_000))
	if err != nil {
		panic(err) // 14 digits with a fixed, valid TAC
	}
	return ledger.Identities{imei}
}

// EscrowEntry returns a valid escrow entry for chip at epoch, signed by the
// station, with a fresh device key and certificate, and a backup padded so
// that the leaf is about leafSize bytes (0 for a small one).
func (p *PKI) EscrowEntry(chip ledger.ChipID, epoch uint32, leafSize int) (*ledger.EscrowEntry, error) {
	ids := Identities(chip)
	at := time.Now().UTC().Truncate(time.Second)
	tmpl, err := ledger.DeviceCertificateTemplate(Manufacturer, chip, ids, at, rand.Reader)
	if err != nil {
		return nil, err
	}
	deviceKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cert, err := ledger.IssueDeviceCertificate(rand.Reader, tmpl, &deviceKey.PublicKey, p.DeviceCA, p.DeviceCAKey)
	if err != nil {
		return nil, err
	}
	e := &ledger.EscrowEntry{
		ChipID:          chip,
		Identities:      ids,
		Epoch:           epoch,
		Certificate:     cert,
		Backup:          []byte(fmt.Sprintf("backup of %s at epoch %d", chip, epoch)),
		StationID:       p.StationID(),
		ProvisionedAtMs: uint64(at.UnixMilli()),
	}
	if leafSize > 0 {
		msg, err := e.SignedMessage()
		if err != nil {
			return nil, err
		}
		// An ECDSA signature is 70 to 72 bytes; count 72.
		if pad := leafSize - (len(msg) + 2 + 72); pad > 0 {
			e.Backup = append(e.Backup, make([]byte, pad)...)
		}
	}
	if err := e.Sign(rand.Reader, p.StationKey); err != nil {
		return nil, err
	}
	return e, nil
}

// EscrowLeaf is EscrowEntry marshalled.
func (p *PKI) EscrowLeaf(chip ledger.ChipID, epoch uint32, leafSize int) ([]byte, error) {
	e, err := p.EscrowEntry(chip, epoch, leafSize)
	if err != nil {
		return nil, err
	}
	return e.MarshalLeaf()
}
