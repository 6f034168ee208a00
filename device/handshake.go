package device

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"math"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// This file holds the steps of the provisioning handshake (DESIGN.md §5) and
// the checks recovery shares with them.

// StorePackage implements Conn. It fails with ErrMalformed for bytes that
// are not a data package, ErrWrongIdentity for a package of other
// identities, and ErrWrongEpoch unless the package's epoch is the epoch
// counter plus one. Storing a package replaces any pending one.
func (d *Device) StorePackage(ctx context.Context, raw []byte) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := ParsePackage(raw)
	if err != nil {
		return nil, err
	}
	if !p.Identities.Equal(d.rom.ids) {
		return nil, fmt.Errorf("data package: %w: it is for %s, this device is %s", ErrWrongIdentity, p.Identities, d.rom.ids)
	}
	counter, err := d.chip.Epoch()
	if err != nil {
		return nil, fmt.Errorf("read epoch counter: %w", err)
	}
	if counter == math.MaxUint32 || p.Epoch != counter+1 {
		return nil, fmt.Errorf("data package: %w: it is for epoch %d, the device is at epoch %d and accepts only %d", ErrWrongEpoch, p.Epoch, counter, uint64(counter)+1)
	}
	backup, err := d.chip.Seal(p.Identities, p.Epoch, raw)
	if err != nil {
		return nil, fmt.Errorf("seal backup: %w", err)
	}
	next := d.mem
	next.pending = &pending{pkg: p, raw: bytes.Clone(raw)}
	if err := d.commit(next); err != nil {
		return nil, err
	}
	return backup, nil
}

// CheckBackup implements Conn. It fails with ErrNoPending without a pending
// package, with the errors of Chip.Open for a backup the chip cannot open,
// and with ErrMismatch for a backup of another package.
func (d *Device) CheckBackup(ctx context.Context, backup []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	p := d.mem.pending
	if p == nil {
		return fmt.Errorf("check backup: %w: store a data package first", ErrNoPending)
	}
	return d.checkBackupHolds(backup, p.raw, p.pkg.Epoch)
}

// checkBackupHolds opens backup with the chip and checks that it holds
// exactly the package raw of epoch.
func (d *Device) checkBackupHolds(backup, raw []byte, epoch uint32) error {
	ids, e, plain, err := d.open(backup)
	if err != nil {
		return err
	}
	if e != epoch || subtle.ConstantTimeCompare(plain, raw) != 1 {
		return fmt.Errorf("backup of epoch %d for %s: %w", e, ids, ErrMismatch)
	}
	return nil
}

// open opens backup with the chip and checks that it names the device's
// identities.
func (d *Device) open(backup []byte) (ledger.Identities, uint32, []byte, error) {
	ids, epoch, plain, err := d.chip.Open(backup)
	if err != nil {
		return nil, 0, nil, err
	}
	if !ids.Equal(d.rom.ids) {
		return nil, 0, nil, fmt.Errorf("backup: %w: it is for %s, this device is %s", ErrWrongIdentity, ids, d.rom.ids)
	}
	return ids, epoch, plain, nil
}

// StoreCertificate implements Conn. It fails with ErrNoPending without a
// pending package; ErrMalformed for bytes that are not a certificate;
// ErrWrongChip or ErrWrongIdentity for a certificate of another chip or
// other identities; ErrUntrusted for one that does not chain to the ROM
// trust at the device's current time (or at the certificate's notBefore, if
// the device's clock is behind it) or breaks the profile; and ErrMismatch
// for one that does not certify the pending package's key. Storing a
// certificate replaces any stored for the pending package.
func (d *Device) StoreCertificate(ctx context.Context, cert []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	p := d.mem.pending
	if p == nil {
		return fmt.Errorf("store certificate: %w: store a data package first", ErrNoPending)
	}
	if err := d.verifyCertificate(cert, p.pkg); err != nil {
		return err
	}
	next := d.mem
	next.pending = &pending{pkg: p.pkg, raw: p.raw, cert: bytes.Clone(cert)}
	return d.commit(next)
}

// verifyCertificate checks a device certificate against the ROM trust at the
// device's current time, its binding to the chip and identities, and that
// its key is the device key of pkg. A device clock is not trusted to be
// right, and many devices have none: one that is behind the station's
// (whose clock sets the certificate's notBefore) checks the certificate as
// of its notBefore instead of refusing it as not yet valid. Device
// certificates never expire, so a clock that is ahead needs nothing.
func (d *Device) verifyCertificate(der []byte, pkg *Package) error {
	if len(der) > ledger.MaxCertificateSize {
		return fmt.Errorf("certificate: %w: %d bytes, at most %d", ErrMalformed, len(der), ledger.MaxCertificateSize)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("certificate: %w: %v", ErrMalformed, err)
	}
	at := d.now()
	if at.Before(c.NotBefore) {
		at = c.NotBefore
	}
	cert, err := d.rom.trust.VerifyDeviceCertificate(der, d.chip.ID(), d.rom.ids, at)
	switch {
	case errors.Is(err, ledger.ErrChipIDMismatch):
		return fmt.Errorf("certificate: %w: %w", ErrWrongChip, err)
	case errors.Is(err, ledger.ErrIdentityMismatch), errors.Is(err, ledger.ErrInvalidIdentity):
		return fmt.Errorf("certificate: %w: %w", ErrWrongIdentity, err)
	case err != nil:
		return fmt.Errorf("certificate: %w: %w", ErrUntrusted, err)
	}
	key, err := pkg.PrivateKey()
	if err != nil {
		return err
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return fmt.Errorf("certificate: %w: it certifies another key than the package's device key", ErrMismatch)
	}
	return nil
}

