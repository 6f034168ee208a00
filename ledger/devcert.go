package ledger

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"io"
	"math/big"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// projectArc is the project's OID arc (DESIGN.md §3.1), a UUID arc under
// 2.25. Its last component does not fit an int, so asn1.ObjectIdentifier cannot
// hold it and the OIDs below are x509.OID values.
const projectArc = "2.25.144312216418632237235149399241930038450"

// The project's OIDs.
var (
	// OIDChipFamily is the hwType of the hardwareModuleName in device
	// certificates: it says the hwSerialNum is a chipledger chip ID.
	OIDChipFamily = mustParseOID(projectArc + ".1")
	// OIDDeviceCertPolicy is the certificatePolicies OID of device
	// certificates.
	OIDDeviceCertPolicy = mustParseOID(projectArc + ".2")
	// OIDStationCertPolicy is the certificatePolicies OID of station
	// certificates.
	OIDStationCertPolicy = mustParseOID(projectArc + ".3")
)

var (
	// oidHardwareModuleName is id-on-hardwareModuleName (RFC 4108 §5).
	oidHardwareModuleName = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 4}
	oidSubjectAltName     = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidKeyUsage           = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidBasicConstraints   = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidSerialNumberAttr   = asn1.ObjectIdentifier{2, 5, 4, 5}
)

// deviceNotAfter is the notAfter of every device certificate, 99991231235959Z:
// "no well-defined expiry" (IEEE 802.1AR, RFC 5280 §4.1.2.5).
var deviceNotAfter = time.Date(9999, time.December, 31, 23, 59, 59, 0, time.UTC)

// maxOrganizationLen is ub-organization-name (RFC 5280 Appendix A).
const maxOrganizationLen = 64

func mustParseOID(s string) x509.OID {
	oid, err := x509.ParseOID(s)
	if err != nil {
		panic("ledger: bad built-in OID " + s + ": " + err.Error())
	}
	return oid
}

// oidContent returns the DER content bytes (base-128 arcs, no tag or length)
// of oid.
func oidContent(oid x509.OID) []byte {
	b, err := oid.MarshalBinary()
	if err != nil {
		panic("ledger: x509.OID.MarshalBinary: " + err.Error())
	}
	return b
}

// DeviceCertificateTemplate returns the template of a device certificate
// (DESIGN.md §3.5) for the chip and identities: subject O=manufacturer and
// serialNumber = the first identity's DisplayValue (an IMEI with its check
// digit); a non-critical SAN with the hardwareModuleName {OIDChipFamily,
// chip} and one urn:gsma:imei URI per IMEI identity; keyUsage
// digitalSignature and basicConstraints CA:FALSE (both critical, as Go
// writes them); certificatePolicies OIDDeviceCertPolicy; validity from
// notBefore (truncated to the second) to 99991231235959Z; a serial of 16
// random bytes with the top bit clear.
//
// Sign it with IssueDeviceCertificate, which also sets the subject key
// identifier from the device key. x509.CreateCertificate(rand, tmpl, caCert,
// devicePub, caKey) works too but leaves the SKI out, as Go only computes it
// for CA certificates; the AKI comes from the CA either way.
func DeviceCertificateTemplate(manufacturer string, chip ChipID, ids Identities, notBefore time.Time, rand io.Reader) (*x509.Certificate, error) {
	if err := checkManufacturer(manufacturer); err != nil {
		return nil, err
	}
	if err := chip.Validate(); err != nil {
		return nil, err
	}
	if err := ids.Validate(); err != nil {
		return nil, err
	}
	serial, err := randomSerial(rand)
	if err != nil {
		return nil, err
	}
	var urns []string
	for _, id := range ids {
		if urn, ok := id.IMEIURN(); ok {
			urns = append(urns, urn)
		}
	}
	san, err := marshalDeviceSAN(chip, urns)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{manufacturer},
			SerialNumber: ids[0].DisplayValue(),
		},
		NotBefore:             notBefore.UTC().Truncate(time.Second),
		NotAfter:              deviceNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  false,
		Policies:              []x509.OID{OIDDeviceCertPolicy},
		ExtraExtensions: []pkix.Extension{
			{Id: oidSubjectAltName, Critical: false, Value: san},
		},
	}, nil
}

// IssueDeviceCertificate signs tmpl (from DeviceCertificateTemplate) for the
// device key devicePub with the device CA ca and its key caKey, and returns the
// DER certificate. It sets the subject key identifier from devicePub
// (SubjectKeyID) and refuses a device key that is not ECDSA P-256.
func IssueDeviceCertificate(rand io.Reader, tmpl *x509.Certificate, devicePub *ecdsa.PublicKey, ca *x509.Certificate, caKey crypto.Signer) ([]byte, error) {
	if !isP256(devicePub) {
		return nil, fmt.Errorf("%w: device key is not ECDSA P-256", ErrCertificateProfile)
	}
	skid, err := SubjectKeyID(devicePub)
	if err != nil {
		return nil, err
	}
	t := *tmpl
	t.SubjectKeyId = skid
	der, err := x509.CreateCertificate(rand, &t, ca, devicePub, caKey)
	if err != nil {
		return nil, fmt.Errorf("issuing device certificate: %w", err)
	}
	return der, nil
}

