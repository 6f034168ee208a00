package witness

import (
	"net/http"
	"testing"
)

// FuzzHandler posts arbitrary bodies to a witness that has cosigned the
// test log up to size 5. Whatever the body, the handler must not panic,
// must answer with a status of the tlog-witness table, and must never move
// the state backwards or off the log's tree.
func FuzzHandler(f *testing.F) {
	l := newTestLog(f, "example.com/log", 16)
	for _, r := range [][2]uint64{{5, 9}, {0, 9}, {5, 5}, {9, 5}, {0, 0}} {
		if r[0] <= r[1] {
			f.Add(l.request(f, r[0], r[1]))
		}
	}
	f.Add(mustMarshal(f, Request{OldSize: 9, Checkpoint: l.checkpoint(f, 5)}))
	f.Add([]byte("old 5\n\nexample.com/log\n9\n\n— example.com/log AAAAAAAA\n"))
	w := newTestWitness(f, f.TempDir(), l)
	advance(f, w, l, 5)
	allowed := map[int]bool{
		http.StatusOK: true, http.StatusBadRequest: true, http.StatusForbidden: true, http.StatusNotFound: true,
		http.StatusConflict: true, http.StatusUnprocessableEntity: true,
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		before, _, _ := w.Latest(l.origin)
		rec := post(w.Handler(), body)
		if !allowed[rec.Code] {
			t.Fatalf("status %d %q", rec.Code, rec.Body)
		}
		size, root, ok := w.Latest(l.origin)
		if !ok || size < before || size > 16 || root != l.root(size) {
			t.Fatalf("state went from size %d to %d %x", before, size, root)
		}
	})
}
