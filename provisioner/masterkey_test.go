package provisioner

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

func newMasterKeys(t *testing.T, dir string, n int) {
	t.Helper()
	for i := range n {
		v, err := NewMasterKey(dir)
		if err != nil {
			t.Fatal(err)
		}
		if v != uint32(i+1) {
			t.Fatalf("NewMasterKey #%d gave version %d, want %d", i+1, v, i+1)
		}
	}
}

func skipOnWindows(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes are not enforced on Windows")
	}
}

func TestNewMasterKeyNumbersVersionsFromOne(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "master")
	newMasterKeys(t, dir, 3)

	mk, err := LoadMasterKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := mk.Versions(); !slices.Equal(got, []uint32{1, 2, 3}) {
		t.Errorf("versions %v, want [1 2 3]", got)
	}
	v, cur := mk.Current()
	if v != 3 {
		t.Errorf("current version %d, want 3", v)
	}
	keys := map[string]uint32{}
	for _, v := range mk.Versions() {
		k, err := mk.Key(v)
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != KeyFileLen {
			t.Errorf("version %d: %d-byte key", v, len(k))
		}
		if other, dup := keys[string(k)]; dup {
			t.Errorf("versions %d and %d have the same key", other, v)
		}
		keys[string(k)] = v
	}
	if k3, _ := mk.Key(3); !bytes.Equal(cur, k3) {
		t.Error("Current's key is not Key(3)")
	}
}

func TestMasterKeyFileIsHexWithMode0600(t *testing.T) {
	dir := t.TempDir()
	newMasterKeys(t, dir, 1)
	path := filepath.Join(dir, "master-1.key")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 65 || data[64] != '\n' {
		t.Fatalf("master-1.key holds %d bytes, want 64 hex digits and a newline", len(data))
	}
	raw, err := hex.DecodeString(string(data[:64]))
	if err != nil {
		t.Fatal(err)
	}
	mk, err := LoadMasterKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := mk.Key(1); !bytes.Equal(k, raw) {
		t.Error("loaded key differs from the file's hex")
	}
	if runtime.GOOS != "windows" {
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
		}
	}
}

func TestMasterKeyUnknownVersionIsAnError(t *testing.T) {
	dir := t.TempDir()
	newMasterKeys(t, dir, 2)
	mk, err := LoadMasterKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint32{0, 3} {
		if _, err := mk.Key(v); !errors.Is(err, ErrUnknownMasterKeyVersion) {
			t.Errorf("Key(%d): %v, want ErrUnknownMasterKeyVersion", v, err)
		}
	}
}

func TestMasterKeyReturnsACopy(t *testing.T) {
	dir := t.TempDir()
	newMasterKeys(t, dir, 1)
	mk, err := LoadMasterKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := mk.Key(1)
	want := bytes.Clone(k)
	clear(k)
	_, cur := mk.Current()
	clear(cur)
	if again, _ := mk.Key(1); !bytes.Equal(again, want) {
		t.Error("changing a returned key changed the MasterKeys")
	}
}

func TestLoadMasterKeysOfAnEmptyOrMissingDirectory(t *testing.T) {
	for _, dir := range []string{t.TempDir(), filepath.Join(t.TempDir(), "missing")} {
		if _, err := LoadMasterKeys(dir); !errors.Is(err, ErrNoMasterKey) || !strings.Contains(err.Error(), "master-key new") {
			t.Errorf("LoadMasterKeys(%s): %v, want ErrNoMasterKey telling how to make one", dir, err)
		}
	}
}

func TestMasterKeyFilesAccessibleByOthersAreRefused(t *testing.T) {
	skipOnWindows(t)
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660} {
		t.Run(fmt.Sprintf("%04o", mode), func(t *testing.T) {
			dir := t.TempDir()
			newMasterKeys(t, dir, 2)
			path := filepath.Join(dir, "master-1.key")
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			_, err := LoadMasterKeys(dir)
			if !errors.Is(err, ErrInsecureKeyFile) || !strings.Contains(err.Error(), path) {
				t.Errorf("LoadMasterKeys: %v, want ErrInsecureKeyFile naming %s", err, path)
			}
			if _, err := NewMasterKey(dir); !errors.Is(err, ErrInsecureKeyFile) {
				t.Errorf("NewMasterKey: %v, want ErrInsecureKeyFile", err)
			}
			if _, err := os.Stat(filepath.Join(dir, "master-3.key")); err == nil {
				t.Error("NewMasterKey added a version to a directory with an exposed key")
			}
		})
	}
}

