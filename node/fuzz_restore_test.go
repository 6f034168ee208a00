package node

import (
	"bytes"
	"io"
	"maps"
	"os"
	"strings"
	"testing"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
)

// newFuzzFSM is newTestFSM for any testing.TB.
func newFuzzFSM(tb testing.TB) *fsm {
	tb.Helper()
	signer, _ := testLogKey(tb)
	f, err := newFSM(tb.TempDir(), signer, true, nil, testLogger(tb), newMetrics())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.close() })
	return f
}

// fuzzSnapshot returns the snapshot of a state machine that applied the
// genesis, the test station and a batch of two escrow leaves, and the
// length of its header.
func fuzzSnapshot(tb testing.TB) (snap []byte, hdrLen int) {
	tb.Helper()
	pki, err := sharedPKI()
	if err != nil {
		tb.Fatal(err)
	}
	a := newFuzzFSM(tb)
	member, err := encodeMember("n1", "127.0.0.1:8080")
	if err != nil {
		tb.Fatal(err)
	}
	station, err := encodeBatch([][]byte{pki.StationLeaf()})
	if err != nil {
		tb.Fatal(err)
	}
	var leaves [][]byte
	for i := range 2 {
		l, err := pki.EscrowLeaf(testpki.ChipID(uint64(100+i)), 1, 0)
		if err != nil {
			tb.Fatal(err)
		}
		leaves = append(leaves, l)
	}
	escrow, err := encodeBatch(leaves)
	if err != nil {
		tb.Fatal(err)
	}
	for i, cmd := range [][]byte{encodeGenesis(), member, station, escrow} {
		if res, ok := a.Apply(commandEntry(uint64(i+1), cmd)).(error); ok {
			tb.Fatal(res)
		}
	}
	s, err := a.Snapshot()
	if err != nil {
		tb.Fatal(err)
	}
	var sink memSink
	if err := s.Persist(&sink); err != nil {
		tb.Fatal(err)
	}
	md, err := a.store.Metadata()
	if err != nil {
		tb.Fatal(err)
	}
	hdr := snapshotHeader(a.store.State(), 4, md)
	if !bytes.HasPrefix(sink.Bytes(), hdr) || a.store.Size() < 5 {
		tb.Fatalf("snapshot of size %d does not start with its header", a.store.Size())
	}
	return sink.Bytes(), len(hdr)
}

// checkRestore restores stream into a state machine that holds only the
// genesis (a follower far behind, as a leader sees it) and checks the
// outcome: on error the state machine still serves what it served before
// (checkpoint, store, generation, marker), with no other generation left on
// disk; on success it serves exactly the snapshot's size and root, with the
// snapshot's metadata and position, unless it already held that tree
// (size 0 or the genesis), which leaves it as it was.
func checkRestore(t *testing.T, stream []byte) {
	f := newFuzzFSM(t)
	if res, ok := f.Apply(commandEntry(1, encodeGenesis())).(error); ok {
		t.Fatal(res)
	}
	f.noteStarted(1)
	before, gen, marker := *f.checkpoint(), f.gen, f.marker
	size, root, through, md, herr := readSnapshotHeader(bytes.NewReader(stream))

	err := f.Restore(io.NopCloser(bytes.NewReader(stream)))

	cp, st := f.checkpoint(), f.store.State()
	if st.Size != cp.Size || st.Root != cp.Root {
		t.Fatalf("Restore (err %v): the store holds size %d root %x, the checkpoint says %d %x", err, st.Size, st.Root[:4], cp.Size, cp.Root[:4])
	}
	if f.restoredLive.Load() != (err == nil) {
		t.Fatalf("Restore returned %v, restoredLive is %t", err, f.restoredLive.Load())
	}
	if err != nil {
		if cp.Size != before.Size || cp.Root != before.Root || f.gen != gen || f.marker != marker {
			t.Fatalf("a failed Restore (%v) moved the state machine from size %d root %x gen %d marker %d to size %d root %x gen %d marker %d",
				err, before.Size, before.Root[:4], gen, marker, cp.Size, cp.Root[:4], f.gen, f.marker)
		}
		entries, rerr := os.ReadDir(f.dir.root)
		if rerr != nil {
			t.Fatal(rerr)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "gen-") && e.Name() != "gen-1" {
				t.Fatalf("a failed Restore (%v) left %s behind", err, e.Name())
			}
		}
		return
	}
	if herr != nil {
		t.Fatalf("Restore accepted a stream whose header does not read: %v", herr)
	}
	if size <= before.Size {
		have, rerr := f.store.RootAt(size)
		if rerr != nil || have != root || cp.Size != before.Size || cp.Root != before.Root {
			t.Fatalf("Restore of a snapshot of size %d root %x that the store holds: checkpoint %d %x (root there %x, %v)", size, root[:4], cp.Size, cp.Root[:4], have[:4], rerr)
		}
		return
	}
	if cp.Size != size || cp.Root != root || len(cp.Signed) == 0 {
		t.Fatalf("restored a snapshot of size %d root %x, the checkpoint says %d %x", size, root[:4], cp.Size, cp.Root[:4])
	}
	if f.marker != through {
		t.Fatalf("restored a snapshot through %d, the marker is %d", through, f.marker)
	}
	got, merr := f.store.Metadata()
	if merr != nil || !maps.EqualFunc(got, md, bytes.Equal) {
		t.Fatalf("restored metadata %q (%v), the snapshot's is %q", got, merr, md)
	}
}

// FuzzRestore streams a genuine snapshot header followed by an arbitrary
// body to a follower's state machine, as a leader does (node/fsm.go
// Restore and rebuild): it must never panic, and the follower ends up
// either exactly at the snapshot's size and root, or, refusing it, exactly
// where it was (see checkRestore).
func FuzzRestore(f *testing.F) {
	snap, n := fuzzSnapshot(f)
	hdr, body := snap[:n], snap[n:]
	f.Add(body)
	f.Add(body[:len(body)-1])
	f.Add(body[:len(body)/2])
	f.Add(append(bytes.Clone(body), 0, 0))
	flipped := bytes.Clone(body)
	flipped[len(flipped)-1] ^= 1
	f.Add(flipped)
	f.Add([]byte{})
	f.Add([]byte{0, 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		checkRestore(t, append(bytes.Clone(hdr), body...))
	})
}

// FuzzRestoreStream is FuzzRestore with the whole stream fuzzed, header
// included ("CLS2" and the older "CLS1").
func FuzzRestoreStream(f *testing.F) {
	snap, n := fuzzSnapshot(f)
	f.Add(snap)
	f.Add(append(v1SnapshotHeader(snap[:n]), snap[n:]...))
	f.Add(snap[:n])
	f.Add(snapshotHeader(ledger.TreeState{}, 0, nil))
	f.Add(snapshotHeader(ledger.TreeState{Size: 1}, 1, map[string][]byte{"member/n1": nil}))
	f.Add([]byte(snapshotMagic))
	f.Fuzz(func(t *testing.T, stream []byte) {
		checkRestore(t, stream)
	})
}
