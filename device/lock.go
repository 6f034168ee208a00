package device

import (
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
	f *os.File
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
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock device state %s: %w", path, err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, fmt.Errorf("%w: %s is locked (%s) by another process serving the device", ErrStateInUse, path, name)
		}
		return nil, fmt.Errorf("lock device state %s: %w", path, err)
	}
	return &StateLock{f: f}, nil
}

// Unlock releases the lock.
func (l *StateLock) Unlock() error {
	return l.f.Close() // closing the file releases its flock
}
