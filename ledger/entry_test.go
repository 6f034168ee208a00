package ledger

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// field is one field of a hand-written leaf layout, in hex.
type field struct{ name, hex string }

// layoutHex joins a layout's fields into the leaf's hex.
func layoutHex(fields []field) string {
	var b strings.Builder
	for _, f := range fields {
		b.WriteString(strings.ReplaceAll(f.hex, " ", ""))
	}
	return b.String()
}

// withField returns a copy of fields with the named field replaced by hexValue.
func withField(t testing.TB, fields []field, name, hexValue string) []field {
	t.Helper()
	out := append([]field(nil), fields...)
	for i := range out {
		if out[i].name == name {
			out[i].hex = hexValue
			return out
		}
	}
	t.Fatalf("no field %q", name)
	return nil
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goldenEscrowLayout is the escrow leaf of testdata/escrow-entry.hex, field by
// field as DESIGN.md §3.2 lays it out, written by hand.
var goldenEscrowLayout = []field{
	{"kind", "0001"}, // u16 kind 1 (escrow)
	{"chip_id", "10 00112233445566778899aabbccddeeff"}, // u8 length 16, chip ID
	{"identities", identitiesVector},                   // u8 length 36: IMEI 35209900176148, MEID A0000000002329, serial "SN"
	{"epoch", "00000001"},                              // u32 epoch 1
	{"certificate", "0004 63657274"},                   // u16 length 4, "cert"
	{"backup", "0006 6261636b7570"},                    // u16 length 6, "backup"
	{"station_id", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"}, // 32 bytes
	{"provisioned_at_ms", "0000019b76daa800"},                                          // u64 1767225600000 = 2026-01-01T00:00:00Z
	{"station_signature", "0008 3006020101020102"},                                     // u16 length 8, DER ECDSA-Sig-Value {r=1, s=2}
}

func goldenEscrowEntry(t testing.TB) *EscrowEntry {
	var sid [32]byte
	for i := range sid {
		sid[i] = byte(i)
	}
	return &EscrowEntry{
		ChipID: ChipID(mustHex(t, "00112233445566778899aabbccddeeff")),
		Identities: Identities{
			{Type: IdentityIMEI, Value: "35209900176148"},
			{Type: IdentityMEID, Value: "A0000000002329"},
			{Type: IdentitySerial, Value: "SN"},
		},
		Epoch:           1,
		Certificate:     []byte("cert"),
		Backup:          []byte("backup"),
		StationID:       sid,
		ProvisionedAtMs: 1767225600000,
		Signature:       mustHex(t, "3006020101020102"),
	}
}

// goldenStationLayout is the leaf of testdata/station-registration.hex.
var goldenStationLayout = []field{
	{"kind", "0002"}, // u16 kind 2 (station registration)
	{"station_certificate", "0005 3003020101"}, // u16 length 5, placeholder bytes (the format does not parse them)
	{"registered_at_ms", "0000019b76daa800"},   // u64 1767225600000 = 2026-01-01T00:00:00Z
}

// goldenIndexRootLayout is the leaf of testdata/index-root.hex.
var goldenIndexRootLayout = []field{
	{"kind", "0003"},                     // u16 kind 3 (index root)
	{"covered_size", "0000000000000007"}, // u64 7
	{"chip_count", "0000000000000002"},   // u64 2
	{"index_root", "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"}, // 32 bytes
}

// goldenRevocationLayout is the leaf of testdata/station-revocation.hex.
var goldenRevocationLayout = []field{
	{"kind", "0004"}, // u16 kind 4 (station revocation)
	{"station_id", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"},
	{"revoked_at_ms", "0000019b76daa800"}, // u64 1767225600000 = 2026-01-01T00:00:00Z
	{"reason", "0a 6b6579206c65616b6564"}, // u8 length 10, "key leaked"
}

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return mustHex(t, strings.TrimSpace(string(b)))
}

// checkGolden checks that the committed vector, the hand-written layout and
// the encoder agree, and that the parser returns want from the vector.
func checkGolden(t *testing.T, file string, layout []field, want Entry) {
	t.Helper()
	golden := readGolden(t, file)
	if hand := mustHex(t, layoutHex(layout)); !bytes.Equal(golden, hand) {
		t.Fatalf("testdata/%s = %x\nhand-written layout gives %x", file, golden, hand)
	}
	leaf, err := want.MarshalLeaf()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(leaf, golden) {
		t.Fatalf("MarshalLeaf = %x\nwant testdata/%s = %x", leaf, file, golden)
	}
	got, err := ParseEntry(golden)
	if err != nil {
		t.Fatalf("ParseEntry: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseEntry = %+v\nwant %+v", got, want)
	}
	if k, err := PeekKind(golden); err != nil || k != want.Kind() {
		t.Fatalf("PeekKind = %v, %v; want %v", k, err, want.Kind())
	}
}

func TestEscrowEntryGoldenVector(t *testing.T) {
	e := goldenEscrowEntry(t)
	checkGolden(t, "escrow-entry.hex", goldenEscrowLayout, e)

	golden := readGolden(t, "escrow-entry.hex")
	msg, err := e.SignedMessage()
	if err != nil {
		t.Fatal(err)
	}
	if sigField := 2 + len(e.Signature); !bytes.Equal(msg, golden[:len(golden)-sigField]) {
		t.Fatalf("SignedMessage = %x, want the leaf up to the signature's length", msg)
	}
	d, err := e.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if want := readGolden(t, "escrow-entry-digest.hex"); !bytes.Equal(d[:], want) {
		t.Fatalf("Digest = %x, want testdata/escrow-entry-digest.hex = %x", d, want)
	}
	if want := sha256.Sum256(append([]byte("chipledger/escrow/v1\x00"), msg...)); d != want {
		t.Fatalf("Digest = %x, want SHA-256(context ‖ 0 ‖ message) = %x", d, want)
	}
	chip, epoch, err := PeekEscrow(golden)
	if err != nil || !chip.Equal(e.ChipID) || epoch != 1 {
		t.Fatalf("PeekEscrow = %s, %d, %v", chip, epoch, err)
	}
}

func TestStationRegistrationGoldenVector(t *testing.T) {
	checkGolden(t, "station-registration.hex", goldenStationLayout,
		&StationRegistration{Certificate: mustHex(t, "3003020101"), RegisteredAtMs: 1767225600000})
}

func TestIndexRootGoldenVector(t *testing.T) {
	r := &IndexRoot{CoveredSize: 7, ChipCount: 2}
	for i := range r.Root {
		r.Root[i] = 0xa0 + byte(i)
	}
	checkGolden(t, "index-root.hex", goldenIndexRootLayout, r)
}

func TestStationRevocationGoldenVector(t *testing.T) {
	r := &StationRevocation{RevokedAtMs: 1767225600000, Reason: "key leaked"}
	for i := range r.StationID {
		r.StationID[i] = byte(i)
	}
	checkGolden(t, "station-revocation.hex", goldenRevocationLayout, r)
}

func TestStationRevocationRejectsBadReasonsAndBytes(t *testing.T) {
	golden := readGolden(t, "station-revocation.hex")
	withReason := func(reason string) []byte {
		b := append([]byte{}, golden[:2+32+8]...)
		return append(append(b, byte(len(reason))), reason...)
	}
	for _, tc := range []struct {
		name string
		leaf []byte
	}{
		{"trailing byte", append(append([]byte{}, golden...), 0)},
		{"truncated", golden[:len(golden)-1]},
		{"no reason length", golden[:2+32+8]},
		{"a newline in the reason", withReason("a\nb")},
		{"invalid UTF-8", withReason("\xff")},
	} {
		if _, err := ParseStationRevocation(tc.leaf); err == nil {
			t.Errorf("%s: parsed", tc.name)
		}
	}
	if _, err := ParseStationRevocation(withReason("")); err != nil {
		t.Errorf("an empty reason: %v", err)
	}
	if _, err := (&StationRevocation{Reason: strings.Repeat("x", 256)}).MarshalLeaf(); err == nil {
		t.Error("a 256-byte reason was encoded")
	}
}

// malformedCase is a leaf every parser must reject with ErrMalformed and the
// more specific error also (if not nil).
type malformedCase struct {
	name string
	leaf []byte
	also error
}

func checkMalformed(t *testing.T, tests []malformedCase, parse func([]byte) (Entry, error)) {
	t.Helper()
	for _, tt := range tests {
		e, err := parse(tt.leaf)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: parse = %+v, %v; want ErrMalformed", tt.name, e, err)
			continue
		}
		if tt.also != nil && !errors.Is(err, tt.also) {
			t.Errorf("%s: error %q does not wrap %q", tt.name, err, tt.also)
		}
	}
}

func TestParseEscrowEntryRejectsMalformed(t *testing.T) {
	L := goldenEscrowLayout
	leafOf := func(fields []field) []byte { return mustHex(t, layoutHex(fields)) }
	golden := leafOf(L)
	five := "0f 0301 41 0301 42 0301 43 0301 44 0301 45"
	tests := []malformedCase{
		{"trailing byte", append(append([]byte(nil), golden...), 0), nil},
		{"kind 0", leafOf(withField(t, L, "kind", "0000")), ErrUnknownKind},
		{"kind 5", leafOf(withField(t, L, "kind", "0005")), ErrUnknownKind},
		{"kind 0xffff", leafOf(withField(t, L, "kind", "ffff")), ErrUnknownKind},
		{"chip_id of 7 bytes", leafOf(withField(t, L, "chip_id", "07 00112233445566")), ErrInvalidChipID},
		{"chip_id of 33 bytes", leafOf(withField(t, L, "chip_id", "21"+strings.Repeat("ab", 33))), ErrInvalidChipID},
		{"chip_id of 0 bytes", leafOf(withField(t, L, "chip_id", "00")), ErrInvalidChipID},
		{"chip_id length past the end", leafOf(withField(t, L, "chip_id", "ff 0011")), nil},
		{"no identities", leafOf(withField(t, L, "identities", "00")), ErrInvalidIdentity},
		{"five identities", leafOf(withField(t, L, "identities", five)), ErrInvalidIdentity},
		{"identity of unknown type", leafOf(withField(t, L, "identities", "03 0401 41")), ErrInvalidIdentity},
		{"epoch 0", leafOf(withField(t, L, "epoch", "00000000")), ErrInvalidEpoch},
		{"empty certificate", leafOf(withField(t, L, "certificate", "0000")), ErrInvalidEntry},
		{"empty backup", leafOf(withField(t, L, "backup", "0000")), ErrInvalidEntry},
		{"empty station_signature", leafOf(withField(t, L, "station_signature", "0000")), ErrInvalidEntry},
		{"station_signature longer than the leaf", leafOf(withField(t, L, "station_signature", "0009 3006020101020102")), nil},
		{"station_id of 31 bytes", leafOf(withField(t, L, "station_id", strings.Repeat("00", 31))), nil},
		{"leaf over 65535 bytes", leafOf(withField(t, L, "backup", "ffff"+strings.Repeat("00", 0xffff))), ErrLeafTooLarge},
	}
	for n := 0; n < len(golden); n++ {
		tests = append(tests, malformedCase{fmt.Sprintf("truncated to %d bytes", n), golden[:n], nil})
	}
	checkMalformed(t, tests, ParseEntry)
	checkMalformed(t, tests, func(b []byte) (Entry, error) { return ParseEscrowEntry(b) })
	for n := 0; n < len(golden); n++ {
		if _, err := ParseEscrowEntry(golden[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d of %d bytes: %v, want ErrMalformed", n, len(golden), err)
		}
	}

	// PeekEscrow reads only a prefix, but rejects what is wrong in it.
	for _, tt := range tests {
		switch tt.also {
		case ErrUnknownKind, ErrInvalidChipID, ErrInvalidEpoch, ErrLeafTooLarge:
			if _, _, err := PeekEscrow(tt.leaf); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: PeekEscrow error = %v, want ErrMalformed", tt.name, err)
			}
		}
	}
	for n := 0; n < 2+17+37+4; n++ { // truncated before the end of the epoch
		if _, _, err := PeekEscrow(golden[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("PeekEscrow of %d bytes: %v, want ErrMalformed", n, err)
		}
	}
}

func TestParseStationRegistrationRejectsMalformed(t *testing.T) {
	L := goldenStationLayout
	leafOf := func(fields []field) []byte { return mustHex(t, layoutHex(fields)) }
	golden := leafOf(L)
	tests := []malformedCase{
		{"trailing byte", append(append([]byte(nil), golden...), 0), nil},
		{"empty certificate", leafOf(withField(t, L, "station_certificate", "0000")), ErrInvalidEntry},
		{"leaf over 65535 bytes", leafOf(withField(t, L, "station_certificate", "ffff"+strings.Repeat("00", 0xffff))), ErrLeafTooLarge},
		{"kind 5", leafOf(withField(t, L, "kind", "0005")), ErrUnknownKind},
	}
	for n := 0; n < len(golden); n++ {
		tests = append(tests, malformedCase{"truncated", golden[:n], nil})
	}
	checkMalformed(t, tests, ParseEntry)
	checkMalformed(t, tests, func(b []byte) (Entry, error) { return ParseStationRegistration(b) })
}

func TestParseIndexRootRejectsMalformed(t *testing.T) {
	golden := mustHex(t, layoutHex(goldenIndexRootLayout))
	tests := []malformedCase{
		{"trailing byte", append(append([]byte(nil), golden...), 0), nil},
		{"kind 0", mustHex(t, layoutHex(withField(t, goldenIndexRootLayout, "kind", "0000"))), ErrUnknownKind},
	}
	for n := 0; n < len(golden); n++ {
		tests = append(tests, malformedCase{"truncated", golden[:n], nil})
	}
	checkMalformed(t, tests, ParseEntry)
	checkMalformed(t, tests, func(b []byte) (Entry, error) { return ParseIndexRoot(b) })
}

func TestParseOfWrongKindFails(t *testing.T) {
	escrow := readGolden(t, "escrow-entry.hex")
	station := readGolden(t, "station-registration.hex")
	index := readGolden(t, "index-root.hex")
	if _, err := ParseEscrowEntry(station); !errors.Is(err, ErrWrongKind) {
		t.Errorf("ParseEscrowEntry(station leaf) = %v, want ErrWrongKind", err)
	}
	if _, _, err := PeekEscrow(index); !errors.Is(err, ErrWrongKind) {
		t.Errorf("PeekEscrow(index leaf) = %v, want ErrWrongKind", err)
	}
	if _, err := ParseStationRegistration(escrow); !errors.Is(err, ErrWrongKind) {
		t.Errorf("ParseStationRegistration(escrow leaf) = %v, want ErrWrongKind", err)
	}
	if _, err := ParseIndexRoot(escrow); !errors.Is(err, ErrWrongKind) {
		t.Errorf("ParseIndexRoot(escrow leaf) = %v, want ErrWrongKind", err)
	}
}

func TestMarshalLeafValidates(t *testing.T) {
	tests := []struct {
		name   string
		modify func(e *EscrowEntry)
		want   error
	}{
		{"chip_id of 7 bytes", func(e *EscrowEntry) { e.ChipID = e.ChipID[:7] }, ErrInvalidChipID},
		{"chip_id of 33 bytes", func(e *EscrowEntry) { e.ChipID = make(ChipID, 33) }, ErrInvalidChipID},
		{"no identities", func(e *EscrowEntry) { e.Identities = nil }, ErrInvalidIdentity},
		{"five identities", func(e *EscrowEntry) {
			e.Identities = append(e.Identities, Identity{IdentitySerial, "a"}, Identity{IdentitySerial, "b"})
		}, ErrInvalidIdentity},
		{"epoch 0", func(e *EscrowEntry) { e.Epoch = 0 }, ErrInvalidEpoch},
		{"empty certificate", func(e *EscrowEntry) { e.Certificate = nil }, ErrInvalidEntry},
		{"empty backup", func(e *EscrowEntry) { e.Backup = []byte{} }, ErrInvalidEntry},
		{"empty signature", func(e *EscrowEntry) { e.Signature = nil }, ErrInvalidEntry},
		{"certificate over 65535 bytes", func(e *EscrowEntry) { e.Certificate = make([]byte, 1<<16) }, ErrInvalidEntry},
		{"leaf over 65535 bytes", func(e *EscrowEntry) { e.Backup = make([]byte, 0xffff) }, ErrLeafTooLarge},
	}
	for _, tt := range tests {
		e := goldenEscrowEntry(t)
		tt.modify(e)
		if _, err := e.MarshalLeaf(); !errors.Is(err, tt.want) {
			t.Errorf("%s: MarshalLeaf error = %v, want %v", tt.name, err, tt.want)
		}
	}
	if _, err := (&StationRegistration{}).MarshalLeaf(); !errors.Is(err, ErrInvalidEntry) {
		t.Errorf("empty station certificate: %v, want ErrInvalidEntry", err)
	}
	if _, err := (&StationRegistration{Certificate: make([]byte, 0xffff)}).MarshalLeaf(); !errors.Is(err, ErrLeafTooLarge) {
		t.Errorf("station leaf over 65535 bytes: %v, want ErrLeafTooLarge", err)
	}
}

func TestLeafOfExactlyMaxLeafSizeRoundTrips(t *testing.T) {
	e := goldenEscrowEntry(t)
	small, err := e.MarshalLeaf()
	if err != nil {
		t.Fatal(err)
	}
	e.Backup = make([]byte, len(e.Backup)+MaxLeafSize-len(small))
	leaf, err := e.MarshalLeaf()
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf) != MaxLeafSize {
		t.Fatalf("leaf is %d bytes, want %d", len(leaf), MaxLeafSize)
	}
	got, err := ParseEscrowEntry(leaf)
	if err != nil || !reflect.DeepEqual(got, e) {
		t.Fatalf("ParseEscrowEntry = %v", err)
	}
	e.Backup = append(e.Backup, 0)
	if _, err := e.MarshalLeaf(); !errors.Is(err, ErrLeafTooLarge) {
		t.Fatalf("one byte more: %v, want ErrLeafTooLarge", err)
	}
}

func TestParsedEntryDoesNotAliasLeaf(t *testing.T) {
	leaf := readGolden(t, "escrow-entry.hex")
	e, err := ParseEscrowEntry(leaf)
	if err != nil {
		t.Fatal(err)
	}
	for i := range leaf {
		leaf[i] ^= 0xff
	}
	if !reflect.DeepEqual(e, goldenEscrowEntry(t)) {
		t.Fatal("changing the leaf changed the parsed entry")
	}
}

func TestParseEscrowEntryNoCopy(t *testing.T) {
	leaf := readGolden(t, "escrow-entry.hex")
	e, err := ParseEscrowEntryNoCopy(leaf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(e, goldenEscrowEntry(t)) {
		t.Fatalf("ParseEscrowEntryNoCopy = %+v, want the golden entry", e)
	}
	orig := bytes.Clone(leaf)
	e.ChipID = append(e.ChipID, 0xff)
	e.Certificate = append(e.Certificate, 0xff)
	e.Backup = append(e.Backup, 0xff)
	e.Signature = append(e.Signature, 0xff)
	if !bytes.Equal(leaf, orig) {
		t.Fatal("appending to a field of the entry changed the leaf")
	}
	e, _ = ParseEscrowEntryNoCopy(leaf)
	leaf[len(leaf)-1] ^= 0xff
	if e.Signature[len(e.Signature)-1] != orig[len(orig)-1]^0xff {
		t.Fatal("the signature is not a slice of the leaf")
	}
}

func TestSignAndVerifyEscrowEntry(t *testing.T) {
	key := testKey(t)
	e := goldenEscrowEntry(t)
	if err := e.Sign(rand.Reader, key); err != nil {
		t.Fatal(err)
	}
	if err := e.VerifySignature(&key.PublicKey); err != nil {
		t.Fatalf("VerifySignature: %v", err)
	}
	if err := e.VerifySignature(&testKey(t).PublicKey); !errors.Is(err, ErrBadStationSignature) {
		t.Fatalf("VerifySignature with another key = %v, want ErrBadStationSignature", err)
	}
	// Every signed field is covered, the kind included (it is in the message).
	for _, modify := range []func(e *EscrowEntry){
		func(e *EscrowEntry) { e.ChipID[0] ^= 1 },
		func(e *EscrowEntry) { e.Identities[2].Value = "SM" },
		func(e *EscrowEntry) { e.Epoch++ },
		func(e *EscrowEntry) { e.Certificate[0] ^= 1 },
		func(e *EscrowEntry) { e.Backup[0] ^= 1 },
		func(e *EscrowEntry) { e.StationID[31] ^= 1 },
		func(e *EscrowEntry) { e.ProvisionedAtMs++ },
	} {
		c := goldenEscrowEntry(t)
		c.Signature = e.Signature
		modify(c)
		if err := c.VerifySignature(&key.PublicKey); !errors.Is(err, ErrBadStationSignature) {
			t.Errorf("a changed field still verifies: %v", err)
		}
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Sign(rand.Reader, p384); !errors.Is(err, ErrBadStationSignature) {
		t.Errorf("Sign with P-384 = %v, want refusal", err)
	}
	if err := e.VerifySignature(&p384.PublicKey); !errors.Is(err, ErrBadStationSignature) {
		t.Errorf("VerifySignature with P-384 = %v, want ErrBadStationSignature", err)
	}
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	if err := e.Sign(rand.Reader, ed); !errors.Is(err, ErrBadStationSignature) {
		t.Errorf("Sign with Ed25519 = %v, want refusal", err)
	}
	if err := e.VerifySignature(nil); !errors.Is(err, ErrBadStationSignature) {
		t.Errorf("VerifySignature(nil) = %v", err)
	}
	if err := e.VerifySignature(&ecdsa.PublicKey{Curve: elliptic.P256()}); !errors.Is(err, ErrBadStationSignature) {
		t.Errorf("VerifySignature(key without a point) = %v", err)
	}
}

func TestKindAndIdentityTypeStrings(t *testing.T) {
	for k, want := range map[Kind]string{KindEscrow: "escrow", KindStation: "station", KindIndexRoot: "index-root", 9: "Kind(9)"} {
		if k.String() != want {
			t.Errorf("Kind(%d).String() = %q, want %q", uint16(k), k, want)
		}
	}
	for typ, want := range map[IdentityType]string{IdentityIMEI: "imei", IdentityMEID: "meid", IdentitySerial: "serial", 0: "IdentityType(0)"} {
		if typ.String() != want {
			t.Errorf("IdentityType(%d).String() = %q, want %q", uint8(typ), typ, want)
		}
	}
}

// genIdentity generates a valid identity of any type.
var genIdentity = rapid.Custom(func(t *rapid.T) Identity {
	switch rapid.IntRange(1, 3).Draw(t, "type") {
	case 1:
		tac := rapid.StringMatching(`[0-9]{7}[1-9]`).Draw(t, "tac")
		snr := rapid.StringMatching(`[0-9]{6}`).Draw(t, "snr")
		return Identity{Type: IdentityIMEI, Value: tac + snr}
	case 2:
		return Identity{Type: IdentityMEID, Value: rapid.StringMatching(`[0-9A-F]{14}`).Draw(t, "meid")}
	default:
		s := rapid.StringMatching(`[A-Za-z0-9\-éß№ ]{1,20}`).Draw(t, "serial")
		return Identity{Type: IdentitySerial, Value: s}
	}
})

// genEscrowEntry generates a valid escrow entry with random fields.
var genEscrowEntry = rapid.Custom(func(t *rapid.T) *EscrowEntry {
	e := &EscrowEntry{
		ChipID:          ChipID(rapid.SliceOfN(rapid.Byte(), MinChipIDLen, MaxChipIDLen).Draw(t, "chip")),
		Identities:      rapid.SliceOfNDistinct(genIdentity, 1, MaxIdentities, rapid.ID[Identity]).Draw(t, "ids"),
		Epoch:           rapid.Uint32Min(1).Draw(t, "epoch"),
		Certificate:     rapid.SliceOfN(rapid.Byte(), 1, 300).Draw(t, "cert"),
		Backup:          rapid.SliceOfN(rapid.Byte(), 1, 300).Draw(t, "backup"),
		ProvisionedAtMs: rapid.Uint64().Draw(t, "at"),
		Signature:       rapid.SliceOfN(rapid.Byte(), 1, 80).Draw(t, "sig"),
	}
	copy(e.StationID[:], rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, "station"))
	return e
})

func TestPeekEscrowAgreesWithParseEscrowEntry(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		e := genEscrowEntry.Draw(t, "entry")
		leaf, err := e.MarshalLeaf()
		if err != nil {
			t.Fatalf("MarshalLeaf of a valid entry: %v", err)
		}
		parsed, err := ParseEscrowEntry(leaf)
		if err != nil {
			t.Fatalf("ParseEscrowEntry: %v", err)
		}
		if !reflect.DeepEqual(parsed, e) {
			t.Fatalf("ParseEscrowEntry = %+v, want %+v", parsed, e)
		}
		chip, epoch, err := PeekEscrow(leaf)
		if err != nil {
			t.Fatalf("PeekEscrow: %v", err)
		}
		if !chip.Equal(parsed.ChipID) || epoch != parsed.Epoch {
			t.Fatalf("PeekEscrow = %s, %d; ParseEscrowEntry = %s, %d", chip, epoch, parsed.ChipID, parsed.Epoch)
		}
		if len(chip) > 0 && &chip[0] != &leaf[3] {
			t.Fatal("PeekEscrow's chip ID does not alias the leaf")
		}
	})
}

func TestPeekEscrowDoesNotAllocate(t *testing.T) {
	leaf := readGolden(t, "escrow-entry.hex")
	allocs := testing.AllocsPerRun(100, func() {
		if _, _, err := PeekEscrow(leaf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("PeekEscrow allocates %v times per call", allocs)
	}
}

func TestTestPKILeavesParse(t *testing.T) {
	p := newTestPKI(t)
	chip := testChipID(1)
	leaf := p.escrowLeaf(t, chip, 1)
	e, err := ParseEscrowEntry(leaf)
	if err != nil {
		t.Fatal(err)
	}
	if !e.ChipID.Equal(chip) || e.Epoch != 1 {
		t.Fatalf("escrowLeaf parsed to chip %s epoch %d", e.ChipID, e.Epoch)
	}
	if err := CheckEscrowEntry(e, p.station, p.trust); err != nil {
		t.Fatalf("escrowLeaf is not admissible: %v", err)
	}
	r, err := ParseStationRegistration(p.stationLeaf(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckStationRegistration(r, p.trust); err != nil {
		t.Fatalf("stationLeaf is not admissible: %v", err)
	}
}
