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
// Raft logs its errors at ERROR (newHCLogger keeps hclog's levels), and
// under killed nodes, partitions and dropped connections it fails RPCs to
// peers that are down or cut off: those are expected. Raft's errors about
// its own disk (persisting a vote, appending or committing logs, taking or
// restoring a snapshot) are not, nor any of the node's own ERROR lines (a
// store write or flush that failed, a malformed Raft entry, a tile it
// could not read, its API server stopping): the harness injects no disk
// faults.
var allowedErrors = []allowedError{
	{
		Name:    "raft: an RPC to a peer that is down or cut off",
		Match:   regexp.MustCompile(` level=ERROR msg="(?:failed to (?:appendEntries to|heartbeat to|make requestVote RPC|pipeline appendEntries|start pipeline replication to|decode incoming command|send snapshot to|flush response|receive whole snapshot|install snapshot|accept connection)|peer has newer term, stopping replication|peer sees incorrect leader)" .*component=raft`),
		Example: `time=2026-11-27T20:04:15.853Z level=ERROR msg="failed to appendEntries to" node=n1 component=raft error="dial tcp 127.0.0.12:36435: connect: connection refused" peer="{Voter n2 127.0.0.12:36435}"`,
	},
	{
		Name:    "raft: a follower's log entry compacted away (the leader sends a snapshot)",
		Match:   regexp.MustCompile(` level=ERROR msg="failed to get log" .*component=raft`),
		Example: `time=2026-11-27T20:04:15.853Z level=ERROR msg="failed to get log" node=n1 component=raft error="log not found" index=12`,
	},
}

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
