package benchplot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/chipledger/chipledger/internal/loadgen"
)

// ErrNothingToPlot is returned for a report with neither append nor growth
// results, the only ones drawn as curves.
var ErrNothingToPlot = errors.New("nothing to plot: the append and growth scenarios are the ones drawn")

// Formats are the file formats Write and Draw produce.
var Formats = []string{"png", "svg", "pdf"}

// panel size and layout.
const (
	panelWidth  = 14 * vg.Centimeter
	panelHeight = 10 * vg.Centimeter
	columns     = 2
)

// Write draws the report's curves to a file whose extension (.png, .svg or
// .pdf) gives the format.
func Write(path string, r *loadgen.Report) (err error) {
	format := strings.TrimPrefix(strings.ToLower(filepath.Ext(path)), ".")
	if !slices.Contains(Formats, format) {
		return fmt.Errorf("plot %s: want a .png, .svg or .pdf file", path)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	return Draw(f, format, r)
}

// Draw draws the report's curves in one image of up to four panels, two
// to a row: append throughput against log size (a line per cluster size
// and client count), append latency p50/p99 against log size, inclusion
// proof latency p50/p99 against log size (from the growth scenarios), and
// append throughput against concurrent clients, a line per cluster size
// (from the append scenarios). Panels without data are left out.
func Draw(w io.Writer, format string, r *loadgen.Report) error {
	panels := panels(r)
	if len(panels) == 0 {
		return ErrNothingToPlot
	}
	rows := (len(panels) + columns - 1) / columns
	cols := min(len(panels), columns)
	c, err := draw.NewFormattedCanvas(vg.Length(cols)*panelWidth, vg.Length(rows)*panelHeight, format)
	if err != nil {
		return err
	}
	grid := make([][]*plot.Plot, rows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, cols)
	}
	for i, p := range panels {
		grid[i/cols][i%cols] = p
	}
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Centimeter, PadY: vg.Centimeter,
		PadTop: vg.Centimeter / 2, PadBottom: vg.Centimeter / 2, PadLeft: vg.Centimeter / 2, PadRight: vg.Centimeter / 2}
	canvases := plot.Align(grid, tiles, draw.New(c))
	for i, p := range panels {
		p.Draw(canvases[i/cols][i%cols])
	}
	_, err = c.WriteTo(w)
	return err
}

