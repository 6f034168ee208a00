package provisioner

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/chipledger/chipledger/ledger"
)

// Files of a station directory.
const (
	StationKeyFile  = "station.key"
	StationCertFile = "station.pem"
	JournalFile     = "journal.db"
)

// StationIdentity is a station's key and certificate.
type StationIdentity struct {
	Dir         string
	Key         *ecdsa.PrivateKey
	Certificate *x509.Certificate
}

// ErrStationExists is returned by InitStation for a directory that already
// holds a station.
var ErrStationExists = errors.New("station already exists")

// InitStation creates a station in dir: a new ECDSA P-256 key (0600) and a
// certificate for it issued by the manufacturer CA with the station policy,
// valid for the given duration from now. A directory with the certificate
// holds a station already (ErrStationExists). One with the key alone is
// what an InitStation interrupted between its two writes leaves: that key
// was never certified, and InitStation certifies it now.
func InitStation(dir string, ca *CA, name string, validity time.Duration) (*StationIdentity, error) {
	keyPath, certPath := filepath.Join(dir, StationKeyFile), filepath.Join(dir, StationCertFile)
	if _, err := os.Stat(certPath); err == nil {
		return nil, fmt.Errorf("%w in %s; use it, or another directory", ErrStationExists, dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := readKey(keyPath, nil)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, err
		}
		keyPEM, err := marshalKey(key)
		if err != nil {
			return nil, err
		}
		if err := writeFileExclusive(keyPath, keyPEM, 0o600); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("station key in %s, left without its certificate by an interrupted station init: %w", dir, err)
	}
	now := time.Now().UTC()
	der, err := ca.IssueStationCertificate(name, &key.PublicKey, now.Add(-time.Hour), now.Add(validity))
	if err != nil {
		return nil, fmt.Errorf("issue the station certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	if err := writeFileExclusive(certPath, certPEM(cert), 0o644); err != nil {
		return nil, err
	}
	return &StationIdentity{Dir: dir, Key: key, Certificate: cert}, nil
}

// LoadStation reads the station in dir.
func LoadStation(dir string) (*StationIdentity, error) {
	cert, err := readAnyCertificate(filepath.Join(dir, StationCertFile))
	if err != nil {
		return nil, fmt.Errorf("station certificate in %s (create one with `chipledger station init`): %w", dir, err)
	}
	key, err := readKey(filepath.Join(dir, StationKeyFile), cert)
	if err != nil {
		return nil, fmt.Errorf("station key in %s: %w", dir, err)
	}
	return &StationIdentity{Dir: dir, Key: key, Certificate: cert}, nil
}

// ID is the station ID, SHA-256 of its certificate.
func (s *StationIdentity) ID() [32]byte { return ledger.StationID(s.Certificate.Raw) }

// Name is the station's name, the common name of its certificate.
func (s *StationIdentity) Name() string { return s.Certificate.Subject.CommonName }

// RegistrationLeaf is the ledger entry that registers the station.
func (s *StationIdentity) RegistrationLeaf() ([]byte, error) {
	return (&ledger.StationRegistration{
		Certificate:    s.Certificate.Raw,
		RegisteredAtMs: uint64(time.Now().UnixMilli()),
	}).MarshalLeaf()
}
