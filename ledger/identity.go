package ledger

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
)

// IdentityType is the u8 type of an identity (DESIGN.md §3.1).
type IdentityType uint8

// The identity types. Any other value is malformed.
const (
	// IdentityIMEI is a GSMA IMEI, stored as the 14 ASCII digits TAC‖SNR
	// (without the Luhn check digit).
	IdentityIMEI IdentityType = 1
	// IdentityMEID is a 3GPP2 MEID, stored as 14 upper-case hex digits.
	IdentityMEID IdentityType = 2
	// IdentitySerial is a manufacturer serial number: 1 to 64 bytes of
	// UTF-8 without control characters.
	IdentitySerial IdentityType = 3
)

// Identity limits (DESIGN.md §3.1).
const (
	// MaxSerialLen is the longest serial number, in bytes of UTF-8.
	MaxSerialLen = 64
	// MinIdentities is the fewest identities a device has.
	MinIdentities = 1
	// MaxIdentities is the most identities a device has (dual-SIM phones
	// have two IMEIs).
	MaxIdentities = 4
	// MaxIdentitiesSize is the largest encoded identity list body: the list
	// carries a u8 byte length, so the identities together (each 2 bytes of
	// type and length plus its value) take at most 255 bytes.
	MaxIdentitiesSize = 255
)

const (
	imeiLen    = 14 // TAC (8) ‖ SNR (6)
	imeiTACLen = 8
	meidLen    = 14
	imeisvLen  = 16
)

// String returns "imei", "meid" or "serial", or IdentityType(n) for an
// unknown type.
func (t IdentityType) String() string {
	switch t {
	case IdentityIMEI:
		return "imei"
	case IdentityMEID:
		return "meid"
	case IdentitySerial:
		return "serial"
	default:
		return fmt.Sprintf("IdentityType(%d)", uint8(t))
	}
}

// Identity is one typed device identifier. Value is the canonical stored form:
// 14 digits for an IMEI (no check digit), 14 upper-case hex digits for an MEID,
// the UTF-8 text of a serial. Build one with NewIMEI, NewMEID, NewSerial or
// ParseIdentity, which canonicalise their input; a literal must already be
// canonical to pass Validate.
type Identity struct {
	Type  IdentityType
	Value string
}

