package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chipledger/chipledger/internal/subproc"
)

// binDir holds the chipledger binary the process tests build; TestMain
// removes it.
var binDir string

func TestMain(m *testing.M) {
	// The commands read CHIPLEDGER_ variables as flag defaults: a
	// developer's shell (a sourced node.env, an exported CHIPLEDGER_LEDGER)
	// must not change what the tests run. Children get the cleared
	// environment too (subproc.ChildEnv).
	subproc.ClearEnv()
	removeStaleBinDirs()
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binDirPrefix names the directories of the built binary, after the pid of
// the test process that built it.
const binDirPrefix = "chipledger-test-bin-"

// removeStaleBinDirs removes the binary directories of test processes that
// are gone: one killed at its -timeout never ran TestMain's cleanup.
func removeStaleBinDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, d := range dirs {
		// Only names of this scheme (<pid>-<random>): another checkout's
		// directories are not ours to judge.
		pid, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(d), binDirPrefix), "-")
		if n, err := strconv.Atoi(pid); ok && err == nil && !subproc.ProcessAlive(n) {
			os.RemoveAll(d)
		}
	}
}

// buildBinary builds this package's binary once per test run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", binDirPrefix, os.Getpid()))
	if err != nil {
		return "", err
	}
	binDir = dir
	return subproc.Build(context.Background(), dir)
})

// chipledgerBinary returns the path of the built binary.
func chipledgerBinary(t *testing.T) string {
	t.Helper()
	start := time.Now()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Logf("built the chipledger binary in %s", d.Round(time.Millisecond))
	}
	return bin
}

// freePorts returns n distinct free TCP ports on 127.0.0.1 as addresses,
// for child processes to listen on (see subproc.FreeAddrs).
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	addrs, err := subproc.FreeAddrs("127.0.0.1", n)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// startProc starts bin with args and kills it when the test ends, printing
// the tail of its log if the test failed.
func startProc(t *testing.T, name, bin string, args ...string) *subproc.Process {
	t.Helper()
	p := subproc.NewProcess(name, filepath.Join(t.TempDir(), name+".log"), bin, args...)
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- last lines of %s's output (%s):\n%s", name, p.LogPath(), p.Tail(40))
		}
	})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	return p
}
