package provisioner

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/chipledger/chipledger/internal/atomicfile"
	"github.com/chipledger/chipledger/ledger"
)

// The files of a CA directory. Keys are PKCS#8 PEM ("PRIVATE KEY") with mode
// 0600; certificates are PEM ("CERTIFICATE"). TrustFile is the bundle to give
// ledger nodes, devices and auditors: the root, then the device CA.
const (
	RootCertFile     = "root.pem"
	RootKeyFile      = "root.key"
	DeviceCACertFile = "device-ca.pem"
	DeviceCAKeyFile  = "device-ca.key"
	TrustFile        = "trust.pem"
)

// caFiles lists the files of a CA directory in the order InitCA writes them:
// keys first, the trust bundle last, so a directory with a trust bundle is
// complete.
var caFiles = []string{RootKeyFile, DeviceCAKeyFile, RootCertFile, DeviceCACertFile, TrustFile}

var (
	// ErrCAExists is returned by InitCA when the directory already holds CA
	// files: InitCA never overwrites a key.
	ErrCAExists = errors.New("CA already exists")
	// ErrNoCA is returned by LoadCA when the directory holds no CA files at
	// all (or does not exist).
	ErrNoCA = errors.New("no CA")
)

// caNotAfter is the notAfter of both CA certificates, 99991231235959Z.
// Certificates are checked as of the time they were used (an escrow entry's
// provisioned_at), and a device keeps the root in ROM for its whole life, so
// an expiry would only strand devices; IEEE 802.1AR uses the same value for
// device identities.
var caNotAfter = time.Date(9999, time.December, 31, 23, 59, 59, 0, time.UTC)

// clockSkew backdates the CA certificates so that a station whose clock is a
// little behind the CA's can still issue certificates right away.
const clockSkew = time.Hour

// maxNameLen is ub-organization-name and ub-common-name (RFC 5280 Appendix A).
const maxNameLen = 64

// A CA is a manufacturer's certificate authority: a self-signed root CA and
// a device CA under it (path length 0). The device CA issues device
// certificates (DESIGN.md §3.5); the root issues station certificates. Its
// trust bundle (the root and the device CA) is what ledger nodes, devices
// and recovering clients are configured with. A CA is safe for concurrent
// use.
type CA struct {
	dir          string
	manufacturer string
	root         *x509.Certificate
	rootKey      *ecdsa.PrivateKey
	deviceCA     *x509.Certificate
	deviceCAKey  *ecdsa.PrivateKey
	trust        *ledger.Trust
}

// InitCA creates a new CA for manufacturer in dir (created with mode 0700 if
// missing): ECDSA P-256 keys, a self-signed root CA (O=manufacturer, path
// length 1) and a device CA issued by it (path length 0), both valid from
// an hour ago until 99991231235959Z. It writes RootKeyFile, DeviceCAKeyFile,
// RootCertFile, DeviceCACertFile and TrustFile, each atomically and never
// over an existing file. If dir already holds any of them, InitCA changes
// nothing and returns an error wrapping ErrCAExists.
func InitCA(dir, manufacturer string) (*CA, error) {
	if manufacturer == "" || len(manufacturer) > maxNameLen || !utf8.ValidString(manufacturer) {
		return nil, fmt.Errorf("manufacturer name %q must be 1 to %d bytes of UTF-8", manufacturer, maxNameLen)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create CA directory: %w", err)
	}
	if found := existingFiles(dir); len(found) > 0 {
		return nil, fmt.Errorf("%w in %s (found %s): it is never overwritten; use that CA, or create the new one in another directory", ErrCAExists, dir, strings.Join(found, ", "))
	}
	c, err := newCA(dir, manufacturer, time.Now())
	if err != nil {
		return nil, err
	}
	if err := c.write(); err != nil {
		return nil, err
	}
	return c, nil
}

// existingFiles returns the CA files present in dir.
func existingFiles(dir string) []string {
	var found []string
	for _, name := range caFiles {
		if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			found = append(found, name)
		}
	}
	return found
}

