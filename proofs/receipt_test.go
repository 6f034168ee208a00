package proofs_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/chipledger/chipledger/proofs"
	"github.com/transparency-dev/merkle/testonly"
	"pgregory.net/rapid"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

const goldenReceipt = "escrow-test-leaf7.receipt"

// goldenReceiptBytes spells out the encoding of the receipt for leaf 7 of
// the 8-leaf test tree against the golden escrow-test checkpoint, field by
// field, independently of MarshalBinary.
func goldenReceiptBytes(t testing.TB) []byte {
	leaf := testonly.LeafInputs()[7]
	checkpoint := readTestdata(t, "escrow-test.checkpoint")
	var want []byte
	want = append(want, "CLR1"...)
	want = append(want, 0x00, byte(len(leaf)))
	want = append(want, leaf...)
	want = append(want, 0, 0, 0, 0, 0, 0, 0, 7)
	want = append(want, 3)
	want = append(want, g[:]...)
	want = append(want, j[:]...)
	want = append(want, k[:]...)
	want = binary.BigEndian.AppendUint16(want, uint16(len(checkpoint)))
	return append(want, checkpoint...)
}

func TestGoldenReceipt(t *testing.T) {
	want := goldenReceiptBytes(t)
	if *update {
		if err := os.WriteFile("testdata/"+goldenReceipt, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden := readTestdata(t, goldenReceipt)
	if !bytes.Equal(golden, want) {
		t.Fatalf("testdata/%s differs from the spelled-out encoding; run go test -update", goldenReceipt)
	}

	r, err := proofs.ParseReceipt(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Leaf, testonly.LeafInputs()[7]) || r.Index != 7 || !slices.Equal(r.Proof, [][32]byte{g, j, k}) {
		t.Errorf("ParseReceipt = %+v", r)
	}
	if again, err := r.MarshalBinary(); err != nil || !bytes.Equal(again, golden) {
		t.Errorf("MarshalBinary(ParseReceipt(golden)) = %x, %v; want the golden bytes", again, err)
	}
	c, err := r.Verify(escrowVerifier(t))
	if want := (proofs.Checkpoint{Origin: escrowOrigin, Size: 8, Hash: root(8)}); err != nil || c != want {
		t.Errorf("Verify = %+v, %v; want %+v", c, err, want)
	}
}

func TestReceiptRoundTrip(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		hash := rapid.Custom(func(rt *rapid.T) [32]byte {
			return [32]byte(rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(rt, "hash"))
		})
		r := &proofs.Receipt{
			Leaf:       rapid.SliceOfN(rapid.Byte(), 1, 600).Draw(rt, "leaf"),
			Index:      rapid.Uint64().Draw(rt, "index"),
			Proof:      rapid.SliceOfN(hash, 0, proofs.MaxProofHashes).Draw(rt, "proof"),
			Checkpoint: rapid.SliceOfN(rapid.Byte(), 1, 600).Draw(rt, "checkpoint"),
		}
		b, err := r.MarshalBinary()
		if err != nil {
			rt.Fatal(err)
		}
		got, err := proofs.ParseReceipt(b)
		if err != nil {
			rt.Fatal(err)
		}
		if !bytes.Equal(got.Leaf, r.Leaf) || got.Index != r.Index || !slices.Equal(got.Proof, r.Proof) || !bytes.Equal(got.Checkpoint, r.Checkpoint) {
			rt.Fatalf("ParseReceipt(MarshalBinary(%+v)) = %+v", r, got)
		}
		if again, err := got.MarshalBinary(); err != nil || !bytes.Equal(again, b) {
			rt.Fatalf("second MarshalBinary differs: %v", err)
		}
	})
}

