package filelock

import (
	"errors"
	"fmt"
	"os"
)

// ErrLocked is returned by TryLock when another process (or another lock
// in this one) holds the lock.
var ErrLocked = errors.New("locked by another process")

// A Lock is an exclusive advisory lock (flock(2) where the platform has it)
// on a file that holds nothing: the lock of something else, such as a
// state file that is replaced on every change or a directory. The file
// stays after Unlock.
type Lock struct {
	f *os.File
}

// TryLock takes the lock of the file name, creating it (mode 0600) if
// needed, without waiting: if it is held, it fails with an error wrapping
// ErrLocked.
func TryLock(name string) (*Lock, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, fmt.Errorf("lock %s: %w", name, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	return &Lock{f: f}, nil
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	return l.f.Close() // closing the file releases its flock
}
