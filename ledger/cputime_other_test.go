//go:build !unix

package ledger

import "time"

// cpuTime reports no CPU time where the platform has no getrusage.
func cpuTime() (user, sys time.Duration) { return 0, 0 }
