package node

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	fnote "github.com/transparency-dev/formats/note"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/mod/sumdb/note"

	"github.com/chipledger/chipledger/internal/witness"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// DefaultWitnessInterval is the default Config.WitnessInterval.
const DefaultWitnessInterval = time.Second

// DefaultWitnessRefresh is the default Config.WitnessRefresh.
const DefaultWitnessRefresh = time.Minute

// witnessRoundTimeout bounds one round of add-checkpoint requests.
const witnessRoundTimeout = 10 * time.Second

// maxWitnessConflicts bounds how often one round follows a witness's
// "409 Conflict, I have seen size N" with a new proof.
const maxWitnessConflicts = 3

// A cosigner is the leader's side of c2sp.org/tlog-witness: it submits the
// latest checkpoint to every witness of the policy, with a consistency proof
// from the size each witness last cosigned, and keeps the cosignatures that
// verify.
type cosigner struct {
	policy  *proofs.WitnessPolicy
	hc      *http.Client
	fsm     *fsm
	metrics *metrics

	mu    sync.Mutex
	hints map[string]uint64 // submission URL → size the witness last cosigned, as far as known
}

func newCosigner(p *proofs.WitnessPolicy, hc *http.Client, f *fsm, m *metrics) *cosigner {
	if hc == nil {
		hc = &http.Client{Timeout: witnessRoundTimeout}
	}
	return &cosigner{policy: p, hc: hc, fsm: f, metrics: m, hints: make(map[string]uint64)}
}

// witnessCheckpoints runs on every node and works while it leads: at most
// once per interval, when the log has grown past the last witnessed
// checkpoint or its cosignatures are older than the refresh period (a
// witness cosigns the same checkpoint again with a new time, which clients
// use to tell a current witnessed checkpoint from an old one), it has the
// latest checkpoint cosigned and, once the policy's quorum cosigned it,
// records it through Raft so that every replica serves it (GetCheckpoint
// with witnessed set).
func (n *Node) witnessCheckpoints(ctx context.Context) {
	if n.cfg.Witnesses == nil {
		return
	}
	c := newCosigner(n.cfg.Witnesses, n.cfg.WitnessHTTPClient, n.fsm, n.metrics)
	interval := cmp.Or(n.cfg.WitnessInterval, DefaultWitnessInterval)
	refresh := cmp.Or(n.cfg.WitnessRefresh, DefaultWitnessRefresh)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var failingSince, warned time.Time // zero while rounds succeed
	var lastOK time.Time               // this node's last round that met the quorum
	for {
		changed := n.fsm.changed()
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if n.raft.State() != raft.Leader {
			timer.Reset(interval) // leadership is checked again then
			continue
		}
		cp := n.fsm.checkpoint()
		w, err := n.fsm.witnessed()
		if err != nil {
			n.log.Warn("read the witnessed checkpoint", "err", err)
			timer.Reset(interval)
			continue
		}
		if cp.Size == 0 || (w != nil && w.Size >= cp.Size && time.Since(lastOK) < refresh) {
			// Nothing new, and the cosignatures are fresh: wait for the
			// next checkpoint (or leadership, or the next refresh).
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-time.After(interval):
			}
			timer.Reset(0)
			continue
		}
		start := time.Now()
		err = n.witnessOnce(ctx, c, cp)
		switch {
		case err != nil && ctx.Err() == nil:
			n.metrics.witnessRounds.WithLabelValues("failed").Inc()
			// A witness that is down fails every round: say so when it
			// starts, then once a minute.
			if failingSince.IsZero() {
				failingSince = start
			}
			if start.Sub(warned) >= time.Minute {
				warned = start
				n.log.Warn("witnessing the checkpoint failed; retrying every interval", "size", cp.Size, "failing_for", start.Sub(failingSince).Round(time.Second), "err", err)
			}
		case err == nil && !failingSince.IsZero():
			n.log.Info("witnessing works again", "size", cp.Size, "failed_for", start.Sub(failingSince).Round(time.Second))
			failingSince, warned = time.Time{}, time.Time{}
		}
		if err == nil {
			lastOK = start
		}
		timer.Reset(max(0, interval-time.Since(start)))
	}
}

// witnessOnce has cp cosigned and, with a quorum, records it.
func (n *Node) witnessOnce(ctx context.Context, c *cosigner, cp *Checkpoint) error {
	round, cancel := context.WithTimeout(ctx, witnessRoundTimeout)
	defer cancel()
	signed, err := c.cosign(round, cp)
	if err != nil {
		return err
	}
	data, err := encodeWitnessed(signed)
	if err != nil {
		return err
	}
	record, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	if _, err := n.apply(record, data); err != nil {
		return fmt.Errorf("record the witnessed checkpoint of size %d: %w", cp.Size, err)
	}
	n.metrics.witnessRounds.WithLabelValues("ok").Inc()
	n.metrics.witnessedSize.Set(float64(cp.Size))
	n.log.Debug("checkpoint witnessed", "size", cp.Size)
	return nil
}

