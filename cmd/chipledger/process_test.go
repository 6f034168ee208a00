package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chipledger/chipledger/internal/subproc"
)

// binDir holds the chipledger binary the process tests build; TestMain
// removes it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildBinary builds this package's binary once per test run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "chipledger-test-bin-")
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

// freePorts returns n distinct free TCP ports on 127.0.0.1 as addresses.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
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
