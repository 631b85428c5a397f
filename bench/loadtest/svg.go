package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
	"time"
)

// plot is what the SVG shows: per-window latencies and throughput, and the
// steps with their target rates.
type plot struct {
	title   string
	windows []window
	width   time.Duration // of a window
	steps   []plotStep
	sloMS   float64 // the p95 objective, drawn as a line
}

// plotStep is one step's span, in seconds since the origin.
type plotStep struct {
	label    string
	phase    int // 1 or 2
	from, to float64
	target   float64 // req/s
	pass     bool
}

// buildPlot turns the results into a plot of 1 s windows.
func buildPlot(res *results, o options) plot {
	p := plot{title: fmt.Sprintf("shardgate load test: %d shards x (primary + replica), mix %s", shards, o.mix),
		width: time.Second, sloMS: ms(o.slo.p95)}
	var end time.Duration
	add := func(phase int, steps []stepStats, label func(stepStats) string) {
		for _, st := range steps {
			p.steps = append(p.steps, plotStep{label: label(st), phase: phase, from: st.from.Seconds(), to: st.to.Seconds(),
				target: st.target, pass: st.pass(o.slo)})
			end = max(end, st.to)
		}
	}
	add(1, res.capacity, func(st stepStats) string { return fmt.Sprintf("%.0f", st.target) })
	add(2, res.phase2, func(st stepStats) string { label, _, _ := strings.Cut(st.label, " "); return label })
	// Requests of the last step may complete up to a timeout after it.
	p.windows = windows(res.samples, p.width, end+o.load.timeout)
	return p
}

// Geometry of the SVG, in pixels.
const (
	svgW     = 1000
	svgH     = 680
	padLeft  = 76
	padRight = 24
	latTop   = 84
	latH     = 330
	rateTop  = 460
	rateH    = 150
	plotW    = svgW - padLeft - padRight
)

// Series colours (ColorBrewer, distinguishable in grey and by most
// colour-blind readers together with the legend order).
const (
	colP50      = "#2c7bb6"
	colP95      = "#fdae61"
	colP99      = "#d7191c"
	colAchieved = "#1a9641"
	colTarget   = "#555555"
)

// layout maps data to pixels.
type layout struct {
	p            plot
	tmax         float64 // seconds at the right edge
	tstep        float64 // seconds between x ticks
	logLo, logHi float64 // decades at the latency panel's bottom and top
	rmax, rstep  float64 // req/s at the rate panel's top, between its ticks
}

func newLayout(p plot) layout {
	l := layout{p: p}
	for _, s := range p.steps {
		l.tmax = max(l.tmax, s.to)
	}
	for _, w := range p.windows {
		l.tmax = max(l.tmax, (w.start + p.width).Seconds())
	}
	l.tstep = niceStep(max(l.tmax, 1) / 10)
	l.tmax = math.Ceil(max(l.tmax, 1)/l.tstep) * l.tstep
	lo, hi := latencyRange(p)
	l.logLo, l.logHi = math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if l.logHi <= l.logLo {
		l.logHi = l.logLo + 1
	}
	l.rmax = 1
	for _, s := range p.steps {
		l.rmax = max(l.rmax, s.target)
	}
	for _, w := range p.windows {
		l.rmax = max(l.rmax, w.achieved)
	}
	l.rstep = niceStep(l.rmax / 4)
	l.rmax = math.Ceil(l.rmax*1.05/l.rstep) * l.rstep
	return l
}

// latencyRange is the smallest and largest latency to show, in ms; the
// objective is always on the chart.
func latencyRange(p plot) (lo, hi float64) {
	lo, hi = p.sloMS, p.sloMS*1.5
	for _, w := range p.windows {
		if w.n == 0 {
			continue
		}
		lo = min(lo, max(w.p50, 0.01))
		hi = max(hi, w.p99)
	}
	return lo, hi
}

func (l layout) x(sec float64) float64 { return padLeft + sec/l.tmax*plotW }