// panels returns the plots the report has data for.
func panels(r *loadgen.Report) []*plot.Plot {
	var out []*plot.Plot
	for _, p := range []*plot.Plot{
		growthThroughput(r.Growth), growthAppendLatency(r.Growth), growthProofLatency(r.Growth), concurrency(r.Append),
	} {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// series is one line of a panel. Lines of one style share a colour and
// a point shape; a dashed line is a p99 next to its p50.
type series struct {
	name   string
	xys    plotter.XYs
	style  int
	dashed bool
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Legend.Left = true
	p.Y.Tick.Marker = plainTicks{}
	p.Add(plotter.NewGrid())
	return p
}

// sizeAxis gives the plot a logarithmic x axis of log sizes, with a tick
// at each size measured, labelled with the size configured ("100k").
func sizeAxis(p *plot.Plot, g []loadgen.GrowthReport) {
	p.X.Scale = plot.LogScale{}
	var ticks plot.ConstantTicks
	labels := map[string]bool{}
	for _, r := range g {
		if l := shortCount(r.Size); !labels[l] {
			labels[l] = true
			ticks = append(ticks, plot.Tick{Value: float64(r.TreeSize), Label: l})
		}
	}
	p.X.Tick.Marker = ticks
}

// shortCount writes 10000 as "10k" and 1000000 as "1M".
func shortCount(n uint64) string {
	switch {
	case n >= 1_000_000 && n%100_000 == 0:
		return strconv.FormatFloat(float64(n)/1e6, 'f', -1, 64) + "M"
	case n >= 1000 && n%100 == 0:
		return strconv.FormatFloat(float64(n)/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatUint(n, 10)
}

// plainTicks are the default ticks with labels without needless
// decimals ("5000", not "5000.00").
type plainTicks struct{}

func (plainTicks) Ticks(min, max float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'f', -1, 64)
		}
	}
	return ticks
}

// headroom raises the top of the y axis above the data, so that the
// legend in the top left corner does not cover the lines.
func headroom(p *plot.Plot) {
	if _, ok := p.Y.Scale.(plot.LogScale); ok {
		p.Y.Max *= 20
		return
	}
	p.Y.Max *= 1.6
}

// addLines adds each series as a line with points, in a colour and shape
// of its own, and labels it in the legend. It returns p, or nil if no
// series had a point.
func addLines(p *plot.Plot, ss []series) *plot.Plot {
	lines := 0
	for _, s := range ss {
		// Log axes cannot show zero: drop such points.
		s.xys = slices.DeleteFunc(s.xys, func(xy plotter.XY) bool { return xy.X <= 0 || xy.Y <= 0 })
		if len(s.xys) == 0 {
			continue
		}
		l, pts, err := plotter.NewLinePoints(s.xys)
		if err != nil {
			continue // a NaN or infinity: leave the line out
		}
		l.Color = plotutil.Color(s.style)
		if s.dashed {
			l.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
		}
		pts.Color = plotutil.Color(s.style)
		pts.Shape = plotutil.Shape(s.style)
		p.Add(l, pts)
		p.Legend.Add(s.name, l, pts)
		lines++
	}
	if lines == 0 {
		return nil
	}
	headroom(p)
	return p
}

func nodesLabel(n int) string {
	switch n {
	case 0:
		return "running cluster"
	case 1:
		return "1 node"
	}
	return fmt.Sprintf("%d nodes", n)
}

// growthKeys returns the cluster sizes and append client counts of the
// growth results, in order of appearance.
func growthKeys(g []loadgen.GrowthReport) (nodes, clients []int) {
	for _, r := range g {
		if !slices.Contains(nodes, r.Nodes) {
			nodes = append(nodes, r.Nodes)
		}
		for _, a := range r.Appends {
			if !slices.Contains(clients, a.Clients) {
				clients = append(clients, a.Clients)
			}
		}
	}
	return nodes, clients
}

// perAppend returns, for each cluster size and client count, the points
// (tree size, f(append run)).
func perAppend(g []loadgen.GrowthReport, label func(nodes, clients int) string, f func(loadgen.Stats) float64) []series {
	nodes, clients := growthKeys(g)
	var out []series
	for _, n := range nodes {
		for _, c := range clients {
			s := series{name: label(n, c), style: len(out)}
			for _, r := range g {
				for _, a := range r.Appends {
					if r.Nodes == n && a.Clients == c && a.Ops > 0 {
						s.xys = append(s.xys, plotter.XY{X: float64(r.TreeSize), Y: f(a.Stats)})
					}
				}
			}
			out = append(out, s)
		}
	}
	return out
}

func growthThroughput(g []loadgen.GrowthReport) *plot.Plot {
	p := newPlot("Append throughput as the log grows", "log size (leaves)", "appends/s")
	sizeAxis(p, g)
	p.Y.Min = 0
	return addLines(p, perAppend(g, func(n, c int) string { return fmt.Sprintf("%s, %d clients", nodesLabel(n), c) },
		func(s loadgen.Stats) float64 { return s.PerSecond }))
}

func growthAppendLatency(g []loadgen.GrowthReport) *plot.Plot {
	p := newPlot("Append latency as the log grows", "log size (leaves)", "latency (ms)")
	sizeAxis(p, g)
	logY(p)
	p50 := perAppend(g, func(n, c int) string { return fmt.Sprintf("p50, %s, %d clients", nodesLabel(n), c) },
		func(s loadgen.Stats) float64 { return s.P50Ms })
	p99 := perAppend(g, func(n, c int) string { return fmt.Sprintf("p99, %s, %d clients", nodesLabel(n), c) },
		func(s loadgen.Stats) float64 { return s.P99Ms })
	for i := range p99 {
		p99[i].dashed = true
	}
	return addLines(p, append(p50, p99...))
}

func growthProofLatency(g []loadgen.GrowthReport) *plot.Plot {
	p := newPlot("Inclusion proof latency as the log grows", "log size (leaves)", "latency (ms)")
	sizeAxis(p, g)
	p.Y.Min = 0
	nodes, _ := growthKeys(g)
	var ss []series
	for _, q := range []struct {
		name   string
		f      func(loadgen.Stats) float64
		dashed bool
	}{{"p50", func(s loadgen.Stats) float64 { return s.P50Ms }, false}, {"p99", func(s loadgen.Stats) float64 { return s.P99Ms }, true}} {
		for i, n := range nodes {
			s := series{style: i, dashed: q.dashed}
			for _, r := range g {
				if r.Nodes == n && r.Inclusion.Ops > 0 {
					s.name = fmt.Sprintf("%s, %s, %d clients", q.name, nodesLabel(n), r.InclusionClients)
					s.xys = append(s.xys, plotter.XY{X: float64(r.TreeSize), Y: q.f(r.Inclusion)})
				}
			}
			ss = append(ss, s)
		}
	}
	return addLines(p, ss)
}

func concurrency(a []loadgen.AppendReport) *plot.Plot {
	p := newPlot("Append throughput by concurrency", "concurrent clients", "appends/s")
	p.X.Scale = plot.LogScale{}
	p.Y.Min = 0
	var nodes []int
	var ticks plot.ConstantTicks
	for _, r := range a {
		if !slices.Contains(nodes, r.Nodes) {
			nodes = append(nodes, r.Nodes)
		}
		if !slices.ContainsFunc(ticks, func(t plot.Tick) bool { return t.Value == float64(r.Clients) }) {
			ticks = append(ticks, plot.Tick{Value: float64(r.Clients), Label: fmt.Sprint(r.Clients)})
		}
	}
	p.X.Tick.Marker = ticks
	var ss []series
	for _, n := range nodes {
		s := series{name: nodesLabel(n), style: len(ss)}
		for _, r := range a {
			if r.Nodes == n && r.PerSecond > 0 {
				s.xys = append(s.xys, plotter.XY{X: float64(r.Clients), Y: r.PerSecond})
			}
		}
		slices.SortFunc(s.xys, func(a, b plotter.XY) int { return int(a.X - b.X) })
		ss = append(ss, s)
	}
	return addLines(p, ss)
}

// logY gives the plot a logarithmic y axis, for latencies that span
// orders of magnitude.
func logY(p *plot.Plot) {
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
}
