package device

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// A Device is the firmware of a device (DESIGN.md §1, §5): a Chip; a ROM
// holding the device's identities, the manufacturer trust and the log's
// verifier key, set at manufacture and never changed; and writable memory
// holding the installed keys (a data package) with their certificate and
// receipt, and the package of a provisioning in progress.
//
// Its methods implement Conn and are the protocol a station drives. Every
// operation is checked against the ROM and the chip alone, with no network,
// and is serialized with the others. A Device with a state file rewrites it
// atomically after every change, so a crash leaves either the state before
// an operation or the state after it.
type Device struct {
	mu   sync.Mutex
	chip Chip
	rom  rom
	mem  memory
	path string // the state file; "" keeps the device in memory
	now  func() time.Time
}

// rom is the read-only memory of a device.
type rom struct {
	ids      ledger.Identities
	trust    *ledger.Trust
	trustPEM []byte
	logKey   string
	log      *proofs.LogVerifier
}

// memory is the writable memory of a device. Its values are never modified
// in place: an operation builds the next memory and commit swaps it in.
type memory struct {
	live    *installed // nil without keys
	pending *pending   // nil when no provisioning is in progress
}

// installed is a package the device uses as its keys.
type installed struct {
	pkg     *Package
	raw     []byte // the package's binary form
	cert    []byte
	receipt []byte // nil if the keys were restored without one
}

// pending is a package being provisioned.
type pending struct {
	pkg  *Package
	raw  []byte
	cert []byte // nil until StoreCertificate
}

// ManufactureOptions configure Manufacture.
type ManufactureOptions struct {
	// Identities are burned into the device; it accepts packages,
	// backups and certificates only for exactly these (1 to 4).
	Identities ledger.Identities
	// Trust is the manufacturer trust (roots and device CAs) the device
	// verifies certificates against. Required.
	Trust *ledger.Trust
	// LogVerifierKey is the log's note verifier key, which receipts must
	// verify against. Required.
	LogVerifierKey string
	// StatePath, if set, is the state file the device is kept in; it must
	// not exist yet. Empty keeps the device in memory only.
	StatePath string
	// Chip is the device's chip; nil manufactures a new SoftChip.
	Chip Chip
	// Rand is the random source of a new SoftChip (crypto/rand if nil).
	Rand io.Reader
	// Now is the device's clock, for certificate checks (time.Now if nil).
	Now func() time.Time
}

// LoadOptions configure Load.
type LoadOptions struct {
	// Chip is the device's chip, for a state file made with a chip other
	// than a SoftChip; nil uses the SoftChip stored in the state file.
	Chip Chip
	// Rand is the random source of the stored SoftChip (crypto/rand if
	// nil).
	Rand io.Reader
	// Now is the device's clock (time.Now if nil).
	Now func() time.Time
}

// Manufacture makes a new device with empty writable memory and, if
// opts.StatePath is set, writes its state file (mode 0600), refusing to
// replace an existing file.
func Manufacture(opts ManufactureOptions) (*Device, error) {
	r, err := newROM(opts.Identities, opts.Trust, opts.LogVerifierKey)
	if err != nil {
		return nil, err
	}
	chip := opts.Chip
	if chip == nil {
		if chip, err = NewSoftChip(opts.Rand); err != nil {
			return nil, err
		}
	}
	d := &Device{chip: chip, rom: r, path: opts.StatePath, now: clock(opts.Now)}
	if d.path != "" {
		if err := d.writeState(d.mem, true); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func newROM(ids ledger.Identities, trust *ledger.Trust, logKey string) (rom, error) {
	if err := ids.Validate(); err != nil {
		return rom{}, fmt.Errorf("device identities: %w", err)
	}
	if trust == nil {
		return rom{}, errors.New("device: no manufacturer trust given")
	}
	if err := trust.Err(); err != nil {
		return rom{}, fmt.Errorf("device trust: %w", err)
	}
	log, err := proofs.NewLogVerifier(logKey)
	if err != nil {
		return rom{}, fmt.Errorf("device log key: %w", err)
	}
	return rom{
		ids:      append(ledger.Identities(nil), ids...),
		trust:    trust,
		trustPEM: trust.PEM(),
		logKey:   logKey,
		log:      log,
	}, nil
}

func clock(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}

// ChipInfo implements Conn.
func (d *Device) ChipInfo(ctx context.Context) (*Info, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return d.info()
}

func (d *Device) info() (*Info, error) {
	epoch, err := d.chip.Epoch()
	if err != nil {
		return nil, fmt.Errorf("read epoch counter: %w", err)
	}
	in := &Info{
		ChipID:     d.chip.ID(),
		Identities: append(ledger.Identities(nil), d.rom.ids...),
		Epoch:      epoch,
		HasKeys:    d.mem.live != nil,
		HasReceipt: d.mem.live != nil && d.mem.live.receipt != nil,
	}
	if p := d.mem.pending; p != nil {
		in.PendingEpoch, in.PendingCertified = p.pkg.Epoch, p.cert != nil
	}
	return in, nil
}

// Status implements Conn.
func (d *Device) Status(ctx context.Context) (*Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	in, err := d.info()
	if err != nil {
		return nil, err
	}
	st := &Status{Info: *in, LogVerifierKey: d.rom.logKey, Trust: bytes.Clone(d.rom.trustPEM)}
	if l := d.mem.live; l != nil {
		key, err := l.pkg.PrivateKey()
		if err != nil {
			return nil, err
		}
		spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("device public key: %w", err)
		}
		st.Keys = &KeySummary{
			Epoch:            l.pkg.Epoch,
			MasterKeyVersion: l.pkg.MasterKeyVersion,
			KeyOrigin:        l.pkg.KeyOrigin,
			DevicePublicKey:  spki,
			ChannelKeyCheck:  ChannelKeyCheck(l.pkg.ChannelKey),
			Certificate:      bytes.Clone(l.cert),
			Receipt:          bytes.Clone(l.receipt),
		}
	}
	return st, nil
}

// Keys returns a copy of the device's installed data package: its channel
// key and device key pair. It is for tests and local tools that need to
// show the keys survived a recovery; it is not part of Conn, and a real
// device never hands its keys out. It fails with ErrNoKeys when the device
// has none.
func (d *Device) Keys() (*Package, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mem.live == nil {
		return nil, fmt.Errorf("device keys: %w", ErrNoKeys)
	}
	return ParsePackage(d.mem.live.raw)
}

// commit saves next to the state file, if there is one, and makes it the
// device's memory. On a failure the memory is left as it was.
func (d *Device) commit(next memory) error {
	if d.path != "" {
		if err := d.writeState(next, false); err != nil {
			return err
		}
	}
	d.mem = next
	return nil
}

var _ Conn = (*Device)(nil)
