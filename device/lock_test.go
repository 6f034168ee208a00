package device

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLockStateExcludesASecondHolder(t *testing.T) {
	state := filepath.Join(t.TempDir(), "phone.json")
	if _, err := LockState(state); err == nil {
		t.Fatal("locked a state file that does not exist")
	}
	if _, err := os.Stat(state + ".lock"); err == nil {
		t.Fatal("a lock file was left for a missing state file")
	}
	if err := os.WriteFile(state, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := LockState(state)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockState(state)
	if !errors.Is(err, ErrStateInUse) || !strings.Contains(err.Error(), state) {
		t.Fatalf("second lock: %v, want ErrStateInUse naming %s", err, state)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l, err = LockState(state)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l.Unlock()
}