func (l layout) yLat(msec float64) float64 {
	v := math.Log10(max(msec, math.Pow(10, l.logLo)))
	return latTop + latH*(1-(v-l.logLo)/(l.logHi-l.logLo))
}

func (l layout) yRate(r float64) float64 { return rateTop + rateH*(1-r/l.rmax) }

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 {
		return 1
	}
	pow := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*pow >= x {
			return m * pow
		}
	}
	return 10 * pow
}

// renderSVG writes the plot as a standalone SVG document: a latency panel
// (log scale) above a throughput panel, sharing the time axis.
func renderSVG(w io.Writer, p plot) error {
	l := newLayout(p)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgW, svgH, svgW, svgH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgW, svgH)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", padLeft, esc(p.title))
	l.steps(&b)
	l.latencyAxis(&b)
	l.rateAxis(&b)
	l.timeAxis(&b)
	l.series(&b)
	l.legend(&b)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// steps shades failed steps, separates steps with dashed lines, labels
// them with their target and the phases above the latency panel.
func (l layout) steps(b *strings.Builder) {
	phaseStart := map[int]float64{}
	for _, s := range l.p.steps {
		x0, x1 := l.x(s.from), l.x(s.to)
		if !s.pass {
			for _, panel := range [][2]float64{{latTop, latH}, {rateTop, rateH}} {
				fmt.Fprintf(b, `<rect class="failed-step" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="0.10"/>`+"\n",
					x0, panel[0], x1-x0, panel[1], colP99)
			}
		}
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999" stroke-dasharray="3,3"/>`+"\n", x0, latTop, x0, rateTop+rateH)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="10" text-anchor="middle" fill="#333">%s</text>`+"\n", (x0+x1)/2, rateTop-6, esc(s.label))
		if start, ok := phaseStart[s.phase]; !ok || s.from < start {
			phaseStart[s.phase] = s.from
		}
	}
	names := map[int]string{1: "phase 1: find capacity (target req/s per step)", 2: "phase 2: baseline, 2x, 3x"}
	for phase := 1; phase <= 2; phase++ {
		if start, ok := phaseStart[phase]; ok {
			// Left-aligned at the phase's start: centred, a narrow phase's
			// label would run off the panel's left edge.
			fmt.Fprintf(b, `<text class="phase" x="%.1f" y="%d" font-weight="bold" fill="#333">%s</text>`+"\n",
				l.x(start)+4, latTop-8, esc(names[phase]))
		}
	}
}

