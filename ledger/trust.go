package ledger

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Trust is the set of manufacturer certificates a ledger, device, auditor or
// recovering client is configured with: roots (self-signed CA certificates,
// the trust anchors) and intermediates (device and station CAs that chain to
// a root). An intermediate is never trusted on its own. A Trust is immutable
// and safe for concurrent use.
//
// What is verified when:
//
//   - When the Trust is built (NewTrust, ParseTrustPEM), every intermediate
//     is verified once: x509 chain building to one of the roots, through the
//     other intermediates, with any extended key usage. Every chain found is
//     recorded with its validity window, the intersection of the validity
//     periods of all its certificates, from the intermediate up to and
//     including the root. The roots and the intermediates with at least one
//     usable chain are the verified issuers; each root's window is its own
//     validity period.
//   - When a device or station certificate is checked at a time at, x509
//     verifies it against the verified issuers as anchors and nothing else,
//     so it checks one signature (the certificate's, by its issuing CA; one
//     per verified issuer with that name, as with a root re-issued under
//     the same name and key), the validity of the certificate and of its
//     issuer at at, and the issuer's name constraints; Trust then requires
//     at to lie within one of the issuer's recorded windows, which covers
//     the validity of the root (and any CA) behind an intermediate. The
//     result is the same as a full chain verification at at through the
//     usable chains below.
//
// A chain is usable only when a certificate issued by the intermediate could
// verify through it: no CA above the intermediate has a path length
// constraint that forbids it, no CA above it has name constraints (they
// would apply to the certificates it issues, which a check anchored at the
// intermediate would not see), and no CA in it other than the root has
// policy constraints, policy mappings or inhibitAnyPolicy. Chains that are
// not usable are ignored, and an intermediate without a usable chain is
// refused (Err) rather than verified more slowly on every certificate;
// device PKIs rarely use these extensions.
type Trust struct {
	roots, intermediates []*x509.Certificate
	// issuerPool holds the verified issuers: the roots and the verified
	// intermediates. It is the Roots pool of every certificate check, with
	// no intermediates.
	issuerPool *x509.CertPool
	issuers    []*x509.Certificate
	// windows maps the DER of each verified issuer to the validity windows
	// of its chains to a root.
	windows map[string][]Validity
	// err reports the intermediates that are not verified issuers.
	err error
}

// Validity is a closed interval of time: a certificate, or a chain of them,
// is valid at t when NotBefore <= t <= NotAfter, as in x509.
type Validity struct {
	NotBefore, NotAfter time.Time
}

// Contains reports whether t lies within v, bounds included.
func (v Validity) Contains(t time.Time) bool {
	return !t.Before(v.NotBefore) && !t.After(v.NotAfter)
}

// String returns v as "NotBefore to NotAfter" in RFC 3339, UTC.
func (v Validity) String() string {
	return v.NotBefore.UTC().Format(time.RFC3339) + " to " + v.NotAfter.UTC().Format(time.RFC3339)
}

func validityOf(c *x509.Certificate) Validity {
	return Validity{c.NotBefore, c.NotAfter}
}

// intersect returns the intersection of v and w and whether it is not empty.
func (v Validity) intersect(w Validity) (Validity, bool) {
	r := Validity{v.NotBefore, v.NotAfter}
	if w.NotBefore.After(r.NotBefore) {
		r.NotBefore = w.NotBefore
	}
	if w.NotAfter.Before(r.NotAfter) {
		r.NotAfter = w.NotAfter
	}
	return r, !r.NotAfter.Before(r.NotBefore)
}

