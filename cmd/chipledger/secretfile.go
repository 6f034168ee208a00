package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// writeSecretFile creates path with mode 0600 holding data, atomically and
// never over an existing file: the data goes to a synced temporary file in
// the same directory, which is then hard-linked to path (the link fails if
// path exists). Where hard links are not supported it checks that path is
// absent and renames instead.
func writeSecretFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600) // CreateTemp already uses 0600; be explicit
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	exists := fmt.Errorf("%s already exists; refusing to overwrite a key (remove it or choose another file)", path)
	if err := os.Link(tmp, path); err != nil {
		if _, serr := os.Lstat(path); !errors.Is(serr, fs.ErrNotExist) {
			return exists
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
