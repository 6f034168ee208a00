package client_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/chipledger/chipledger/client"
	"github.com/chipledger/chipledger/ledger"
)

// benchLogSize is the number of leaves BenchmarkAudit audits per run,
// without the index roots (one per largeLogBatch leaves).
const benchLogSize = 20_000

// BenchmarkAudit reports the entries the auditor re-validates per second:
//
//   - node: a whole audit round from a fresh state against a fake node in
//     this process (fetching pages, range proofs, and the fake node's own
//     work all share the CPUs with the checks);
//   - check: AuditState.Check alone over the same leaves, on every CPU and
//     on one, the ceiling set by two ECDSA verifications per entry.
//
// Both include replaying the chip index and checking every index root.
func BenchmarkAudit(b *testing.B) {
	m := newLeafMaker(b)
	signer := newSigner(b)
	leaves := largeLog(b, m, benchLogSize).leaves
	f, addr := startFakeNode(b, signer, leaves)
	vkey, trust := signer.VerifierKey(), m.pki.Trust

	b.Run("node", func(b *testing.B) {
		var entries uint64
		for b.Loop() {
			state := newState(b, vkey, trust)
			r, err := newAuditor(b, state, client.AuditOptions{}, addr).Audit(context.Background())
			if err != nil || len(r.Findings) > 0 {
				b.Fatalf("audit: %v, %d findings", err, len(r.Findings))
			}
			entries += r.To - r.From
		}
		b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
	})
	note := signedNote(b, f)
	for _, workers := range []int{0, 1} {
		b.Run(fmt.Sprintf("check/workers=%d", workers), func(b *testing.B) {
			var entries int
			for b.Loop() {
				state := newState(b, vkey, trust)
				if err := state.Extend(note, nil); err != nil {
					b.Fatal(err)
				}
				fs, err := state.Check(leaves, client.CheckOptions{Workers: workers})
				if err != nil || len(fs) > 0 {
					b.Fatalf("check: %v, %d findings", err, len(fs))
				}
				entries += len(leaves)
			}
			b.ReportMetric(float64(entries)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// BenchmarkAuditStateSave measures saving the state of a log with many
// chips, the part of a save that grows with the log.
func BenchmarkAuditStateSave(b *testing.B) {
	m := newLeafMaker(b)
	signer := newSigner(b)
	leaves := largeLog(b, m, benchLogSize).leaves
	f, _ := startFakeNode(b, signer, leaves)
	state := auditedState(b, signer.VerifierKey(), m.pki.Trust, signedNote(b, f), leaves)
	path := filepath.Join(b.TempDir(), "audit.state")
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			if _, err := state.MarshalBinary(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		enc, err := state.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := client.ParseAuditState(enc, signer.VerifierKey(), m.pki.Trust); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(enc))/float64(state.Chips()), "bytes/chip")
	})
	b.Run("write", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			if err := state.WriteFile(path); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N)/float64(state.Chips())*1e3, "ns/chip")
	})
}

// auditedState returns a state that has checked leaves, the whole log that
// note is the checkpoint of.
func auditedState(b testing.TB, vkey string, trust *ledger.Trust, note []byte, leaves [][]byte) *client.AuditState {
	b.Helper()
	state := newState(b, vkey, trust)
	if err := state.Extend(note, nil); err != nil {
		b.Fatal(err)
	}
	if _, err := state.Check(leaves, client.CheckOptions{}); err != nil {
		b.Fatal(err)
	}
	return state
}
