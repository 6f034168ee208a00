package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/chipledger/chipledger/internal/atomicfile"
)

// ledgerDir holds the ledger store of a node in generations,
// <data>/ledger/gen-<N>, and a file CURRENT naming the live one. Restoring a
// snapshot builds the next generation beside the live one and then replaces
// CURRENT atomically (write, sync, rename, sync the directory), so a crash
// at any point leaves either the old or the new store, never a mix.
type ledgerDir struct {
	root string
}

const currentFile = "CURRENT"

func newLedgerDir(dataDir string) (*ledgerDir, error) {
	root := filepath.Join(dataDir, "ledger")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("create ledger directory: %w", err)
	}
	return &ledgerDir{root: root}, nil
}

// current returns the live generation, creating generation 1 on first use.
func (d *ledgerDir) current() (gen int, path string, err error) {
	b, err := os.ReadFile(filepath.Join(d.root, currentFile))
	if errors.Is(err, os.ErrNotExist) {
		if err := d.setCurrent(1); err != nil {
			return 0, "", err
		}
		return 1, d.path(1), nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("read %s: %w", currentFile, err)
	}
	gen, err = strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(string(b)), "gen-"))
	if err != nil || gen < 1 {
		return 0, "", fmt.Errorf("%s in %s is corrupt: %q", currentFile, d.root, b)
	}
	return gen, d.path(gen), nil
}

func (d *ledgerDir) path(gen int) string {
	return filepath.Join(d.root, fmt.Sprintf("gen-%d", gen))
}

// setCurrent makes gen the live generation.
func (d *ledgerDir) setCurrent(gen int) error {
	err := atomicfile.Replace(filepath.Join(d.root, currentFile), fmt.Appendf(nil, "gen-%d\n", gen), 0o600)
	if err != nil {
		return fmt.Errorf("switch ledger to generation %d: %w", gen, err)
	}
	return nil
}

// removeOthers deletes every generation but keep (leftovers of restores that
// finished or crashed). Only names this package makes, gen-<N>, are
// generations: an operator's "gen-1.bad", moved aside to keep, is not.
func (d *ledgerDir) removeOthers(keep int) error {
	entries, err := os.ReadDir(d.root)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		n, _ := strings.CutPrefix(e.Name(), "gen-")
		gen, err := strconv.Atoi(n)
		if err != nil || gen < 0 || gen == keep || d.path(gen) != filepath.Join(d.root, e.Name()) {
			continue
		}
		errs = append(errs, os.RemoveAll(filepath.Join(d.root, e.Name())))
	}
	return errors.Join(errs...)
}

// LedgerPath returns the directory of the live ledger store under a node's
// data directory, for offline tools such as ledger.VerifyStore.
func LedgerPath(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "ledger", currentFile))
	if err != nil {
		return "", fmt.Errorf("%s holds no ledger (no ledger/%s): %w", dataDir, currentFile, err)
	}
	gen, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(string(b)), "gen-"))
	if err != nil || gen < 1 {
		return "", fmt.Errorf("ledger/%s in %s is corrupt: %q", currentFile, dataDir, b)
	}
	return (&ledgerDir{root: filepath.Join(dataDir, "ledger")}).path(gen), nil
}
