package device

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
)

func TestPackageGoldenVector(t *testing.T) {
	p := goldenPackage(t)
	raw, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "package-v1.hex", raw)
	back, err := ParsePackage(raw)
	if err != nil {
		t.Fatal(err)
	}
	again, err := back.MarshalBinary()
	if err != nil || !bytes.Equal(again, raw) {
		t.Errorf("ParsePackage then MarshalBinary: %x, %v; want %x", again, err, raw)
	}
	if !back.Identities.Equal(p.Identities) || back.Epoch != goldenEpoch || back.MasterKeyVersion != goldenMKV ||
		back.ChannelKey != p.ChannelKey || back.KeyOrigin != KeyFromPool {
		t.Errorf("parsed %+v, want %+v", back, p)
	}
	key, err := back.PrivateKey()
	if err != nil || key.D.Text(16) != goldenDeviceKey {
		t.Errorf("PrivateKey = %v, %v; want the golden key", key, err)
	}
}

// TestPackageLayout checks the fixed fields at their DESIGN.md §3.4 offsets.
func TestPackageLayout(t *testing.T) {
	raw, err := goldenPackage(t).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := testIdentities(t).MarshalBinary()
	off := 1 + len(ids)
	switch {
	case raw[0] != 1:
		t.Errorf("version byte %d, want 1", raw[0])
	case !bytes.Equal(raw[1:off], ids):
		t.Errorf("identities %x, want %x", raw[1:off], ids)
	case !bytes.Equal(raw[off:off+8], []byte{0, 0, 0, 3, 0, 0, 0, 7}):
		t.Errorf("epoch and master key version %x, want 00000003 00000007", raw[off:off+8])
	case !bytes.Equal(raw[off+8:off+40], seq(0xc0, 32)):
		t.Errorf("channel key %x", raw[off+8:off+40])
	case int(raw[off+40])<<8|int(raw[off+41]) != len(raw)-off-43:
		t.Errorf("device key length %x does not cover the rest but the origin", raw[off+40:off+42])
	case raw[len(raw)-1] != 2:
		t.Errorf("key origin %d, want 2 (pool)", raw[len(raw)-1])
	}
}

func TestParsePackageRejectsMalformed(t *testing.T) {
	raw, err := goldenPackage(t).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := testIdentities(t).MarshalBinary()
	epochAt := 1 + len(ids)
	keyLenAt := epochAt + 8 + 32
	with := func(i int, v byte) []byte {
		b := bytes.Clone(raw)
		b[i] = v
		return b
	}
	withKey := func(der []byte) []byte {
		b := bytes.Clone(raw[:keyLenAt])
		b = append(b, byte(len(der)>>8), byte(len(der)))
		b = append(b, der...)
		return append(b, byte(KeyGenerated))
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.MarshalPKCS8PrivateKey(p384)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKCS8PrivateKey(edKey)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(p256)

	cases := map[string][]byte{
		"empty":                  nil,
		"version 0":              with(0, 0),
		"version 2":              with(0, 2),
		"identities too long":    with(1, byte(len(ids))),
		"invalid identity":       with(3, 9),
		"epoch 0":                append(append(bytes.Clone(raw[:epochAt]), 0, 0, 0, 0), raw[epochAt+4:]...),
		"key origin 0":           with(len(raw)-1, 0),
		"key origin 3":           with(len(raw)-1, 3),
		"trailing byte":          append(bytes.Clone(raw), 0),
		"empty device key":       withKey(nil),
		"garbage device key":     withKey([]byte("not a key")),
		"P-384 device key":       withKey(p384DER),
		"Ed25519 device key":     withKey(edDER),
		"SEC 1 instead of PKCS8": withKey(sec1),
	}
	for i := 0; i < len(raw); i++ {
		cases[fmt.Sprintf("truncated to %d bytes", i)] = raw[:i]
	}
	for name, b := range cases {
		if _, err := ParsePackage(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func TestNewPackageRejectsInvalidFields(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ids := testIdentities(t)
	if _, err := NewPackage(ids, 0, 1, [32]byte{}, key, KeyGenerated); !errors.Is(err, ErrMalformed) {
		t.Errorf("epoch 0: %v", err)
	}
	if _, err := NewPackage(nil, 1, 1, [32]byte{}, key, KeyGenerated); !errors.Is(err, ErrMalformed) {
		t.Errorf("no identities: %v", err)
	}
	if _, err := NewPackage(ids, 1, 1, [32]byte{}, key, 0); !errors.Is(err, ErrMalformed) {
		t.Errorf("origin 0: %v", err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := NewPackage(ids, 1, 1, [32]byte{}, p384, KeyGenerated); err == nil {
		t.Error("P-384 key accepted")
	}
	if _, err := NewPackage(ids, 1, 1, [32]byte{}, nil, KeyGenerated); err == nil {
		t.Error("nil key accepted")
	}
}
