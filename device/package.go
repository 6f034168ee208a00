package device

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"fmt"

	"golang.org/x/crypto/cryptobyte"

	"github.com/chipledger/chipledger/ledger"
)

// PackageVersion is the version byte that starts every data package.
const PackageVersion = 1

// KeyOrigin says where the device key pair of a package came from.
type KeyOrigin uint8

// The key origins. Any other value is malformed.
const (
	// KeyGenerated is a key pair the station generated for this device.
	KeyGenerated KeyOrigin = 1
	// KeyFromPool is a key pair taken from the pre-generated key pool.
	KeyFromPool KeyOrigin = 2
)

// String returns "generated" or "pool", or KeyOrigin(n) for an unknown
// value.
func (o KeyOrigin) String() string {
	switch o {
	case KeyGenerated:
		return "generated"
	case KeyFromPool:
		return "pool"
	default:
		return fmt.Sprintf("KeyOrigin(%d)", uint8(o))
	}
}

// A Package is the data package a station stores in a device (DESIGN.md
// §3.4): the device's keys, bound to its identities and epoch. It is secret:
// it leaves the station and the device only sealed into a backup. Its binary
// form is
//
//	uint8 version = 1
//	identities                            (u8 byte length, 1 to 4 identities)
//	uint32 epoch                          (1, 2, ...)
//	uint32 master_key_version
//	opaque channel_key[32]
//	opaque device_private_key<1..2^16-1>  (PKCS#8 DER, ECDSA P-256)
//	uint8 key_origin                      (1 generated, 2 pool)
//
// and each Package has exactly one: DeviceKey must be the PKCS#8 DER that
// x509.MarshalPKCS8PrivateKey writes for the key (NewPackage makes it so).
type Package struct {
	Identities       ledger.Identities
	Epoch            uint32
	MasterKeyVersion uint32
	ChannelKey       [32]byte
	DeviceKey        []byte
	KeyOrigin        KeyOrigin
}

// NewPackage returns the package holding key, which must be an ECDSA P-256
// private key, with the other fields as given, after checking them as
// MarshalBinary does.
func NewPackage(ids ledger.Identities, epoch, masterKeyVersion uint32, channelKey [32]byte, key *ecdsa.PrivateKey, origin KeyOrigin) (*Package, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("data package: device key must be ECDSA P-256")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("data package: device key: %w", err)
	}
	p := &Package{
		Identities:       ids,
		Epoch:            epoch,
		MasterKeyVersion: masterKeyVersion,
		ChannelKey:       channelKey,
		DeviceKey:        der,
		KeyOrigin:        origin,
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// Validate reports whether every field of p is valid: 1 to 4 valid
// identities, an epoch of at least 1, a known key origin, and a device key
// in the canonical PKCS#8 DER of an ECDSA P-256 private key. The error wraps
// ErrMalformed (and ledger.ErrInvalidIdentity for a bad identity).
func (p *Package) Validate() error {
	if err := p.Identities.Validate(); err != nil {
		return fmt.Errorf("data package: %w: %w", ErrMalformed, err)
	}
	if p.Epoch == 0 {
		return fmt.Errorf("data package: %w: epoch 0, epochs start at 1", ErrMalformed)
	}
	if p.KeyOrigin != KeyGenerated && p.KeyOrigin != KeyFromPool {
		return fmt.Errorf("data package: %w: unknown key origin %d", ErrMalformed, uint8(p.KeyOrigin))
	}
	if _, err := parseDeviceKey(p.DeviceKey); err != nil {
		return fmt.Errorf("data package: %w", err)
	}
	return nil
}

// MarshalBinary returns the binary form of p after checking Validate.
func (p *Package) MarshalBinary() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddUint8(PackageVersion)
	if err := addIdentities(&b, p.Identities); err != nil {
		return nil, err
	}
	b.AddUint32(p.Epoch)
	b.AddUint32(p.MasterKeyVersion)
	b.AddBytes(p.ChannelKey[:])
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(p.DeviceKey) })
	b.AddUint8(uint8(p.KeyOrigin))
	return b.Bytes()
}

// ParsePackage parses the binary form of a data package, which must be all
// of b and its one valid encoding: a truncated field, trailing bytes, an
// unknown version or key origin, invalid identities, epoch 0 or a device key
// that is not the canonical PKCS#8 DER of an ECDSA P-256 key are errors
// wrapping ErrMalformed. The package does not alias b.
func ParsePackage(b []byte) (*Package, error) {
	s := cryptobyte.String(b)
	var version uint8
	if !s.ReadUint8(&version) {
		return nil, fmt.Errorf("data package: %w: empty", ErrMalformed)
	}
	if version != PackageVersion {
		return nil, fmt.Errorf("data package: %w: unknown version %d, want %d", ErrMalformed, version, PackageVersion)
	}
	p := new(Package)
	var err error
	if p.Identities, err = readIdentities(&s); err != nil {
		return nil, fmt.Errorf("data package: %w", err)
	}
	var key cryptobyte.String
	var origin uint8
	if !s.ReadUint32(&p.Epoch) || !s.ReadUint32(&p.MasterKeyVersion) || !s.CopyBytes(p.ChannelKey[:]) ||
		!s.ReadUint16LengthPrefixed(&key) || !s.ReadUint8(&origin) {
		return nil, fmt.Errorf("data package: %w: truncated", ErrMalformed)
	}
	if !s.Empty() {
		return nil, fmt.Errorf("data package: %w: %d trailing bytes", ErrMalformed, len(s))
	}
	p.DeviceKey = bytes.Clone(key)
	p.KeyOrigin = KeyOrigin(origin)
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// PrivateKey returns the device key pair of p. The error wraps ErrMalformed.
func (p *Package) PrivateKey() (*ecdsa.PrivateKey, error) {
	return parseDeviceKey(p.DeviceKey)
}

// parseDeviceKey parses the canonical PKCS#8 DER of an ECDSA P-256 private
// key: what x509.MarshalPKCS8PrivateKey writes, so that a package has one
// encoding. The error wraps ErrMalformed.
func parseDeviceKey(der []byte) (*ecdsa.PrivateKey, error) {
	if len(der) == 0 {
		return nil, fmt.Errorf("%w: empty device private key", ErrMalformed)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: device private key: %v", ErrMalformed, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: device private key is %T, want ECDSA P-256", ErrMalformed, k)
	}
	canonical, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil || !bytes.Equal(canonical, der) {
		return nil, fmt.Errorf("%w: device private key is not in canonical PKCS#8 form", ErrMalformed)
	}
	return key, nil
}
