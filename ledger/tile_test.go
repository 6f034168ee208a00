package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

func TestTilePaths(t *testing.T) {
	for _, tc := range []struct {
		ref  TileRef
		path string
	}{
		{TileRef{Level: 0, Index: 0, Width: 256}, "tile/0/000"},
		{TileRef{Level: 0, Index: 5, Width: 256}, "tile/0/005"},
		{TileRef{Level: 1, Index: 1000, Width: 256}, "tile/1/x001/000"},
		{TileRef{Level: 2, Index: 1234067, Width: 256}, "tile/2/x001/x234/067"},
		{TileRef{Level: 0, Index: 273, Width: 112}, "tile/0/273.p/112"},
		{TileRef{Entries: true, Index: 0, Width: 8}, "tile/entries/000.p/8"},
		{TileRef{Entries: true, Index: 999, Width: 256}, "tile/entries/999"},
		{TileRef{Level: 63, Index: 1<<64 - 1, Width: 1}, "tile/63/x018/x446/x744/x073/x709/x551/615.p/1"},
	} {
		if got := tc.ref.Path(); got != tc.path {
			t.Errorf("%+v.Path() = %q, want %q", tc.ref, got, tc.path)
		}
		got, err := ParseTilePath(tc.path)
		if err != nil || got != tc.ref {
			t.Errorf("ParseTilePath(%q) = %+v, %v; want %+v", tc.path, got, err, tc.ref)
		}
	}
}

// TestTilePathsMatchTlog compares with golang.org/x/mod/sumdb/tlog, whose
// paths carry the tile height and call entry bundles "data".
func TestTilePathsMatchTlog(t *testing.T) {
	for _, n := range []int64{0, 1, 999, 1000, 1001, 123456789, 1 << 40} {
		for _, w := range []int{1, 17, 255, 256} {
			for _, l := range []int{-1, 0, 3} {
				tt := tlog.Tile{H: 8, L: l, N: n, W: w}
				want := strings.Replace(strings.Replace(tt.Path(), "tile/8/", "tile/", 1), "/data/", "/entries/", 1)
				ref := TileRef{Entries: l < 0, Level: uint8(max(l, 0)), Index: uint64(n), Width: w}
				if got := ref.Path(); got != want {
					t.Errorf("Path of %+v = %q, tlog gives %q", ref, got, want)
				}
			}
		}
	}
}

func TestParseTilePathRejectsNonCanonical(t *testing.T) {
	for _, p := range []string{
		"", "tile", "tile/", "tile/0", "tile/0/", "tile/00/000", "tile/64/000", "tile/-1/000",
		"tile/0/0", "tile/0/0000", "tile/0/x000/001", "tile/0/001/002", "tile/0/x001", "tile/0/x01/000",
		"tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/017", "tile/0/000.p/", "tile/0/000.p",
		"tile/data/000", "tile/entries/000.p/8/", "/tile/0/000", "tile/0/00a",
		"tile/0/x018/x446/x744/x073/x709/x551/616",
	} {
		if ref, err := ParseTilePath(p); !errors.Is(err, ErrBadTilePath) {
			t.Errorf("ParseTilePath(%q) = %+v, %v; want ErrBadTilePath", p, ref, err)
		}
	}
}

func FuzzParseTilePath(f *testing.F) {
	for _, p := range []string{"tile/0/000", "tile/1/x001/234.p/7", "tile/entries/x002/000", "tile/0/000.p/0"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		ref, err := ParseTilePath(p)
		if err != nil {
			return
		}
		if got := ref.Path(); got != p {
			t.Fatalf("ParseTilePath(%q) = %+v, whose path is %q", p, ref, got)
		}
	})
}

// seventyK builds the 70,000-leaf tree of reference/transparency-specs.md §7
// (leaf i = 8-byte big-endian i).
func seventyK(t *testing.T) *Store {
	t.Helper()
	s := openTestStore(t, t.TempDir(), Options{NoSync: true})
	batch := make([][]byte, 0, 1000)
	for i := range uint64(70000) {
		batch = append(batch, binary.BigEndian.AppendUint64(nil, i))
		if len(batch) == cap(batch) {
			if _, err := s.Append(batch, nil); err != nil {
				t.Fatal(err)
			}
			batch = make([][]byte, 0, 1000)
		}
	}
	return s
}

