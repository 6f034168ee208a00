package device

import (
	"bytes"
	"errors"
	"testing"

	"github.com/chipledger/chipledger/ledger"
)

func newTestChip(t testing.TB) *SoftChip {
	t.Helper()
	c, err := NewSoftChip(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSoftChipOpensWhatItSealed(t *testing.T) {
	chip := newTestChip(t)
	ids := testIdentities(t)
	backup, err := chip.Seal(ids, 5, []byte("package"))
	if err != nil {
		t.Fatal(err)
	}
	gotIDs, epoch, plain, err := chip.Open(backup)
	if err != nil {
		t.Fatal(err)
	}
	if !gotIDs.Equal(ids) || epoch != 5 || string(plain) != "package" {
		t.Errorf("Open = %s, %d, %q", gotIDs, epoch, plain)
	}
	h, _, err := ParseBackupHeader(backup)
	if err != nil || !h.ChipID.Equal(chip.ID()) {
		t.Errorf("backup header names chip %s (%v), want %s", h.ChipID, err, chip.ID())
	}
	if len(chip.ID()) != ledger.DefaultChipIDLen {
		t.Errorf("chip ID is %d bytes, want %d", len(chip.ID()), ledger.DefaultChipIDLen)
	}
}

func TestSoftChipSealsWithFreshSaltAndNonce(t *testing.T) {
	chip := newTestChip(t)
	a, _ := chip.Seal(testIdentities(t), 1, []byte("package"))
	b, _ := chip.Seal(testIdentities(t), 1, []byte("package"))
	ha, _, _ := ParseBackupHeader(a)
	hb, _, _ := ParseBackupHeader(b)
	if ha.Salt == hb.Salt || ha.Nonce == hb.Nonce || bytes.Equal(a, b) {
		t.Error("two seals of one package share salt, nonce or bytes")
	}
}

func TestBackupOfChipADoesNotOpenOnChipB(t *testing.T) {
	a, b := newTestChip(t), newTestChip(t)
	backup, err := a.Seal(testIdentities(t), 1, []byte("package"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := b.Open(backup); !errors.Is(err, ErrWrongChip) {
		t.Errorf("chip B opening chip A's backup: err = %v, want ErrWrongChip", err)
	}
	// A chip claiming A's ID without A's key (a clone) cannot open it either.
	_, bKey, _ := b.secret()
	clone, err := restoreSoftChip(a.ID(), bKey, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := clone.Open(backup); !errors.Is(err, ErrDecrypt) {
		t.Errorf("a chip with A's ID and another key: err = %v, want ErrDecrypt", err)
	}
}

func TestSoftChipEpochCounterIsMonotonic(t *testing.T) {
	chip := newTestChip(t)
	if e, _ := chip.Epoch(); e != 0 {
		t.Fatalf("new chip at epoch %d, want 0", e)
	}
	for _, e := range []uint32{1, 1, 3} {
		if err := chip.AdvanceEpoch(e); err != nil {
			t.Fatalf("AdvanceEpoch(%d): %v", e, err)
		}
	}
	if err := chip.AdvanceEpoch(2); !errors.Is(err, ErrRollback) {
		t.Errorf("AdvanceEpoch(2) at 3: err = %v, want ErrRollback", err)
	}
	if e, _ := chip.Epoch(); e != 3 {
		t.Errorf("epoch %d after a refused rollback, want 3", e)
	}
}

func TestNewSoftChipFailsWithoutRandomness(t *testing.T) {
	if _, err := NewSoftChip(bytes.NewReader(make([]byte, 20))); err == nil {
		t.Error("NewSoftChip with 20 random bytes succeeded; it needs 16 + 32")
	}
}