// SubjectKeyID returns the key identifier of pub by RFC 7093 §2 method 1: the
// leftmost 160 bits of the SHA-256 of the subjectPublicKey BIT STRING value,
// the method Go itself uses for CA certificates.
func SubjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("subject key identifier: %w", err)
	}
	s := cryptobyte.String(spki)
	var key []byte
	if !s.ReadASN1(&s, cbasn1.SEQUENCE) || !s.SkipASN1(cbasn1.SEQUENCE) || !s.ReadASN1BitStringAsBytes(&key) {
		return nil, fmt.Errorf("subject key identifier: cannot read the subjectPublicKeyInfo")
	}
	h := sha256.Sum256(key)
	return h[:20], nil
}

// DeviceBinding is what a device certificate binds: the chip ID of its
// hardwareModuleName, its subject serialNumber and its IMEI URNs, in
// certificate order.
type DeviceBinding struct {
	ChipID       ChipID
	SerialNumber string
	IMEIURNs     []string
}

// ParseDeviceBinding reads the binding of a device certificate and checks
// the parts of the profile that carry it: the SAN extension is present and
// non-critical and holds exactly one otherName, a hardwareModuleName with
// hwType OIDChipFamily and a valid chip ID as hwSerialNum, and otherwise only
// well-formed urn:gsma:imei:TAC-SNR-0 URIs, each once; the subject has exactly
// one serialNumber. It does not check the chain or compare the binding with
// anything. The error wraps ErrCertificateProfile.
func ParseDeviceBinding(cert *x509.Certificate) (*DeviceBinding, error) {
	var san *pkix.Extension
	for i := range cert.Extensions {
		if cert.Extensions[i].Id.Equal(oidSubjectAltName) {
			san = &cert.Extensions[i]
		}
	}
	if san == nil {
		return nil, fmt.Errorf("%w: device certificate has no subjectAltName", ErrCertificateProfile)
	}
	if san.Critical {
		return nil, fmt.Errorf("%w: device certificate subjectAltName is critical, must be non-critical", ErrCertificateProfile)
	}
	b, err := parseDeviceSAN(san.Value)
	if err != nil {
		return nil, err
	}
	var serials []string
	for _, atv := range cert.Subject.Names {
		if atv.Type.Equal(oidSerialNumberAttr) {
			s, ok := atv.Value.(string)
			if !ok {
				return nil, fmt.Errorf("%w: device certificate subject serialNumber is not a string", ErrCertificateProfile)
			}
			serials = append(serials, s)
		}
	}
	if len(serials) != 1 {
		return nil, fmt.Errorf("%w: device certificate subject has %d serialNumber attributes, want 1", ErrCertificateProfile, len(serials))
	}
	b.SerialNumber = serials[0]
	return b, nil
}

// CheckDeviceBinding checks that cert binds exactly chip and ids: its
// hardwareModuleName holds chip (else ErrChipIDMismatch); its subject
// serialNumber is the DisplayValue of ids[0], so an IMEI with its check digit
// (else ErrIdentityMismatch, or ErrInvalidIdentity when the serialNumber is
// not even a valid IMEI, such as one with a wrong check digit); and its
// urn:gsma:imei URIs are exactly the URNs of the IMEI identities in ids, as a
// set (else ErrIdentityMismatch). Profile violations wrap
// ErrCertificateProfile as in ParseDeviceBinding.
func CheckDeviceBinding(cert *x509.Certificate, chip ChipID, ids Identities) error {
	if err := chip.Validate(); err != nil {
		return err
	}
	if err := ids.Validate(); err != nil {
		return err
	}
	b, err := ParseDeviceBinding(cert)
	if err != nil {
		return err
	}
	if !b.ChipID.Equal(chip) {
		return fmt.Errorf("%w: certificate binds chip %s, entry is for chip %s", ErrChipIDMismatch, b.ChipID, chip)
	}
	if want := ids[0].DisplayValue(); b.SerialNumber != want {
		if ids[0].Type == IdentityIMEI {
			if _, err := NewIMEI(b.SerialNumber); err != nil {
				return fmt.Errorf("certificate subject serialNumber: %w", err)
			}
		}
		return fmt.Errorf("%w: certificate subject serialNumber is %q, want %q (%s)", ErrIdentityMismatch, b.SerialNumber, want, ids[0])
	}
	inCert := make(map[string]bool, len(b.IMEIURNs))
	for _, urn := range b.IMEIURNs {
		inCert[urn] = true // ParseDeviceBinding rejects duplicates
	}
	var imeis int
	for _, id := range ids {
		urn, ok := id.IMEIURN()
		if !ok {
			continue
		}
		imeis++
		if !inCert[urn] {
			return fmt.Errorf("%w: certificate does not name %s (%s)", ErrIdentityMismatch, urn, id)
		}
	}
	if len(b.IMEIURNs) != imeis {
		return fmt.Errorf("%w: certificate names %d IMEIs %v, the identities %s hold %d", ErrIdentityMismatch, len(b.IMEIURNs), b.IMEIURNs, ids, imeis)
	}
	return nil
}