func TestTilesGoldenSeventyThousand(t *testing.T) {
	s := seventyK(t)
	root := s.State().Root
	if got, want := hex.EncodeToString(root[:]), "0759167a0f98e35e802d46ff7c7d29d2c3f03a63a256deb6abbff357a91b63b1"; got != want {
		t.Fatalf("root of the 70,000-leaf tree = %s, want %s", got, want)
	}
	tile, err := s.ReadTile(TileRef{Level: 0, Index: 273, Width: 112})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprintf("%x", sha256.Sum256(tile)), "c7ebb1581fb37d08e8c14ef23ce02ebd07d79d783b6515c740d8b9f566ef0289"; got != want {
		t.Fatalf("SHA-256(tile/0/273.p/112) = %s, want %s", got, want)
	}
	// The spec's tile set for size 70,000 exists; one step past it does not.
	for _, ok := range []TileRef{{Level: 0, Index: 272, Width: 256}, {Level: 1, Index: 0, Width: 256},
		{Level: 1, Index: 1, Width: 17}, {Level: 2, Index: 0, Width: 1}, {Entries: true, Index: 273, Width: 112}} {
		if _, err := s.ReadTile(ok); err != nil {
			t.Errorf("ReadTile(%s): %v", ok.Path(), err)
		}
	}
	for _, beyond := range []TileRef{{Level: 0, Index: 273, Width: 256}, {Level: 0, Index: 273, Width: 113},
		{Level: 1, Index: 1, Width: 18}, {Level: 2, Index: 0, Width: 2}, {Level: 3, Index: 0, Width: 1},
		{Entries: true, Index: 273, Width: 113}, {Level: 7, Index: 1 << 60, Width: 1}, {Entries: true, Index: 1<<64 - 1, Width: 1}} {
		if _, err := s.ReadTile(beyond); !errors.Is(err, ErrBeyondSize) {
			t.Errorf("ReadTile(%s) = %v, want ErrBeyondSize", beyond.Path(), err)
		}
	}
}

// tileReader adapts the store to tlog.TileReader: tlog's tiles carry their
// height, and C2SP's are fixed at 8.
type tileReader struct{ s *Store }

func (r tileReader) Height() int { return TileHeight }

func (r tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		ref, err := ParseTilePath(strings.Replace(t.Path(), "tile/8/", "tile/", 1))
		if err != nil {
			return nil, err
		}
		if out[i], err = r.s.ReadTile(ref); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (r tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

// TestTilesReadBackThroughTlog reads the store only through its tiles, with
// tlog.TileHashReader (which checks every tile against the tree hash), and
// proves inclusion and consistency from them.
func TestTilesReadBackThroughTlog(t *testing.T) {
	s := seventyK(t)
	st := s.State()
	hr := tlog.TileHashReader(tlog.Tree{N: int64(st.Size), Hash: tlog.Hash(st.Root)}, tileReader{s})
	if root, err := tlog.TreeHash(int64(st.Size), hr); err != nil || root != tlog.Hash(st.Root) {
		t.Fatalf("tlog.TreeHash over tiles = %x, %v; want %x", root, err, st.Root)
	}
	for _, i := range []int64{0, 1, 255, 256, 65535, 65536, 69999, 12345} {
		p, err := tlog.ProveRecord(int64(st.Size), i, hr)
		if err != nil {
			t.Fatalf("ProveRecord(%d) over tiles: %v", i, err)
		}
		ours, err := s.InclusionProof(uint64(i), st.Size)
		if err != nil || !equalProofs(ours, p) {
			t.Fatalf("inclusion proof of %d over tiles differs from the store's (err %v)", i, err)
		}
		if err := tlog.CheckRecord(p, int64(st.Size), tlog.Hash(st.Root), i, tlog.RecordHash(binary.BigEndian.AppendUint64(nil, uint64(i)))); err != nil {
			t.Fatalf("CheckRecord(%d): %v", i, err)
		}
	}
	for _, m := range []int64{1, 256, 1000, 65536, 69999} {
		p, err := tlog.ProveTree(int64(st.Size), m, hr)
		if err != nil {
			t.Fatal(err)
		}
		old, _ := s.RootAt(uint64(m))
		if err := tlog.CheckTree(p, int64(st.Size), tlog.Hash(st.Root), m, tlog.Hash(old)); err != nil {
			t.Fatalf("CheckTree(%d → %d): %v", m, st.Size, err)
		}
	}
}

// TestEntryBundlesMatchLevelZeroTiles checks that every entry of every
// bundle hashes to the matching hash of the level-0 tile.
func TestEntryBundlesMatchLevelZeroTiles(t *testing.T) {
	s := openTestStore(t, t.TempDir(), Options{NoSync: true})
	var leaves [][]byte
	for i := range 600 {
		leaves = append(leaves, []byte(strings.Repeat("x", 1+i%70)))
	}
	if _, err := s.Append(leaves, nil); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []TileRef{{Index: 0, Width: 256}, {Index: 1, Width: 256}, {Index: 2, Width: 88}, {Index: 2, Width: 3}} {
		bundle, err := s.ReadTile(TileRef{Entries: true, Index: ref.Index, Width: ref.Width})
		if err != nil {
			t.Fatal(err)
		}
		hashes, err := s.ReadTile(ref)
		if err != nil {
			t.Fatal(err)
		}
		lh := newLeafHasher()
		for j := 0; j < ref.Width; j++ {
			if len(bundle) < 2 {
				t.Fatalf("bundle %d truncated at entry %d", ref.Index, j)
			}
			n := int(binary.BigEndian.Uint16(bundle))
			entry := bundle[2 : 2+n]
			bundle = bundle[2+n:]
			if want := leaves[int(ref.Index)*256+j]; string(entry) != string(want) {
				t.Fatalf("bundle %d entry %d = %q, want %q", ref.Index, j, entry, want)
			}
			if h := lh.hash(entry); string(h[:]) != string(hashes[32*j:32*j+32]) {
				t.Fatalf("bundle %d entry %d does not hash to its level-0 tile hash", ref.Index, j)
			}
		}
		if len(bundle) != 0 {
			t.Fatalf("bundle %d has %d bytes past its %d entries", ref.Index, len(bundle), ref.Width)
		}
	}
}
