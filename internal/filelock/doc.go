// Package filelock takes exclusive advisory locks on files, so that one
// process at a time changes what they guard: a device's state file, a
// witness's state directory.
package filelock
