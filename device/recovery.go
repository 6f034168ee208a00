package device

import (
	"bytes"
	"context"
	"fmt"

	"github.com/chipledger/chipledger/proofs"
)

// RestoreBackup implements Conn (recovery, DESIGN.md §5). The chip opens
// the backup (ErrWrongChip, ErrDecrypt, ErrMalformed), which must be for
// the device's identities (ErrWrongIdentity) and not older than the epoch
// counter (ErrRollback; the same epoch is allowed, to repair a wiped
// device). The certificate is verified as by StoreCertificate against the
// backup's package.
//
// The lookup proof is required (without one, ErrMalformed): the device
// checks, with the log key in its ROM and for its own chip ID, that the
// chip index of a signed checkpoint names the backup's entry as the chip's
// latest (DESIGN.md §3.7). A proof that does not parse is ErrMalformed, one
// that does not verify ErrUntrusted; a chip index that names a newer epoch
// than the backup's is ErrRollback (a server hid the newest entry or
// served an older one), and one that holds no entry for the chip, names an
// older epoch, or whose entry is not this backup's (another chip,
// identities, certificate or package) is ErrMismatch, or ErrWrongChip,
// ErrWrongIdentity or the errors of Chip.Open as checkEscrowLeaf reports.
// The receipt, if not nil, is verified as by StoreReceipt and must be for
// that same leaf (else ErrMismatch).
//
// Then the package becomes the device's keys, replacing any keys and
// pending package, and the epoch counter rises to its epoch if it was
// lower. The device keeps the receipt, not the lookup proof.
func (d *Device) RestoreBackup(ctx context.Context, backup, cert, receipt, lookupProof []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(lookupProof) == 0 {
		return fmt.Errorf("restore: %w: no lookup proof; the device restores only a backup the chip index proves is the chip's latest", ErrMalformed)
	}
	_, epoch, raw, err := d.open(backup)
	if err != nil {
		return err
	}
	counter, err := d.chip.Epoch()
	if err != nil {
		return fmt.Errorf("read epoch counter: %w", err)
	}
	if epoch < counter {
		return fmt.Errorf("restore: %w: the backup is of epoch %d, the device has installed epoch %d; fetch the chip's latest entry", ErrRollback, epoch, counter)
	}
	p, err := ParsePackage(raw)
	if err != nil {
		return fmt.Errorf("restore: the backup's %w", err)
	}
	if !p.Identities.Equal(d.rom.ids) || p.Epoch != epoch {
		return fmt.Errorf("restore: %w: the backup's package is for %s epoch %d, its header for %s epoch %d", ErrMalformed, p.Identities, p.Epoch, d.rom.ids, epoch)
	}
	if err := d.verifyCertificate(cert, p); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	latest, err := d.checkLookup(lookupProof, raw, epoch, cert)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if receipt != nil {
		r, err := d.checkReceipt(receipt, raw, epoch, cert)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if r.Index != latest.LeafIndex || proofs.LeafHash(r.Leaf) != latest.LeafHash {
			return fmt.Errorf("restore: receipt: %w: it is for leaf %d, the chip index names leaf %d as the chip's latest", ErrMismatch, r.Index, latest.LeafIndex)
		}
	}
	return d.install(&installed{pkg: p, raw: raw, cert: bytes.Clone(cert), receipt: bytes.Clone(receipt)})
}

// checkLookup verifies a lookup proof offline for the device's chip and
// checks that the entry the chip index names as the chip's latest is the
// escrow entry of the package raw of epoch with certificate cert. It
// returns the chip's index value.
func (d *Device) checkLookup(lookupProof, raw []byte, epoch uint32, cert []byte) (*proofs.IndexValue, error) {
	lp, err := proofs.ParseLookupProof(lookupProof)
	if err != nil {
		return nil, fmt.Errorf("lookup proof: %w: %w", ErrMalformed, err)
	}
	chip := d.chip.ID()
	res, err := lp.Verify(d.rom.log, chip)
	if err != nil {
		return nil, fmt.Errorf("lookup proof: %w: %w", ErrUntrusted, err)
	}
	size := res.Checkpoint.Size
	switch v := res.Value; {
	case !res.Present:
		return nil, fmt.Errorf("lookup proof: %w: the chip index at log size %d holds no entry for chip %s", ErrMismatch, size, chip)
	case v.Epoch > epoch:
		return nil, fmt.Errorf("lookup proof: %w: the backup is of epoch %d, the chip index at log size %d names epoch %d (leaf %d) as the chip's latest; fetch that entry", ErrRollback, epoch, size, v.Epoch, v.LeafIndex)
	case v.Epoch < epoch:
		return nil, fmt.Errorf("lookup proof: %w: the backup is of epoch %d, the chip index at log size %d names only epoch %d as the chip's latest", ErrMismatch, epoch, size, v.Epoch)
	}
	// Verify checked that res.Entry hashes to the index value's leaf hash
	// and is included at its leaf index.
	if err := d.checkEscrowLeaf("lookup proof", res.Entry, raw, epoch, cert); err != nil {
		return nil, err
	}
	v := res.Value
	return &v, nil
}

// Wipe implements Conn.
func (d *Device) Wipe(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.commit(memory{})
}