// marshalDeviceSAN returns the DER of the device SAN:
//
//	GeneralNames ::= SEQUENCE {
//	  [0] otherName { id-on-hardwareModuleName,
//	                  [0] EXPLICIT HardwareModuleName { hwType OIDChipFamily, hwSerialNum OCTET STRING chip } },
//	  [6] uniformResourceIdentifier urn, ... }
func marshalDeviceSAN(chip ChipID, urns []string) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidHardwareModuleName)
			b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) {
						b.AddBytes(oidContent(OIDChipFamily))
					})
					b.AddASN1OctetString(chip)
				})
			})
		})
		for _, urn := range urns {
			b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddBytes([]byte(urn))
			})
		}
	})
	return b.Bytes()
}

// parseDeviceSAN is the inverse of marshalDeviceSAN; it rejects anything
// else the SAN could hold.
func parseDeviceSAN(der []byte) (*DeviceBinding, error) {
	s := cryptobyte.String(der)
	var names cryptobyte.String
	if !s.ReadASN1(&names, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, fmt.Errorf("%w: device certificate subjectAltName is not a GeneralNames sequence", ErrCertificateProfile)
	}
	b := new(DeviceBinding)
	var hwNames int
	seen := make(map[string]bool)
	for !names.Empty() {
		var name cryptobyte.String
		var tag cbasn1.Tag
		if !names.ReadAnyASN1(&name, &tag) {
			return nil, fmt.Errorf("%w: device certificate subjectAltName: malformed GeneralName", ErrCertificateProfile)
		}
		switch tag {
		case cbasn1.Tag(0).ContextSpecific().Constructed():
			chip, err := parseHardwareModuleName(name)
			if err != nil {
				return nil, err
			}
			b.ChipID = chip
			hwNames++
		case cbasn1.Tag(6).ContextSpecific():
			urn := string(name)
			if _, err := parseIMEIURN(urn); err != nil {
				return nil, err
			}
			if seen[urn] {
				return nil, fmt.Errorf("%w: device certificate names %s twice", ErrCertificateProfile, urn)
			}
			seen[urn] = true
			b.IMEIURNs = append(b.IMEIURNs, urn)
		default:
			return nil, fmt.Errorf("%w: device certificate subjectAltName holds a GeneralName with tag %#x; only a hardwareModuleName and urn:gsma:imei URIs are allowed", ErrCertificateProfile, uint8(tag))
		}
	}
	if hwNames != 1 {
		return nil, fmt.Errorf("%w: device certificate has %d hardwareModuleNames, want 1", ErrCertificateProfile, hwNames)
	}
	return b, nil
}

// parseHardwareModuleName parses the content of an otherName GeneralName
// that must be an RFC 4108 hardwareModuleName with hwType OIDChipFamily, and
// returns a copy of its hwSerialNum as a chip ID.
func parseHardwareModuleName(other cryptobyte.String) (ChipID, error) {
	var typeID asn1.ObjectIdentifier
	var value, hmn, hwType, serial cryptobyte.String
	if !other.ReadASN1ObjectIdentifier(&typeID) ||
		!other.ReadASN1(&value, cbasn1.Tag(0).ContextSpecific().Constructed()) || !other.Empty() {
		return nil, fmt.Errorf("%w: device certificate subjectAltName: malformed otherName", ErrCertificateProfile)
	}
	if !typeID.Equal(oidHardwareModuleName) {
		return nil, fmt.Errorf("%w: device certificate subjectAltName holds otherName %s; only hardwareModuleName (%s) is allowed", ErrCertificateProfile, typeID, oidHardwareModuleName)
	}
	if !value.ReadASN1(&hmn, cbasn1.SEQUENCE) || !value.Empty() ||
		!hmn.ReadASN1(&hwType, cbasn1.OBJECT_IDENTIFIER) ||
		!hmn.ReadASN1(&serial, cbasn1.OCTET_STRING) || !hmn.Empty() {
		return nil, fmt.Errorf("%w: device certificate: malformed hardwareModuleName", ErrCertificateProfile)
	}
	if !bytes.Equal(hwType, oidContent(OIDChipFamily)) {
		var got x509.OID
		typ := "malformed OID"
		if got.UnmarshalBinary(hwType) == nil {
			typ = got.String()
		}
		return nil, fmt.Errorf("%w: device certificate hardwareModuleName hwType is %s, want %s", ErrCertificateProfile, typ, OIDChipFamily)
	}
	chip := ChipID(append([]byte(nil), serial...))
	if err := chip.Validate(); err != nil {
		return nil, fmt.Errorf("%w: device certificate hwSerialNum: %w", ErrCertificateProfile, err)
	}
	return chip, nil
}

