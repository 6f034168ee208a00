package provisioner

import (
	"errors"
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
