//go:build !linux

package subproc

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }

// ProcessAlive reports whether a process with this pid exists; where that
// is not known, it says yes.
func ProcessAlive(pid int) bool { return true }

// OpenFileLimit returns this process's limit on open files; ok is false
// where it is not known.
func OpenFileLimit() (limit uint64, ok bool) { return 0, false }
