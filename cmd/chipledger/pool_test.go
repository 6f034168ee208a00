package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/provisioner"
)

func TestPoolFillCreatesThePoolAndItsKey(t *testing.T) {
	clearKeyToolEnv(t)
	pool := filepath.Join(t.TempDir(), "pool.db")
	r := runCLI(t, "pool", "fill", "--pool", pool, "--count", "1500")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if want := pool + ": 1500 available, 0 reserved, 0 consumed, 0 destroyed"; strings.TrimSpace(r.stdout) != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	if !strings.Contains(r.stderr, "1500 of 1500 keys added (100%)") {
		t.Errorf("stderr shows no final progress: %q", r.stderr)
	}
	if !strings.Contains(r.stderr, "Created the pool key "+pool+".key") {
		t.Errorf("stderr does not say the pool key was created: %q", r.stderr)
	}
	if fi, err := os.Stat(pool + ".key"); err != nil || (fi.Mode().Perm() != 0o600 && filepath.Separator == '/') {
		t.Fatalf("pool key: %v, want a file with mode 0600", err)
	}

	again := runCLI(t, "pool", "fill", "--pool", pool, "--count", "10")
	if again.err != nil {
		t.Fatal(again.err)
	}
	if strings.Contains(again.stderr, "Created the pool key") {
		t.Error("a second fill says it created the pool key")
	}
	p, err := provisioner.OpenPool(pool, provisioner.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if s, err := p.Status(); err != nil || s != (provisioner.PoolStatus{Available: 1510}) {
		t.Errorf("status %+v, %v; want 1510 available", s, err)
	}
}

func TestPoolFillTakesItsFlagsFromTheEnvironment(t *testing.T) {
	clearKeyToolEnv(t)
	dir := t.TempDir()
	pool, key := filepath.Join(dir, "pool.db"), filepath.Join(dir, "secret", "pool.key")
	if err := os.Mkdir(filepath.Dir(key), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CHIPLEDGER_POOL", pool)
	t.Setenv("CHIPLEDGER_POOL_KEY", key)
	if r := runCLI(t, "pool", "fill", "--count", "3"); r.err != nil {
		t.Fatal(r.err)
	}
	if _, err := os.Stat(key); err != nil {
		t.Fatalf("the pool key is not at CHIPLEDGER_POOL_KEY: %v", err)
	}
	if _, err := os.Stat(pool + ".key"); err == nil {
		t.Error("a pool key was made at the default path despite CHIPLEDGER_POOL_KEY")
	}
	r := runCLI(t, "pool", "status", "--json")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !strings.Contains(r.stdout, `"available": 3`) {
		t.Errorf("status of the pool from CHIPLEDGER_POOL: %s", r.stdout)
	}
}

func TestPoolFillRefusesABadCount(t *testing.T) {
	clearKeyToolEnv(t)
	pool := filepath.Join(t.TempDir(), "pool.db")
	for _, count := range []string{"0", "-5"} {
		r := runCLI(t, "pool", "fill", "--pool", pool, "--count", count)
		if r.err == nil || !strings.Contains(r.err.Error(), "--count") {
			t.Errorf("fill --count %s: %v, want an error about --count", count, r.err)
		}
	}
	if _, err := os.Stat(pool); err == nil {
		t.Error("a refused fill created the pool")
	}
}

func TestPoolStatusPrintsCountsAsTextOrJSON(t *testing.T) {
	clearKeyToolEnv(t)
	pool := filepath.Join(t.TempDir(), "pool.db")
	if r := runCLI(t, "pool", "fill", "--pool", pool, "--count", "4"); r.err != nil {
		t.Fatal(r.err)
	}
	p, err := provisioner.OpenPool(pool, provisioner.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, chip := range []string{"c1000000000000000000000000000001", "c1000000000000000000000000000002", "c1000000000000000000000000000003"} {
		id := mustChip(t, chip)
		if _, _, err := p.Reserve(id); err != nil {
			t.Fatal(err)
		}
		switch i {
		case 0:
			err = p.Consume(id)
		case 1:
			err = p.Destroy(id, "test")
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	keyID := p.PoolKeyID()
	p.Close()

	r := runCLI(t, "pool", "status", "--pool", pool, "--json")
	if r.err != nil {
		t.Fatal(r.err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, r.stdout)
	}
	want := map[string]any{"pool": pool, "pool_key_id": keyID, "available": 1.0, "reserved": 1.0, "consumed": 1.0, "destroyed": 1.0}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("status --json %s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("status --json has fields %v, want %v", got, want)
	}

	text := runCLI(t, "pool", "status", "--pool", pool)
	if text.err != nil {
		t.Fatal(text.err)
	}
	for _, line := range []string{"available    1", "reserved     1", "consumed     1", "destroyed    1", "pool key ID  " + keyID} {
		if !strings.Contains(text.stdout, line) {
			t.Errorf("status does not show %q:\n%s", line, text.stdout)
		}
	}
}

func TestPoolStatusOfAMissingPoolSaysHowToCreateIt(t *testing.T) {
	clearKeyToolEnv(t)
	pool := filepath.Join(t.TempDir(), "pool.db")
	r := runCLI(t, "pool", "status", "--pool", pool)
	if !errors.Is(r.err, provisioner.ErrNoPool) || !strings.Contains(r.err.Error(), "chipledger pool fill --pool "+pool) {
		t.Errorf("status of a missing pool: %v, want ErrNoPool telling how to create it", r.err)
	}
	if _, err := os.Stat(pool); err == nil {
		t.Error("pool status created the pool")
	}
}

func TestPoolStatusOfAnEmptyPoolWarns(t *testing.T) {
	clearKeyToolEnv(t)
	pool := filepath.Join(t.TempDir(), "pool.db")
	p, err := provisioner.OpenPool(pool, provisioner.PoolOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	r := runCLI(t, "pool", "status", "--pool", pool)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !strings.Contains(r.stderr, "chipledger pool fill") {
		t.Errorf("status of an empty pool does not say to fill it: %q", r.stderr)
	}
}

func mustChip(t *testing.T, s string) ledger.ChipID {
	t.Helper()
	c, err := ledger.ParseChipID(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPoolFillCreatesTheDirectoryOfANewPool(t *testing.T) {
	clearKeyToolEnv(t)
	dir := filepath.Join(t.TempDir(), "p", "q")
	pool := filepath.Join(dir, "pool.db")
	if r := runCLI(t, "pool", "fill", "--pool", pool, "--count", "3"); r.err != nil {
		t.Fatalf("pool fill in a missing directory: %v", r.err)
	}
	if fi, err := os.Stat(dir); err != nil || (fi.Mode().Perm() != 0o700 && filepath.Separator == '/') {
		t.Errorf("pool directory: %v, want a directory with mode 0700", err)
	}
	if _, err := os.Stat(pool + ".key"); err != nil {
		t.Errorf("pool key: %v", err)
	}
}

func TestPoolCommandsSayAFileIsNotAPool(t *testing.T) {
	clearKeyToolEnv(t)
	notAPool := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(notAPool, bytes.Repeat([]byte("not a pool\n"), 427), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"pool", "fill", "--pool", notAPool, "--count", "1"},
		{"pool", "status", "--pool", notAPool},
	} {
		r := runCLI(t, args...)
		if r.err == nil || !strings.Contains(r.err.Error(), notAPool+" is not a chipledger key pool") {
			t.Errorf("chipledger %s: %v, want it to say the file is not a key pool", strings.Join(args, " "), r.err)
		}
	}
}

func TestPoolFlagsTakeNoGenericEnvironmentVariables(t *testing.T) {
	clearKeyToolEnv(t)
	pool := filepath.Join(t.TempDir(), "pool.db")
	t.Setenv("CHIPLEDGER_COUNT", "3")
	if r := runCLI(t, "pool", "fill", "--pool", pool); r.err == nil || !strings.Contains(r.err.Error(), "--count") {
		t.Errorf("pool fill took --count from $CHIPLEDGER_COUNT: %v", r.err)
	}
	if r := runCLI(t, "pool", "fill", "--pool", pool, "--count", "1"); r.err != nil {
		t.Fatal(r.err)
	}
	t.Setenv("CHIPLEDGER_JSON", "true")
	if r := runCLI(t, "pool", "status", "--pool", pool); r.err != nil || strings.HasPrefix(r.stdout, "{") {
		t.Errorf("pool status took --json from $CHIPLEDGER_JSON: %v, %q", r.err, r.stdout)
	}
}

// TestPoolDestroyClearsAReservationForGood: a chip whose provisioning was
// interrupted before its entry reached the ledger, and whose device never
// came back, holds its key reserved; pool destroy deletes the key and
// audits it, and the chip's next provisioning gets another key.
func TestPoolDestroyClearsAReservationForGood(t *testing.T) {
	clearKeyToolEnv(t)
	pool := filepath.Join(t.TempDir(), "pool.db")
	if r := runCLI(t, "pool", "fill", "--pool", pool, "--count", "3"); r.err != nil {
		t.Fatal(r.err)
	}
	const hexChip = "c2000000000000000000000000000001"
	chip := mustChip(t, hexChip)
	p, err := provisioner.OpenPool(pool, provisioner.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stuck, _, err := p.Reserve(chip)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()

	r := runCLI(t, "pool", "destroy", "--pool", pool, "--chip", hexChip, "--reason", "device scrapped")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if want := pool + ": key " + stuck.String() + " of chip " + hexChip + " destroyed"; strings.TrimSpace(r.stdout) != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	again := runCLI(t, "pool", "destroy", "--pool", pool, "--chip", hexChip, "--reason", "device scrapped")
	if again.err != nil || !strings.Contains(again.stdout, "already destroyed") {
		t.Errorf("destroying again: %v, %q; want it to say the key was already destroyed", again.err, again.stdout)
	}

	p, err = provisioner.OpenPool(pool, provisioner.PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if s, err := p.Status(); err != nil || s != (provisioner.PoolStatus{Available: 2, Destroyed: 1}) {
		t.Errorf("status %+v, %v; want 2 available, 1 destroyed", s, err)
	}
	if a, ok, _ := p.LastAudit(chip); !ok || a.KeyID != stuck || a.Outcome != provisioner.OutcomeDestroyed || a.Reason != "device scrapped" {
		t.Errorf("audit %+v, want key %s destroyed with the reason", a, stuck)
	}
	if next, _, err := p.Reserve(chip); err != nil || next == stuck {
		t.Errorf("the chip's next reservation: key %s, %v; want a new key", next, err)
	}
}

func TestPoolDestroyRefusesAChipWithoutAReservation(t *testing.T) {
	clearKeyToolEnv(t)
	pool := filepath.Join(t.TempDir(), "pool.db")
	if r := runCLI(t, "pool", "fill", "--pool", pool, "--count", "1"); r.err != nil {
		t.Fatal(r.err)
	}
	r := runCLI(t, "pool", "destroy", "--pool", pool, "--chip", "c2000000000000000000000000000002", "--reason", "x")
	if !errors.Is(r.err, provisioner.ErrNoReservation) {
		t.Errorf("destroying a chip with no reservation: %v, want ErrNoReservation", r.err)
	}
	r = runCLI(t, "pool", "destroy", "--pool", pool, "--chip", "c2", "--reason", "x")
	if r.err == nil || exitStatus(r.err) != 2 || !strings.Contains(r.err.Error(), "--chip") {
		t.Errorf("a malformed --chip: %v (exit %d), want a usage error naming --chip", r.err, exitStatus(r.err))
	}
}

// TestPoolDestroyRefusesABadReasonAsAUsageError: the reason is a flag
// value, so one the pool cannot record (empty, too long) is a usage error,
// exit status 2, found before the pool is opened.
func TestPoolDestroyRefusesABadReasonAsAUsageError(t *testing.T) {
	clearKeyToolEnv(t)
	pool := filepath.Join(t.TempDir(), "pool.db")
	if r := runCLI(t, "pool", "fill", "--pool", pool, "--count", "1"); r.err != nil {
		t.Fatal(r.err)
	}
	for _, reason := range []string{"", strings.Repeat("x", provisioner.MaxDestroyReason+1), "\xff"} {
		r := runCLI(t, "pool", "destroy", "--pool", pool, "--chip", "c2000000000000000000000000000003", "--reason", reason)
		if r.err == nil || exitStatus(r.err) != 2 || !strings.Contains(r.err.Error(), "--reason") {
			t.Errorf("--reason of %d bytes: %v (exit %d), want a usage error naming --reason", len(reason), r.err, exitStatus(r.err))
		}
	}
}
