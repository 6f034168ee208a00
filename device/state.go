package device

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/chipledger/chipledger/internal/atomicfile"
	"github.com/chipledger/chipledger/internal/strictjson"
	"github.com/chipledger/chipledger/ledger"
	"github.com/chipledger/chipledger/proofs"
)

// stateFormat names the version of the state file.
const stateFormat = "chipledger-device-state/v1"

// maxStateSize bounds the state file Load reads.
const maxStateSize = 1 << 20

// stateFile is the JSON form of a device's state file. Byte strings are
// standard base64 (JSON's []byte), the chip ID and key hexadecimal.
type stateFile struct {
	Format         string         `json:"format"`
	ChipID         string         `json:"chip_id"`
	Identities     []string       `json:"identities"`
	Trust          string         `json:"trust"`
	LogVerifierKey string         `json:"log_verifier_key"`
	SoftChip       *softChipState `json:"soft_chip,omitempty"`
	Keys           *keysState     `json:"keys,omitempty"`
	Pending        *pendingState  `json:"pending,omitempty"`
}

// softChipState is a SoftChip's secret state; a hardware chip keeps its
// own.
type softChipState struct {
	Key   string `json:"key"`
	Epoch uint32 `json:"epoch"`
}

type keysState struct {
	Package     []byte `json:"package"`
	Certificate []byte `json:"certificate"`
	Receipt     []byte `json:"receipt,omitempty"`
}

type pendingState struct {
	Package     []byte `json:"package"`
	Certificate []byte `json:"certificate,omitempty"`
}

// writeState writes the device's state with memory mem to its state file,
// atomically: a synced temporary file with mode 0600 in the same directory
// is renamed over the file (or, if exclusive, linked to it, which fails
// when the file exists), and the directory is synced.
func (d *Device) writeState(mem memory, exclusive bool) error {
	data, err := d.marshalState(mem)
	if err != nil {
		return err
	}
	return writeFileAtomic(d.path, data, exclusive)
}

func (d *Device) marshalState(mem memory) ([]byte, error) {
	s := stateFile{
		Format:         stateFormat,
		ChipID:         d.chip.ID().String(),
		Trust:          string(d.rom.trustPEM),
		LogVerifierKey: d.rom.logKey,
	}
	for _, id := range d.rom.ids {
		s.Identities = append(s.Identities, id.String())
	}
	if sc, ok := d.chip.(*SoftChip); ok {
		_, key, epoch := sc.secret()
		s.SoftChip = &softChipState{Key: hex.EncodeToString(key[:]), Epoch: epoch}
	}
	if l := mem.live; l != nil {
		s.Keys = &keysState{Package: l.raw, Certificate: l.cert, Receipt: l.receipt}
	}
	if p := mem.pending; p != nil {
		s.Pending = &pendingState{Package: p.raw, Certificate: p.cert}
	}
	data, err := json.MarshalIndent(&s, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode device state: %w", err)
	}
	return append(data, '\n'), nil
}

// Load loads the device kept in the state file at path. It is strict: an
// unknown field, a missing or invalid value, or data after the JSON object
// is an error. The chip is the SoftChip stored in the file, or opts.Chip,
// whose ID must then be the file's.
func Load(path string, opts LoadOptions) (*Device, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load device: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("load device: %w", err)
	}
	if len(data) > maxStateSize {
		return nil, fmt.Errorf("load device %s: state file larger than %d bytes", path, maxStateSize)
	}
	d, err := parseState(data, opts)
	if err != nil {
		return nil, fmt.Errorf("load device %s: %w", path, err)
	}
	d.path = path
	return d, nil
}

