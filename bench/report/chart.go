package report

import (
	"fmt"
	"image/color"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"uvs/bench/harness"
)

// palette gives each path the same colour in every panel.
var palette = []color.RGBA{
	{0x7f, 0x7f, 0x7f, 0xff}, // kernel: grey, the ceiling
	{0x1f, 0x77, 0xb4, 0xff}, // nftables: blue
	{0xff, 0x7f, 0x0e, 0xff}, // haproxy: orange
	{0x2c, 0xa0, 0x2c, 0xff}, // uvs afpacket: green
	{0x98, 0xdf, 0x8a, 0xff}, // uvs tun: light green
	{0xd6, 0x27, 0x28, 0xff},
	{0x94, 0x67, 0xbd, 0xff},
}

// bars are one panel's medians with their spread, for error bars.
type bars struct {
	med, lo, hi []float64
	off         float64
}

func (b bars) Len() int                        { return len(b.med) }
func (b bars) XY(i int) (float64, float64)     { return float64(i) + b.off, b.med[i] }
func (b bars) YError(i int) (float64, float64) { return b.med[i] - b.lo[i], b.hi[i] - b.med[i] }

// Chart writes a PNG with one panel per workload: a bar per path at the
// median, whiskers from the minimum to the maximum of the repeats, and
// the machine and date above.
func (r *Report) Chart(w io.Writer) error {
	const cols = 3
	rows := (len(r.Workloads) + cols - 1) / cols
	width, height := vg.Length(cols)*4.2*vg.Inch, vg.Length(rows)*3.4*vg.Inch+0.6*vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(96), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(img)

	// Title lines at the top.
	sty := draw.TextStyle{Color: color.Black, Font: plot.DefaultFont, Handler: plot.DefaultTextHandler,
		XAlign: draw.XCenter, YAlign: draw.YTop}
	sty.Font.Size = vg.Points(13)
	sty.Font.Variant = "Sans"
	dc.FillText(sty, vg.Point{X: width / 2, Y: height - 0.08*vg.Inch},
		"UVS vs kernel and HAProxy — "+r.Date.UTC().Format("2006-01-02 15:04 UTC"))
	sty.Font.Size = vg.Points(10)
	dc.FillText(sty, vg.Point{X: width / 2, Y: height - 0.32*vg.Inch}, r.Machine.String()+" — bar: median, whiskers: min–max")
	body := draw.Crop(dc, 0, 0, 0, -0.6*vg.Inch)

	plots := make([][]*plot.Plot, rows)
	for i := range plots {
		plots[i] = make([]*plot.Plot, cols)
	}
	for i, wl := range r.Workloads {
		p, err := r.panel(wl)
		if err != nil {
			return err
		}
		plots[i/cols][i%cols] = p
	}
	for i := len(r.Workloads); i < rows*cols; i++ {
		plots[i/cols][i%cols] = r.legendPanel()
	}
	canvases := plot.Align(plots, draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}, body)
	for j := range plots {
		for i, p := range plots[j] {
			p.Draw(canvases[j][i])
		}
	}
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}

// panel is one workload's bars.
func (r *Report) panel(wl harness.Workload) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = wl.Label
	p.Y.Label.Text = wl.Unit
	p.Y.Min = 0
	p.Title.TextStyle.Font.Variant = "Sans"
	var names []string
	top := 0.0
	for i, path := range r.Paths {
		c := r.cell(path.Name, wl.Name)
		s := c.spread(value)
		names = append(names, shortLabel(path, c))
		if s.N == 0 {
			continue
		}
		b := bars{med: []float64{s.Median}, lo: []float64{s.Min}, hi: []float64{s.Max}, off: float64(i)}
		bc, err := plotter.NewBarChart(plotter.Values(b.med), vg.Points(22))
		if err != nil {
			return nil, fmt.Errorf("chart %s: %w", wl.Name, err)
		}
		bc.XMin = float64(i)
		bc.Color = palette[i%len(palette)]
		bc.LineStyle.Width = 0
		eb, err := plotter.NewYErrorBars(b)
		if err != nil {
			return nil, fmt.Errorf("chart %s: %w", wl.Name, err)
		}
		eb.LineStyle.Width = vg.Points(1.2)
		p.Add(bc, eb)
		top = max(top, s.Max)
	}
	p.Y.Max = top * 1.08 // room above the tallest whisker
	p.NominalX(names...)
	p.X.Tick.Label.Rotation = math.Pi / 9
	p.X.Tick.Label.XAlign = draw.XRight
	p.X.Tick.Label.YAlign = draw.YCenter
	p.X.Min, p.X.Max = -0.6, float64(len(r.Paths))-0.4
	p.Add(plotter.NewGrid())
	return p, nil
}

// shortLabel names a bar; a path without a figure says why.
func shortLabel(path harness.Path, c cell) string {
	switch {
	case len(c.ok) > 0:
		return path.Name
	case len(c.skipped) > 0:
		return path.Name + " (n/a)"
	default:
		return path.Name + " (failed)"
	}
}

// legendPanel fills an empty tile with what the bars' colours mean.
func (r *Report) legendPanel() *plot.Plot {
	p := plot.New()
	p.HideAxes()
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.TextStyle.Font.Size = vg.Points(11)
	for i, path := range r.Paths {
		bc, err := plotter.NewBarChart(plotter.Values{0}, 1)
		if err != nil {
			continue
		}
		bc.Color = palette[i%len(palette)]
		p.Legend.Add(path.Label, bc)
	}
	return p
}