// newCA generates the keys and certificates of a CA in memory.
func newCA(dir, manufacturer string, now time.Time) (*CA, error) {
	c := &CA{dir: dir, manufacturer: manufacturer}
	var err error
	if c.rootKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	if c.deviceCAKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	notBefore := now.Add(-clockSkew).UTC().Truncate(time.Second)

	rootTmpl, err := caTemplate(manufacturer, "Root CA", notBefore, 1)
	if err != nil {
		return nil, err
	}
	if c.root, err = createCertificate(rootTmpl, rootTmpl, &c.rootKey.PublicKey, c.rootKey); err != nil {
		return nil, fmt.Errorf("create root CA certificate: %w", err)
	}
	deviceTmpl, err := caTemplate(manufacturer, "Device CA", notBefore, 0)
	if err != nil {
		return nil, err
	}
	if c.deviceCA, err = createCertificate(deviceTmpl, c.root, &c.deviceCAKey.PublicKey, c.rootKey); err != nil {
		return nil, fmt.Errorf("create device CA certificate: %w", err)
	}
	if err := c.setTrust(); err != nil {
		return nil, err
	}
	return c, nil
}

// caTemplate returns the template of a CA certificate named
// "O=manufacturer, CN=<manufacturer> <role>" with the given path length.
func caTemplate(manufacturer, role string, notBefore time.Time, maxPathLen int) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	cn := manufacturer + " " + role
	if len(cn) > maxNameLen {
		cn = role
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{manufacturer}, CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              caNotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
	}, nil
}

// randomSerial returns a certificate serial of 16 random bytes with the top
// bit clear.
func randomSerial() (*big.Int, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	b[0] &= 0x7f
	return new(big.Int).SetBytes(b[:]), nil
}

func createCertificate(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, parentKey *ecdsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// setTrust builds the trust bundle and checks that the device CA chains to
// the root.
func (c *CA) setTrust() error {
	c.trust = ledger.NewTrust([]*x509.Certificate{c.root}, []*x509.Certificate{c.deviceCA})
	if err := c.trust.Err(); err != nil {
		return fmt.Errorf("CA in %s: %w", c.dir, err)
	}
	return nil
}

// write stores the CA's files in the order of caFiles, and removes the ones
// it wrote if it fails.
func (c *CA) write() error {
	rootKey, err := marshalKey(c.rootKey)
	if err != nil {
		return err
	}
	deviceCAKey, err := marshalKey(c.deviceCAKey)
	if err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{RootKeyFile, rootKey, 0o600},
		{DeviceCAKeyFile, deviceCAKey, 0o600},
		{RootCertFile, certPEM(c.root), 0o644},
		{DeviceCACertFile, certPEM(c.deviceCA), 0o644},
		{TrustFile, c.trust.PEM(), 0o644},
	}
	var written []string
	for _, f := range files {
		path := filepath.Join(c.dir, f.name)
		if err := writeFileExclusive(path, f.data, f.perm); err != nil {
			// Leave no partial CA behind: it could be neither loaded
			// nor created again.
			for _, w := range written {
				os.Remove(w)
			}
			return err
		}
		written = append(written, path)
	}
	return nil
}

func marshalKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// writeFileExclusive creates path holding data with mode perm, atomically
// and never over an existing file (atomicfile.Create).
func writeFileExclusive(path string, data []byte, perm os.FileMode) error {
	err := atomicfile.Create(path, data, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; refusing to overwrite it", path)
	}
	return err
}

// LoadCA reads the CA InitCA created in dir. It checks that each key matches
// its certificate, that the root is self-signed and issued the device CA,
// and that the key files are not readable by other users. A directory
// without any CA file gives an error wrapping ErrNoCA; one with only some of
// them (an interrupted InitCA) is reported as incomplete.
func LoadCA(dir string) (*CA, error) {
	found := existingFiles(dir)
	if len(found) == 0 {
		return nil, fmt.Errorf("%w in %s; create one with: chipledger ca init --dir %s --manufacturer NAME", ErrNoCA, dir, dir)
	}
	if len(found) < len(caFiles) {
		var missing []string
		for _, name := range caFiles {
			if _, err := os.Lstat(filepath.Join(dir, name)); errors.Is(err, fs.ErrNotExist) {
				missing = append(missing, name)
			}
		}
		return nil, fmt.Errorf("incomplete CA in %s: %s missing (was its creation interrupted? remove the directory and create the CA again)", dir, strings.Join(missing, ", "))
	}
	c := &CA{dir: dir}
	var err error
	if c.root, err = readCertificate(filepath.Join(dir, RootCertFile)); err != nil {
		return nil, err
	}
	if c.deviceCA, err = readCertificate(filepath.Join(dir, DeviceCACertFile)); err != nil {
		return nil, err
	}
	if c.rootKey, err = readKey(filepath.Join(dir, RootKeyFile), c.root); err != nil {
		return nil, err
	}
	if c.deviceCAKey, err = readKey(filepath.Join(dir, DeviceCAKeyFile), c.deviceCA); err != nil {
		return nil, err
	}
	if err := c.root.CheckSignatureFrom(c.root); err != nil {
		return nil, fmt.Errorf("%s is not a self-signed root CA: %w", filepath.Join(dir, RootCertFile), err)
	}
	if err := c.deviceCA.CheckSignatureFrom(c.root); err != nil {
		return nil, fmt.Errorf("%s was not issued by the root in %s: %w", filepath.Join(dir, DeviceCACertFile), RootCertFile, err)
	}
	if len(c.root.Subject.Organization) != 1 {
		return nil, fmt.Errorf("%s: the root's subject has no single organization (the manufacturer)", filepath.Join(dir, RootCertFile))
	}
	c.manufacturer = c.root.Subject.Organization[0]
	if err := c.setTrust(); err != nil {
		return nil, err
	}
	return c, nil
}

