package chipledgerv1_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// checkEnv enables TestGeneratedCodeUpToDate. It is off by default because the
// check runs `go tool buf`, and building buf from source takes 1-2 minutes, so
// a plain `go test ./...` must never do it.
const checkEnv = "CHIPLEDGER_CHECK_PROTO"

// TestGeneratedCodeUpToDate regenerates the Go code from the .proto files into
// a temporary directory and compares it with the committed files. It also runs
// buf lint and the breaking-change check against proto/baseline.binpb.
//
//	CHIPLEDGER_CHECK_PROTO=1 go test ./proto/...
//
// To fix a failure, run proto/generate.sh (and, for an accepted API change,
// `go tool buf build -o proto/baseline.binpb`) and commit the result.
func TestGeneratedCodeUpToDate(t *testing.T) {
	if os.Getenv(checkEnv) != "1" {
		t.Skipf("set %s=1 to check that the generated code is up to date (builds buf)", checkEnv)
	}
	root := repoRoot(t)

	t.Run("lint", func(t *testing.T) {
		runBuf(t, root, "lint")
	})

	t.Run("breaking", func(t *testing.T) {
		runBuf(t, root, "breaking", "--against", filepath.Join("proto", "baseline.binpb"))
	})

	t.Run("generate", func(t *testing.T) {
		// -o prepends a base directory to every plugin's out, so the fresh
		// code lands in tmp/proto/... and the repository is left untouched.
		tmp := t.TempDir()
		runBuf(t, root, "generate", "-o", tmp)

		fresh := generatedFiles(t, filepath.Join(tmp, "proto"))
		committed := generatedFiles(t, filepath.Join(root, "proto"))
		if len(fresh) == 0 {
			t.Fatal("buf generate produced no files")
		}
		for rel, want := range fresh {
			got, ok := committed[rel]
			switch {
			case !ok:
				t.Errorf("proto/%s is missing; run proto/generate.sh", rel)
			case !bytes.Equal(got, want):
				t.Errorf("proto/%s is out of date; run proto/generate.sh", rel)
			}
		}
		for rel := range committed {
			if _, ok := fresh[rel]; !ok {
				t.Errorf("proto/%s is not generated from any .proto file; delete it", rel)
			}
		}
	})
}

// repoRoot returns the directory of the main module's go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("not inside a Go module")
	}
	return filepath.Dir(gomod)
}

func runBuf(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"tool", "buf"}, args...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go tool buf %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// generatedFiles maps the path (relative to dir, slash-separated) of every
// generated Go file under dir to its contents.
func generatedFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := d.Name()
		if !strings.HasSuffix(name, ".pb.go") && !strings.HasSuffix(name, ".connect.go") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = data
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
