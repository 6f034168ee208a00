package provisioner

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/chipledger/chipledger/ledger"
)

const testManufacturer = "Example Devices Ltd"

func initTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := InitCA(filepath.Join(t.TempDir(), "ca"), testManufacturer)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := make(map[string][]byte)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = data
	}
	return files
}

func TestInitCAThenLoadCAGivesTheSameCA(t *testing.T) {
	created := initTestCA(t)
	loaded, err := LoadCA(created.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Manufacturer() != testManufacturer {
		t.Errorf("manufacturer %q, want %q", loaded.Manufacturer(), testManufacturer)
	}
	if !bytes.Equal(loaded.Root().Raw, created.Root().Raw) || !bytes.Equal(loaded.DeviceCA().Raw, created.DeviceCA().Raw) {
		t.Error("loaded certificates differ from the created ones")
	}
	if !loaded.RootKey().Equal(created.RootKey()) || !loaded.DeviceCAKey().Equal(created.DeviceCAKey()) {
		t.Error("loaded keys differ from the created ones")
	}
	if !bytes.Equal(loaded.Trust().PEM(), created.Trust().PEM()) {
		t.Error("loaded trust bundle differs from the created one")
	}
	onDisk, err := os.ReadFile(created.TrustPath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, created.Trust().PEM()) {
		t.Errorf("%s differs from Trust().PEM()", TrustFile)
	}
	parsed, err := ledger.ParseTrustPEM(onDisk)
	if err != nil {
		t.Fatalf("%s does not parse as a trust bundle: %v", TrustFile, err)
	}
	if len(parsed.Roots()) != 1 || len(parsed.Intermediates()) != 1 {
		t.Errorf("%s holds %d roots and %d intermediates, want 1 and 1", TrustFile, len(parsed.Roots()), len(parsed.Intermediates()))
	}
}

func TestInitCAMakesARootAndADeviceCAWithPathLengthZero(t *testing.T) {
	ca := initTestCA(t)
	root, dev := ca.Root(), ca.DeviceCA()
	if !root.IsCA || !bytes.Equal(root.RawIssuer, root.RawSubject) || root.CheckSignatureFrom(root) != nil {
		t.Error("root is not a self-signed CA")
	}
	if !dev.IsCA || dev.MaxPathLen != 0 || !dev.MaxPathLenZero {
		t.Errorf("device CA: IsCA %v, MaxPathLen %d, MaxPathLenZero %v; want a CA with path length 0", dev.IsCA, dev.MaxPathLen, dev.MaxPathLenZero)
	}
	if err := dev.CheckSignatureFrom(root); err != nil {
		t.Errorf("device CA not issued by the root: %v", err)
	}
	for _, c := range []struct {
		name string
		org  []string
		pub  any
	}{{"root", root.Subject.Organization, root.PublicKey}, {"device CA", dev.Subject.Organization, dev.PublicKey}} {
		if len(c.org) != 1 || c.org[0] != testManufacturer {
			t.Errorf("%s: organization %q, want %q", c.name, c.org, testManufacturer)
		}
		if k, ok := c.pub.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
			t.Errorf("%s: key is not ECDSA P-256", c.name)
		}
	}
	if root.NotAfter.Year() != 9999 || dev.NotAfter.Year() != 9999 {
		t.Errorf("CA notAfter %s and %s, want 9999-12-31", root.NotAfter, dev.NotAfter)
	}
	if time.Since(root.NotBefore) < 0 || time.Since(dev.NotBefore) < 0 {
		t.Error("CA certificates are not valid yet")
	}
}

func TestInitCARefusesToOverwriteAnExistingCA(t *testing.T) {
	ca := initTestCA(t)
	before := readDir(t, ca.Dir())
	_, err := InitCA(ca.Dir(), "Another Manufacturer")
	if !errors.Is(err, ErrCAExists) {
		t.Fatalf("second InitCA: %v, want ErrCAExists", err)
	}
	after := readDir(t, ca.Dir())
	if len(after) != len(before) {
		t.Fatalf("directory had %d files, now %d", len(before), len(after))
	}
	for name, data := range before {
		if !bytes.Equal(after[name], data) {
			t.Errorf("%s changed", name)
		}
	}
}

func TestInitCARefusesADirectoryWithAnyCAFile(t *testing.T) {
	for _, name := range caFiles {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := InitCA(dir, testManufacturer); !errors.Is(err, ErrCAExists) {
				t.Fatalf("InitCA: %v, want ErrCAExists", err)
			}
			if files := readDir(t, dir); len(files) != 1 {
				t.Errorf("InitCA left %d files, want only %s", len(files), name)
			}
		})
	}
}

func TestInitCAWritesKeysReadableOnlyByTheOwner(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes are not enforced on Windows")
	}
	ca := initTestCA(t)
	want := map[string]os.FileMode{
		RootKeyFile: 0o600, DeviceCAKeyFile: 0o600,
		RootCertFile: 0o644, DeviceCACertFile: 0o644, TrustFile: 0o644,
	}
	entries, err := os.ReadDir(ca.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Errorf("directory holds %d files, want %d (no temporary files left)", len(entries), len(want))
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if mode, ok := want[e.Name()]; !ok {
			t.Errorf("unexpected file %s", e.Name())
		} else if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %04o, want %04o", e.Name(), fi.Mode().Perm(), mode)
		}
	}
}