// StoreReceipt implements Conn. It needs a pending package with its
// certificate (else ErrNoPending). The receipt must parse (else
// ErrMalformed) and verify against the ROM log key (else ErrUntrusted); its
// leaf must be an escrow entry (else ErrMalformed) for this chip
// (ErrWrongChip) and these identities (ErrWrongIdentity), of the pending
// epoch, with the stored certificate and a backup that opens to the pending
// package (else ErrMismatch, or the errors of Chip.Open). Then the pending
// package becomes the device's keys, the epoch counter advances to its
// epoch and the receipt is kept.
func (d *Device) StoreReceipt(ctx context.Context, receipt []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	p := d.mem.pending
	if p == nil {
		return fmt.Errorf("store receipt: %w: store a data package first", ErrNoPending)
	}
	if p.cert == nil {
		return fmt.Errorf("store receipt: %w: store the certificate first", ErrNoPending)
	}
	if _, err := d.checkReceipt(receipt, p.raw, p.pkg.Epoch, p.cert); err != nil {
		return err
	}
	return d.install(&installed{pkg: p.pkg, raw: p.raw, cert: p.cert, receipt: bytes.Clone(receipt)})
}

// checkReceipt verifies a receipt offline and checks that its leaf is the
// escrow entry of the package raw of epoch with certificate cert. It
// returns the verified receipt.
func (d *Device) checkReceipt(receipt, raw []byte, epoch uint32, cert []byte) (*proofs.Receipt, error) {
	r, err := proofs.ParseReceipt(receipt)
	if err != nil {
		return nil, fmt.Errorf("receipt: %w: %w", ErrMalformed, err)
	}
	if _, err := r.Verify(d.rom.log); err != nil {
		return nil, fmt.Errorf("receipt: %w: %w", ErrUntrusted, err)
	}
	if err := d.checkEscrowLeaf("receipt", r.Leaf, raw, epoch, cert); err != nil {
		return nil, err
	}
	return r, nil
}

// checkEscrowLeaf checks that leaf, which what (a receipt or a lookup
// proof) proved is in the log, is the escrow entry of the package raw of
// epoch with certificate cert: an escrow entry (else ErrMalformed) for this
// chip (ErrWrongChip) and these identities (ErrWrongIdentity), of epoch,
// holding exactly cert and a backup that opens to raw (else ErrMismatch, or
// the errors of Chip.Open).
func (d *Device) checkEscrowLeaf(what string, leaf, raw []byte, epoch uint32, cert []byte) error {
	e, err := ledger.ParseEscrowEntry(leaf)
	if err != nil {
		return fmt.Errorf("%s leaf: %w: %w", what, ErrMalformed, err)
	}
	chip := d.chip.ID()
	switch {
	case !e.ChipID.Equal(chip):
		return fmt.Errorf("%s: %w: its entry is for chip %s, this is chip %s", what, ErrWrongChip, e.ChipID, chip)
	case !e.Identities.Equal(d.rom.ids):
		return fmt.Errorf("%s: %w: its entry is for %s, this device is %s", what, ErrWrongIdentity, e.Identities, d.rom.ids)
	case e.Epoch != epoch:
		return fmt.Errorf("%s: %w: its entry is for epoch %d, the package for %d", what, ErrMismatch, e.Epoch, epoch)
	case !bytes.Equal(e.Certificate, cert):
		return fmt.Errorf("%s: %w: its entry holds another certificate", what, ErrMismatch)
	}
	if err := d.checkBackupHolds(e.Backup, raw, epoch); err != nil {
		return fmt.Errorf("%s: the backup of its entry: %w", what, err)
	}
	return nil
}

// install makes keys the device's keys, clears any pending package and
// advances the epoch counter to the keys' epoch. The counter goes first: if
// the state cannot be saved after it, the operation can be retried, since
// the epoch checks accept keys of the counter's own epoch.
func (d *Device) install(keys *installed) error {
	if err := d.chip.AdvanceEpoch(keys.pkg.Epoch); err != nil {
		return fmt.Errorf("advance epoch counter: %w", err)
	}
	return d.commit(memory{live: keys})
}
