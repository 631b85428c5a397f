package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
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
	name     string // phase 2's "1x", "2x", "3x"; "" in phase 1, whose steps are known by their rate
	phase    int    // 1 or 2
	from, to float64
	target   float64 // req/s
	pass     bool
}

// buildPlot turns the results into a plot of 1 s windows.
func buildPlot(res *results, o options) plot {
	p := plot{title: fmt.Sprintf("shardgate load test: %d shards x (primary + replica), mix %s", shards, o.mix),
		width: time.Second, sloMS: ms(o.slo.p95)}
	var end time.Duration
	add := func(phase int, steps []stepStats, name func(stepStats) string) {
		for _, st := range steps {
			p.steps = append(p.steps, plotStep{name: name(st), phase: phase, from: st.from.Seconds(), to: st.to.Seconds(),
				target: st.target, pass: st.pass(o.slo)})
			end = max(end, st.to)
		}
	}
	add(1, res.capacity, func(stepStats) string { return "" })
	add(2, res.phase2, func(st stepStats) string { name, _, _ := strings.Cut(st.label, " "); return name })
	// Requests of the last step may complete up to a timeout after it.
	p.windows = windows(res.samples, p.width, end+o.load.timeout)
	return p
}

// stepLabel names a step on the chart by its offered rate, after its name
// in phase 2: "450", "2x 3400".
func stepLabel(s plotStep) string {
	rate := strconv.FormatFloat(math.Round(s.target), 'f', -1, 64)
	if s.name == "" {
		return rate
	}
	return s.name + " " + rate
}

// Geometry of the SVG, in pixels: a latency panel, a throughput panel and
// an errors panel, sharing the time axis.
const (
	svgW      = 1000
	svgH      = 745
	padLeft   = 76
	padRight  = 24
	legendY   = 46 // first legend row; the second is legendDY below
	legendDY  = 18
	latTop    = 100
	latH      = 290
	rateTop   = 430 // the gap above holds the step labels
	rateH     = 140
	errTop    = 590
	errH      = 100
	plotW     = svgW - padLeft - padRight
	plotBot   = errTop + errH
	labelFont = 10
)

// Series colours (ColorBrewer, distinguishable in grey and by most
// colour-blind readers together with the legend order).
const (
	colP50      = "#2c7bb6"
	colP95      = "#fdae61"
	colP99      = "#d7191c"
	colAchieved = "#1a9641"
	colTarget   = "#555555"
	colErrored  = "#7b3294"
	colDropped  = "#8c510a"
)

// logAxis maps values onto a panel's height on a log scale.
type logAxis struct {
	top, height float64
	lo, hi      float64 // log10 of the values at the bottom and the top
}

// newLogAxis spans whole decades around [lo, hi] (lo > 0), at least one.
func newLogAxis(top, height, lo, hi float64) logAxis {
	a := logAxis{top: top, height: height, lo: math.Floor(math.Log10(lo)), hi: math.Ceil(math.Log10(max(hi, lo)))}
	if a.hi <= a.lo {
		a.hi = a.lo + 1
	}
	return a
}

// y is v's height; values off the axis stick to its edges.
func (a logAxis) y(v float64) float64 {
	d := math.Log10(max(v, math.Pow(10, a.lo)))
	d = min(d, a.hi)
	return a.top + a.height*(1-(d-a.lo)/(a.hi-a.lo))
}

// tick is a gridline; unlabeled ones are drawn fainter.
type tick struct {
	v       float64
	labeled bool
}

// ticks are the 1, 2 and 5 multiples of every decade on the axis; the 2s
// and 5s get labels only where a decade is tall enough for three.
func (a logAxis) ticks() []tick {
	roomy := a.height/(a.hi-a.lo) >= 60
	var ts []tick
	for d := math.Ceil(a.lo); d <= a.hi; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if math.Log10(v) > a.hi+1e-9 || math.Log10(v) < a.lo-1e-9 {
				continue
			}
			ts = append(ts, tick{v: v, labeled: m == 1 || roomy})
		}
	}
	return ts
}