// parseState decodes and checks a state file.
func parseState(data []byte, opts LoadOptions) (*Device, error) {
	var s stateFile
	if err := strictjson.Decode(data, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if s.Format != stateFormat {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrMalformed, s.Format, stateFormat)
	}
	chipID, err := ledger.ParseChipID(s.ChipID)
	if err != nil {
		return nil, fmt.Errorf("%w: chip_id: %w", ErrMalformed, err)
	}
	if s.ChipID != chipID.String() {
		return nil, fmt.Errorf("%w: chip_id %q is not in lower case, as the state file writes it", ErrMalformed, s.ChipID)
	}
	ids, err := parseIdentityTexts(s.Identities)
	if err != nil {
		return nil, err
	}
	trust, err := ledger.ParseTrustPEM([]byte(s.Trust))
	if err != nil {
		return nil, fmt.Errorf("%w: trust: %w", ErrMalformed, err)
	}
	r, err := newROM(ids, trust, s.LogVerifierKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	chip, err := stateChip(chipID, s.SoftChip, opts)
	if err != nil {
		return nil, err
	}
	d := &Device{chip: chip, rom: r, now: clock(opts.Now)}
	if d.mem, err = parseMemory(s.Keys, s.Pending, ids); err != nil {
		return nil, err
	}
	return d, nil
}

// parseIdentityTexts parses the text forms of identities, which must be
// canonical (as Identity.String writes them).
func parseIdentityTexts(texts []string) (ledger.Identities, error) {
	var ids ledger.Identities
	for _, t := range texts {
		id, err := ledger.ParseIdentity(t)
		if err != nil {
			return nil, fmt.Errorf("%w: identities: %w", ErrMalformed, err)
		}
		if id.String() != t {
			return nil, fmt.Errorf("%w: identity %q is not in canonical form %q", ErrMalformed, t, id)
		}
		ids = append(ids, id)
	}
	if err := ids.Validate(); err != nil {
		return nil, fmt.Errorf("%w: identities: %w", ErrMalformed, err)
	}
	return ids, nil
}

// stateChip returns the chip of a state file: the stored SoftChip, or the
// given chip when the file has none.
func stateChip(id ledger.ChipID, sc *softChipState, opts LoadOptions) (Chip, error) {
	switch {
	case sc != nil && opts.Chip != nil:
		return nil, errors.New("the state file holds a soft chip; do not pass another chip")
	case sc == nil && opts.Chip == nil:
		return nil, fmt.Errorf("the state file's chip %s is not a soft chip; pass the device's chip", id)
	case opts.Chip != nil:
		if !opts.Chip.ID().Equal(id) {
			return nil, fmt.Errorf("%w: the state file is for chip %s, the chip given is %s", ErrWrongChip, id, opts.Chip.ID())
		}
		return opts.Chip, nil
	}
	key, err := hex.DecodeString(sc.Key)
	if err != nil || len(key) != ChipKeySize || hex.EncodeToString(key) != sc.Key {
		return nil, fmt.Errorf("%w: soft_chip.key must be %d bytes in lower-case hex", ErrMalformed, ChipKeySize)
	}
	return restoreSoftChip(id, [ChipKeySize]byte(key), sc.Epoch, opts.Rand)
}

// parseMemory parses the writable memory of a state file.
func parseMemory(k *keysState, p *pendingState, ids ledger.Identities) (memory, error) {
	var mem memory
	if k != nil {
		pkg, err := parseStoredPackage(k.Package, ids)
		if err != nil {
			return memory{}, fmt.Errorf("keys: %w", err)
		}
		if len(k.Certificate) == 0 {
			return memory{}, fmt.Errorf("%w: keys: no certificate", ErrMalformed)
		}
		if k.Receipt != nil {
			if _, err := proofs.ParseReceipt(k.Receipt); err != nil {
				return memory{}, fmt.Errorf("%w: keys: %w", ErrMalformed, err)
			}
		}
		mem.live = &installed{pkg: pkg, raw: k.Package, cert: k.Certificate, receipt: k.Receipt}
	}
	if p != nil {
		pkg, err := parseStoredPackage(p.Package, ids)
		if err != nil {
			return memory{}, fmt.Errorf("pending: %w", err)
		}
		if p.Certificate != nil && len(p.Certificate) == 0 {
			return memory{}, fmt.Errorf("%w: pending: empty certificate", ErrMalformed)
		}
		mem.pending = &pending{pkg: pkg, raw: p.Package, cert: p.Certificate}
	}
	return mem, nil
}

func parseStoredPackage(raw []byte, ids ledger.Identities) (*Package, error) {
	pkg, err := ParsePackage(raw)
	if err != nil {
		return nil, err
	}
	if !pkg.Identities.Equal(ids) {
		return nil, fmt.Errorf("%w: package for %s, the device is %s", ErrWrongIdentity, pkg.Identities, ids)
	}
	return pkg, nil
}

// writeFileAtomic replaces path with data (mode 0600) so that a crash
// leaves either the old or the new file; if exclusive, it fails when path
// exists instead.
func writeFileAtomic(path string, data []byte, exclusive bool) error {
	if !exclusive {
		if err := atomicfile.Replace(path, data, 0o600); err != nil {
			return fmt.Errorf("write device state: %w", err)
		}
		return nil
	}
	err := atomicfile.Create(path, data, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; refusing to overwrite a device's state", path)
	}
	if err != nil {
		return fmt.Errorf("write device state: %w", err)
	}
	return nil
}
