//go:build !unix

package filelock

import (
	"errors"
	"os"
)

var errLocked = errors.New("locked")

// lockFile does nothing where flock(2) is missing: run only one process
// per locked file there.
func lockFile(*os.File) error { return nil }
