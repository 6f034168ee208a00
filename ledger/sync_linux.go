package ledger

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncData makes f's data durable: fdatasync, which skips metadata such
// as the modification time that a reader of the data does not need.
func syncData(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

// dropCache tells the kernel that f's bytes [off, off+n) will not be read
// soon, so their pages can leave the page cache.
func dropCache(f *os.File, off, n int64) {
	unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED)
}
