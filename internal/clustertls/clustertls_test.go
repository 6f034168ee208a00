package clustertls

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNamesCannotLeaveTheDirectory: a node ID or admin name becomes a file
// name in the CA directory; one that would write elsewhere, or hide the
// file, is refused before anything is written.
func TestNamesCannotLeaveTheDirectory(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "tls")
	if err := InitCA(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "../outside", "a/b", ".hidden", strings.Repeat("n", 65), "n 1"} {
		if err := IssueNode(dir, name, []string{"127.0.0.1"}); err == nil {
			t.Errorf("node ID %q was accepted", name)
		}
		if err := IssueAdmin(dir, name); err == nil {
			t.Errorf("admin name %q was accepted", name)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "outside.pem")); err == nil {
		t.Fatal("a node certificate was written outside the directory")
	}
	for _, name := range []string{"n1", "node-2.example_a"} {
		if err := IssueNode(dir, name, []string{"127.0.0.1"}); err != nil {
			t.Errorf("node ID %q: %v", name, err)
		}
	}
}
