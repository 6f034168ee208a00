package device

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/chipledger/chipledger/ledger"
)

// goldenBackup seals the golden package under the golden header.
func goldenBackup(t testing.TB) (chipKey, pkg, backup []byte) {
	t.Helper()
	pkg, err := goldenPackage(t).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	chipKey = seq(0x00, ChipKeySize)
	backup, err = sealBackup(chipKey, goldenHeader(t), pkg)
	if err != nil {
		t.Fatal(err)
	}
	return chipKey, pkg, backup
}

func TestBackupGoldenVector(t *testing.T) {
	chipKey, pkg, backup := goldenBackup(t)
	checkGolden(t, "backup-v1.hex", backup)

	h, got, err := openBackup(chipKey, goldenHeader(t).ChipID, backup)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pkg) || h.Epoch != goldenEpoch {
		t.Errorf("openBackup = epoch %d, %x; want epoch %d, the golden package", h.Epoch, got, goldenEpoch)
	}
}

// TestSoftChipSealsGoldenVector checks that a SoftChip reads its chip ID,
// its key, then each backup's salt and nonce from its random source, in
// that order, and seals exactly the envelope of DESIGN.md §3.4.
func TestSoftChipSealsGoldenVector(t *testing.T) {
	_, pkg, want := goldenBackup(t)
	h := goldenHeader(t)
	random := bytes.NewReader(bytes.Join([][]byte{h.ChipID, seq(0x00, ChipKeySize), h.Salt[:], h.Nonce[:]}, nil))
	chip, err := NewSoftChip(random)
	if err != nil {
		t.Fatal(err)
	}
	got, err := chip.Seal(h.Identities, h.Epoch, pkg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("SoftChip.Seal = %x, want the golden backup %x", got, want)
	}
}

func TestBackupLayout(t *testing.T) {
	_, pkg, backup := goldenBackup(t)
	h := goldenHeader(t)
	header, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := h.Identities.MarshalBinary()
	want := bytes.Join([][]byte{
		[]byte("CLB1"), {1}, {16}, h.ChipID, ids, {0, 0, 0, goldenEpoch}, h.Salt[:], h.Nonce[:],
	}, nil)
	if !bytes.Equal(header, want) {
		t.Errorf("header %x, want %x", header, want)
	}
	if !bytes.HasPrefix(backup, header) || len(backup) != len(header)+len(pkg)+16 {
		t.Errorf("backup is not header ‖ ciphertext ‖ 16-byte tag")
	}
}

func TestParseBackupHeaderReadsWithoutKey(t *testing.T) {
	_, pkg, backup := goldenBackup(t)
	h, ciphertext, err := ParseBackupHeader(backup)
	if err != nil {
		t.Fatal(err)
	}
	want := goldenHeader(t)
	if !h.ChipID.Equal(want.ChipID) || !h.Identities.Equal(want.Identities) || h.Epoch != want.Epoch ||
		h.Salt != want.Salt || h.Nonce != want.Nonce {
		t.Errorf("ParseBackupHeader = %+v, want %+v", h, want)
	}
	if len(ciphertext) != len(pkg)+16 {
		t.Errorf("ciphertext is %d bytes, want %d", len(ciphertext), len(pkg)+16)
	}
	header, _ := h.MarshalBinary()
	if !bytes.Equal(append(header, ciphertext...), backup) {
		t.Error("header ‖ ciphertext is not the backup")
	}
}

