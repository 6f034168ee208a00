//go:build !linux

package subproc

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
