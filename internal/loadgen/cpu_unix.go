//go:build unix

package loadgen

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time this process has used so far, in user
// space and in the kernel, and whether the platform reports it.
func processCPU() (user, sys time.Duration, ok bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0, false
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()), true
}