// readPEM reads a file holding exactly one PEM block of type typ.
func readPEM(path, typ string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != typ || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, fmt.Errorf("%s: want exactly one PEM block of type %s", path, typ)
	}
	return block.Bytes, nil
}

func readCertificate(path string) (*x509.Certificate, error) {
	cert, err := readAnyCertificate(path)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s: not a CA certificate", path)
	}
	return cert, nil
}

// readAnyCertificate reads a PEM certificate.
func readAnyCertificate(path string) (*x509.Certificate, error) {
	der, err := readPEM(path, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cert, nil
}

// readKey reads a PKCS#8 ECDSA P-256 key and checks that it is the key of
// cert and that the file is private to its owner.
func readKey(path string, cert *x509.Certificate) (*ecdsa.PrivateKey, error) {
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%s is accessible by other users (mode %04o); run chmod 600 %s", path, fi.Mode().Perm(), path)
		}
	}
	der, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s: not an ECDSA P-256 key", path)
	}
	if cert != nil && !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s is not the key of the certificate %q", path, cert.Subject)
	}
	return key, nil
}

// Dir returns the directory the CA's files are in.
func (c *CA) Dir() string { return c.dir }

// Manufacturer returns the manufacturer's name, the O of every certificate
// the CA issues.
func (c *CA) Manufacturer() string { return c.manufacturer }

// Root returns the root CA certificate.
func (c *CA) Root() *x509.Certificate { return c.root }

// RootKey returns the root CA's private key.
func (c *CA) RootKey() *ecdsa.PrivateKey { return c.rootKey }

// DeviceCA returns the device CA certificate.
func (c *CA) DeviceCA() *x509.Certificate { return c.deviceCA }

// DeviceCAKey returns the device CA's private key.
func (c *CA) DeviceCAKey() *ecdsa.PrivateKey { return c.deviceCAKey }

// Trust returns the trust bundle of the CA: the root and the device CA.
func (c *CA) Trust() *ledger.Trust { return c.trust }

// TrustPath returns the path of the trust bundle file, TrustFile in Dir.
func (c *CA) TrustPath() string { return filepath.Join(c.dir, TrustFile) }

// IssueDeviceCertificate signs a device certificate template (from
// ledger.DeviceCertificateTemplate) for the device key pub with the device
// CA, and returns the DER certificate.
func (c *CA) IssueDeviceCertificate(tmpl *x509.Certificate, pub *ecdsa.PublicKey) ([]byte, error) {
	return ledger.IssueDeviceCertificate(rand.Reader, tmpl, pub, c.deviceCA, c.deviceCAKey)
}

// IssueStationCertificate issues a station certificate (from
// ledger.StationCertificateTemplate: O=manufacturer, CN=stationName, the
// station policy) for the station key pub, valid from notBefore to notAfter,
// signed by the root, and returns it as DER. The key must be ECDSA P-256.
func (c *CA) IssueStationCertificate(stationName string, pub *ecdsa.PublicKey, notBefore, notAfter time.Time) ([]byte, error) {
	if pub == nil || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: station key is not ECDSA P-256", ledger.ErrCertificateProfile)
	}
	tmpl, err := ledger.StationCertificateTemplate(c.manufacturer, stationName, notBefore, notAfter, rand.Reader)
	if err != nil {
		return nil, err
	}
	if tmpl.SubjectKeyId, err = ledger.SubjectKeyID(pub); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.root, pub, c.rootKey)
	if err != nil {
		return nil, fmt.Errorf("issue station certificate for %q: %w", stationName, err)
	}
	return der, nil
}
