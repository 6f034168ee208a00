package subproc

import "syscall"

// sysProcAttr kills the nodes if the test process dies without cleaning up
// (a panic, a -timeout): no orphan keeps ports or files busy.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