// parseIMEIURN parses "urn:gsma:imei:TTTTTTTT-SSSSSS-0" (RFC 7254 without
// parameters, spare digit 0) into the IMEI identity it names. The error wraps
// ErrCertificateProfile.
func parseIMEIURN(urn string) (Identity, error) {
	rest, ok := strings.CutPrefix(urn, imeiURNPrefix)
	if !ok || len(rest) != 8+1+6+2 || rest[8] != '-' || rest[15:] != "-0" {
		return Identity{}, fmt.Errorf("%w: device certificate URI %q is not urn:gsma:imei:TAC-SNR-0", ErrCertificateProfile, urn)
	}
	id, err := NewIMEI(rest[:8] + rest[9:15])
	if err != nil {
		return Identity{}, fmt.Errorf("%w: device certificate URI %q: %w", ErrCertificateProfile, urn, err)
	}
	return id, nil
}

// checkDeviceProfile checks the parts of the device certificate profile that
// ParseDeviceBinding does not: an ECDSA P-256 key, the device policy,
// keyUsage exactly digitalSignature and basicConstraints CA:FALSE (both
// critical), and the notAfter of 99991231235959Z.
func checkDeviceProfile(cert *x509.Certificate) error {
	if err := checkEndEntityProfile(cert, "device", OIDDeviceCertPolicy); err != nil {
		return err
	}
	if !cert.NotAfter.Equal(deviceNotAfter) {
		return fmt.Errorf("%w: device certificate notAfter is %s, want %s", ErrCertificateProfile, cert.NotAfter.UTC().Format(time.RFC3339), deviceNotAfter.Format(time.RFC3339))
	}
	return nil
}

// checkEndEntityProfile checks what device and station certificates share:
// an ECDSA P-256 key, the given policy among the certificate's policies,
// keyUsage exactly digitalSignature and basicConstraints CA:FALSE, both
// present and critical.
func checkEndEntityProfile(cert *x509.Certificate, what string, policy x509.OID) error {
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !isP256(pub) {
		return fmt.Errorf("%w: %s certificate key is %T, want ECDSA P-256", ErrCertificateProfile, what, cert.PublicKey)
	}
	if !hasPolicy(cert, policy) {
		return fmt.Errorf("%w: %s certificate lacks certificate policy %s", ErrCertificateProfile, what, policy)
	}
	if !cert.BasicConstraintsValid || cert.IsCA || !isCritical(cert, oidBasicConstraints) {
		return fmt.Errorf("%w: %s certificate must have critical basicConstraints CA:FALSE", ErrCertificateProfile, what)
	}
	if cert.KeyUsage != x509.KeyUsageDigitalSignature || !isCritical(cert, oidKeyUsage) {
		return fmt.Errorf("%w: %s certificate must have critical keyUsage digitalSignature only", ErrCertificateProfile, what)
	}
	return nil
}

func hasPolicy(cert *x509.Certificate, policy x509.OID) bool {
	for _, p := range cert.Policies {
		if p.Equal(policy) {
			return true
		}
	}
	return false
}

func isCritical(cert *x509.Certificate, id asn1.ObjectIdentifier) bool {
	for _, e := range cert.Extensions {
		if e.Id.Equal(id) {
			return e.Critical
		}
	}
	return false
}

// checkManufacturer checks the subject O of the certificates we issue.
func checkManufacturer(m string) error {
	if m == "" || len(m) > maxOrganizationLen || !utf8.ValidString(m) {
		return fmt.Errorf("%w: manufacturer %q must be 1 to %d bytes of UTF-8", ErrCertificateProfile, m, maxOrganizationLen)
	}
	return nil
}

// randomSerial returns a certificate serial of 16 random bytes with the top
// bit clear, so it is positive and encodes in at most 16 bytes.
func randomSerial(rand io.Reader) (*big.Int, error) {
	var b [16]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	b[0] &= 0x7f
	n := new(big.Int).SetBytes(b[:])
	if n.Sign() == 0 {
		return nil, fmt.Errorf("certificate serial: the random source returned zeros")
	}
	return n, nil
}
