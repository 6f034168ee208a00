package ledger

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"
)

// Trust is the set of manufacturer certificates a ledger, device, auditor or
// recovering client is configured with: roots (self-signed CA certificates,
// the trust anchors) and intermediates (device and station CAs that chain to
// a root). Certificates chain to a root through the intermediates; an
// intermediate is never trusted on its own. A Trust is immutable and safe for
// concurrent use.
type Trust struct {
	roots, intermediates       []*x509.Certificate
	rootPool, intermediatePool *x509.CertPool
}

// NewTrust returns the Trust of the given roots and intermediates. It does not
// check them; ParseTrustPEM does.
func NewTrust(roots, intermediates []*x509.Certificate) *Trust {
	t := &Trust{
		roots:            append([]*x509.Certificate(nil), roots...),
		intermediates:    append([]*x509.Certificate(nil), intermediates...),
		rootPool:         x509.NewCertPool(),
		intermediatePool: x509.NewCertPool(),
	}
	for _, c := range t.roots {
		t.rootPool.AddCert(c)
	}
	for _, c := range t.intermediates {
		t.intermediatePool.AddCert(c)
	}
	return t
}

// ParseTrustPEM parses a PEM bundle of CERTIFICATE blocks into a Trust. Every
// certificate must be a CA (basicConstraints CA:TRUE); the self-signed ones
// are roots, the others intermediates. It rejects an empty bundle, a bundle
// without a root, duplicate certificates, other PEM block types and any text
// between or around the blocks other than white space. The error wraps
// ErrInvalidTrust.
func ParseTrustPEM(pemBytes []byte) (*Trust, error) {
	var roots, intermediates []*x509.Certificate
	seen := make(map[[32]byte]int)
	rest := pemBytes
	for n := 1; ; n++ {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) == 0 {
			break
		}
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("%w: block %d: not PEM (want -----BEGIN CERTIFICATE-----)", ErrInvalidTrust, n)
		}
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("%w: block %d: malformed PEM", ErrInvalidTrust, n)
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: block %d: PEM type %q, want CERTIFICATE", ErrInvalidTrust, n, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: block %d: %v", ErrInvalidTrust, n, err)
		}
		if !cert.BasicConstraintsValid || !cert.IsCA {
			return nil, fmt.Errorf("%w: block %d: %q is not a CA certificate", ErrInvalidTrust, n, cert.Subject)
		}
		id := StationID(cert.Raw) // the SHA-256 of the DER
		if first, ok := seen[id]; ok {
			return nil, fmt.Errorf("%w: block %d repeats block %d", ErrInvalidTrust, n, first)
		}
		seen[id] = n
		if isSelfSigned(cert) {
			roots = append(roots, cert)
		} else {
			intermediates = append(intermediates, cert)
		}
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("%w: no self-signed root certificate among %d certificates", ErrInvalidTrust, len(intermediates))
	}
	return NewTrust(roots, intermediates), nil
}

func isSelfSigned(cert *x509.Certificate) bool {
	return bytes.Equal(cert.RawSubject, cert.RawIssuer) && cert.CheckSignatureFrom(cert) == nil
}

// Roots returns the root certificates.
func (t *Trust) Roots() []*x509.Certificate {
	return append([]*x509.Certificate(nil), t.roots...)
}

// Intermediates returns the intermediate certificates.
func (t *Trust) Intermediates() []*x509.Certificate {
	return append([]*x509.Certificate(nil), t.intermediates...)
}

// PEM returns the bundle as PEM, roots first, each group in the order given
// to NewTrust or found by ParseTrustPEM, so ParseTrustPEM(t.PEM()) is t.
func (t *Trust) PEM() []byte {
	var buf bytes.Buffer
	for _, c := range t.roots {
		pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	for _, c := range t.intermediates {
		pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// VerifyDeviceCertificate checks a device certificate as of time at (the
// entry's provisioned_at, so checking it again years later gives the same
// answer): it parses der, verifies the chain to a root with any extended key
// usage, checks the device profile (ECDSA P-256 key, OIDDeviceCertPolicy,
// critical keyUsage digitalSignature, critical CA:FALSE, notAfter
// 99991231235959Z) and then CheckDeviceBinding against chip and ids. Chain
// failures wrap ErrUntrustedCertificate, profile failures
// ErrCertificateProfile; binding failures are those of CheckDeviceBinding.
func (t *Trust) VerifyDeviceCertificate(der []byte, chip ChipID, ids Identities, at time.Time) (*x509.Certificate, error) {
	cert, err := t.verify("device", der, at)
	if err != nil {
		return nil, err
	}
	if err := checkDeviceProfile(cert); err != nil {
		return nil, err
	}
	if err := CheckDeviceBinding(cert, chip, ids); err != nil {
		return nil, err
	}
	return cert, nil
}

// VerifyStationCertificate checks a station certificate as of time at: it
// parses der, verifies the chain to a root with any extended key usage, and
// checks the station profile (ECDSA P-256 key, OIDStationCertPolicy, critical
// keyUsage digitalSignature, critical CA:FALSE). Errors wrap
// ErrUntrustedCertificate or ErrCertificateProfile.
func (t *Trust) VerifyStationCertificate(der []byte, at time.Time) (*x509.Certificate, error) {
	cert, err := t.verify("station", der, at)
	if err != nil {
		return nil, err
	}
	if err := checkEndEntityProfile(cert, "station", OIDStationCertPolicy); err != nil {
		return nil, err
	}
	return cert, nil
}

// verify parses der and verifies its chain at time at.
func (t *Trust) verify(what string, der []byte, at time.Time) (*x509.Certificate, error) {
	if t == nil || t.rootPool == nil {
		// A nil Roots pool would make x509 fall back to the system roots.
		return nil, fmt.Errorf("%w: %s certificate: no trust anchors configured", ErrUntrustedCertificate, what)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %s certificate: %v", ErrCertificateProfile, what, err)
	}
	_, err = cert.Verify(x509.VerifyOptions{
		Roots:         t.rootPool,
		Intermediates: t.intermediatePool,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s certificate %q at %s: %v", ErrUntrustedCertificate, what, cert.Subject, at.UTC().Format(time.RFC3339), err)
	}
	return cert, nil
}