func TestParseReceiptCopiesItsInput(t *testing.T) {
	b := goldenReceiptBytes(t)
	r, err := proofs.ParseReceipt(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if !bytes.Equal(r.Leaf, testonly.LeafInputs()[7]) || !bytes.Equal(r.Checkpoint, readTestdata(t, "escrow-test.checkpoint")) {
		t.Error("receipt changed when its input buffer was overwritten")
	}
}

func TestParseReceiptRejectsMalformed(t *testing.T) {
	good := goldenReceiptBytes(t)
	leafEnd := 4 + 2 + 16
	countAt := leafEnd + 8
	checkpointAt := countAt + 1 + 3*32
	with := func(at int, v ...byte) []byte {
		b := slices.Clone(good)
		copy(b[at:], v)
		return b
	}
	tests := []struct {
		name, input, msg string
	}{
		{"empty", "", "does not start with"},
		{"short magic", "CLR", "does not start with"},
		{"wrong magic", string(with(0, 'C', 'L', 'R', '2')), "does not start with"},
		{"lower-case magic", string(with(0, 'c')), "does not start with"},
		{"magic only", "CLR1", "truncated leaf length"},
		{"half a leaf length", "CLR1\x00", "truncated leaf length"},
		{"empty leaf", "CLR1\x00\x00", "empty leaf"},
		{"leaf longer than input", string(with(4, 0xff, 0xff)), "leaf length 65535, only"},
		{"truncated index", string(good[:leafEnd+7]), "truncated index"},
		{"missing proof count", string(good[:countAt]), "truncated proof count"},
		{"proof count 65", string(with(countAt, 65)), "proof count 65 above 64"},
		{"proof count 255", string(with(countAt, 255)), "proof count 255 above 64"},
		{"truncated proof", string(good[:countAt+1+2*32+31]), "truncated proof hash 2 of 3"},
		{"missing checkpoint", string(good[:checkpointAt]), "truncated checkpoint length"},
		{"empty checkpoint", string(with(checkpointAt, 0, 0)), "empty checkpoint"},
		{"truncated checkpoint", string(good[:len(good)-1]), "checkpoint length 193, only 192"},
		{"trailing byte", string(append(slices.Clone(good), 0)), "1 trailing bytes"},
		{"proof count one too high", string(with(countAt, 4)), "checkpoint length 25953, only 161"},
		{"proof count one too low", string(with(countAt, 2)), "checkpoint length 54142, only"},
	}
	for _, tt := range tests {
		r, err := proofs.ParseReceipt([]byte(tt.input))
		if !errors.Is(err, proofs.ErrMalformedReceipt) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: ParseReceipt = %+v, %v; want ErrMalformedReceipt mentioning %q", tt.name, r, err, tt.msg)
		}
	}
}

func TestMarshalReceiptChecksFieldRanges(t *testing.T) {
	valid := func() *proofs.Receipt {
		return &proofs.Receipt{Leaf: []byte{1}, Index: 0, Proof: nil, Checkpoint: []byte{1}}
	}
	tests := []struct {
		name   string
		modify func(*proofs.Receipt)
		ok     bool
	}{
		{"smallest", func(*proofs.Receipt) {}, true},
		{"empty leaf", func(r *proofs.Receipt) { r.Leaf = nil }, false},
		{"65,535-byte leaf", func(r *proofs.Receipt) { r.Leaf = make([]byte, 65535) }, true},
		{"65,536-byte leaf", func(r *proofs.Receipt) { r.Leaf = make([]byte, 65536) }, false},
		{"64 hashes", func(r *proofs.Receipt) { r.Proof = make([][32]byte, 64) }, true},
		{"65 hashes", func(r *proofs.Receipt) { r.Proof = make([][32]byte, 65) }, false},
		{"empty checkpoint", func(r *proofs.Receipt) { r.Checkpoint = []byte{} }, false},
		{"65,535-byte checkpoint", func(r *proofs.Receipt) { r.Checkpoint = make([]byte, 65535) }, true},
		{"65,536-byte checkpoint", func(r *proofs.Receipt) { r.Checkpoint = make([]byte, 65536) }, false},
	}
	for _, tt := range tests {
		r := valid()
		tt.modify(r)
		b, err := r.MarshalBinary()
		switch {
		case tt.ok && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.ok:
			if _, err := proofs.ParseReceipt(b); err != nil {
				t.Errorf("%s: ParseReceipt(MarshalBinary()) = %v", tt.name, err)
			}
		case !errors.Is(err, proofs.ErrMalformedReceipt):
			t.Errorf("%s: MarshalBinary = %v, want ErrMalformedReceipt", tt.name, err)
		}
	}
}

