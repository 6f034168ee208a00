package ledger

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestParseChipID(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // canonical text, "" if the input must be rejected
	}{
		{"default length", "00112233445566778899aabbccddeeff", "00112233445566778899aabbccddeeff"},
		{"upper case accepted, lower case out", "00112233445566778899AABBCCDDEEFF", "00112233445566778899aabbccddeeff"},
		{"mixed case", "aAbBcCdDeEfF0011", "aabbccddeeff0011"},
		{"shortest, 8 bytes", strings.Repeat("01", 8), strings.Repeat("01", 8)},
		{"longest, 32 bytes", strings.Repeat("fe", 32), strings.Repeat("fe", 32)},
		{"7 bytes", strings.Repeat("01", 7), ""},
		{"33 bytes", strings.Repeat("01", 33), ""},
		{"empty", "", ""},
		{"odd digits", strings.Repeat("0", 17), ""},
		{"not hex", "00112233445566zz", ""},
		{"0x prefix", "0x0011223344556677", ""},
		{"space", "00112233 44556677", ""},
		{"colons", "00:11:22:33:44:55:66:77", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseChipID(tt.in)
			if tt.want == "" {
				if !errors.Is(err, ErrInvalidChipID) {
					t.Fatalf("ParseChipID(%q) = %v, %v; want ErrInvalidChipID", tt.in, c, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseChipID(%q): %v", tt.in, err)
			}
			if c.String() != tt.want {
				t.Errorf("String() = %q, want %q", c, tt.want)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestChipIDValidateRejectsBadLengths(t *testing.T) {
	for _, n := range []int{0, 1, 7, 33, 255} {
		if err := ChipID(make([]byte, n)).Validate(); !errors.Is(err, ErrInvalidChipID) {
			t.Errorf("%d bytes: Validate = %v, want ErrInvalidChipID", n, err)
		}
	}
	for _, n := range []int{8, 16, 32} {
		if err := ChipID(make([]byte, n)).Validate(); err != nil {
			t.Errorf("%d bytes: Validate = %v", n, err)
		}
	}
}

func TestChipIDEqual(t *testing.T) {
	a := ChipID{1, 2, 3, 4, 5, 6, 7, 8}
	if !a.Equal(ChipID{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Error("equal chip IDs compare unequal")
	}
	if a.Equal(ChipID{1, 2, 3, 4, 5, 6, 7, 9}) || a.Equal(ChipID{1, 2, 3, 4, 5, 6, 7, 8, 0}) || a.Equal(nil) {
		t.Error("different chip IDs compare equal")
	}
}

// TestChipIDLogsAsHex: a chip ID in a log line reads as its hex text form,
// not as raw bytes.
func TestChipIDLogsAsHex(t *testing.T) {
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("provisioned", "chip", ChipID{0xe2, 0x16, 0x16, 0x89, 0xe5, 0x3e, 0x88, 0x61})
	if want := "chip=e2161689e53e8861"; !strings.Contains(b.String(), want) {
		t.Errorf("log line %q does not hold %q", b.String(), want)
	}
}
