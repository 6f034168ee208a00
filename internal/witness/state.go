package witness

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/chipledger/chipledger/internal/atomicfile"
	"github.com/chipledger/chipledger/proofs"
)

// A tree is a log's tree as a checkpoint states it: its size and RFC 6962
// root hash.
type tree struct {
	size uint64
	root [32]byte
}

// emptyTree is the tree a witness holds for a log it never cosigned: the
// tlog-witness protocol then expects an old size of 0.
func emptyTree() tree { return tree{size: 0, root: proofs.EmptyRoot()} }

// stateFile returns the path of the file in dir that holds the latest tree
// cosigned for origin. It is named by the hex SHA-256 of the origin, since
// an origin may hold '/' and other characters a file name cannot; the file
// itself names the origin.
func stateFile(dir, origin string) string {
	sum := sha256.Sum256([]byte(origin))
	return filepath.Join(dir, hex.EncodeToString(sum[:])+".checkpoint")
}

// loadState reads the latest tree cosigned for origin from path, which
// holds the body of that checkpoint (c2sp.org/tlog-checkpoint, without
// signatures). It returns ok false if the file does not exist. A file that
// does not parse, or names another origin, is an error: starting over from
// the empty tree would let the log roll the witness back.
func loadState(path, origin string) (t tree, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return tree{}, false, nil
	}
	if err != nil {
		return tree{}, false, fmt.Errorf("read state of %q: %w", origin, err)
	}
	c, err := proofs.ParseCheckpoint(b)
	if err != nil {
		return tree{}, false, fmt.Errorf("state file %s of %q: %w", path, origin, err)
	}
	if c.Origin != origin {
		return tree{}, false, fmt.Errorf("state file %s of %q names origin %q", path, origin, c.Origin)
	}
	return tree{size: c.Size, root: c.Hash}, true, nil
}

// storeState durably replaces the latest tree cosigned for origin: when it
// returns nil, the file and its directory entry are synced.
func storeState(path, origin string, t tree) error {
	body := proofs.Checkpoint{Origin: origin, Size: t.size, Hash: t.root}.Marshal()
	if err := atomicfile.Replace(path, body, 0o600); err != nil {
		return fmt.Errorf("store state of %q at size %d: %w", origin, t.size, err)
	}
	return nil
}
