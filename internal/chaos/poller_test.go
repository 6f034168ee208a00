package chaos

import "testing"

func TestStreamReportsARunServingLess(t *testing.T) {
	s := NewStream()
	for _, size := range []uint64{10, 10, 12} {
		if r, ok := s.Served(1, size); ok {
			t.Fatalf("size %d: reported %s", size, r)
		}
	}
	r, ok := s.Served(1, 11)
	if !ok || r.AcrossRestart || r.From != 12 || r.To != 11 {
		t.Fatalf("size 11 after 12 in one run: %+v, %v; want a regression from 12 to 11", r, ok)
	}
}

func TestStreamTellsRegressionsAcrossARestartApart(t *testing.T) {
	s := NewStream()
	s.Served(1, 20)
	r, ok := s.Served(2, 15)
	if !ok || !r.AcrossRestart || r.From != 20 || r.To != 15 {
		t.Fatalf("size 15 from a restarted node after 20: %+v, %v; want a regression across a restart", r, ok)
	}
	if r, ok := s.Served(2, 18); !ok || !r.AcrossRestart {
		t.Fatalf("size 18 from the restarted node, still below 20: %+v, %v", r, ok)
	}
	if r, ok := s.Served(2, 21); ok {
		t.Fatalf("size 21: reported %s", r)
	}
	if r, ok := s.Served(2, 19); !ok || r.AcrossRestart {
		t.Fatalf("size 19 after the restarted node served 21: %+v, %v; want a regression in one run", r, ok)
	}
}