func TestNewMasterKeyNeverOverwritesAVersion(t *testing.T) {
	dir := t.TempDir()
	newMasterKeys(t, dir, 1)
	path := filepath.Join(dir, "master-1.key")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeNewMasterKey(dir, 1); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("writing version 1 again: %v, want a refusal", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("master-1.key was overwritten")
	}
	if v, err := NewMasterKey(dir); err != nil || v != 2 {
		t.Fatalf("NewMasterKey = %d, %v; want 2", v, err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("master-1.key changed when version 2 was made")
	}
}

func TestConcurrentNewMasterKeyGivesEachCallerItsOwnVersion(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	versions := make([]uint32, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { versions[i], errs[i] = NewMasterKey(dir) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	slices.Sort(versions)
	if want := []uint32{1, 2, 3, 4, 5, 6, 7, 8}; !slices.Equal(versions, want) {
		t.Fatalf("versions %v, want %v", versions, want)
	}
	mk, err := LoadMasterKeys(dir) // also checks that no two files hold one key
	if err != nil {
		t.Fatal(err)
	}
	if got := mk.Versions(); !slices.Equal(got, versions) {
		t.Errorf("directory holds %v, want %v", got, versions)
	}
}

func TestNewMasterKeyContinuesAfterTheHighestVersion(t *testing.T) {
	dir := t.TempDir()
	newMasterKeys(t, dir, 1)
	// Version 7, e.g. restored from a backup of another backend.
	if err := writeNewMasterKey(dir, 7); err != nil {
		t.Fatal(err)
	}
	if v, err := NewMasterKey(dir); err != nil || v != 8 {
		t.Fatalf("NewMasterKey = %d, %v; want 8", v, err)
	}
}

func TestLoadMasterKeysRefusesBadFiles(t *testing.T) {
	valid := strings.Repeat("ab", 32) + "\n"
	for _, tc := range []struct {
		name, file, data, want string
	}{
		{"leading zero", "master-01.key", valid, "not a master key file name"},
		{"version zero", "master-0.key", valid, "not a master key file name"},
		{"not decimal", "master-x.key", valid, "not a master key file name"},
		{"too large", "master-4294967296.key", valid, "not a master key file name"},
		{"short", "master-2.key", strings.Repeat("ab", 31) + "\n", "not a key file"},
		{"not hex", "master-2.key", strings.Repeat("zz", 32) + "\n", "not a key file"},
		{"raw bytes", "master-2.key", strings.Repeat("k", 32), "not a key file"},
		{"trailing junk", "master-2.key", valid + "x", "not a key file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			newMasterKeys(t, dir, 1)
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadMasterKeys(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.file) {
				t.Errorf("LoadMasterKeys: %v, want an error naming %s and saying %q", err, tc.file, tc.want)
			}
		})
	}
}

func TestLoadMasterKeysIgnoresOtherFiles(t *testing.T) {
	dir := t.TempDir()
	newMasterKeys(t, dir, 1)
	for _, name := range []string{"README", "master-1.key.bak", ".master-2.key.tmp-123", "pool.key"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk, err := LoadMasterKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := mk.Versions(); !slices.Equal(got, []uint32{1}) {
		t.Errorf("versions %v, want [1]", got)
	}
}

func TestLoadMasterKeysRefusesACopiedVersion(t *testing.T) {
	dir := t.TempDir()
	newMasterKeys(t, dir, 1)
	data, err := os.ReadFile(filepath.Join(dir, "master-1.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "master-2.key"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadMasterKeys(dir); err == nil || !strings.Contains(err.Error(), "same key") {
		t.Errorf("LoadMasterKeys: %v, want a refusal of the copied key", err)
	}
}

func TestMasterKeysNeverPrintTheirKeys(t *testing.T) {
	dir := t.TempDir()
	newMasterKeys(t, dir, 2)
	mk, err := LoadMasterKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%X", "%q"} {
		fmt.Fprintf(&out, verb+"\n", mk)
		fmt.Fprintf(&out, verb+"\n", *mk)
	}
	slog.New(slog.NewTextHandler(&out, nil)).Info("loaded", "keys", mk)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("loaded", "keys", mk)
	printed := out.String()
	if !strings.Contains(printed, dir) {
		t.Errorf("the output does not even name the directory:\n%s", printed)
	}
	for _, v := range mk.Versions() {
		k, _ := mk.Key(v)
		for _, form := range []string{
			hex.EncodeToString(k), strings.ToUpper(hex.EncodeToString(k)), string(k),
			strings.Trim(fmt.Sprint(k), "[]"), // decimal bytes, as %d or %v of a []byte prints them
		} {
			if strings.Contains(printed, form) {
				t.Fatalf("version %d's key is in the printed output (%q):\n%s", v, form, printed)
			}
		}
	}
}
