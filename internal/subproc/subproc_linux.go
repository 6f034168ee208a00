package subproc

import "syscall"

// sysProcAttr kills the nodes if the test process dies without cleaning up
// (a panic, a -timeout): no orphan keeps ports or files busy.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// ProcessAlive reports whether a process with this pid exists.
func ProcessAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

// OpenFileLimit returns this process's limit on open files (RLIMIT_NOFILE;
// Go raises the soft limit to the hard one at start-up), which child
// processes inherit; ok is false where it is not known.
func OpenFileLimit() (limit uint64, ok bool) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, false
	}
	return r.Cur, true
}
