package subproc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
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

// A Process is a program a test runs and may signal, kill and restart with
// the same arguments. Its stdout and stderr go to one log file, appended to
// across restarts. Its methods are safe for concurrent use.
type Process struct {
	name    string
	bin     string
	args    []string
	logPath string

	mu          sync.Mutex
	cmd         *exec.Cmd
	exited      chan struct{} // closed when the current run has exited
	err         error         // the current run's Wait result, once exited is closed
	incarnation int           // runs started so far
	stopping    bool          // the current run was killed or signalled on purpose
	unexpected  []string      // runs that exited without being killed or signalled
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
	cmd.Env = ChildEnv()
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.err, p.stopping = cmd, exited, nil, false
	p.incarnation++
	incarnation := p.incarnation
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		if !p.stopping {
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

// Pid returns the process ID of the current run, or 0 if none is running.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.exited) {
		return 0
	}
	return p.cmd.Process.Pid
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
	p.stopping = true
	p.mu.Unlock()
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// Signal sends sig to the running run (SIGINT or SIGTERM to stop it
// gracefully; its exit then counts as expected).
func (p *Process) Signal(sig os.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || isClosed(p.exited) {
		return fmt.Errorf("signal %s: it is not running", p.name)
	}
	p.stopping = true
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	return nil
}

// Wait waits up to timeout for the current run to exit and returns its
// exit error (nil for a clean exit).
func (p *Process) Wait(timeout time.Duration) error {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited == nil {
		return fmt.Errorf("%s was never started", p.name)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-exited:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	case <-t.C:
		return errors.New(p.name + " still running after " + timeout.String())
	}
}

// Unexpected returns a description of every run that exited without being
// killed or signalled: a crash, or a node that refused to start.
func (p *Process) Unexpected() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unexpected...)
}

// LogPath returns the file the process's output goes to.
func (p *Process) LogPath() string { return p.logPath }

// Output returns everything the process has written so far, across runs.
func (p *Process) Output() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Tail returns the last n lines of the process's output.
func (p *Process) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Output(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ChildEnv returns this process's environment without its CHIPLEDGER_
// variables, for a child chipledger process: a test says what a node is
// with its flags, and a developer's shell (a sourced node.env, an exported
// CHIPLEDGER_LEDGER) must not change it.
func ChildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHIPLEDGER_") {
			env = append(env, kv)
		}
	}
	return env
}

// ClearEnv unsets this process's CHIPLEDGER_ variables but those named
// keep (a test's own knobs), for a test binary that runs the chipledger
// commands in process (TestMain). It returns what it unset.
func ClearEnv(keep ...string) []string {
	var unset []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "CHIPLEDGER_") && !slices.Contains(keep, name) {
			os.Unsetenv(name)
			unset = append(unset, name)
		}
	}
	return unset
}

// Ports handed out by FreeAddrs in this process, so that it never hands
// out one twice.
var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

// FreeAddrs returns n addresses on ip whose ports are free now and lie
// below the kernel's ephemeral range, for child processes to listen on.
// A port taken with ":0" and closed again can be handed out by the kernel
// to the next ":0" listener (a proxy, another test's server) before the
// child binds it; a port below the ephemeral range is never handed out
// that way, and this process hands each out once.
func FreeAddrs(ip string, n int) ([]string, error) {
	low := ephemeralLow()
	portsMu.Lock()
	defer portsMu.Unlock()
	var addrs []string
	for attempt := 0; len(addrs) < n; attempt++ {
		if attempt > 10000 {
			return nil, fmt.Errorf("no free port below %d on %s", low, ip)
		}
		port := 10000 + rand.IntN(low-10000)
		if ports[port] {
			continue
		}
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // in use
		}
		l.Close()
		ports[port] = true
		addrs = append(addrs, addr)
	}
	return addrs, nil
}

// ephemeralLow returns the first port of the kernel's ephemeral range
// (Linux's default 32768 where it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	low, err := strconv.Atoi(f[0])
	if err != nil || low <= 11000 {
		return 32768
	}
	return low
}