// latencyAxis draws decade gridlines (2x and 5x fainter), their labels,
// the objective line and the panel's frame.
func (l layout) latencyAxis(b *strings.Builder) {
	for d := l.logLo; d <= l.logHi; d++ {
		v := math.Pow(10, d)
		y := l.yLat(v)
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ccc"/>`+"\n", padLeft, y, padLeft+plotW, y)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", padLeft-6, y, trimFloat(v))
		for _, m := range []float64{2, 5} {
			if d < l.logHi {
				ym := l.yLat(m * v)
				fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>`+"\n", padLeft, ym, padLeft+plotW, ym)
			}
		}
	}
	y := l.yLat(l.p.sloMS)
	fmt.Fprintf(b, `<line id="slo" x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="1.5" stroke-dasharray="8,4"/>`+"\n",
		padLeft, y, padLeft+plotW, y, colP99)
	// A white halo keeps the label readable where the series cross it.
	fmt.Fprintf(b, `<text x="%d" y="%.1f" font-size="11" fill="%s" stroke="white" stroke-width="3" paint-order="stroke">p95 objective %s ms</text>`+"\n",
		padLeft+6, y-5, colP99, trimFloat(l.p.sloMS))
	frame(b, latTop, latH)
	fmt.Fprintf(b, `<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">latency, ms (log scale)</text>`+"\n", latTop+latH/2)
}

func (l layout) rateAxis(b *strings.Builder) {
	for r := 0.0; r <= l.rmax+l.rstep/2; r += l.rstep {
		y := l.yRate(r)
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", padLeft, y, padLeft+plotW, y)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", padLeft-6, y, trimFloat(r))
	}
	frame(b, rateTop, rateH)
	fmt.Fprintf(b, `<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">req/s</text>`+"\n", rateTop+rateH/2)
}

// timeAxis puts second ticks under the rate panel.
func (l layout) timeAxis(b *strings.Builder) {
	for t := 0.0; t <= l.tmax+l.tstep/2; t += l.tstep {
		x := l.x(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#333"/>`+"\n", x, rateTop+rateH, x, rateTop+rateH+5)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, rateTop+rateH+19, trimFloat(t))
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">seconds since phase 1 started (1 s windows)</text>`+"\n",
		padLeft+plotW/2, rateTop+rateH+40)
}

func frame(b *strings.Builder, top, height int) {
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", padLeft, top, plotW, height)
}

// series draws one path per line; windows without successful requests
// break the lines, so drains between steps show as gaps.
func (l layout) series(b *strings.Builder) {
	half := l.p.width.Seconds() / 2
	lat := func(id, col string, v func(window) float64) {
		path(b, id, col, l.p.windows, func(w window) (float64, float64, bool) {
			return l.x(w.start.Seconds() + half), l.yLat(v(w)), w.n > 0
		})
	}
	lat("p50", colP50, func(w window) float64 { return w.p50 })
	lat("p95", colP95, func(w window) float64 { return w.p95 })
	lat("p99", colP99, func(w window) float64 { return w.p99 })
	path(b, "achieved", colAchieved, l.p.windows, func(w window) (float64, float64, bool) {
		return l.x(w.start.Seconds() + half), l.yRate(w.achieved), w.n > 0 || w.achieved > 0
	})
	var d strings.Builder
	for _, s := range l.p.steps {
		y := l.yRate(s.target)
		fmt.Fprintf(&d, "M%.1f %.1fL%.1f %.1f", l.x(s.from), y, l.x(s.to), y)
	}
	fmt.Fprintf(b, `<path id="target" d="%s" fill="none" stroke="%s" stroke-width="1.5" stroke-dasharray="6,3"/>`+"\n", d.String(), colTarget)
}

// path draws the points pt gives for ws as one path, starting a new
// segment after every point pt leaves out.
func path(b *strings.Builder, id, col string, ws []window, pt func(window) (x, y float64, ok bool)) {
	var d strings.Builder
	pen := false
	for _, w := range ws {
		x, y, ok := pt(w)
		if !ok {
			pen = false
			continue
		}
		cmd := "L"
		if !pen {
			cmd = "M"
		}
		fmt.Fprintf(&d, "%s%.1f %.1f", cmd, x, y)
		pen = true
	}
	fmt.Fprintf(b, `<path id="%s" d="%s" fill="none" stroke="%s" stroke-width="1.8" stroke-linejoin="round"/>`+"\n",
		id, d.String(), col)
}

// legend lists the series in one row under the title.
func (l layout) legend(b *strings.Builder) {
	items := []struct{ label, col, dash string }{
		{"p50", colP50, ""}, {"p95", colP95, ""}, {"p99", colP99, ""},
		{"p95 objective", colP99, "8,4"}, {"achieved req/s", colAchieved, ""}, {"target req/s", colTarget, "6,3"},
	}
	x := float64(padLeft)
	for _, it := range items {
		dash := ""
		if it.dash != "" {
			dash = ` stroke-dasharray="` + it.dash + `"`
		}
		fmt.Fprintf(b, `<line x1="%.0f" y1="46" x2="%.0f" y2="46" stroke="%s" stroke-width="2.5"%s/>`+"\n", x, x+26, it.col, dash)
		fmt.Fprintf(b, `<text x="%.0f" y="50">%s</text>`+"\n", x+32, esc(it.label))
		x += 44 + 7.2*float64(len(it.label))
	}
	fmt.Fprintf(b, `<text x="%d" y="50" text-anchor="end" fill="#555">shaded: step missed the objective</text>`+"\n", padLeft+plotW)
}

func esc(s string) string { return html.EscapeString(s) }
