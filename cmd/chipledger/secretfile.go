package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/chipledger/chipledger/internal/atomicfile"
)

// writeSecretFile creates path with mode 0600 holding data, atomically and
// never over an existing file (atomicfile.Create).
func writeSecretFile(path string, data []byte) error {
	err := atomicfile.Create(path, data, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; refusing to overwrite a key (remove it or choose another file)", path)
	}
	return err
}
