package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chipledger/chipledger/internal/subproc"
	"github.com/chipledger/chipledger/internal/testpki"
)

// peakRSS returns a process's peak resident set size (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/pid/status")
	return 0
}

// TestFloodOfBadRequestsLeavesAppendsWorking opens 10,000 concurrent
// connections to a node process: a third send headers that never end, a
// third send Append requests announcing a 1 GiB body and then 192 KiB of
// it, a third send 192 KiB chunked bodies. Meanwhile a station appends
// valid entries, which must all be acknowledged; the node's peak RSS must
// stay bounded.
func TestFloodOfBadRequestsLeavesAppendsWorking(t *testing.T) {
	if testing.Short() {
		t.Skip("floods a node process with 10,000 connections; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("reads the node's peak RSS from /proc")
	}
	const (
		connections = 10_000
		valid       = 200
		bodyBytes   = 192 << 10 // more than the 128 KiB request limit
		maxPeakRSS  = 768 << 20
	)
	// The flood's connections and the node's are each a file descriptor,
	// in this process and in the node's (which inherits the limit).
	if limit, ok := subproc.OpenFileLimit(); ok && limit < connections+2000 {
		t.Skipf("needs %d open files a process, the limit is %d (raise it: ulimit -n 16384)", connections+2000, limit)
	}
	bin := chipledgerBinary(t)
	logKey, trust := nodeFiles(t)
	c := startProcCluster(t, bin, 1, logKey, trust)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c.waitLeader(ctx)
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.appendWithFailover(ctx, 0, pki.StationLeaf()); err != nil {
		t.Fatal(err)
	}
	leaves := make([][]byte, valid)
	for i := range leaves {
		if leaves[i], err = pki.EscrowLeaf(testpki.ChipID(uint64(i)), 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	addr := c.apiAddr(0)
	pid := c.procs[0].Pid()
	before := peakRSS(t, pid)

	// The flood: every connection is opened, sends its part and then
	// holds on until the node closes it or the flood ends.
	var opened, refusedDial, answered atomic.Int64
	stop := make(chan struct{})
	var flood sync.WaitGroup
	// stopFlood ends the flood and waits for it, also when the test fails.
	stopFlood := sync.OnceFunc(func() { close(stop); flood.Wait() })
	defer stopFlood()
	dials := make(chan struct{}, 256) // dials in progress, not connections
	zeros := make([]byte, 16<<10)
	for i := range connections {
		flood.Add(1)
		go func() {
			defer flood.Done()
			dials <- struct{}{}
			conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
			<-dials
			if err != nil {
				refusedDial.Add(1)
				return
			}
			defer conn.Close()
			opened.Add(1)
			go func() { <-stop; conn.Close() }()
			w := bufio.NewWriter(conn)
			switch i % 3 {
			case 0: // slow headers
				fmt.Fprintf(w, "POST /chipledger.v1.LedgerService/Append HTTP/1.1\r\nHost: %s\r\nContent-Type: application/proto\r\n", addr)
			case 1: // oversized, announced
				fmt.Fprintf(w, "POST /chipledger.v1.LedgerService/Append HTTP/1.1\r\nHost: %s\r\nContent-Type: application/proto\r\nContent-Length: %d\r\n\r\n", addr, 1<<30)
				for n := 0; n < bodyBytes; n += len(zeros) {
					w.Write(zeros)
				}
			case 2: // oversized, chunked
				fmt.Fprintf(w, "POST /chipledger.v1.LedgerService/Append HTTP/1.1\r\nHost: %s\r\nContent-Type: application/proto\r\nTransfer-Encoding: chunked\r\n\r\n", addr)
				for n := 0; n < bodyBytes; n += len(zeros) {
					fmt.Fprintf(w, "%x\r\n", len(zeros))
					w.Write(zeros)
					w.WriteString("\r\n")
				}
			}
			if w.Flush() != nil {
				return
			}
			// Wait for the node's answer or for it to hang up.
			if n, _ := conn.Read(make([]byte, 1)); n > 0 {
				answered.Add(1)
			}
			io.Copy(io.Discard, conn)
		}()
	}

	// Valid appends during the flood, through the same node.
	for deadline := time.Now().Add(30 * time.Second); opened.Load()+refusedDial.Load() < connections/2; {
		if time.Now().After(deadline) {
			t.Fatalf("flood: only %d connections opened and %d dials refused of %d, want half within 30s", opened.Load(), refusedDial.Load(), connections)
		}
		time.Sleep(10 * time.Millisecond) // polling a counter with a deadline
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, valid)
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < valid; i += 4 {
				if _, err := c.appendWithFailover(ctx, 0, leaves[i]); err != nil {
					errs <- fmt.Errorf("valid append %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	peak := peakRSS(t, pid)
	stopFlood()
	t.Logf("flood: %d connections opened (%d dials refused), %d answered; %d valid appends in %s (%d pushbacks retried); node peak RSS %d MiB (before the flood %d MiB)",
		opened.Load(), refusedDial.Load(), answered.Load(), valid, took.Round(time.Millisecond), c.retryCount(), peak>>20, before>>20)
	if opened.Load() < connections*9/10 {
		t.Errorf("only %d of %d flood connections opened", opened.Load(), connections)
	}
	if peak > maxPeakRSS {
		t.Errorf("node peak RSS %d MiB under the flood, want at most %d MiB", peak>>20, maxPeakRSS>>20)
	}
	if !c.procs[0].Running() {
		t.Fatal("the node died under the flood")
	}
}
