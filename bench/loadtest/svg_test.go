package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testPlot() plot {
	var ws []window
	for i := range 20 {
		w := window{start: time.Duration(i) * time.Second, n: 100, p50: 2 + float64(i), p95: 10 + 10*float64(i), p99: 20 + 20*float64(i), achieved: 100 * float64(i)}
		switch i {
		case 7: // a drain between steps
			w = window{start: w.start}
		case 8:
			w.errored, w.dropped = 3, 40
		case 9:
			w.dropped = 150
		}
		ws = append(ws, w)
	}
	return plot{title: "a <test> & more", windows: ws, width: time.Second, sloMS: 200, steps: []plotStep{
		{phase: 1, from: 0, to: 7, target: 200, pass: true},
		{phase: 1, from: 7.5, to: 12, target: 300, pass: false},
		{name: "1x", phase: 2, from: 12.5, to: 16, target: 100, pass: true},
		{name: "2x", phase: 2, from: 16.5, to: 20, target: 200, pass: true},
	}}
}

// svgElements parses doc as XML and returns its elements by id, and how
// many elements of each name it has.
func svgElements(t *testing.T, doc []byte) (byID map[string]map[string]string, count map[string]int) {
	t.Helper()
	byID, count = map[string]map[string]string{}, map[string]int{}
	dec := xml.NewDecoder(bytes.NewReader(doc))
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return byID, count
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, doc)
		}
		el, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		count[el.Name.Local]++
		attrs := map[string]string{}
		for _, a := range el.Attr {
			attrs[a.Name.Local] = a.Value
		}
		if id := attrs["id"]; id != "" {
			byID[id] = attrs
		}
	}
}

func TestRenderSVG(t *testing.T) {
	var buf bytes.Buffer
	if err := renderSVG(&buf, testPlot()); err != nil {
		t.Fatal(err)
	}
	byID, count := svgElements(t, buf.Bytes())
	if count["svg"] != 1 {
		t.Fatalf("%d svg elements", count["svg"])
	}
	for _, id := range []string{"p50", "p95", "p99", "achieved", "target", "slo"} {
		if byID[id] == nil {
			t.Errorf("no element with id %q", id)
		}
	}
	// The drain window breaks every latency line into two segments.
	for _, id := range []string{"p50", "p95", "p99"} {
		if d := byID[id]["d"]; strings.Count(d, "M") != 2 || strings.Count(d, "L") != 17 {
			t.Errorf("%s path %q: want 2 segments over 19 points", id, d)
		}
	}
	if got := strings.Count(byID["target"]["d"], "M"); got != 4 {
		t.Errorf("target path has %d segments, want one per step", got)
	}
	text := buf.String()
	for _, want := range []string{"a &lt;test&gt; &amp; more", "p95 objective 200 ms", "phase 1: find capacity", "phase 2", "latency, ms (log scale)",
		"req/s (log scale)", "errors/s (log scale)"} {
		if !strings.Contains(text, want) {
			t.Errorf("the SVG lacks %q", want)
		}
	}
	if got := strings.Count(text, `class="failed-step"`); got != 3 {
		t.Errorf("%d failed-step shades, want 3 (one per panel for the one failed step)", got)
	}
}

// The objective line is on the chart even when every latency is far below
// it, and higher latencies widen the axis instead of leaving it.
func TestLatencyAxisCoversObjectiveAndData(t *testing.T) {
	p := testPlot()
	l := newLayout(p)
	if y := l.lat.y(200); y < latTop || y > latTop+latH {
		t.Errorf("the 200 ms line is at y=%v, outside the panel", y)
	}
	p.windows[3].p99 = 5000
	l = newLayout(p)
	if y := l.lat.y(5000); y < latTop-0.01 {
		t.Errorf("5 s is at y=%v, above the panel", y)
	}
	if l.lat.lo != 0 || l.lat.hi != 4 {
		t.Errorf("decades %v..%v, want 0..4 (1 ms to 10 s)", l.lat.lo, l.lat.hi)
	}
}

func TestRenderSVGEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := renderSVG(&buf, plot{width: time.Second, sloMS: 200}); err != nil {
		t.Fatal(err)
	}
	svgElements(t, buf.Bytes())
}

