package ledger

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// TileHeight is the height of C2SP tlog-tiles: a full tile holds 256 hashes
// (or, for entry bundles, 256 entries).
const TileHeight = 8

const tileWidth = 1 << TileHeight

// ErrBadTilePath is returned for a path that is not a C2SP tlog-tiles path.
var ErrBadTilePath = errors.New("malformed tile path")

// TileRef names a C2SP tlog-tiles resource: hash tile Level/Index or, when
// Entries is set, entry bundle Index. Width is the number of hashes or
// entries, 1 to 256; 256 is a full tile.
type TileRef struct {
	Entries bool
	Level   uint8
	Index   uint64
	Width   int
}

// Path returns the tile's path relative to the log prefix, for example
// "tile/0/x001/234.p/17" or "tile/entries/000".
func (t TileRef) Path() string {
	var b strings.Builder
	b.WriteString("tile/")
	if t.Entries {
		b.WriteString("entries")
	} else {
		b.WriteString(strconv.Itoa(int(t.Level)))
	}
	b.WriteByte('/')
	var groups []string
	for n := t.Index; ; n /= 1000 {
		groups = append(groups, fmt.Sprintf("%03d", n%1000))
		if n < 1000 {
			break
		}
	}
	for i := len(groups) - 1; i >= 0; i-- {
		if i > 0 {
			b.WriteByte('x')
		}
		b.WriteString(groups[i])
		if i > 0 {
			b.WriteByte('/')
		}
	}
	if t.Width < tileWidth {
		b.WriteString(".p/")
		b.WriteString(strconv.Itoa(t.Width))
	}
	return b.String()
}

// ParseTilePath parses "tile/<L>/<N>[.p/<W>]" or "tile/entries/<N>[.p/<W>]"
// (without a leading slash). It accepts exactly the canonical encoding: no
// leading zeros in L or W, N in zero-padded 3-digit groups with an "x" before
// every group but the last, and no superfluous leading "x000" group.
func ParseTilePath(path string) (TileRef, error) {
	bad := func(why string) (TileRef, error) {
		return TileRef{}, fmt.Errorf("%w %q: %s", ErrBadTilePath, path, why)
	}
	rest, ok := strings.CutPrefix(path, "tile/")
	if !ok {
		return bad("does not start with tile/")
	}
	var t TileRef
	kind, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return bad("no tile index")
	}
	if kind == "entries" {
		t.Entries = true
	} else {
		l, err := parseDecimal(kind, 63)
		if err != nil {
			return bad("level: " + err.Error())
		}
		t.Level = uint8(l)
	}
	t.Width = tileWidth
	if idx, w, ok := strings.Cut(rest, ".p/"); ok {
		width, err := parseDecimal(w, tileWidth-1)
		if err != nil || width == 0 {
			return bad("partial width must be 1 to 255")
		}
		t.Width = int(width)
		rest = idx
	}
	groups := strings.Split(rest, "/")
	for i, g := range groups {
		last := i == len(groups)-1
		if !last {
			var ok bool
			if g, ok = strings.CutPrefix(g, "x"); !ok {
				return bad("index group without x prefix")
			}
		}
		if len(g) != 3 || g[0] < '0' || g[0] > '9' || g[1] < '0' || g[1] > '9' || g[2] < '0' || g[2] > '9' {
			return bad("index groups must be three digits")
		}
		if i == 0 && len(groups) > 1 && g == "000" {
			return bad("leading zero index group")
		}
		d, _ := strconv.Atoi(g)
		if t.Index > (1<<64-1-uint64(d))/1000 {
			return bad("index too large")
		}
		t.Index = t.Index*1000 + uint64(d)
	}
	return t, nil
}

// parseDecimal parses a canonical decimal number no larger than max.
func parseDecimal(s string, max uint64) (uint64, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, errors.New("not a canonical decimal")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, errors.New("not a decimal")
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > max {
		return 0, fmt.Errorf("out of range 0 to %d", max)
	}
	return n, nil
}

// ReadTile returns the contents of a hash tile or entry bundle, as served by
// the C2SP tlog-tiles API. It fails with ErrBeyondSize unless every hash or
// entry the tile holds is in the committed tree; a partial tile's content is
// a prefix of the full tile's, so it never changes once it exists.
func (s *Store) ReadTile(t TileRef) ([]byte, error) {
	if t.Width < 1 || t.Width > tileWidth {
		return nil, fmt.Errorf("tile %s: width %d out of range", t.Path(), t.Width)
	}
	if t.Entries {
		return s.entryBundle(t)
	}
	return s.hashTile(t)
}

func (s *Store) entryBundle(t TileRef) ([]byte, error) {
	first := t.Index * tileWidth
	if t.Index > (1<<64-1)/tileWidth-1 {
		return nil, fmt.Errorf("tile %s: %w", t.Path(), ErrBeyondSize)
	}
	end := first + uint64(t.Width)
	if end > s.Size() {
		return nil, fmt.Errorf("tile %s: %w", t.Path(), ErrBeyondSize)
	}
	return s.records(first, end)
}

func (s *Store) hashTile(t TileRef) ([]byte, error) {
	level := uint(t.Level) * TileHeight
	first := t.Index * tileWidth
	last := first + uint64(t.Width) // one past the last node
	// Node (level, k) is complete iff (k+1)·2^level ≤ size.
	size := s.Size()
	if level >= 64 || t.Index > (1<<64-1)/tileWidth-1 || last > size>>level {
		return nil, fmt.Errorf("tile %s: %w", t.Path(), ErrBeyondSize)
	}
	out := make([]byte, 0, t.Width*32)
	err := s.view(size, func(r *reader) error {
		for k := first; k < last; k++ {
			h, err := r.node(uint8(level), k)
			if err != nil {
				return err
			}
			out = append(out, h[:]...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tile %s: %w", t.Path(), err)
	}
	return out, nil
}
