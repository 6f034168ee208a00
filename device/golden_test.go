package device

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chipledger/chipledger/ledger"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// The inputs of the golden vectors (see testdata/README.md).
const (
	goldenDeviceKey = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721" // RFC 6979 A.2.5
	goldenEpoch     = 3
	goldenMKV       = 7
)

// seq returns n bytes counting up from start.
func seq(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

// goldenPackage is the package of testdata/package-v1.hex.
func goldenPackage(t testing.TB) *Package {
	t.Helper()
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), unhex(t, goldenDeviceKey))
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPackage(testIdentities(t), goldenEpoch, goldenMKV, [32]byte(seq(0xc0, 32)), key, KeyFromPool)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// goldenHeader is the header of testdata/backup-v1.hex, sealed with chip key
// seq(0x00, 32).
func goldenHeader(t testing.TB) *BackupHeader {
	return &BackupHeader{
		ChipID:     ledger.ChipID(seq(0x10, 16)),
		Identities: testIdentities(t),
		Epoch:      goldenEpoch,
		Salt:       [SaltSize]byte(seq(0x20, SaltSize)),
		Nonce:      [NonceSize]byte(seq(0x40, NonceSize)),
	}
}

// checkGolden compares got with the hex in testdata/name, or rewrites the
// file with -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(hex.EncodeToString(got)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	want := unhex(t, strings.TrimSpace(string(data)))
	if !bytes.Equal(got, want) {
		t.Errorf("%s changed:\n got %x\nwant %x", name, got, want)
	}
}
