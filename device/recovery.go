package device

import (
	"bytes"
	"context"
	"fmt"
)

// RestoreBackup implements Conn (recovery, DESIGN.md §5). The chip opens
// the backup (ErrWrongChip, ErrDecrypt, ErrMalformed), which must be for
// the device's identities (ErrWrongIdentity) and not older than the epoch
// counter (ErrRollback; the same epoch is allowed, to repair a wiped
// device). The certificate is verified as by StoreCertificate against the
// backup's package, and the receipt, if not nil, as by StoreReceipt. Then
// the package becomes the device's keys, replacing any keys and pending
// package, and the epoch counter rises to its epoch if it was lower.
func (d *Device) RestoreBackup(ctx context.Context, backup, cert, receipt []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
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
	if receipt != nil {
		if err := d.checkReceipt(receipt, raw, epoch, cert); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	return d.install(&installed{pkg: p, raw: raw, cert: bytes.Clone(cert), receipt: bytes.Clone(receipt)})
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
