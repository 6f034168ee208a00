package ledger

import (
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"time"
)

// maxCommonNameLen is ub-common-name (RFC 5280 Appendix A).
const maxCommonNameLen = 64

// StationCertificateTemplate returns the template of a station certificate:
// subject O=manufacturer, CN=stationName; certificatePolicies
// OIDStationCertPolicy; keyUsage digitalSignature and basicConstraints
// CA:FALSE (both critical); validity notBefore to notAfter (truncated to the
// second); a serial of 16 random bytes with the top bit clear. The station key
// it is issued for must be ECDSA P-256, which VerifyStationCertificate checks.
// Sign it with x509.CreateCertificate(rand, tmpl, caCert, stationPub, caKey).
func StationCertificateTemplate(manufacturer, stationName string, notBefore, notAfter time.Time, rand io.Reader) (*x509.Certificate, error) {
	if err := checkManufacturer(manufacturer); err != nil {
		return nil, err
	}
	if stationName == "" || len(stationName) > maxCommonNameLen {
		return nil, fmt.Errorf("%w: station name %q must be 1 to %d bytes", ErrCertificateProfile, stationName, maxCommonNameLen)
	}
	notBefore, notAfter = notBefore.UTC().Truncate(time.Second), notAfter.UTC().Truncate(time.Second)
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("%w: station certificate notAfter %s is not after notBefore %s", ErrCertificateProfile, notAfter.Format(time.RFC3339), notBefore.Format(time.RFC3339))
	}
	serial, err := randomSerial(rand)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{manufacturer},
			CommonName:   stationName,
		},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  false,
		Policies:              []x509.OID{OIDStationCertPolicy},
	}, nil
}

// StationID returns the station ID of a station certificate: the SHA-256 of
// its DER, which escrow entries carry as station_id.
func StationID(certDER []byte) [32]byte {
	return sha256.Sum256(certDER)
}
