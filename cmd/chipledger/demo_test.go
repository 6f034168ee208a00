package main

import (
	"strings"
	"testing"
)

func TestDemoRefusesZeroNodesDevicesOrConcurrency(t *testing.T) {
	for _, args := range [][]string{
		{"demo", "--nodes", "0"},
		{"demo", "--devices", "0"},
		{"demo", "--concurrency", "0"},
		{"demo", "--nodes", "-1"},
	} {
		r := runCLI(t, args...)
		if r.err == nil || exitStatus(r.err) != 2 || !strings.Contains(r.err.Error(), args[1]) {
			t.Errorf("chipledger %s: %v (exit %d), want a usage error naming %s", strings.Join(args, " "), r.err, exitStatus(r.err), args[1])
		}
		if r.stdout != "" {
			t.Errorf("chipledger %s ran: %q", strings.Join(args, " "), r.stdout)
		}
	}
}
