package benchplot

import (
	"bytes"
	"errors"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chipledger/chipledger/internal/loadgen"
)

// sampleReport is a report with append and growth results shaped like a
// real run's.
func sampleReport() *loadgen.Report {
	r := &loadgen.Report{}
	for _, nodes := range []int{1, 3} {
		for i, clients := range []int{1, 16, 256} {
			r.Append = append(r.Append, loadgen.AppendReport{
				AppendScenario: loadgen.AppendScenario{Nodes: nodes, Clients: clients, Appends: 1000},
				PerSecond:      float64(200 + 2500*i*i/nodes), P50Ms: 4, P99Ms: 20,
			})
		}
	}
	for i, size := range []uint64{10_000, 100_000, 1_000_000} {
		g := loadgen.GrowthReport{Nodes: 1, Size: size, TreeSize: size + size/64, InclusionClients: 16,
			Inclusion: loadgen.Stats{Ops: 1000, PerSecond: 20000, P50Ms: 0.4 + 0.1*float64(i), P99Ms: 4 + float64(i)}}
		for _, clients := range []int{16, 256} {
			g.Appends = append(g.Appends, loadgen.GrowthAppend{Clients: clients,
				Stats: loadgen.Stats{Ops: 1000, PerSecond: float64(5000 - 300*i + clients), P50Ms: float64(clients) / 8, P99Ms: float64(clients) / 2}})
		}
		r.Growth = append(r.Growth, g)
	}
	return r
}

func TestWriteDrawsEveryPanelAsPNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bench.png")
	if err := Write(path, sampleReport()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	// Four panels, two to a row.
	if b := img.Bounds(); b.Dx() <= b.Dy() || b.Dx() < 600 {
		t.Errorf("image is %v, want two panels wide and two high", b)
	}
	if dir := os.Getenv("BENCHPLOT_SAVE"); dir != "" {
		if err := Write(filepath.Join(dir, "sample.png"), sampleReport()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDrawSVGWithAppendResultsOnly(t *testing.T) {
	r := sampleReport()
	r.Growth = nil
	var buf bytes.Buffer
	if err := Draw(&buf, "svg", r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "<svg") || !strings.Contains(buf.String(), "concurrency") {
		t.Errorf("not an SVG of the concurrency panel: %.200s", buf.String())
	}
}

func TestDrawRefusesAReportWithoutCurves(t *testing.T) {
	r := &loadgen.Report{Recovery: []loadgen.RecoveryReport{{Client: loadgen.FreshClient}}}
	if err := Draw(&bytes.Buffer{}, "png", r); !errors.Is(err, ErrNothingToPlot) {
		t.Errorf("Draw of a report without curves = %v, want ErrNothingToPlot", err)
	}
}

func TestWriteRefusesAnUnknownFormat(t *testing.T) {
	if err := Write(filepath.Join(t.TempDir(), "bench.gif"), sampleReport()); err == nil {
		t.Error("Write to a .gif succeeded")
	}
}
