package node

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/chipledger/chipledger/internal/testpki"
	"github.com/chipledger/chipledger/ledger"
)

// copyTree copies dir src to dst, as a crash leaves the files (the page
// cache's view: everything written, synced or not).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o700)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		o, err := os.Create(out)
		if err != nil {
			return err
		}
		defer o.Close()
		_, err = io.Copy(o, in)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// crashEntries builds a Raft log exercising every command kind.
func crashEntries(t *testing.T) []*raft.Log {
	t.Helper()
	pki, err := sharedPKI()
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(n uint64, epoch uint32) []byte {
		l, err := pki.EscrowLeaf(testpki.ChipID(n), epoch, 0)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	member := func(id, addr string) []byte {
		d, err := encodeMember(id, addr)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	var cmds [][]byte
	cmds = append(cmds, encodeGenesis(), batchCommand(t, pki.StationLeaf()), member("n1", "a1"))
	for i := uint64(0); i < 12; i++ {
		cmds = append(cmds, batchCommand(t, leaf(100+2*i, 1), leaf(101+2*i, 1)))
		if i%3 == 0 {
			cmds = append(cmds, member("n2", "a"+string(rune('a'+i))))
		}
		if i%4 == 1 {
			cmds = append(cmds, batchCommand(t, leaf(100+2*i, 2), leaf(100+2*i, 1))) // a re-provisioning and a duplicate
		}
	}
	var entries []*raft.Log
	for i, c := range cmds {
		entries = append(entries, commandEntry(uint64(i+1), c))
	}
	return entries
}

// TestCrashImagesReplayToTheSameLedger takes a copy of a node's ledger
// directory at every write the store makes and after every applied entry,
// as a crash would leave it, restarts a state machine on each copy and
// replays the Raft log into it, as Raft does at start-up: every copy must
// end with exactly the ledger of the node that never crashed (no entry lost,
// none appended twice).
func TestCrashImagesReplayToTheSameLedger(t *testing.T) {
	entries := crashEntries(t)
	signer, _ := testLogKey(t)

	ref, err := newFSM(t.TempDir(), signer, true, nil, testLogger(t), newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer ref.close()
	for _, e := range entries {
		if r, ok := ref.Apply(e).(error); ok && r != nil {
			t.Fatalf("reference apply %d: %v", e.Index, r)
		}
	}
	want := ref.checkpoint()
	wantMD, err := ref.store.Metadata()
	if err != nil {
		t.Fatal(err)
	}

	data := t.TempDir()
	images := t.TempDir()
	var n int
	snap := func(stage string) {
		dst := filepath.Join(images, "img", string(rune('A'+n/26))+string(rune('a'+n%26))+"-"+stage)
		n++
		copyTree(t, filepath.Join(data, "ledger"), filepath.Join(dst, "ledger"))
	}
	f, err := newFSM(data, signer, false, func(op string) error { snap(op); return nil }, testLogger(t), newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	var snapBytes []byte
	var snapIndex uint64
	firstAfterSnap := ""
	for i, e := range entries {
		f.Apply(e)
		snap("applied")
		if i == len(entries)/2 {
			snapBytes, snapIndex = snapshotOf(t, f), e.Index
			firstAfterSnap = string(rune('A'+n/26)) + string(rune('a'+n%26))
		}
		if i%3 == 2 {
			if err := f.flushDue(time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.close()
	snap("closed")

	dirs, _ := os.ReadDir(filepath.Join(images, "img"))
	for _, d := range dirs {
		dir := filepath.Join(images, "img", d.Name())
		g, err := newFSM(dir, signer, true, nil, testLogger(t), newMetrics())
		if err != nil {
			t.Errorf("%s: reopen: %v", d.Name(), err)
			continue
		}
		g.logs = inmemLog(t, entries...)
		replay := entries
		if d.Name() >= firstAfterSnap {
			// Raft took a snapshot and compacted its log: it restores the
			// snapshot, then applies what follows.
			if err := g.Restore(io.NopCloser(bytes.NewReader(snapBytes))); err != nil {
				t.Errorf("%s: restore: %v", d.Name(), err)
			}
			replay = entries[snapIndex:]
			g.logs = inmemLog(t, replay...)
		}
		g.noteStarted(0)
		for _, e := range replay {
			if r, ok := g.Apply(e).(error); ok && r != nil {
				t.Errorf("%s: replay %d: %v", d.Name(), e.Index, r)
			}
		}
		got := g.checkpoint()
		if got.Size != want.Size || got.Root != want.Root {
			t.Errorf("%s: after replay the ledger is size %d root %x, the node that never crashed has size %d root %x", d.Name(), got.Size, got.Root[:4], want.Size, want.Root[:4])
		}
		md, err := g.store.Metadata()
		if err != nil || len(md) != len(wantMD) {
			t.Errorf("%s: metadata %v (%v), want %v", d.Name(), md, err, wantMD)
		}
		for k, v := range wantMD {
			if string(md[k]) != string(v) {
				t.Errorf("%s: metadata %q = %q, want %q", d.Name(), k, md[k], v)
			}
		}
		for c := uint64(100); c < 125; c++ {
			a, b := ref.store.ChipEntries(testpki.ChipID(c)), g.store.ChipEntries(testpki.ChipID(c))
			if len(a) != len(b) {
				t.Errorf("%s: chip %d has entries %v, want %v", d.Name(), c, b, a)
				continue
			}
			for i := range a {
				if a[i] != b[i] {
					t.Errorf("%s: chip %d has entries %v, want %v", d.Name(), c, b, a)
				}
			}
		}
		if _, err := g.store.LookupChip(testpki.ChipID(100)); err != nil {
			t.Errorf("%s: lookup: %v", d.Name(), err)
		}
		g.close()
		lp, _ := LedgerPath(dir)
		if rep, err := ledger.VerifyStore(lp, nil); err != nil || !rep.OK() {
			t.Errorf("%s: verify: %v %+v", d.Name(), err, rep)
		}
	}
	if len(dirs) < 50 {
		t.Errorf("only %d crash images: the store's write hooks no longer fire at every stage", len(dirs))
	}
}