// receiptsFor signs a checkpoint of a tlog tree and returns a receipt for
// every leaf.
func receiptsFor(t *testing.T, tl *testLog, size int) []*proofs.Receipt {
	salt := []byte("receipt")
	tr := newTlogTree(t, size, salt)
	cp := proofs.Checkpoint{Origin: tl.verifier.Origin(), Size: uint64(size), Hash: tr.root(t, size)}
	signed := sign(t, string(cp.Marshal()), tl.signer)
	var rs []*proofs.Receipt
	for x := range size {
		rs = append(rs, &proofs.Receipt{Leaf: tlogLeaf(x, salt), Index: uint64(x), Proof: tr.inclusion(t, x, size), Checkpoint: signed})
	}
	return rs
}

func TestReceiptVerifyAcceptsEveryLeaf(t *testing.T) {
	tl := newTestLog(t, "example.com/log")
	for _, r := range receiptsFor(t, tl, 13) {
		c, err := r.Verify(tl.verifier)
		if err != nil || c.Size != 13 || c.Origin != "example.com/log" {
			t.Errorf("leaf %d: Verify = %+v, %v", r.Index, c, err)
		}
	}
}

func TestReceiptVerifyRejects(t *testing.T) {
	tl := newTestLog(t, "example.com/log")
	other := newTestLog(t, "example.com/log")
	rs := receiptsFor(t, tl, 13)
	tests := []struct {
		name   string
		modify func(r *proofs.Receipt)
		v      *proofs.LogVerifier
		want   error
	}{
		{"another log's key", func(*proofs.Receipt) {}, other.verifier, proofs.ErrBadSignature},
		{"tampered leaf", func(r *proofs.Receipt) { r.Leaf = append(slices.Clone(r.Leaf), 0) }, tl.verifier, proofs.ErrInclusion},
		{"another leaf", func(r *proofs.Receipt) { r.Leaf = rs[6].Leaf }, tl.verifier, proofs.ErrInclusion},
		{"wrong index", func(r *proofs.Receipt) { r.Index = 4 }, tl.verifier, proofs.ErrInclusion},
		{"index beyond the checkpoint", func(r *proofs.Receipt) { r.Index = 13 }, tl.verifier, proofs.ErrInclusion},
		{"tampered proof", func(r *proofs.Receipt) { r.Proof = slices.Clone(r.Proof); r.Proof[1][0] ^= 1 }, tl.verifier, proofs.ErrInclusion},
		{"proof of another leaf", func(r *proofs.Receipt) { r.Proof = rs[6].Proof }, tl.verifier, proofs.ErrInclusion},
		{"tampered checkpoint", func(r *proofs.Receipt) {
			r.Checkpoint = bytes.Replace(r.Checkpoint, []byte("\n13\n"), []byte("\n14\n"), 1)
		}, tl.verifier, proofs.ErrBadSignature},
	}
	for _, tt := range tests {
		r := *rs[5]
		tt.modify(&r)
		if c, err := r.Verify(tt.v); !errors.Is(err, tt.want) {
			t.Errorf("%s: Verify = %+v, %v; want %v", tt.name, c, err, tt.want)
		}
	}
}

func FuzzParseReceipt(f *testing.F) {
	good := goldenReceiptBytes(f)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte("CLR1\x00\x01x\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01y"))
	f.Add([]byte("CLR1\x00\x01x\x00\x00\x00\x00\x00\x00\x00\x00\x41"))
	f.Add([]byte("CLR1\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := proofs.ParseReceipt(b)
		if err != nil {
			if !errors.Is(err, proofs.ErrMalformedReceipt) {
				t.Fatalf("error %v does not wrap ErrMalformedReceipt", err)
			}
			return
		}
		again, err := r.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("MarshalBinary(ParseReceipt(%x)) = %x, %v", b, again, err)
		}
	})
}