func TestNiceStep(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{{0.7, 1}, {1, 1}, {1.2, 2}, {3, 5}, {7, 10}, {13, 20}, {450, 500}, {0, 1}} {
		if got := niceStep(tc.in); got != tc.want {
			t.Errorf("niceStep(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// svgText is a text element: its attributes and its character data.
type svgText struct {
	attrs map[string]string
	text  string
}

// svgTexts returns the text elements of doc, in document order, by class.
func svgTexts(t *testing.T, doc []byte) map[string][]svgText {
	t.Helper()
	out := map[string][]svgText{}
	dec := xml.NewDecoder(bytes.NewReader(doc))
	var cur *svgText
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if el.Name.Local == "text" {
				cur = &svgText{attrs: map[string]string{}}
				for _, a := range el.Attr {
					cur.attrs[a.Name.Local] = a.Value
				}
			}
		case xml.CharData:
			if cur != nil {
				cur.text += string(el)
			}
		case xml.EndElement:
			if el.Name.Local == "text" && cur != nil {
				out[cur.attrs["class"]] = append(out[cur.attrs["class"]], *cur)
				cur = nil
			}
		}
	}
}

func renderTest(t *testing.T, p plot) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := renderSVG(&buf, p); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Every step, phase 2's included, is labeled with its offered rate.
func TestRenderSVGStepLabels(t *testing.T) {
	texts := svgTexts(t, renderTest(t, testPlot()))
	var got []string
	for _, tx := range texts["step-label"] {
		got = append(got, tx.text)
	}
	want := []string{"200", "300", "1x 100", "2x 200"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("step labels %q, want %q", got, want)
	}
}

// Failed or timed-out requests and drops are series of their own, one bar
// per window that had any, with legend entries that give the totals.
func TestRenderSVGErrorSeries(t *testing.T) {
	doc := renderTest(t, testPlot())
	byID, _ := svgElements(t, doc)
	for id, bars := range map[string]int{"errors": 1, "drops": 2} {
		if got := strings.Count(byID[id]["d"], "Z"); got != bars {
			t.Errorf("%s: %d bars in %q, want %d", id, got, byID[id]["d"], bars)
		}
	}
	// The 150/s drop bar is taller (smaller y) than the 40/s one.
	drops := strings.Split(byID["drops"]["d"], "Z")
	if y40, y150 := barTop(t, drops[0]), barTop(t, drops[1]); y150 >= y40 {
		t.Errorf("drop bars: 40/s reaches y=%v, 150/s y=%v", y40, y150)
	}
	text := string(doc)
	for _, want := range []string{"failed or timed out/s (3 in all)", "dropped/s, backlog full (190 in all)"} {
		if !strings.Contains(text, want) {
			t.Errorf("the legend lacks %q", want)
		}
	}
	for _, id := range []string{"legend-errors", "legend-drops", "legend-achieved", "legend-target", "legend-p95"} {
		if byID[id] == nil {
			t.Errorf("no legend entry %q", id)
		}
	}
	if strings.Contains(text, "no-errors") {
		t.Error(`a run with errors says "no failed, timed-out or dropped requests"`)
	}

	p := testPlot()
	p.windows[8].errored, p.windows[8].dropped, p.windows[9].dropped = 0, 0, 0
	doc = renderTest(t, p)
	if byID, _ := svgElements(t, doc); byID["errors"]["d"] != "" || byID["drops"]["d"] != "" {
		t.Errorf("bars without errors: %q, %q", byID["errors"]["d"], byID["drops"]["d"])
	}
	if !strings.Contains(string(doc), `class="no-errors"`) {
		t.Error("a run without errors does not say so")
	}
}

// barTop is the y of a bar's top edge, "M x0 bottom H x1 V top H x0".
func barTop(t *testing.T, d string) float64 {
	t.Helper()
	_, after, ok := strings.Cut(d, "V")
	top, _, _ := strings.Cut(after, "H")
	y, err := strconv.ParseFloat(top, 64)
	if !ok || err != nil {
		t.Fatalf("bar %q has no top", d)
	}
	return y
}

// Every panel has a log axis with labeled ticks; decades are evenly spaced.
func TestRenderSVGLogAxes(t *testing.T) {
	texts := svgTexts(t, renderTest(t, testPlot()))
	for class, want := range map[string][]string{
		// 3 decades in 290 px: room to label the 2s and 5s.
		"latency-tick": {"1", "2", "5", "10", "20", "50", "100", "200", "500", "1000"},
		// Offered 100..300 req/s from half the lowest, achieved up to 1900.
		"rate-tick": {"10", "100", "1000", "10000"},
		// From half a request per second up to the 150/s drops.
		"error-tick": {"1", "10", "100", "1000"},
	} {
		var got []string
		ys := map[string]float64{}
		for _, tx := range texts[class] {
			got = append(got, tx.text)
			y, err := strconv.ParseFloat(tx.attrs["y"], 64)
			if err != nil {
				t.Fatalf("%s %q: y %q", class, tx.text, tx.attrs["y"])
			}
			ys[tx.text] = y
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s labels %q, want %q", class, got, want)
			continue
		}
		if d1, d2 := ys["10"]-ys["100"], ys["100"]-ys["1000"]; d1 <= 0 || math.Abs(d1-d2) > 0.2 {
			t.Errorf("%s: decades 10-100 and 100-1000 are %v and %v px tall, want equal and positive", class, d1, d2)
		}
	}
}

func TestLogAxisClamps(t *testing.T) {
	a := newLogAxis(100, 200, 10, 1000)
	if a.lo != 1 || a.hi != 3 {
		t.Fatalf("decades %v..%v, want 1..3", a.lo, a.hi)
	}
	for _, tc := range []struct{ v, want float64 }{{10, 300}, {100, 200}, {1000, 100}, {0, 300}, {1e6, 100}} {
		if got := a.y(tc.v); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("y(%v) = %v, want %v", tc.v, got, tc.want)
		}
	}
}
