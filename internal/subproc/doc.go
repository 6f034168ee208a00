// Package subproc runs the chipledger binary as child processes for the
// tests that need real processes (the multi-process cluster tests of
// cmd/chipledger and the chaos suite): it builds the binary, and starts,
// signals, kills and restarts a process with the same arguments, its
// output appended to one log file across runs.
package subproc