// layout maps data to pixels.
type layout struct {
	p     plot
	tmax  float64 // seconds at the right edge
	tstep float64 // seconds between x ticks
	lat   logAxis // ms
	rate  logAxis // req/s
	errs  logAxis // failed, timed-out or dropped requests per second
	// Totals over the run, for the legend.
	errored, dropped int
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
	l.lat = newLogAxis(latTop, latH, lo, hi)
	lo, hi = rateRange(p)
	l.rate = newLogAxis(rateTop, rateH, lo, hi)
	worst := 1.0
	for _, w := range p.windows {
		l.errored += w.errored
		l.dropped += w.dropped
		worst = max(worst, float64(max(w.errored, w.dropped))/p.width.Seconds())
	}
	// The bottom is half a request per second, so that one error a second
	// still shows as a bar.
	l.errs = newLogAxis(errTop, errH, 1, worst)
	l.errs.lo = math.Log10(0.5)
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

// rateRange spans the offered rates, from half the lowest, and the
// achieved ones; achieved rates below it (windows cut by a drain) stick to
// the bottom.
func rateRange(p plot) (lo, hi float64) {
	lo, hi = math.Inf(1), 1.0
	for _, s := range p.steps {
		lo = min(lo, s.target/2)
		hi = max(hi, s.target)
	}
	for _, w := range p.windows {
		hi = max(hi, w.achieved)
	}
	if math.IsInf(lo, 1) || lo <= 0 {
		lo = 1
	}
	return lo, hi * 1.05
}

func (l layout) x(sec float64) float64 { return padLeft + sec/l.tmax*plotW }

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

// renderSVG writes the plot as a standalone SVG document.
func renderSVG(w io.Writer, p plot) error {
	l := newLayout(p)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgW, svgH, svgW, svgH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgW, svgH)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", padLeft, esc(p.title))
	l.steps(&b)
	l.latencyAxis(&b)
	logAxisLines(&b, "rate-tick", l.rate, "req/s (log scale)")
	logAxisLines(&b, "error-tick", l.errs, "errors/s (log scale)")
	l.timeAxis(&b)
	l.series(&b)
	l.errorBars(&b)
	l.legend(&b)
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// steps shades failed steps, separates steps with dashed lines, labels
// every step with its offered rate between the latency and the rate panel,
// and names the phases above the latency panel.
func (l layout) steps(b *strings.Builder) {
	phaseStart := map[int]float64{}
	for i, s := range l.p.steps {
		x0, x1 := l.x(s.from), l.x(s.to)
		if !s.pass {
			for _, panel := range [][2]int{{latTop, latH}, {rateTop, rateH}, {errTop, errH}} {
				fmt.Fprintf(b, `<rect class="failed-step" x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" fill-opacity="0.10"/>`+"\n",
					x0, panel[0], x1-x0, panel[1], colP99)
			}
		}
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999" stroke-dasharray="3,3"/>`+"\n", x0, latTop, x0, plotBot)
		label := stepLabel(s)
		// Labels wider than their step alternate between two rows so that
		// neighbours do not overlap.
		y := rateTop - 8
		if textWidth(label, labelFont) > x1-x0 && i%2 == 1 {
			y -= labelFont + 3
		}
		fmt.Fprintf(b, `<text class="step-label" x="%.1f" y="%d" font-size="%d" text-anchor="middle" fill="#333">%s</text>`+"\n",
			(x0+x1)/2, y, labelFont, esc(label))
		if start, ok := phaseStart[s.phase]; !ok || s.from < start {
			phaseStart[s.phase] = s.from
		}
	}
	names := map[int]string{1: "phase 1: find capacity (offered req/s per step)", 2: "phase 2: baseline, 2x, 3x (offered req/s)"}
	for phase := 1; phase <= 2; phase++ {
		if start, ok := phaseStart[phase]; ok {
			// Left-aligned at the phase's start: centred, a narrow phase's
			// label would run off the panel's left edge.
			fmt.Fprintf(b, `<text class="phase" x="%.1f" y="%d" font-weight="bold" fill="#333">%s</text>`+"\n",
				l.x(start)+4, latTop-8, esc(names[phase]))
		}
	}
}

// textWidth estimates a sans-serif label's width in pixels.
func textWidth(s string, fontSize float64) float64 { return 0.6 * fontSize * float64(len(s)) }

// latencyAxis draws the latency panel's ticks and the objective line.
func (l layout) latencyAxis(b *strings.Builder) {
	logAxisLines(b, "latency-tick", l.lat, "latency, ms (log scale)")
	y := l.lat.y(l.p.sloMS)
	fmt.Fprintf(b, `<line id="slo" x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="1.5" stroke-dasharray="8,4"/>`+"\n",
		padLeft, y, padLeft+plotW, y, colP99)
	// A white halo keeps the label readable where the series cross it.
	fmt.Fprintf(b, `<text x="%d" y="%.1f" font-size="11" fill="%s" stroke="white" stroke-width="3" paint-order="stroke">p95 objective %s ms</text>`+"\n",
		padLeft+6, y-5, colP99, trimFloat(l.p.sloMS))
}

// logAxisLines draws a panel's gridlines, the labels of its ticks (class
// class), its frame and its title.
func logAxisLines(b *strings.Builder, class string, a logAxis, title string) {
	for _, t := range a.ticks() {
		y := a.y(t.v)
		stroke := "#eee"
		if t.labeled {
			stroke = "#ccc"
		}
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", padLeft, y, padLeft+plotW, y, stroke)
		if t.labeled {
			fmt.Fprintf(b, `<text class="%s" x="%d" y="%.1f" font-size="11" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n",
				class, padLeft-6, y, strconv.FormatFloat(t.v, 'f', -1, 64))
		}
	}
	fmt.Fprintf(b, `<rect x="%d" y="%.0f" width="%d" height="%.0f" fill="none" stroke="#333"/>`+"\n", padLeft, a.top, plotW, a.height)
	fmt.Fprintf(b, `<text transform="translate(18 %.0f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", a.top+a.height/2, esc(title))
}

// timeAxis puts second ticks under the bottom panel.
func (l layout) timeAxis(b *strings.Builder) {
	for t := 0.0; t <= l.tmax+l.tstep/2; t += l.tstep {
		x := l.x(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#333"/>`+"\n", x, plotBot, x, plotBot+5)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, plotBot+19, trimFloat(t))
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">seconds since phase 1 started (1 s windows)</text>`+"\n",
		padLeft+plotW/2, plotBot+40)
}

// series draws one path per line; windows without successful requests
// break the lines, so drains between steps show as gaps.
func (l layout) series(b *strings.Builder) {
	half := l.p.width.Seconds() / 2
	lat := func(id, col string, v func(window) float64) {
		path(b, id, col, l.p.windows, func(w window) (float64, float64, bool) {
			return l.x(w.start.Seconds() + half), l.lat.y(v(w)), w.n > 0
		})
	}
	lat("p50", colP50, func(w window) float64 { return w.p50 })
	lat("p95", colP95, func(w window) float64 { return w.p95 })
	lat("p99", colP99, func(w window) float64 { return w.p99 })
	path(b, "achieved", colAchieved, l.p.windows, func(w window) (float64, float64, bool) {
		return l.x(w.start.Seconds() + half), l.rate.y(w.achieved), w.achieved > 0
	})
	var d strings.Builder
	for _, s := range l.p.steps {
		y := l.rate.y(s.target)
		fmt.Fprintf(&d, "M%.1f %.1fL%.1f %.1f", l.x(s.from), y, l.x(s.to), y)
	}
	fmt.Fprintf(b, `<path id="target" d="%s" fill="none" stroke="%s" stroke-width="1.5" stroke-dasharray="6,3"/>`+"\n", d.String(), colTarget)
}

// errorBars draws, per window, a bar of failed or timed-out requests per
// second in the left half and one of dropped requests in the right half;
// a window without either has no bar.
func (l layout) errorBars(b *strings.Builder) {
	var errored, dropped strings.Builder
	per := l.p.width.Seconds()
	for _, w := range l.p.windows {
		x0, x1 := l.x(w.start.Seconds()), l.x(w.start.Seconds()+per)
		mid := (x0 + x1) / 2
		bar(&errored, l.errs, x0+0.5, mid, float64(w.errored)/per)
		bar(&dropped, l.errs, mid, x1-0.5, float64(w.dropped)/per)
	}
	for _, s := range []struct {
		id, col string
		d       *strings.Builder
	}{{"errors", colErrored, &errored}, {"drops", colDropped, &dropped}} {
		fmt.Fprintf(b, `<path id="%s" d="%s" fill="%s" stroke="none"/>`+"\n", s.id, s.d.String(), s.col)
	}
	if l.errored+l.dropped == 0 {
		fmt.Fprintf(b, `<text class="no-errors" x="%d" y="%d" text-anchor="middle" fill="#555">no failed, timed-out or dropped requests</text>`+"\n",
			padLeft+plotW/2, errTop+errH/2)
	}
}

// bar adds a rectangle from the axis' bottom up to v, if v > 0, to d.
func bar(d *strings.Builder, a logAxis, x0, x1, v float64) {
	if v <= 0 {
		return
	}
	fmt.Fprintf(d, "M%.1f %.1fH%.1fV%.1fH%.1fZ", x0, a.top+a.height, x1, a.y(v), x0)
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

// legendItem is a legend entry: a line (dashed if dash is set) or, for a
// bar series, a filled swatch.
type legendItem struct {
	id, label, col, dash string
	swatch               bool
}

// legend lists the latency series in its first row, the rate and error
// series (with the run's error totals) in its second.
func (l layout) legend(b *strings.Builder) {
	rows := [][]legendItem{
		{{"legend-p50", "p50", colP50, "", false}, {"legend-p95", "p95", colP95, "", false}, {"legend-p99", "p99", colP99, "", false},
			{"legend-slo", "p95 objective", colP99, "8,4", false}},
		{{"legend-achieved", "achieved req/s", colAchieved, "", false}, {"legend-target", "offered req/s", colTarget, "6,3", false},
			{"legend-errors", fmt.Sprintf("failed or timed out/s (%d in all)", l.errored), colErrored, "", true},
			{"legend-drops", fmt.Sprintf("dropped/s, backlog full (%d in all)", l.dropped), colDropped, "", true}},
	}
	for r, items := range rows {
		y := float64(legendY + r*legendDY)
		x := float64(padLeft)
		for _, it := range items {
			legendEntry(b, it, x, y)
			x += 44 + textWidth(it.label, 12)
		}
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end" fill="#555">shaded: step missed the objective</text>`+"\n",
		padLeft+plotW, legendY+4)
}

func legendEntry(b *strings.Builder, it legendItem, x, y float64) {
	fmt.Fprintf(b, `<g id="%s">`, it.id)
	switch {
	case it.swatch:
		fmt.Fprintf(b, `<rect x="%.0f" y="%.0f" width="26" height="10" fill="%s"/>`, x, y-5, it.col)
	case it.dash != "":
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2.5" stroke-dasharray="%s"/>`, x, y, x+26, y, it.col, it.dash)
	default:
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2.5"/>`, x, y, x+26, y, it.col)
	}
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f">%s</text></g>`+"\n", x+32, y+4, esc(it.label))
}

func esc(s string) string { return html.EscapeString(s) }
