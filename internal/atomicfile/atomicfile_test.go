package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCreateNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key.pem")
	if err := Create(path, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Create(path, []byte("second"), 0o600)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create: %v, want fs.ErrExist", err)
	}
	checkFile(t, path, "first", 0o600)
	checkNoTemporaries(t, dir, 1)
}

func TestReplace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for _, content := range []string{"one", "two"} {
		if err := Replace(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		checkFile(t, path, content, 0o644)
	}
	checkNoTemporaries(t, dir, 1)
}

func TestWriteIntoAMissingDirectoryFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "f")
	if err := Create(path, []byte("x"), 0o600); err == nil {
		t.Fatal("Create in a missing directory succeeded")
	}
	if err := Replace(path, []byte("x"), 0o600); err == nil {
		t.Fatal("Replace in a missing directory succeeded")
	}
	// The error names the missing directory, not a temporary file the
	// caller never heard of.
	err := Create(path, []byte("x"), 0o600)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), filepath.Dir(path)+" does not exist") || strings.Contains(err.Error(), ".tmp-") {
		t.Fatalf("Create in a missing directory: %v", err)
	}
}

func checkFile(t *testing.T, path, want string, perm fs.FileMode) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s holds %q, want %q", path, got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != perm {
		t.Fatalf("%s has mode %v, want %v", path, fi.Mode().Perm(), perm)
	}
}

// checkNoTemporaries fails if dir holds other than n files.
func checkNoTemporaries(t *testing.T, dir string, n int) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("%s holds %v, want %d file(s)", dir, names, n)
	}
}
