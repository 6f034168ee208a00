package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/chipledger/chipledger/internal/subproc"
	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
	v1 "github.com/chipledger/chipledger/proto/chipledger/v1"
	"github.com/chipledger/chipledger/proto/chipledger/v1/chipledgerv1connect"
)

// procCluster is a cluster of `chipledger node` processes bootstrapped as a
// fixed peer set, with API clients for each node.
type procCluster struct {
	t      *testing.T
	ids    []string
	api    []string // API addresses
	procs  []*subproc.Process
	ledger []chipledgerv1connect.LedgerServiceClient
	admin  []chipledgerv1connect.AdminServiceClient

	mu      sync.Mutex
	retries map[connect.Code]int // retried append errors by code
}

func startProcCluster(t *testing.T, bin string, n int, logKey, trust string) *procCluster {
	t.Helper()
	addrs := freePorts(t, 2*n)
	c := &procCluster{t: t, retries: make(map[connect.Code]int)}
	var peers []string
	for i := range n {
		c.ids = append(c.ids, fmt.Sprintf("n%d", i+1))
		peers = append(peers, "--peer", fmt.Sprintf("%s=%s=%s", c.ids[i], addrs[2*i], addrs[2*i+1]))
	}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	httpClient := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	t.Cleanup(httpClient.CloseIdleConnections)
	for i, id := range c.ids {
		args := []string{"node", "--id", id, "--data-dir", filepath.Join(t.TempDir(), id),
			"--raft-addr", addrs[2*i], "--api-addr", addrs[2*i+1],
			"--log-key", logKey, "--trust", trust, "--bootstrap", "--insecure"}
		c.procs = append(c.procs, startProc(t, id, bin, append(args, peers...)...))
		c.api = append(c.api, addrs[2*i+1])
		base := "http://" + addrs[2*i+1]
		c.ledger = append(c.ledger, chipledgerv1connect.NewLedgerServiceClient(httpClient, base))
		c.admin = append(c.admin, chipledgerv1connect.NewAdminServiceClient(httpClient, base))
	}
	return c
}

// apiAddr returns node i's API address.
func (c *procCluster) apiAddr(i int) string { return c.api[i] }

// retryCount returns how many append errors appendWithFailover retried.
func (c *procCluster) retryCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.retries {
		n += v
	}
	return n
}

