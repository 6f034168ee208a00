package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Build builds the chipledger binary into dir and returns its path.
func Build(ctx context.Context, dir string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go tool is not on PATH: %w", err)
	}
	bin := filepath.Join(dir, "chipledger")
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, "github.com/chipledger/chipledger/cmd/chipledger")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// A Process is a program the harness runs and may kill and restart with
// the same arguments. Its stdout and stderr go to one log file, appended to
// across restarts.
type Process struct {
	name    string
	bin     string
	args    []string
	logPath string

	mu          sync.Mutex
	cmd         *exec.Cmd
	exited      chan struct{} // closed when the current run has exited
	incarnation int           // runs started so far
	killing     bool          // the current run is being killed on purpose
	unexpected  []string      // runs that exited without being killed
}

// NewProcess returns a process that runs bin with args, logging to logPath.
// It does not start it.
func NewProcess(name, logPath, bin string, args ...string) *Process {
	return &Process{name: name, bin: bin, args: args, logPath: logPath}
}

// Start starts a new run of the process. It fails if one is running.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !isClosed(p.exited) {
		return fmt.Errorf("%s is already running", p.name)
	}
	log, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close() // the child has its own descriptor
	fmt.Fprintf(log, "=== %s: start %d: %s %s\n", time.Now().Format(time.RFC3339Nano), p.incarnation+1, p.bin, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.killing = cmd, exited, false
	p.incarnation++
	incarnation := p.incarnation
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		if !p.killing {
			p.unexpected = append(p.unexpected, fmt.Sprintf("%s run %d exited by itself: %v", p.name, incarnation, err))
		}
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Running reports whether a run of the process is running.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isClosed(p.exited)
}

// Incarnation returns how many runs have been started; it changes when
// the process restarts.
func (p *Process) Incarnation() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.incarnation
}

// Kill sends SIGKILL to the running run, if any, and waits for it to be
// gone.
func (p *Process) Kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	if cmd == nil || isClosed(exited) {
		p.mu.Unlock()
		return
	}
	p.killing = true
	p.mu.Unlock()
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// Unexpected returns a description of every run that exited without being
// killed: a crash, or a node that refused to start.
func (p *Process) Unexpected() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unexpected...)
}

// LogPath returns the file the process's output goes to.
func (p *Process) LogPath() string { return p.logPath }

// Tail returns the last n lines of the process's output.
func (p *Process) Tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