// NewTrust returns the Trust of the given roots and intermediates, and
// verifies every intermediate against the roots (see Trust). It never
// fails: an intermediate without a usable chain to a root is kept in
// Intermediates and PEM but is not an issuer, so nothing it issued is
// trusted, and Err reports it; so is a root or intermediate that is not a
// CA certificate. ParseTrustPEM refuses such a bundle. NewTrust does not
// check the other rules of ParseTrustPEM (no duplicates, at least one root).
func NewTrust(roots, intermediates []*x509.Certificate) *Trust {
	t := &Trust{
		roots:         append([]*x509.Certificate(nil), roots...),
		intermediates: append([]*x509.Certificate(nil), intermediates...),
		issuerPool:    x509.NewCertPool(),
		windows:       make(map[string][]Validity),
	}
	var errs []error
	rootPool, intermediatePool := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range t.roots {
		// x509 does not check that an anchor may sign: only a CA may be
		// an issuer.
		if !isCA(c) {
			errs = append(errs, fmt.Errorf("root %q is not a CA certificate", c.Subject))
			continue
		}
		rootPool.AddCert(c)
		t.addIssuer(c, []Validity{validityOf(c)})
	}
	for _, c := range t.intermediates {
		intermediatePool.AddCert(c)
	}
	// Every chain to a root is valid from the latest notBefore of its
	// certificates, so verifying at each notBefore in the bundle finds them
	// all, including a chain through a root re-issued after the
	// intermediate.
	var starts []time.Time
	for _, c := range append(t.Roots(), t.intermediates...) {
		starts = append(starts, c.NotBefore)
	}
	slices.SortFunc(starts, time.Time.Compare)
	starts = slices.CompactFunc(starts, time.Time.Equal)
	for _, c := range t.intermediates {
		if !isCA(c) {
			errs = append(errs, fmt.Errorf("intermediate %q is not a CA certificate", c.Subject))
			continue
		}
		windows, err := verifyIntermediate(c, rootPool, intermediatePool, starts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		t.addIssuer(c, windows)
	}
	if len(errs) > 0 {
		t.err = fmt.Errorf("%w: %w", ErrInvalidTrust, errors.Join(errs...))
	}
	return t
}

// isCA reports whether c is a CA certificate (basic constraints, cA set).
func isCA(c *x509.Certificate) bool { return c.BasicConstraintsValid && c.IsCA }

func (t *Trust) addIssuer(c *x509.Certificate, windows []Validity) {
	if _, ok := t.windows[string(c.Raw)]; !ok {
		t.issuerPool.AddCert(c)
		t.issuers = append(t.issuers, c)
	}
	for _, w := range windows {
		if !slices.Contains(t.windows[string(c.Raw)], w) {
			t.windows[string(c.Raw)] = append(t.windows[string(c.Raw)], w)
		}
	}
}

// Extensions that make a chain unusable when they appear above the issuing
// CA (name constraints) or on a CA of the chain other than its root (the
// policy ones), see Trust.
var (
	oidNameConstraints   = asn1.ObjectIdentifier{2, 5, 29, 30}
	oidPolicyMappings    = asn1.ObjectIdentifier{2, 5, 29, 33}
	oidPolicyConstraints = asn1.ObjectIdentifier{2, 5, 29, 36}
	oidInhibitAnyPolicy  = asn1.ObjectIdentifier{2, 5, 29, 54}
)

// verifyIntermediate returns the validity windows of the usable chains from
// c to a root, or an error wrapping nothing (the caller wraps
// ErrInvalidTrust) when there is none.
func verifyIntermediate(c *x509.Certificate, roots, intermediates *x509.CertPool, starts []time.Time) ([]Validity, error) {
	var windows []Validity
	var firstErr error // the first reason a chain or a time failed
	seen := make(map[string]bool)
	times := []time.Time{c.NotBefore}
	for _, at := range starts {
		if at.After(c.NotBefore) && !at.After(c.NotAfter) {
			times = append(times, at)
		}
	}
	for _, at := range times {
		chains, err := c.Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: intermediates,
			CurrentTime:   at,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("at %s: %v", at.UTC().Format(time.RFC3339), err)
			}
			continue
		}
		for _, chain := range chains {
			var key strings.Builder
			for _, cc := range chain {
				key.Write(cc.Raw)
			}
			if seen[key.String()] {
				continue
			}
			seen[key.String()] = true
			if err := usableChain(chain); err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			w := validityOf(chain[0])
			for _, cc := range chain[1:] {
				w, _ = w.intersect(validityOf(cc)) // not empty: all are valid at at
			}
			if !slices.Contains(windows, w) {
				windows = append(windows, w)
			}
		}
	}
	if len(windows) == 0 {
		return nil, fmt.Errorf("intermediate %q does not chain to a root at any time in its validity (%s): %v", c.Subject, validityOf(c), firstErr)
	}
	return windows, nil
}