func TestInitCARejectsAnInvalidManufacturer(t *testing.T) {
	for _, m := range []string{"", string(bytes.Repeat([]byte("m"), 65)), "\xff"} {
		if _, err := InitCA(t.TempDir(), m); err == nil {
			t.Errorf("InitCA(%q) succeeded", m)
		}
	}
}

func TestLoadCAOfAnEmptyDirectoryIsErrNoCA(t *testing.T) {
	for _, dir := range []string{t.TempDir(), filepath.Join(t.TempDir(), "missing")} {
		if _, err := LoadCA(dir); !errors.Is(err, ErrNoCA) {
			t.Errorf("LoadCA(%s): %v, want ErrNoCA", dir, err)
		}
	}
}

func TestLoadCAReportsAnIncompleteCA(t *testing.T) {
	ca := initTestCA(t)
	if err := os.Remove(ca.TrustPath()); err != nil {
		t.Fatal(err)
	}
	_, err := LoadCA(ca.Dir())
	if err == nil || errors.Is(err, ErrNoCA) {
		t.Fatalf("LoadCA without %s: %v, want an incomplete-CA error", TrustFile, err)
	}
}

func TestLoadCARefusesAKeyReadableByOthers(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes are not enforced on Windows")
	}
	ca := initTestCA(t)
	if err := os.Chmod(filepath.Join(ca.Dir(), RootKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(ca.Dir()); err == nil {
		t.Fatal("LoadCA accepted a root key readable by others")
	}
}

func TestLoadCARefusesAKeyOfAnotherCertificate(t *testing.T) {
	ca := initTestCA(t)
	root, dev := filepath.Join(ca.Dir(), RootKeyFile), filepath.Join(ca.Dir(), DeviceCAKeyFile)
	rootKey, err := os.ReadFile(root)
	if err != nil {
		t.Fatal(err)
	}
	devKey, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root, devKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dev, rootKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(ca.Dir()); err == nil {
		t.Fatal("LoadCA accepted swapped keys")
	}
}

func TestStationCertificateIssuedByTheCAVerifies(t *testing.T) {
	ca := initTestCA(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	der, err := ca.IssueStationCertificate("station-1", &key.PublicKey, now, now.AddDate(5, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	// Through the bundle on disk, as a node configured with it sees it.
	pemBytes, err := os.ReadFile(ca.TrustPath())
	if err != nil {
		t.Fatal(err)
	}
	trust, err := ledger.ParseTrustPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := trust.VerifyStationCertificate(der, now.Add(time.Minute))
	if err != nil {
		t.Fatalf("station certificate does not verify: %v", err)
	}
	if cert.Subject.CommonName != "station-1" || cert.Subject.Organization[0] != testManufacturer {
		t.Errorf("subject %s, want O=%s, CN=station-1", cert.Subject, testManufacturer)
	}
	if err := cert.CheckSignatureFrom(ca.Root()); err != nil {
		t.Errorf("station certificate not signed by the root: %v", err)
	}
	leaf, err := (&ledger.StationRegistration{Certificate: der, RegisteredAtMs: uint64(now.UnixMilli())}).MarshalLeaf()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := ledger.ParseStationRegistration(leaf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.CheckStationRegistration(reg, trust); err != nil {
		t.Errorf("station registration is not admitted: %v", err)
	}
}

func TestIssueStationCertificateRefusesAKeyThatIsNotP256(t *testing.T) {
	ca := initTestCA(t)
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := ca.IssueStationCertificate("station-1", &key.PublicKey, now, now.Add(time.Hour)); !errors.Is(err, ledger.ErrCertificateProfile) {
		t.Fatalf("P-384 station key: %v, want ErrCertificateProfile", err)
	}
}

func TestDeviceCertificateIssuedByTheCAVerifies(t *testing.T) {
	ca := initTestCA(t)
	chip := ledger.ChipID(bytes.Repeat([]byte{0xc1}, ledger.DefaultChipIDLen))
	imei, err := ledger.NewIMEI("35209900176148")
	if err != nil {
		t.Fatal(err)
	}
	ids := ledger.Identities{imei}
	at := time.Now().UTC().Truncate(time.Second)
	tmpl, err := ledger.DeviceCertificateTemplate(ca.Manufacturer(), chip, ids, at, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.IssueDeviceCertificate(tmpl, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(ca.Dir())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := loaded.Trust().VerifyDeviceCertificate(der, chip, ids, at)
	if err != nil {
		t.Fatalf("device certificate does not verify: %v", err)
	}
	if err := cert.CheckSignatureFrom(ca.DeviceCA()); err != nil {
		t.Errorf("device certificate not signed by the device CA: %v", err)
	}
	if _, err := loaded.Trust().VerifyDeviceCertificate(der, ledger.ChipID(bytes.Repeat([]byte{0xc2}, 16)), ids, at); err == nil {
		t.Error("device certificate verifies for another chip")
	}
}
