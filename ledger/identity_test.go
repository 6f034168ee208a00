package ledger

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestLuhnCheckDigit(t *testing.T) {
	tests := []struct {
		digits string
		want   byte
	}{
		{"26053179311383", '7'}, // 3GPP TS 23.003 example IMEI 260531793113837
		{"49015420323751", '8'},
		{"35209900176148", '1'},
		{"00000000000000", '0'},
		{"7992739871", '3'}, // the usual Luhn example, 79927398713
	}
	for _, tt := range tests {
		got, err := LuhnCheckDigit(tt.digits)
		if err != nil || got != tt.want {
			t.Errorf("LuhnCheckDigit(%q) = %q, %v; want %q", tt.digits, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "1234a", "12 34", "١٢٣"} {
		if _, err := LuhnCheckDigit(bad); !errors.Is(err, ErrInvalidIdentity) {
			t.Errorf("LuhnCheckDigit(%q) error = %v, want ErrInvalidIdentity", bad, err)
		}
	}
}

func TestNewIMEI(t *testing.T) {
	tests := []struct {
		name, in  string
		wantValue string // "" if rejected
		wantErr   string // substring of the error, if rejected
	}{
		{"15 digits with valid check digit", "260531793113837", "26053179311383", ""},
		{"15 digits, second vector", "490154203237518", "49015420323751", ""},
		{"14 digits TAC and SNR", "26053179311383", "26053179311383", ""},
		{"15 digits with wrong check digit", "260531793113830", "", "check digit 0 is wrong, want 7"},
		{"16-digit IMEISV", "2605317931138301", "", "IMEISV"},
		{"non-digit", "2605317931138a", "", "decimal digits"},
		{"leading space", " 26053179311383", "", "decimal digits"},
		{"dashes", "26053179-311383", "", "decimal digits"},
		{"full-width digits", "２６０５３１７９３１１３８３", "", "decimal digits"},
		{"all-zero TAC, 14 digits", "00000000123456", "", "TAC"},
		{"all-zero TAC, 15 digits valid Luhn", "000000001234566", "", "TAC"},
		{"13 digits", "2605317931138", "", "13 digits"},
		{"17 digits", "26053179311383700", "", "17 digits"},
		{"empty", "", "", "0 digits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := NewIMEI(tt.in)
			if tt.wantValue == "" {
				if !errors.Is(err, ErrInvalidIdentity) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewIMEI(%q) = %+v, %v; want ErrInvalidIdentity mentioning %q", tt.in, id, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewIMEI(%q): %v", tt.in, err)
			}
			if id.Type != IdentityIMEI || id.Value != tt.wantValue {
				t.Errorf("NewIMEI(%q) = %+v, want IMEI %q", tt.in, id, tt.wantValue)
			}
		})
	}
}

func TestIMEIForms(t *testing.T) {
	id, err := NewIMEI("35209900176148")
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := id.IMEIWithCheckDigit(); !ok || s != "352099001761481" {
		t.Errorf("IMEIWithCheckDigit = %q, %v", s, ok)
	}
	if s, ok := id.IMEIURN(); !ok || s != "urn:gsma:imei:35209900-176148-0" {
		t.Errorf("IMEIURN = %q, %v; the spare digit must be 0, not the check digit", s, ok)
	}
	if got := id.String(); got != "imei:352099001761481" {
		t.Errorf("String = %q", got)
	}
	if got := id.DisplayValue(); got != "352099001761481" {
		t.Errorf("DisplayValue = %q", got)
	}
	serial := Identity{Type: IdentitySerial, Value: "SN-1"}
	if _, ok := serial.IMEIURN(); ok {
		t.Error("a serial has an IMEI URN")
	}
	if _, ok := serial.IMEIWithCheckDigit(); ok {
		t.Error("a serial has an IMEI check digit")
	}
	if _, ok := (Identity{Type: IdentityIMEI, Value: "123"}).IMEIURN(); ok {
		t.Error("an invalid IMEI has a URN")
	}
}

func TestNewMEID(t *testing.T) {
	tests := []struct {
		in, want string // want "" if rejected
	}{
		{"A0000000002329", "A0000000002329"},
		{"a0000000002329", "A0000000002329"},
		{"aBcDeF01234567", "ABCDEF01234567"},
		{"A000000000232", ""},
		{"A00000000023290", ""},
		{"G0000000002329", ""},
		{"A000000000232 ", ""},
		{"", ""},
	}
	for _, tt := range tests {
		id, err := NewMEID(tt.in)
		if tt.want == "" {
			if !errors.Is(err, ErrInvalidIdentity) {
				t.Errorf("NewMEID(%q) = %+v, %v; want ErrInvalidIdentity", tt.in, id, err)
			}
			continue
		}
		if err != nil || id != (Identity{Type: IdentityMEID, Value: tt.want}) {
			t.Errorf("NewMEID(%q) = %+v, %v; want MEID %q", tt.in, id, err, tt.want)
		}
	}
	if err := (Identity{Type: IdentityMEID, Value: "a0000000002329"}).Validate(); !errors.Is(err, ErrInvalidIdentity) {
		t.Errorf("Validate of a lower-case stored MEID = %v, want ErrInvalidIdentity", err)
	}
}

