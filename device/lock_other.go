//go:build !unix

package device

import (
	"errors"
	"os"
)

var errLocked = errors.New("locked")

// lockFile does nothing where flock(2) is missing: run only one agent per
// state file there.
func lockFile(*os.File) error { return nil }