// usableChain checks that a certificate issued by chain[0] can chain through
// chain with the same result as a check anchored at chain[0] (see Trust).
func usableChain(chain []*x509.Certificate) error {
	for j, c := range chain {
		// A certificate issued by chain[0] puts j intermediates below c.
		if j > 0 && c.BasicConstraintsValid && c.MaxPathLen >= 0 && j > c.MaxPathLen {
			return fmt.Errorf("the path length constraint of %q forbids %q to issue certificates", c.Subject, chain[0].Subject)
		}
		if j > 0 && hasExtension(c, oidNameConstraints) {
			return fmt.Errorf("%q above %q has name constraints, which are not supported", c.Subject, chain[0].Subject)
		}
		if j < len(chain)-1 && (hasExtension(c, oidPolicyConstraints) || hasExtension(c, oidPolicyMappings) || hasExtension(c, oidInhibitAnyPolicy)) {
			return fmt.Errorf("%q has policy constraints, policy mappings or inhibitAnyPolicy, which are not supported", c.Subject)
		}
	}
	return nil
}

func hasExtension(c *x509.Certificate, id asn1.ObjectIdentifier) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(id) {
			return true
		}
	}
	return false
}

// Err reports the intermediates NewTrust could not verify: nil when every
// intermediate has a usable chain to a root, otherwise an error wrapping
// ErrInvalidTrust that names each of them and why.
func (t *Trust) Err() error {
	if t == nil {
		return nil
	}
	return t.err
}

// ParseTrustPEM parses a PEM bundle of CERTIFICATE blocks into a Trust. Every
// certificate must be a CA (basicConstraints CA:TRUE); the self-signed ones
// are roots, the others intermediates, and every intermediate must have a
// usable chain to a root (see Trust and Err). It rejects an empty bundle, a
// bundle without a root, duplicate certificates, other PEM block types and
// any text between or around the blocks other than white space. The error
// wraps ErrInvalidTrust.
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
		before := rest
		var block *pem.Block
		block, rest = pem.Decode(rest)
		// pem.Decode skips a malformed block to the next "-----BEGIN", so
		// what it consumed must hold exactly one.
		if block == nil || bytes.Count(before[:len(before)-len(rest)], []byte("-----BEGIN")) != 1 {
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
	t := NewTrust(roots, intermediates)
	if err := t.Err(); err != nil {
		return nil, err
	}
	return t, nil
}

func isSelfSigned(cert *x509.Certificate) bool {
	return bytes.Equal(cert.RawSubject, cert.RawIssuer) && cert.CheckSignatureFrom(cert) == nil
}

// Roots returns the root certificates.
func (t *Trust) Roots() []*x509.Certificate {
	return append([]*x509.Certificate(nil), t.roots...)
}

// Intermediates returns the intermediate certificates, including any that
// Err reports.
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
// answer): it parses der, verifies it was issued by a verified issuer valid
// at at whose chain to a root is valid at at (one signature check; see
// Trust), checks the device profile (ECDSA P-256 key, OIDDeviceCertPolicy,
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
// parses der, verifies it chains to a root at at like
// VerifyDeviceCertificate (one signature check), and checks the station
// profile (ECDSA P-256 key, OIDStationCertPolicy, critical keyUsage
// digitalSignature, critical CA:FALSE). Errors wrap ErrUntrustedCertificate
// or ErrCertificateProfile. To check many entries of one station, use
// VerifyStation once and CheckEscrowEntryWithStation.
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

// VerifiedStation is a station certificate verified once by
// Trust.VerifyStation, with every window of time in which it chains to a
// root of that Trust: the certificate's validity intersected with its
// issuer's chain windows. CheckEscrowEntryWithStation uses it to admit the
// station's entries without verifying the certificate again: an entry
// provisioned at t needs only t within a window. A VerifiedStation is
// immutable and safe for concurrent use; cache it by station ID for as long
// as the Trust it was verified with is in use.
type VerifiedStation struct {
	trust    *Trust
	cert     *x509.Certificate
	id       [32]byte
	key      *ecdsa.PublicKey
	validity []Validity
}