// NewIMEI returns the IMEI identity for s, which is either the 14 digits
// TAC‖SNR or the 15 digits TAC‖SNR‖CD whose last digit must be the Luhn check
// digit of the first 14. A 16-digit IMEISV is rejected: its last two digits
// are a software version, not part of the device identity. The TAC must not be
// all zeros. The error wraps ErrInvalidIdentity.
func NewIMEI(s string) (Identity, error) {
	if !isDigits(s) {
		return Identity{}, fmt.Errorf("%w: IMEI %q: must be 14 or 15 decimal digits", ErrInvalidIdentity, s)
	}
	switch len(s) {
	case imeiLen:
	case imeiLen + 1:
		cd, _ := LuhnCheckDigit(s[:imeiLen])
		if s[imeiLen] != cd {
			return Identity{}, fmt.Errorf("%w: IMEI %q: check digit %c is wrong, want %c", ErrInvalidIdentity, s, s[imeiLen], cd)
		}
		s = s[:imeiLen]
	case imeisvLen:
		return Identity{}, fmt.Errorf("%w: %q is a 16-digit IMEISV (TAC, SNR and software version); give the 14-digit IMEI TAC‖SNR, or the 15-digit IMEI with its check digit", ErrInvalidIdentity, s)
	default:
		return Identity{}, fmt.Errorf("%w: IMEI %q: %d digits, want 14 or 15", ErrInvalidIdentity, s, len(s))
	}
	id := Identity{Type: IdentityIMEI, Value: s}
	if err := id.Validate(); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// NewMEID returns the MEID identity for s, 14 hex digits of either case; the
// stored value is upper case. The error wraps ErrInvalidIdentity.
func NewMEID(s string) (Identity, error) {
	id := Identity{Type: IdentityMEID, Value: strings.ToUpper(s)}
	if len(s) != meidLen || !isHex(s) {
		return Identity{}, fmt.Errorf("%w: MEID %q: must be %d hex digits", ErrInvalidIdentity, s, meidLen)
	}
	return id, nil
}

// NewSerial returns the serial-number identity for s, which must be 1 to
// MaxSerialLen bytes of valid UTF-8 with no control characters. It is stored
// as given (no normalisation). The error wraps ErrInvalidIdentity.
func NewSerial(s string) (Identity, error) {
	id := Identity{Type: IdentitySerial, Value: s}
	if err := id.Validate(); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// ParseIdentity parses the text form of an identity: "imei:" followed by 14 or
// 15 digits, "meid:" followed by 14 hex digits, or "serial:" followed by the
// serial text. The prefix may be in any case. The result is canonical, so
// ParseIdentity(id.String()) returns id. The error wraps ErrInvalidIdentity.
func ParseIdentity(text string) (Identity, error) {
	prefix, value, ok := strings.Cut(text, ":")
	if !ok {
		return Identity{}, fmt.Errorf("%w: %q: want imei:<digits>, meid:<hex> or serial:<text>", ErrInvalidIdentity, text)
	}
	switch strings.ToLower(prefix) {
	case "imei":
		return NewIMEI(value)
	case "meid":
		return NewMEID(value)
	case "serial":
		return NewSerial(value)
	default:
		return Identity{}, fmt.Errorf("%w: %q: unknown identity type %q, want imei, meid or serial", ErrInvalidIdentity, text, prefix)
	}
}

// String returns the text form "type:value" that ParseIdentity reads. An IMEI
// is shown with its check digit (15 digits). An identity that fails Validate
// is shown as best it can, for error messages.
func (id Identity) String() string {
	return id.Type.String() + ":" + id.DisplayValue()
}

// DisplayValue returns the value as a person reads it on a label, without the
// type: the 15-digit IMEI with its check digit, the 14-digit MEID, or the
// serial text. The device certificate's subject serialNumber is the
// DisplayValue of the device's first identity.
func (id Identity) DisplayValue() string {
	if s, ok := id.IMEIWithCheckDigit(); ok {
		return s
	}
	return id.Value
}

// Validate reports whether id has a known type and a canonical value. The
// error wraps ErrInvalidIdentity.
func (id Identity) Validate() error {
	switch id.Type {
	case IdentityIMEI:
		if len(id.Value) != imeiLen || !isDigits(id.Value) {
			return fmt.Errorf("%w: IMEI value %q: must be the %d digits TAC‖SNR", ErrInvalidIdentity, id.Value, imeiLen)
		}
		if strings.Trim(id.Value[:imeiTACLen], "0") == "" {
			return fmt.Errorf("%w: IMEI %q: the TAC (first 8 digits) is all zeros", ErrInvalidIdentity, id.Value)
		}
	case IdentityMEID:
		if len(id.Value) != meidLen || !isUpperHex(id.Value) {
			return fmt.Errorf("%w: MEID value %q: must be %d upper-case hex digits", ErrInvalidIdentity, id.Value, meidLen)
		}
	case IdentitySerial:
		if len(id.Value) == 0 || len(id.Value) > MaxSerialLen {
			return fmt.Errorf("%w: serial %q: %d bytes, want 1 to %d", ErrInvalidIdentity, id.Value, len(id.Value), MaxSerialLen)
		}
		if !utf8.ValidString(id.Value) {
			return fmt.Errorf("%w: serial %q: not valid UTF-8", ErrInvalidIdentity, id.Value)
		}
		if i := strings.IndexFunc(id.Value, unicode.IsControl); i >= 0 {
			return fmt.Errorf("%w: serial %q: control character at byte %d", ErrInvalidIdentity, id.Value, i)
		}
	default:
		return fmt.Errorf("%w: unknown identity type %d", ErrInvalidIdentity, uint8(id.Type))
	}
	return nil
}

// IMEIWithCheckDigit returns the 15-digit IMEI TAC‖SNR‖CD, and false if id is
// not a valid IMEI.
func (id Identity) IMEIWithCheckDigit() (string, bool) {
	if id.Type != IdentityIMEI || id.Validate() != nil {
		return "", false
	}
	cd, _ := LuhnCheckDigit(id.Value)
	return id.Value + string(cd), true
}

// IMEIURN returns the RFC 7254 URN of an IMEI, "urn:gsma:imei:TAC-SNR-0". The
// last field is the spare digit, always 0, never the check digit. It returns
// false if id is not a valid IMEI.
func (id Identity) IMEIURN() (string, bool) {
	if id.Type != IdentityIMEI || id.Validate() != nil {
		return "", false
	}
	return imeiURNPrefix + id.Value[:imeiTACLen] + "-" + id.Value[imeiTACLen:] + "-0", true
}

const imeiURNPrefix = "urn:gsma:imei:"

// LuhnCheckDigit returns the Luhn (ISO/IEC 7812 Annex B) check digit, as an
// ASCII digit, that completes the decimal digits: counting from the right,
// every first, third, ... digit is doubled (and 9 subtracted if above 9), and
// the check digit brings the sum to a multiple of 10. For an IMEI, digits is
// TAC‖SNR (14 digits): LuhnCheckDigit("26053179311383") is '7'. The error wraps
// ErrInvalidIdentity if digits is empty or holds anything but ASCII digits.
func LuhnCheckDigit(digits string) (byte, error) {
	if digits == "" || !isDigits(digits) {
		return 0, fmt.Errorf("%w: Luhn input %q: must be decimal digits", ErrInvalidIdentity, digits)
	}
	sum := 0
	double := true // the rightmost digit is doubled once the check digit follows it
	for i := len(digits) - 1; i >= 0; i-- {
		d := int(digits[i] - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return byte('0' + (10-sum%10)%10), nil
}

// Identities is the list of a device's identities, in order: the first is the
// primary identity, the one the device certificate's subject serialNumber
// carries. It holds 1 to 4 identities with no duplicates. Its binary form
// (DESIGN.md §3.1) is a u8 byte length followed by each identity as
// u8 type ‖ u8 length ‖ value.
type Identities []Identity

// Validate reports whether ids has 1 to MaxIdentities valid identities, no two
// equal, that encode in at most MaxIdentitiesSize bytes. The error wraps
// ErrInvalidIdentity.
func (ids Identities) Validate() error {
	if len(ids) < MinIdentities || len(ids) > MaxIdentities {
		return fmt.Errorf("%w: %d identities, want %d to %d", ErrInvalidIdentity, len(ids), MinIdentities, MaxIdentities)
	}
	size := 0
	for i, id := range ids {
		if err := id.Validate(); err != nil {
			return fmt.Errorf("identity %d: %w", i, err)
		}
		for _, prev := range ids[:i] {
			if prev == id {
				return fmt.Errorf("%w: %s is listed twice", ErrInvalidIdentity, id)
			}
		}
		size += 2 + len(id.Value)
	}
	if size > MaxIdentitiesSize {
		return fmt.Errorf("%w: identities encode in %d bytes, at most %d fit the u8 length", ErrInvalidIdentity, size, MaxIdentitiesSize)
	}
	return nil
}

// MarshalBinary returns the binary form of ids, after checking Validate.
func (ids Identities) MarshalBinary() ([]byte, error) {
	if err := ids.Validate(); err != nil {
		return nil, err
	}
	return appendIdentities(nil, ids), nil
}

// ParseIdentities parses the binary form of an identity list, which must be
// all of b. The error wraps ErrMalformed, and ErrInvalidIdentity when the
// encoding is well-framed but a value breaks the rules.
func ParseIdentities(b []byte) (Identities, error) {
	s := cryptobyte.String(b)
	ids, err := readIdentities(&s)
	if err != nil {
		return nil, err
	}
	if !s.Empty() {
		return nil, fmt.Errorf("identities: %w: %d trailing bytes", ErrMalformed, len(s))
	}
	return ids, nil
}

// Equal reports whether ids and o hold the same identities in the same order.
func (ids Identities) Equal(o Identities) bool {
	if len(ids) != len(o) {
		return false
	}
	for i := range ids {
		if ids[i] != o[i] {
			return false
		}
	}
	return true
}

// String returns the text forms of the identities separated by commas.
func (ids Identities) String() string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = id.String()
	}
	return strings.Join(parts, ",")
}

// appendIdentities appends the binary form of ids, which Validate accepted,
// to b: the u8 length of the list, then each identity's type and its value
// with a u8 length.
func appendIdentities(b []byte, ids Identities) []byte {
	size := 0
	for _, id := range ids {
		size += 2 + len(id.Value)
	}
	b = append(b, byte(size))
	for _, id := range ids {
		b = append(b, byte(id.Type), byte(len(id.Value)))
		b = append(b, id.Value...)
	}
	return b
}

// readIdentities reads an identity list from the front of s and checks it.
// The error wraps ErrMalformed (and ErrInvalidIdentity for a bad value).
func readIdentities(s *cryptobyte.String) (Identities, error) {
	var list cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&list) {
		return nil, fmt.Errorf("identities: %w: truncated", ErrMalformed)
	}
	var ids Identities
	for !list.Empty() {
		var typ uint8
		var value cryptobyte.String
		if !list.ReadUint8(&typ) || !list.ReadUint8LengthPrefixed(&value) {
			return nil, fmt.Errorf("identities: %w: identity %d truncated", ErrMalformed, len(ids))
		}
		if len(ids) == MaxIdentities {
			return nil, fmt.Errorf("identities: %w: %w: more than %d identities", ErrMalformed, ErrInvalidIdentity, MaxIdentities)
		}
		ids = append(ids, Identity{Type: IdentityType(typ), Value: string(value)})
	}
	if err := ids.Validate(); err != nil {
		return nil, fmt.Errorf("identities: %w: %w", ErrMalformed, err)
	}
	return ids, nil
}

// skipIdentities advances s past an identity list without checking or copying
// its contents.
func skipIdentities(s *cryptobyte.String) bool {
	var list cryptobyte.String
	return s.ReadUint8LengthPrefixed(&list)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func isUpperHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
