package device

import (
	"github.com/chipledger/chipledger/internal/filelock"

	"errors"
	"fmt"
	"os"
)

// ErrStateInUse is returned by LockState when another process (or another
// lock in this one) holds the lock of the state file.
var ErrStateInUse = errors.New("device state file is in use")

// A StateLock is an exclusive lock on a device state file, held by the one
// process that may change it: two agents of one device would overwrite
// each other's state, epoch counter included. The lock is an advisory
// flock(2) on the sidecar file <state>.lock, since the state file itself is
// replaced, not rewritten, on every change. The sidecar file stays after
// Unlock; it holds nothing.
type StateLock struct {
	l *filelock.Lock
}

// LockState takes the lock of the existing state file at path without
// waiting: if it is held, it fails with ErrStateInUse. Take it before Load,
// so the state loaded is the latest. Readers (Load, for a status) need no
// lock.
func LockState(path string) (*StateLock, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("lock device state: %w", err) // no stray lock file for a missing state
	}
	name := path + ".lock"
	l, err := filelock.TryLock(name)
	if errors.Is(err, filelock.ErrLocked) {
		return nil, fmt.Errorf("%w: %s is locked (%s) by another process serving the device", ErrStateInUse, path, name)
	}
	if err != nil {
		return nil, fmt.Errorf("lock device state %s: %w", path, err)
	}
	return &StateLock{l: l}, nil
}

// Unlock releases the lock.
func (l *StateLock) Unlock() error { return l.l.Unlock() }
