//go:build !linux

package ledger

import "os"

// syncData makes f's data durable (on macOS, File.Sync is F_FULLFSYNC).
func syncData(f *os.File) error { return f.Sync() }

// dropCache does nothing where posix_fadvise is not available.
func dropCache(*os.File, int64, int64) {}
