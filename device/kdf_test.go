package device

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/chipledger/chipledger/ledger"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// NIST CAVP KBKDF KDFCTR_gen.txt (CAVS 14.4), [PRF=HMAC_SHA256]
// [CTRLOCATION=BEFORE_FIXED] [RLEN=32_BITS].
var cavpCounterHMACSHA256 = []struct {
	count     int
	l         int // output bits
	ki, fixed string
	ko        string
}{
	{0, 128,
		"dd1d91b7d90b2bd3138533ce92b272fbf8a369316aefe242e659cc0ae238afe0",
		"01322b96b30acd197979444e468e1c5c6859bf1b1cf951b7e725303e237e46b864a145fab25e517b08f8683d0315bb2911d80a0e8aba17f3b413faac",
		"10621342bfb0fd40046c0e29f2cfdbf0"},
	{10, 256,
		"e204d6d466aad507ffaf6d6dab0a5b26152c9e21e764370464e360c8fbc765c6",
		"7b03b98d9f94b899e591f3ef264b71b193fba7043c7e953cde23bc5384bc1a6293580115fae3495fd845dadbd02bd6455cf48d0f62b33e62364a3a80",
		"770dfab6a6a4a4bee0257ff335213f78d8287b4fd537d5c1fffa956910e7c779"},
	{20, 160,
		"dc60338d884eecb72975c603c27b360605011756c697c4fc388f5176ef81efb1",
		"44d7aa08feba26093c14979c122c2437c3117b63b78841cd10a4bc5ed55c56586ad8986d55307dca1d198edcffbc516a8fbe6152aa428cdd800c062d",
		"29ac07dccf1f28d506cd623e6e3fc2fa255bd60b"},
	{30, 320, // two PRF blocks
		"c4bedbddb66493e7c7259a3bbbc25f8c7e0ca7fe284d92d431d9cd99a0d214ac",
		"1c69c54766791e315c2cc5c47ecd3ffab87d0d273dd920e70955814c220eacace6a5946542da3dfe24ff626b4897898cafb7db83bdff3c14fa46fd4b",
		"1da47638d6c9c4d04d74d4640bbd42ab814d9e8cc22f4326695239f96b0693f12d0dd1152cf44430"},
}

func TestKBKDFCounterMatchesCAVPVectors(t *testing.T) {
	for _, v := range cavpCounterHMACSHA256 {
		got := kbkdfCounter(unhex(t, v.ki), unhex(t, v.fixed), v.l)
		if want := unhex(t, v.ko); !bytes.Equal(got, want) {
			t.Errorf("COUNT=%d L=%d: got %x, want %x", v.count, v.l, got, want)
		}
	}
}

func TestKBKDFCounterOutputIsPrefixOfLongerOutput(t *testing.T) {
	key, fixed := []byte("key"), []byte("fixed input")
	long := kbkdfCounter(key, fixed, 1024)
	for _, bits := range []int{8, 256, 264, 512, 1000} {
		if got := kbkdfCounter(key, fixed, bits); !bytes.Equal(got, long[:bits/8]) {
			t.Errorf("%d bits: not a prefix of the 1024-bit output", bits)
		}
	}
	if got := kbkdfCounter(key, fixed, 12); len(got) != 2 || got[0] != long[0] || got[1] != long[1]&0xf0 {
		t.Errorf("12 bits: got %x, want %x with the last 4 bits cleared", got, long[:2])
	}
	if got := kbkdfCounter(key, fixed, 0); got != nil {
		t.Errorf("0 bits: got %x, want nil", got)
	}
}

func TestDeriveKeyIsOneBlockWithLabelSeparatorContextAndLength(t *testing.T) {
	key, label, context := []byte("chip key"), "chipledger/test/v1", []byte{0, 1, 2, 0xff}
	got, err := DeriveKey(key, label, context)
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte{0, 0, 0, 1})
	mac.Write([]byte(label))
	mac.Write([]byte{0})
	mac.Write(context)
	mac.Write([]byte{0, 0, 1, 0})
	if want := mac.Sum(nil); !bytes.Equal(got[:], want) {
		t.Errorf("DeriveKey = %x, want HMAC-SHA256(key, 00000001 ‖ label ‖ 00 ‖ context ‖ 00000100) = %x", got, want)
	}
}

func TestDeriveKeyRejectsAmbiguousLabelAndEmptyKey(t *testing.T) {
	for _, tc := range []struct {
		name  string
		key   []byte
		label string
	}{
		{"label with 0x00", []byte("k"), "a\x00b"},
		{"empty label", []byte("k"), ""},
		{"empty key", nil, "label"},
	} {
		if _, err := DeriveKey(tc.key, tc.label, nil); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

// testIdentities is a dual-SIM device: two IMEIs.
func testIdentities(t testing.TB) ledger.Identities {
	t.Helper()
	a, err := ledger.NewIMEI("260531793113837")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ledger.NewIMEI("49015420323751")
	if err != nil {
		t.Fatal(err)
	}
	return ledger.Identities{a, b}
}

func TestChannelKeyDerivesFromIdentitiesAndMasterKeyVersion(t *testing.T) {
	master := bytes.Repeat([]byte{0x42}, 32)
	ids := testIdentities(t)
	got, err := ChannelKey(master, ids, 7)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := ids.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want, err := DeriveKey(master, "chipledger/device-channel/v1", append(enc, 0, 0, 0, 7))
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("ChannelKey = %x, want %x", got, want)
	}
	// Frozen so that a change of the construction cannot go unnoticed.
	if g, w := hex.EncodeToString(got[:]), "c84688d043dae2ac228703d695f295bd9289ee2a63df167ef86e29989504d2cb"; g != w {
		t.Errorf("ChannelKey golden value = %s, want %s", g, w)
	}
	other, _ := ChannelKey(master, ids, 8)
	single, _ := ChannelKey(master, ids[:1], 7)
	if other == got || single == got {
		t.Error("the channel key does not depend on the master key version and every identity")
	}
}

func TestChannelKeyRejectsShortMasterKeyAndInvalidIdentities(t *testing.T) {
	if _, err := ChannelKey(make([]byte, 31), testIdentities(t), 1); err == nil {
		t.Error("31-byte master key accepted")
	}
	if _, err := ChannelKey(make([]byte, 32), nil, 1); err == nil {
		t.Error("empty identities accepted")
	}
}