// cosign submits cp to every witness at once and returns cp with the
// cosignatures that verify as soon as they meet the policy's quorum (the
// requests still in flight are then canceled, so that a witness that is
// slow or does not answer holds no round back); otherwise an error that
// says which witnesses failed and why.
func (c *cosigner) cosign(ctx context.Context, cp *Checkpoint) ([]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	eps := c.policy.Endpoints()
	type result struct {
		url  string
		name string
		line []byte
		err  error
	}
	results := make(chan result, len(eps))
	for url, v := range eps {
		go func() {
			line, err := c.submit(ctx, url, v, cp)
			results <- result{url, v.Name(), line, err}
		}()
	}
	var lines [][]byte
	var failures []string
	for range eps {
		r := <-results
		if r.err != nil {
			c.metrics.witnessFailures.WithLabelValues(r.name).Inc()
			failures = append(failures, fmt.Sprintf("%s: %v", r.url, r.err))
			continue
		}
		lines = append(lines, r.line)
		if signed := withCosignatures(cp.Signed, lines); c.policy.Satisfied(signed) {
			return signed, nil
		}
	}
	sort.Strings(failures)
	return nil, fmt.Errorf("%d witness(es) cosigned size %d, short of the policy's quorum; failures: %v", len(lines), cp.Size, failures)
}

// withCosignatures returns the signed checkpoint with the cosignature lines
// appended, in a stable order, so that replicas and clients see the same
// bytes for the same cosignatures.
func withCosignatures(signed []byte, lines [][]byte) []byte {
	lines = slices.Clone(lines)
	sort.Slice(lines, func(i, j int) bool { return bytes.Compare(lines[i], lines[j]) < 0 })
	signed = bytes.Clone(signed)
	for _, l := range lines {
		signed = append(signed, l...)
	}
	return signed
}

// submit sends cp to one witness, following its 409 answers to the size it
// has, and returns its verified cosignature line.
func (c *cosigner) submit(ctx context.Context, url string, v note.Verifier, cp *Checkpoint) ([]byte, error) {
	c.mu.Lock()
	old := c.hints[url]
	c.mu.Unlock()
	for range maxWitnessConflicts + 1 {
		proof, err := c.consistencyProof(old, cp.Size)
		if err != nil {
			return nil, err
		}
		resp, err := witness.AddCheckpoint(ctx, c.hc, url, old, proof, cp.Signed)
		if conflict, ok := errors.AsType[*witness.ConflictError](err); ok {
			// A size beyond cp fails this round only: kept as the hint, it
			// would stop every later round from asking this witness until
			// the log grew past it.
			if conflict.Size > cp.Size {
				return nil, fmt.Errorf("the witness has cosigned size %d, beyond this node's %d: it is ahead of this node or follows another log with this origin", conflict.Size, cp.Size)
			}
			old = conflict.Size
			c.setHint(url, old)
			continue
		}
		if err != nil {
			return nil, err
		}
		line, err := cosignatureLine(cp.Signed, resp, v, time.Now())
		if err != nil {
			return nil, err
		}
		c.setHint(url, cp.Size)
		return line, nil
	}
	return nil, fmt.Errorf("the witness answered %d conflicts in a row", maxWitnessConflicts+1)
}

func (c *cosigner) setHint(url string, size uint64) {
	c.mu.Lock()
	c.hints[url] = size
	c.mu.Unlock()
}

// consistencyProof returns the proof that the tree of size old is a prefix
// of the tree of size, as a witness wants it: none from 0 or to the same
// size.
func (c *cosigner) consistencyProof(old, size uint64) ([][32]byte, error) {
	if old == 0 || old == size {
		return nil, nil
	}
	var hashes []ledger.Hash
	err := c.fsm.withStore(func(s *ledger.Store) (err error) {
		hashes, err = s.ConsistencyProof(old, size)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("consistency proof from %d to %d: %w", old, size, err)
	}
	proof := make([][32]byte, len(hashes))
	for i, h := range hashes {
		proof[i] = [32]byte(h)
	}
	return proof, nil
}

// maxCosignatureSkew bounds how far from this node's clock a witness may
// date its cosignature. Clients count only cosignatures dated within their
// own window (client.Options.WitnessMaxAge back, 5 minutes ahead): one
// from a witness whose clock is wrong would make the quorum the leader
// records useless to them, while witnesses with good clocks could have
// met it.
const maxCosignatureSkew = 5 * time.Minute

// cosignatureLine returns the signature line by v among the lines a witness
// answered, verified over the checkpoint and dated within
// maxCosignatureSkew of now.
func cosignatureLine(signed, lines []byte, v note.Verifier, now time.Time) ([]byte, error) {
	n, err := note.Open(append(bytes.Clone(signed), lines...), note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("the witness's answer carries no valid cosignature by %s: %w", v.Name(), err)
	}
	for _, s := range n.Sigs {
		if s.Name == v.Name() && s.Hash == v.KeyHash() {
			at, err := fnote.CoSigV1Timestamp(s)
			if err != nil {
				return nil, fmt.Errorf("the witness's cosignature by %s carries no time: %w", v.Name(), err)
			}
			if d := at.Sub(now); d > maxCosignatureSkew || d < -maxCosignatureSkew {
				return nil, fmt.Errorf("the witness's cosignature is dated %s, %s from this node's clock (more than %s): is its clock wrong?",
					at.UTC().Format(time.RFC3339), d.Round(time.Second), maxCosignatureSkew)
			}
			return []byte("— " + s.Name + " " + s.Base64 + "\n"), nil
		}
	}
	return nil, fmt.Errorf("the witness's answer carries no cosignature by %s", v.Name())
}