// VerifyStation checks the station certificate der exactly as
// VerifyStationCertificate does at time at (typically the registered_at of
// the station's registration), and then finds every window of time in which
// the certificate chains to a root of t (one more signature check per other
// candidate issuer or window start, usually none). It returns the
// VerifiedStation for CheckEscrowEntryWithStation.
func (t *Trust) VerifyStation(der []byte, at time.Time) (*VerifiedStation, error) {
	cert, err := t.VerifyStationCertificate(der, at)
	if err != nil {
		return nil, err
	}
	s := &VerifiedStation{trust: t, cert: cert, id: StationID(cert.Raw), key: cert.PublicKey.(*ecdsa.PublicKey)}
	// Every window starts at the certificate's notBefore or at the start of
	// an issuer's chain window, so checking the chain at each of those that
	// lies within the certificate's validity finds them all.
	own := validityOf(cert)
	starts := []time.Time{cert.NotBefore}
	for _, issuer := range t.issuers {
		if !bytes.Equal(issuer.RawSubject, cert.RawIssuer) {
			continue
		}
		for _, w := range t.windows[string(issuer.Raw)] {
			if own.Contains(w.NotBefore) {
				starts = append(starts, w.NotBefore)
			}
		}
	}
	slices.SortFunc(starts, time.Time.Compare)
	starts = slices.CompactFunc(starts, time.Time.Equal)
	for _, start := range starts {
		for _, w := range t.chainWindows(cert, start) {
			if w, ok := own.intersect(w); ok && !slices.Contains(s.validity, w) {
				s.validity = append(s.validity, w)
			}
		}
	}
	return s, nil
}

// Certificate returns the station certificate.
func (s *VerifiedStation) Certificate() *x509.Certificate { return s.cert }

// ID returns the station ID, the SHA-256 of the certificate's DER.
func (s *VerifiedStation) ID() [32]byte { return s.id }

// PublicKey returns the station's ECDSA P-256 key.
func (s *VerifiedStation) PublicKey() *ecdsa.PublicKey { return s.key }

// Trust returns the Trust the station was verified with.
func (s *VerifiedStation) Trust() *Trust { return s.trust }

// Validity returns the windows of time in which the certificate chains to a
// root, in increasing order of NotBefore.
func (s *VerifiedStation) Validity() []Validity {
	v := slices.Clone(s.validity)
	slices.SortFunc(v, func(a, b Validity) int { return a.NotBefore.Compare(b.NotBefore) })
	return v
}

// ValidAt reports whether the certificate chains to a root at t, as
// VerifyStationCertificate(der, t) would, without checking a signature.
func (s *VerifiedStation) ValidAt(t time.Time) bool {
	if s == nil {
		return false
	}
	for _, w := range s.validity {
		if w.Contains(t) {
			return true
		}
	}
	return false
}

// verify parses der and verifies its chain at time at.
func (t *Trust) verify(what string, der []byte, at time.Time) (*x509.Certificate, error) {
	if t == nil || t.issuerPool == nil {
		// A nil Roots pool would make x509 fall back to the system roots.
		return nil, fmt.Errorf("%w: %s certificate: no trust anchors configured", ErrUntrustedCertificate, what)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %s certificate: %v", ErrCertificateProfile, what, err)
	}
	chains, err := t.verifyAnchored(cert, at)
	if err != nil {
		return nil, fmt.Errorf("%w: %s certificate %q at %s: %v", ErrUntrustedCertificate, what, cert.Subject, at.UTC().Format(time.RFC3339), err)
	}
	var issuers []string
	for _, chain := range chains {
		issuer := chain[len(chain)-1]
		for _, w := range t.windows[string(issuer.Raw)] {
			if w.Contains(at) {
				return cert, nil
			}
		}
		issuers = append(issuers, fmt.Sprintf("%q chains to a root only %s", issuer.Subject, validityList(t.windows[string(issuer.Raw)])))
	}
	return nil, fmt.Errorf("%w: %s certificate %q at %s: issuer %s", ErrUntrustedCertificate, what, cert.Subject, at.UTC().Format(time.RFC3339), strings.Join(issuers, "; issuer "))
}

// verifyAnchored runs x509 verification of cert at time at with the verified
// issuers as its only anchors and no intermediates: one signature check per
// verified issuer with cert's issuer name, normally one.
func (t *Trust) verifyAnchored(cert *x509.Certificate, at time.Time) ([][]*x509.Certificate, error) {
	return cert.Verify(x509.VerifyOptions{
		Roots:       t.issuerPool,
		CurrentTime: at,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
}

// chainWindows returns the chain windows of the issuers that cert verifies
// against at time at and that contain at.
func (t *Trust) chainWindows(cert *x509.Certificate, at time.Time) []Validity {
	chains, err := t.verifyAnchored(cert, at)
	if err != nil {
		return nil
	}
	var windows []Validity
	for _, chain := range chains {
		for _, w := range t.windows[string(chain[len(chain)-1].Raw)] {
			if w.Contains(at) {
				windows = append(windows, w)
			}
		}
	}
	return windows
}

func validityList(vs []Validity) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = "from " + v.String()
	}
	if len(s) == 0 {
		return "never"
	}
	return strings.Join(s, " or ")
}
