package node

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestRemoveOthersDeletesOnlyGenerations: leftover generations go, the
// one kept stays, and names this package never makes (an operator's
// gen-1.bad, moved aside to keep) are left alone.
func TestRemoveOthersDeletesOnlyGenerations(t *testing.T) {
	d, err := newLedgerDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"gen-1", "gen-2", "gen-3", "gen-1.bad", "gen-01", "gen-", "CURRENT.tmp", "notes"} {
		if err := os.MkdirAll(filepath.Join(d.root, name), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.removeOthers(2); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(d.root)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{"CURRENT.tmp", "gen-", "gen-01", "gen-1.bad", "gen-2", "notes"}; !slices.Equal(left, want) {
		t.Errorf("left %q, want %q", left, want)
	}
}
