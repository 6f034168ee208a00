package chaos

import (
	"regexp"
	"strings"
)

// An allowedError is an ERROR line a node may log under the faults the
// harness injects, and why.
type allowedError struct {
	// Name names the entry in reports.
	Name string
	// Match matches the line.
	Match *regexp.Regexp
	// Example is such a line, for the tests.
	Example string
}

// allowedErrors are the ERROR lines expected under the faults: each entry
// says why. Any other ERROR line is a finding.
//
// It is empty: a 90 s run (seed 1795785602402496842: 8 kills, 9 leader
// partitions, 9 dropped-connection steps) logged no ERROR line at all.
// Raft's own errors (failed RPCs to a peer that is down or cut off) reach
// the node's log at WARN, through newHCLogger, and the harness injects no
// disk faults, so the node's ERROR lines (a store write or flush that
// failed, a malformed Raft entry, a tile it could not read, its API
// server stopping) all mean something went wrong.
var allowedErrors = []allowedError{}

// ScanNodeLog returns the ERROR lines of a node's output (level=ERROR, as
// the node's slog text handler writes them, or a panic) that allowedErrors
// does not allow, and counts the allowed ones by entry name into allowed.
func ScanNodeLog(output string, allowed map[string]int) (bad []string) {
	for line := range strings.Lines(output) {
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") {
			bad = append(bad, line)
			continue
		}
		if !strings.Contains(line, " level=ERROR ") {
			continue
		}
		ok := false
		for _, a := range allowedErrors {
			if a.Match.MatchString(line) {
				allowed[a.Name]++
				ok = true
				break
			}
		}
		if !ok {
			bad = append(bad, line)
		}
	}
	return bad
}
