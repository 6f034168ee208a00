package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/chipledger/chipledger/provisioner"
)

// keyToolEnvVars are the environment variables of the master-key and pool
// commands.
var keyToolEnvVars = []string{
	"CHIPLEDGER_MASTER_KEYS", "CHIPLEDGER_MASTER_KEY_DIR", "CHIPLEDGER_POOL", "CHIPLEDGER_POOL_KEY", "CHIPLEDGER_COUNT",
	"CHIPLEDGER_JSON", "CHIPLEDGER_LOG_LEVEL",
}

// clearKeyToolEnv unsets keyToolEnvVars for the test.
func clearKeyToolEnv(t *testing.T) {
	for _, name := range keyToolEnvVars {
		t.Setenv(name, "") // restores the old value after the test
		os.Unsetenv(name)
	}
}

func TestMasterKeyNewPrintsEachNewVersion(t *testing.T) {
	clearKeyToolEnv(t)
	dir := filepath.Join(t.TempDir(), "master-keys")
	for _, want := range []string{"1", "2"} {
		r := runCLI(t, "master-key", "new", "--dir", dir)
		if r.err != nil {
			t.Fatal(r.err)
		}
		if got := strings.TrimSpace(r.stdout); got != want {
			t.Errorf("stdout %q, want the version %s", got, want)
		}
		if path := filepath.Join(dir, "master-"+want+".key"); !strings.Contains(r.stderr, path) {
			t.Errorf("stderr does not name %s: %q", path, r.stderr)
		}
	}
	// The variable of provision --master-keys, and the old name.
	t.Setenv("CHIPLEDGER_MASTER_KEYS", dir)
	r := runCLI(t, "master-key", "new")
	if r.err != nil || strings.TrimSpace(r.stdout) != "3" {
		t.Fatalf("master-key new with the directory from $CHIPLEDGER_MASTER_KEYS: %q, %v; want 3", r.stdout, r.err)
	}
	os.Unsetenv("CHIPLEDGER_MASTER_KEYS")
	t.Setenv("CHIPLEDGER_MASTER_KEY_DIR", dir)
	r = runCLI(t, "master-key", "new")
	if r.err != nil || strings.TrimSpace(r.stdout) != "4" {
		t.Fatalf("master-key new with the directory from $CHIPLEDGER_MASTER_KEY_DIR: %q, %v; want 4", r.stdout, r.err)
	}
	mk, err := provisioner.LoadMasterKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := mk.Versions(); !slices.Equal(got, []uint32{1, 2, 3, 4}) {
		t.Errorf("versions %v, want [1 2 3 4]", got)
	}
}

func TestMasterKeyNewRefusesAnExposedDirectory(t *testing.T) {
	skipOnWindows(t)
	clearKeyToolEnv(t)
	dir := t.TempDir()
	if r := runCLI(t, "master-key", "new", "--dir", dir); r.err != nil {
		t.Fatal(r.err)
	}
	if err := os.Chmod(filepath.Join(dir, "master-1.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, "master-key", "new", "--dir", dir)
	if r.err == nil || !strings.Contains(r.err.Error(), "chmod 600") {
		t.Errorf("master-key new next to a 0644 key: %v, want a refusal saying how to fix it", r.err)
	}
}

func skipOnWindows(t *testing.T) {
	if filepath.Separator == '\\' {
		t.Skip("file modes are not enforced on Windows")
	}
}