func TestNewSerial(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"ascii", "SN-0001", true},
		{"utf-8", "Gerät-42 №7", true},
		{"one byte", "x", true},
		{"64 bytes", strings.Repeat("a", 64), true},
		{"64 bytes of 2-byte runes", strings.Repeat("é", 32), true},
		{"65 bytes", strings.Repeat("a", 65), false},
		{"65 bytes ending in a 2-byte rune", strings.Repeat("a", 63) + "é", false},
		{"empty", "", false},
		{"NUL", "SN\x000001", false},
		{"newline", "SN\n0001", false},
		{"tab", "SN\t0001", false},
		{"DEL", "SN\x7f", false},
		{"C1 control", "SN\u0085", false},
		{"invalid utf-8", "SN\xff", false},
		{"truncated utf-8", "SN\xc3", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := NewSerial(tt.in)
			if !tt.ok {
				if !errors.Is(err, ErrInvalidIdentity) {
					t.Fatalf("NewSerial(%q) = %+v, %v; want ErrInvalidIdentity", tt.in, id, err)
				}
				return
			}
			if err != nil || id != (Identity{Type: IdentitySerial, Value: tt.in}) {
				t.Fatalf("NewSerial(%q) = %+v, %v", tt.in, id, err)
			}
		})
	}
}

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		in   string
		want string // String() of the result, "" if rejected
	}{
		{"imei:260531793113837", "imei:260531793113837"},
		{"imei:26053179311383", "imei:260531793113837"},
		{"IMEI:26053179311383", "imei:260531793113837"},
		{"meid:a0000000002329", "meid:A0000000002329"},
		{"serial:SN:0001", "serial:SN:0001"},
		{"Serial:x", "serial:x"},
		{"imei:260531793113830", ""},
		{"imei:2605317931138301", ""},
		{"260531793113837", ""},
		{"phone:123", ""},
		{"serial:", ""},
		{":x", ""},
		{"", ""},
	}
	for _, tt := range tests {
		id, err := ParseIdentity(tt.in)
		if tt.want == "" {
			if !errors.Is(err, ErrInvalidIdentity) {
				t.Errorf("ParseIdentity(%q) = %+v, %v; want ErrInvalidIdentity", tt.in, id, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseIdentity(%q): %v", tt.in, err)
			continue
		}
		if id.String() != tt.want {
			t.Errorf("ParseIdentity(%q).String() = %q, want %q", tt.in, id, tt.want)
		}
		again, err := ParseIdentity(id.String())
		if err != nil || again != id {
			t.Errorf("ParseIdentity(%q) = %+v, %v; want %+v", id.String(), again, err, id)
		}
	}
}

func mustIdentity(t testing.TB, text string) Identity {
	t.Helper()
	id, err := ParseIdentity(text)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestIdentitiesValidate(t *testing.T) {
	imei1 := mustIdentity(t, "imei:260531793113837")
	imei2 := mustIdentity(t, "imei:490154203237518")
	meid := mustIdentity(t, "meid:A0000000002329")
	serial := mustIdentity(t, "serial:SN-1")
	long := func(c string) Identity { return Identity{Type: IdentitySerial, Value: strings.Repeat(c, MaxSerialLen)} }
	tests := []struct {
		name string
		ids  Identities
		ok   bool
	}{
		{"one IMEI", Identities{imei1}, true},
		{"dual-SIM", Identities{imei1, imei2}, true},
		{"four kinds", Identities{imei1, imei2, meid, serial}, true},
		{"three 64-byte serials", Identities{long("a"), long("b"), long("c")}, true},
		{"none", Identities{}, false},
		{"nil", nil, false},
		{"five", Identities{imei1, imei2, meid, serial, mustIdentity(t, "serial:SN-2")}, false},
		{"duplicate IMEI", Identities{imei1, imei2, imei1}, false},
		{"duplicate IMEI given with and without check digit", Identities{mustIdentity(t, "imei:26053179311383"), imei1}, false},
		{"duplicate MEID given in both cases", Identities{mustIdentity(t, "meid:a0000000002329"), meid}, false},
		{"four 64-byte serials exceed the u8 list length", Identities{long("a"), long("b"), long("c"), long("d")}, false},
		{"invalid member", Identities{imei1, {Type: IdentityIMEI, Value: "1"}}, false},
		{"unknown type", Identities{{Type: 4, Value: "x"}}, false},
		{"type 0", Identities{{Type: 0, Value: "x"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.ids.Validate()
			if tt.ok && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidIdentity) {
				t.Fatalf("Validate = %v, want ErrInvalidIdentity", err)
			}
			b, err := tt.ids.MarshalBinary()
			if tt.ok != (err == nil) {
				t.Fatalf("MarshalBinary error = %v, want ok=%v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			got, err := ParseIdentities(b)
			if err != nil || !got.Equal(tt.ids) {
				t.Fatalf("ParseIdentities(MarshalBinary) = %v, %v; want %v", got, err, tt.ids)
			}
			again, err := got.MarshalBinary()
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("re-encoding = %x, %v; want %x", again, err, b)
			}
		})
	}
}

// identitiesVector is one identity of each type in binary form:
//
//	24                                   list length: 36 bytes
//	01 0e 3335323039393030313736313438   IMEI "35209900176148" (14 digits, no check digit)
//	02 0e 4130303030303030303032333239   MEID "A0000000002329"
//	03 02 534e                           serial "SN"
const identitiesVector = "24" +
	"010e" + "3335323039393030313736313438" +
	"020e" + "4130303030303030303032333239" +
	"0302" + "534e"

func TestIdentitiesEncoding(t *testing.T) {
	ids := Identities{
		mustIdentity(t, "imei:352099001761481"),
		mustIdentity(t, "meid:a0000000002329"),
		mustIdentity(t, "serial:SN"),
	}
	b, err := ids.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(b); got != identitiesVector {
		t.Fatalf("MarshalBinary = %s\nwant            %s", got, identitiesVector)
	}
	want, _ := hex.DecodeString(identitiesVector)
	got, err := ParseIdentities(want)
	if err != nil || !got.Equal(ids) {
		t.Fatalf("ParseIdentities = %v, %v; want %v", got, err, ids)
	}
}

func TestIdentityBinaryRoundTripEveryType(t *testing.T) {
	for _, text := range []string{"imei:260531793113837", "meid:A0000000002329", "serial:Gerät-42"} {
		ids := Identities{mustIdentity(t, text)}
		b, err := ids.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseIdentities(b)
		if err != nil || !got.Equal(ids) {
			t.Fatalf("%s: parse = %v, %v", text, got, err)
		}
		again, _ := got.MarshalBinary()
		if !bytes.Equal(again, b) {
			t.Fatalf("%s: encode(parse(encode)) = %x, want %x", text, again, b)
		}
	}
}

func TestParseIdentitiesRejectsMalformed(t *testing.T) {
	h := func(s string) []byte {
		b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	imei := "01 0e 3335323039393030313736313438"
	tests := []struct {
		name string
		in   []byte
		also error // a more specific error the failure must wrap, or nil
	}{
		{"empty input", nil, nil},
		{"zero identities", h("00"), ErrInvalidIdentity},
		{"trailing byte", append(h("10"+imei), 0), nil},
		{"list length too long", h("11" + imei), nil},
		{"list length too short", h("0f" + imei), nil},
		{"type 0", h("10 00 0e 3335323039393030313736313438"), ErrInvalidIdentity},
		{"type 4", h("10 04 0e 3335323039393030313736313438"), ErrInvalidIdentity},
		{"zero-length value", h("02 03 00"), ErrInvalidIdentity},
		{"IMEI stored with check digit", h("11 01 0f 333532303939303031373631343831"), ErrInvalidIdentity},
		{"lower-case MEID", h("10 02 0e 6130303030303030303032333239"), ErrInvalidIdentity},
		{"serial with NUL", h("04 03 02 4100"), ErrInvalidIdentity},
		{"duplicate", h("20" + imei + imei), ErrInvalidIdentity},
		{"five identities", h("0f 0301 41 0301 42 0301 43 0301 44 0301 45"), ErrInvalidIdentity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids, err := ParseIdentities(tt.in)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseIdentities(%x) = %v, %v; want ErrMalformed", tt.in, ids, err)
			}
			if tt.also != nil && !errors.Is(err, tt.also) {
				t.Fatalf("error %v does not wrap %v", err, tt.also)
			}
		})
	}
	// Four one-letter serials are fine: the count limit is what fails above.
	if _, err := ParseIdentities(h("0c 0301 41 0301 42 0301 43 0301 44")); err != nil {
		t.Fatalf("four identities: %v", err)
	}
	full := h(identitiesVector)
	for n := 0; n < len(full); n++ {
		if _, err := ParseIdentities(full[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d bytes: %v, want ErrMalformed", n, err)
		}
	}
}