func TestParseBackupHeaderRejectsMalformed(t *testing.T) {
	_, _, backup := goldenBackup(t)
	with := func(i int, v byte) []byte {
		b := bytes.Clone(backup)
		b[i] = v
		return b
	}
	header, _ := goldenHeader(t).MarshalBinary()
	epochAt := len(header) - NonceSize - SaltSize - 4
	cases := map[string][]byte{
		"empty":              nil,
		"wrong magic":        with(3, '2'),
		"suite 0":            with(4, 0),
		"suite 2":            with(4, 2),
		"chip ID of 7 bytes": append(append([]byte("CLB1\x01\x07"), seq(0, 7)...), backup[5+1+16:]...),
		"chip ID of 33":      append(append([]byte("CLB1\x01\x21"), seq(0, 33)...), backup[5+1+16:]...),
		"bad identity":       with(5+1+16+1, 7),
		"epoch 0":            append(append(bytes.Clone(backup[:epochAt]), 0, 0, 0, 0), backup[epochAt+4:]...),
		"only the tag":       backup[:len(header)+16],
		"too large":          append(bytes.Clone(backup), make([]byte, MaxBackupSize)...),
	}
	for i := 0; i < len(header)+17; i++ {
		cases[fmt.Sprintf("truncated to %d bytes", i)] = backup[:i]
	}
	for name, b := range cases {
		if _, _, err := ParseBackupHeader(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

// TestBackupAnyChangedByteFails flips each bit of the golden backup in turn:
// the chip must refuse every result.
func TestBackupAnyChangedByteFails(t *testing.T) {
	chipKey, _, backup := goldenBackup(t)
	chip := goldenHeader(t).ChipID
	for i := range backup {
		for bit := range 8 {
			b := bytes.Clone(backup)
			b[i] ^= 1 << bit
			_, _, err := openBackup(chipKey, chip, b)
			if !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrWrongChip) {
				t.Fatalf("byte %d bit %d flipped: err = %v, want a refusal", i, bit, err)
			}
		}
	}
}

func TestBackupTamperedFieldFailsAuthentication(t *testing.T) {
	chipKey, _, backup := goldenBackup(t)
	h := goldenHeader(t)
	_, ciphertext, _ := ParseBackupHeader(backup)
	otherIMEI, _ := ledger.NewIMEI("35209900176148")
	reseal := func(mod func(*BackupHeader)) []byte {
		hh := *h
		mod(&hh)
		header, err := hh.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return append(header, ciphertext...)
	}
	cases := map[string][]byte{
		"identity":   reseal(func(h *BackupHeader) { h.Identities = ledger.Identities{otherIMEI} }),
		"identities": reseal(func(h *BackupHeader) { h.Identities = h.Identities[:1] }),
		"epoch":      reseal(func(h *BackupHeader) { h.Epoch = goldenEpoch + 1 }),
		"older":      reseal(func(h *BackupHeader) { h.Epoch = goldenEpoch - 1 }),
		"salt":       reseal(func(h *BackupHeader) { h.Salt[31] ^= 1 }),
		"nonce":      reseal(func(h *BackupHeader) { h.Nonce[0] ^= 1 }),
		"ciphertext": func() []byte { b := bytes.Clone(backup); b[len(b)-20] ^= 0x80; return b }(),
		"tag":        func() []byte { b := bytes.Clone(backup); b[len(b)-1] ^= 1; return b }(),
	}
	for name, b := range cases {
		if _, _, err := openBackup(chipKey, h.ChipID, b); !errors.Is(err, ErrDecrypt) {
			t.Errorf("changed %s: err = %v, want ErrDecrypt", name, err)
		}
	}
}

func TestSealBackupRejectsInvalidHeaderAndPackage(t *testing.T) {
	h := goldenHeader(t)
	key := seq(0, ChipKeySize)
	bad := *h
	bad.Epoch = 0
	if _, err := sealBackup(key, &bad, []byte("p")); !errors.Is(err, ErrMalformed) {
		t.Errorf("epoch 0: %v", err)
	}
	bad = *h
	bad.ChipID = seq(0, 4)
	if _, err := sealBackup(key, &bad, []byte("p")); !errors.Is(err, ErrMalformed) {
		t.Errorf("4-byte chip ID: %v", err)
	}
	if _, err := sealBackup(key, h, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("empty package: %v", err)
	}
	if _, err := sealBackup(key, h, make([]byte, MaxBackupSize)); !errors.Is(err, ErrMalformed) {
		t.Errorf("oversized package: %v", err)
	}
}