// leader asks every running node for its status and returns the index of
// the node that reports itself leader, or -1.
func (c *procCluster) leader(ctx context.Context) int {
	for i, a := range c.admin {
		if !c.procs[i].Running() {
			continue
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := a.Status(ctx, connect.NewRequest(&v1.StatusRequest{}))
		cancel()
		if err == nil && resp.Msg.GetRole() == "leader" {
			return i
		}
	}
	return -1
}

// waitLeader waits until a node reports itself leader.
func (c *procCluster) waitLeader(ctx context.Context) int {
	c.t.Helper()
	for {
		if i := c.leader(ctx); i >= 0 {
			return i
		}
		select {
		case <-ctx.Done():
			c.t.Fatal("no node became leader")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// retryable reports whether an append error is one a client with several
// node addresses answers by trying the next node: the node is down, has no
// leader, or lost the connection mid-request. Such retries are safe: the log
// recognises an exact resubmission and returns its first index. The caller
// checks its own context first: connect-go reports a connection reset by
// the server (a killed node) as CodeCanceled.
func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeUnknown, connect.CodeCanceled,
		connect.CodeAborted, connect.CodeInternal, connect.CodeResourceExhausted:
		return true
	}
	return false
}

// appendWithFailover appends leaf, starting at node start and moving to the
// next node whenever the error is retryable.
func (c *procCluster) appendWithFailover(ctx context.Context, start int, leaf []byte) (*v1.AppendResponse, error) {
	for i := start; ; i = (i + 1) % len(c.ledger) {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := c.ledger[i].Append(actx, connect.NewRequest(&v1.AppendRequest{Leaf: leaf}))
		cancel()
		if err == nil {
			return resp.Msg, nil
		}
		if !retryable(err) || ctx.Err() != nil {
			return nil, fmt.Errorf("append to %s: %w", c.ids[i], err)
		}
		c.mu.Lock()
		c.retries[connect.CodeOf(err)]++
		c.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// checkpointsConverge waits until every node serves the same signed
// checkpoint of at least minSize leaves, and returns it.
func (c *procCluster) checkpointsConverge(ctx context.Context, minSize uint64, v *proofs.LogVerifier) ([]byte, proofs.Checkpoint) {
	c.t.Helper()
	var last [][]byte
	for {
		var cps [][]byte
		for _, l := range c.ledger {
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := l.GetCheckpoint(rctx, connect.NewRequest(&v1.GetCheckpointRequest{}))
			cancel()
			if err != nil {
				break
			}
			cps = append(cps, resp.Msg.GetCheckpoint())
		}
		if len(cps) == len(c.ledger) {
			same := true
			for _, cp := range cps[1:] {
				same = same && bytes.Equal(cp, cps[0])
			}
			cp, err := v.VerifyCheckpoint(cps[0])
			if err != nil {
				c.t.Fatalf("checkpoint does not verify: %v\n%s", err, cps[0])
			}
			if same && cp.Size >= minSize {
				return cps[0], cp
			}
			last = cps
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("nodes did not converge on one checkpoint of size >= %d; last seen:\n%q", minSize, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestMultiProcessClusterSurvivesSIGKILL runs three `chipledger node`
// processes, appends from concurrent clients while the leader is killed with
// SIGKILL and later restarted, and checks that every acknowledged append is
// in the log exactly once, at the index it was acknowledged with, and that
// the nodes end with the same checkpoint.
func TestMultiProcessClusterSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three node processes and kills one; skipped with -short")
	}
	const (
		numLeaves  = 600
		numClients = 8
		killAt     = numLeaves / 3     // acknowledged appends before the leader is killed
		restartAt  = 2 * numLeaves / 3 // ... and before it is restarted
	)
	started := time.Now()
	bin := chipledgerBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	skey, vkey, err := ledger.GenerateLogKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := proofs.NewLogVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	logKey, trust := filepath.Join(dir, "log.key"), filepath.Join(dir, "trust.pem")
	if err := os.WriteFile(logKey, []byte(skey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(trust, pki.Trust.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}

	c := startProcCluster(t, bin, 3, logKey, trust)

	// Make the entries while the nodes start and elect a leader.
	chips := make([]ledger.ChipID, numLeaves)
	leaves := make([][]byte, numLeaves)
	for i := range leaves {
		chips[i] = testpki.ChipID(uint64(i))
		if leaves[i], err = pki.EscrowLeaf(chips[i], 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	c.waitLeader(ctx)
	stationResp, err := c.appendWithFailover(ctx, 0, pki.StationLeaf())
	if err != nil {
		t.Fatalf("register the station: %v", err)
	}
	t.Logf("cluster up and station registered after %s", time.Since(started).Round(time.Millisecond))

	// Append from concurrent clients.
	var (
		acked    = make([]uint64, numLeaves) // index each leaf was acknowledged with
		progress atomic.Int64
		dups     atomic.Int64 // appends acknowledged as a retry of a committed one
		failed   = make(chan error, numClients)
		jobs     = make(chan int)
		wg       sync.WaitGroup
	)
	for w := range numClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				resp, err := c.appendWithFailover(ctx, (w+i)%len(c.ledger), leaves[i])
				if err != nil {
					failed <- fmt.Errorf("leaf %d: %w", i, err)
					return
				}
				acked[i] = resp.GetReceipt().GetIndex()
				if resp.GetDuplicate() {
					dups.Add(1)
				}
				progress.Add(1)
			}
		}()
	}
	go func() {
		defer close(jobs)
		for i := range leaves {
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	waitProgress := func(n int64) {
		t.Helper()
		for progress.Load() < n {
			select {
			case err := <-failed:
				t.Fatal(err)
			case <-ctx.Done():
				t.Fatalf("only %d of %d appends acknowledged before the deadline", progress.Load(), n)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}

	waitProgress(killAt)
	victim := c.leader(ctx)
	if victim < 0 {
		t.Fatal("no leader to kill")
	}
	c.procs[victim].Kill()
	killedAt := time.Now()
	t.Logf("SIGKILLed the leader %s after %d acknowledged appends", c.ids[victim], progress.Load())

	waitProgress(restartAt)
	t.Logf("%d appends acknowledged %s after the kill; restarting %s", progress.Load(), time.Since(killedAt).Round(time.Millisecond), c.ids[victim])
	if err := c.procs[victim].Start(); err != nil {
		t.Fatal(err)
	}

	wg.Wait()
	select {
	case err := <-failed:
		t.Fatal(err)
	default:
	}
	if progress.Load() != numLeaves {
		t.Fatalf("%d of %d appends acknowledged", progress.Load(), numLeaves)
	}
	t.Logf("all %d appends acknowledged after %s; retried errors by code: %v; %d acknowledged as duplicates", numLeaves, time.Since(started).Round(time.Millisecond), c.retries, dups.Load())

	// Every node, the restarted one included, ends with the same checkpoint.
	maxIndex := stationResp.GetReceipt().GetIndex()
	for _, idx := range acked {
		maxIndex = max(maxIndex, idx)
	}
	signed, cp := c.checkpointsConverge(ctx, maxIndex+1, verifier)
	t.Logf("all nodes at checkpoint size %d", cp.Size)

	// The log is exactly the leaves the checkpoint commits to.
	log := fetchLeaves(ctx, t, c.ledger[victim], cp.Size)
	if root := merkleRoot(t, log); root != cp.Hash {
		t.Fatalf("the leaves of the log hash to %x, the checkpoint says %x", root, cp.Hash)
	}

	// Every acknowledged append is in the log once, at its index, and no
	// chip has two entries.
	count := make(map[[32]byte]int)
	chipEntries := make(map[string]int)
	stations := 0
	for i, leaf := range log {
		count[proofs.LeafHash(leaf)]++
		kind, err := ledger.PeekKind(leaf)
		if err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
		switch kind {
		case ledger.KindEscrow:
			e, err := ledger.ParseEscrowEntry(leaf)
			if err != nil {
				t.Fatalf("leaf %d: %v", i, err)
			}
			chipEntries[string(e.ChipID)]++
		case ledger.KindStation:
			stations++
		}
	}
	if stations != 1 || !bytes.Equal(log[stationResp.GetReceipt().GetIndex()], pki.StationLeaf()) {
		t.Errorf("%d station registrations in the log, want 1 at index %d", stations, stationResp.GetReceipt().GetIndex())
	}
	for chip, n := range chipEntries {
		if n != 1 {
			t.Errorf("chip %x has %d entries", chip, n)
		}
	}
	if len(chipEntries) != numLeaves {
		t.Errorf("%d chips in the log, want %d", len(chipEntries), numLeaves)
	}
	for i, leaf := range leaves {
		if n := count[proofs.LeafHash(leaf)]; n != 1 {
			t.Errorf("leaf %d is in the log %d times", i, n)
		}
		if !bytes.Equal(log[acked[i]], leaf) {
			t.Errorf("leaf %d was acknowledged at index %d, which holds another leaf", i, acked[i])
		}
	}

	// The restarted node's chip index agrees, with proofs.
	lookupAll(ctx, t, c.ledger[victim], chips, leaves, acked, cp.Size, verifier)
	t.Logf("checked the log (%d leaves, checkpoint %d bytes) in %s total", len(log), len(signed), time.Since(started).Round(time.Millisecond))
}

// fetchLeaves reads leaves [0, size) with GetEntries.
func fetchLeaves(ctx context.Context, t *testing.T, l chipledgerv1connect.LedgerServiceClient, size uint64) [][]byte {
	t.Helper()
	var leaves [][]byte
	for start := uint64(0); start < size; {
		end := min(size, start+1000)
		resp, err := l.GetEntries(ctx, connect.NewRequest(&v1.GetEntriesRequest{Start: start, End: end}))
		if err != nil {
			t.Fatalf("entries [%d, %d): %v", start, end, err)
		}
		if len(resp.Msg.GetLeaves()) == 0 {
			t.Fatalf("entries [%d, %d): none returned", start, end)
		}
		leaves = append(leaves, resp.Msg.GetLeaves()...)
		start += uint64(len(resp.Msg.GetLeaves()))
	}
	return leaves
}

// merkleRoot returns the RFC 6962 root of leaves.
func merkleRoot(t *testing.T, leaves [][]byte) [32]byte {
	t.Helper()
	if len(leaves) == 0 {
		return proofs.EmptyRoot()
	}
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(0)
	for _, leaf := range leaves {
		if err := r.Append(rfc6962.DefaultHasher.HashLeaf(leaf), nil); err != nil {
			t.Fatal(err)
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		t.Fatal(err)
	}
	return [32]byte(root)
}

// lookupAll checks with LookupChip that each chip has exactly its one
// acknowledged entry, with a receipt that verifies.
func lookupAll(ctx context.Context, t *testing.T, l chipledgerv1connect.LedgerServiceClient, chips []ledger.ChipID, leaves [][]byte, acked []uint64, size uint64, v *proofs.LogVerifier) {
	t.Helper()
	var mu sync.Mutex
	var errs []error
	report := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(chips); i = int(next.Add(1) - 1) {
				resp, err := l.LookupChip(ctx, connect.NewRequest(&v1.LookupChipRequest{ChipId: chips[i], MinSize: size}))
				if err != nil {
					report(fmt.Errorf("lookup chip %d: %w", i, err))
					continue
				}
				entries := resp.Msg.GetEntries()
				if len(entries) != 1 {
					report(fmt.Errorf("chip %d: %d entries, want 1", i, len(entries)))
					continue
				}
				r := entries[0].GetReceipt()
				if r.GetIndex() != acked[i] || !bytes.Equal(r.GetLeaf(), leaves[i]) || entries[0].GetEpoch() != 1 {
					report(fmt.Errorf("chip %d: entry at index %d, epoch %d; acknowledged at %d, epoch 1", i, r.GetIndex(), entries[0].GetEpoch(), acked[i]))
					continue
				}
				if err := verifyReceipt(r, v); err != nil {
					report(fmt.Errorf("chip %d: %w", i, err))
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Errorf("%d chip lookups failed; first: %v", len(errs), errors.Join(errs[:min(len(errs), 5)]...))
	}
}

func verifyReceipt(r *v1.Receipt, v *proofs.LogVerifier) error {
	proof := make([][32]byte, len(r.GetInclusionProof()))
	for i, h := range r.GetInclusionProof() {
		if len(h) != 32 {
			return fmt.Errorf("receipt proof hash %d is %d bytes", i, len(h))
		}
		proof[i] = [32]byte(h)
	}
	rc := &proofs.Receipt{Leaf: r.GetLeaf(), Index: r.GetIndex(), Proof: proof, Checkpoint: r.GetCheckpoint()}
	if _, err := rc.Verify(v); err != nil {
		return fmt.Errorf("receipt for index %d does not verify: %w", r.GetIndex(), err)
	}
	return nil
}
