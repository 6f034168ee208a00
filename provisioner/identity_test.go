package provisioner

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStationNameSurvivesALoad(t *testing.T) {
	dir := t.TempDir()
	ca, err := InitCA(filepath.Join(dir, "ca"), "Example Devices Ltd")
	if err != nil {
		t.Fatal(err)
	}
	st := filepath.Join(dir, "station")
	if _, err := InitStation(st, ca, "line-7", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := InitStation(st, ca, "line-7", time.Hour); !errors.Is(err, ErrStationExists) {
		t.Fatalf("second InitStation: %v, want ErrStationExists", err)
	}
	id, err := LoadStation(st)
	if err != nil {
		t.Fatal(err)
	}
	if id.Name() != "line-7" {
		t.Errorf("Name() = %q, want line-7", id.Name())
	}
}

// TestAnInterruptedStationInitIsFinished: InitStation writes the key, then
// the certificate. Interrupted between the two, it leaves the key alone; run
// again (as LoadStation's error advises) it certifies that key, instead of
// refusing the directory as a station that exists and cannot be loaded.
func TestAnInterruptedStationInitIsFinished(t *testing.T) {
	dir := t.TempDir()
	ca, err := InitCA(filepath.Join(dir, "ca"), "Example Devices Ltd")
	if err != nil {
		t.Fatal(err)
	}
	st := filepath.Join(dir, "station")
	first, err := InitStation(st, ca, "line-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(st, StationCertFile)); err != nil { // the write that never happened
		t.Fatal(err)
	}
	if _, err := LoadStation(st); err == nil {
		t.Fatal("a station without its certificate loads")
	}
	again, err := InitStation(st, ca, "line-1", time.Hour)
	if err != nil {
		t.Fatalf("station init again after an interrupted one: %v", err)
	}
	if !again.Key.Equal(first.Key) {
		t.Fatal("the second run made another key instead of certifying the first")
	}
	loaded, err := LoadStation(st)
	if err != nil || loaded.ID() != again.ID() {
		t.Fatalf("load the finished station: %v", err)
	}
	if _, err := InitStation(st, ca, "line-1", time.Hour); !errors.Is(err, ErrStationExists) {
		t.Fatalf("station init over a whole station: %v, want ErrStationExists", err)
	}
}
