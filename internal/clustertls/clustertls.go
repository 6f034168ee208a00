// Package clustertls makes and loads the TLS material of a chipledger
// cluster for operators who have no PKI of their own: a cluster CA, node
// certificates (server and client, naming the node's addresses) and admin
// client certificates. Node certificates carry the organisational unit
// NodeOU and admin ones AdminOU; a node authorises admin calls from either.
package clustertls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/chipledger/chipledger/internal/atomicfile"
)

// Organisational units of the certificates this package issues.
const (
	NodeOU  = "chipledger-node"
	AdminOU = "chipledger-admin"
)

// File names in a TLS directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca.key"
)

// ErrExists is returned instead of overwriting a certificate or key.
var ErrExists = errors.New("file already exists")

// InitCA creates a cluster CA (ECDSA P-256, valid 20 years) in dir.
func InitCA(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "chipledger cluster CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	return writePair(dir, CACertFile, CAKeyFile, der, key)
}

// IssueNode issues a certificate for node id in dir, signed by the CA in
// dir, for server and client use, naming hosts (IP addresses or DNS names)
// as its subject alternative names. It writes <id>.pem and <id>.key.
func IssueNode(dir, id string, hosts []string) error {
	if err := checkFileName("node ID", id); err != nil {
		return err
	}
	if len(hosts) == 0 {
		return errors.New("a node certificate needs the host names or addresses peers reach the node at")
	}
	tmpl := leafTemplate(id, NodeOU, 5)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return issue(dir, id, tmpl)
}

// IssueAdmin issues an admin client certificate for name in dir, writing
// admin-<name>.pem and admin-<name>.key.
func IssueAdmin(dir, name string) error {
	if err := checkFileName("admin name", name); err != nil {
		return err
	}
	tmpl := leafTemplate(name, AdminOU, 1)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return issue(dir, "admin-"+name, tmpl)
}

func leafTemplate(cn, ou string, years int) *x509.Certificate {
	now := time.Now().UTC()
	return &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn, OrganizationalUnit: []string{ou}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(years, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
}

func issue(dir, name string, tmpl *x509.Certificate) error {
	caCert, caKey, err := loadCA(dir)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	return writePair(dir, name+".pem", name+".key", der, key)
}

func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, nil, fmt.Errorf("load the cluster CA from %s (make one with `chipledger tls init`): %w", dir, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, errors.New("the cluster CA key is not an ECDSA key")
	}
	return cert, key, nil
}

func writePair(dir, certName, keyName string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(dir, certName), filepath.Join(dir, keyName)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s: %w", p, ErrExists)
		}
	}
	if err := writeExclusive(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeExclusive(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeExclusive(path string, data []byte, mode os.FileMode) error {
	err := atomicfile.Create(path, data, mode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s: %w", path, ErrExists)
	}
	return err
}

func serial() *big.Int {
	b := make([]byte, 16)
	rand.Read(b)
	b[0] &= 0x7f
	return new(big.Int).SetBytes(b)
}

// LoadCAPool reads a PEM file of CA certificates.
func LoadCAPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// ClientConfig returns the TLS configuration of a client of the cluster:
// it trusts the CA in caFile and, if certFile is set, presents that
// certificate (an admin's, say).
func ClientConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := LoadCAPool(caFile)
	if err != nil {
		return nil, err
	}
	c := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// checkFileName refuses a node ID or admin name that cannot name files in
// the directory: empty, longer than 64 bytes, or with characters other
// than letters, digits, '.', '_' and '-' (a '/' would write elsewhere), or
// starting with '.'.
func checkFileName(what, name string) error {
	ok := name != "" && len(name) <= 64 && name[0] != '.'
	for _, r := range name {
		ok = ok && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}
	if !ok {
		return fmt.Errorf("%s %q: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'", what, name)
	}
	return nil
}
