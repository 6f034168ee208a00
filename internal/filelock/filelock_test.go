//go:build unix

package filelock

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestTryLockIsExclusiveUntilUnlock(t *testing.T) {
	name := filepath.Join(t.TempDir(), "x.lock")
	first, err := TryLock(name)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := TryLock(name); !errors.Is(err, ErrLocked) {
		if err == nil {
			l.Unlock()
		}
		t.Fatalf("second TryLock: %v, want ErrLocked", err)
	}
	if err := first.Unlock(); err != nil {
		t.Fatal(err)
	}
	again, err := TryLock(name)
	if err != nil {
		t.Fatalf("TryLock after Unlock: %v", err)
	}
	again.Unlock()
}
