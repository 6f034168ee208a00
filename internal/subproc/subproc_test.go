package subproc

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func shell(t *testing.T) string {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on PATH")
	}
	return sh
}

func TestKillSignalAndRestart(t *testing.T) {
	p := NewProcess("sleeper", filepath.Join(t.TempDir(), "sleeper.log"), shell(t), "-c", "echo started; exec sleep 30")
	if err := p.Wait(time.Millisecond); err == nil {
		t.Fatal("Wait before Start returned nil")
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, p, 1)
	if !p.Running() || p.Pid() == 0 || p.Incarnation() != 1 {
		t.Fatalf("after Start: running %v, pid %d, incarnation %d", p.Running(), p.Pid(), p.Incarnation())
	}
	if err := p.Start(); err == nil {
		t.Fatal("a second Start while running succeeded")
	}
	p.Kill()
	if p.Running() || p.Pid() != 0 {
		t.Fatal("still running after Kill")
	}

	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, p, 2)
	if p.Incarnation() != 2 {
		t.Fatalf("incarnation %d after a restart, want 2", p.Incarnation())
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(10 * time.Second); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Fatalf("Wait after SIGTERM: %v, want the signal", err)
	}
	if err := p.Signal(syscall.SIGTERM); err == nil {
		t.Fatal("Signal to an exited process succeeded")
	}
	if u := p.Unexpected(); len(u) != 0 {
		t.Fatalf("killed and signalled runs counted as unexpected: %q", u)
	}
}

func TestUnexpectedExit(t *testing.T) {
	p := NewProcess("crasher", filepath.Join(t.TempDir(), "crasher.log"), shell(t), "-c", "echo line1; echo line2; exit 3")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	err := p.Wait(10 * time.Second)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("Wait: %v, want exit status 3", err)
	}
	if u := p.Unexpected(); len(u) != 1 || !strings.Contains(u[0], "crasher run 1 exited by itself") {
		t.Fatalf("Unexpected: %q", u)
	}
	if got := p.Tail(1); got != "line2" {
		t.Fatalf("Tail(1) = %q, want line2", got)
	}
}

// waitOutput waits until the process has printed "started" runs times.
func waitOutput(t *testing.T, p *Process, runs int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(p.Output(), "started\n") < runs {
		if time.Now().After(deadline) {
			t.Fatalf("output has not %d runs:\n%s", runs, p.Output())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
