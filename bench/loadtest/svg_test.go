package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func testPlot() plot {
	var ws []window
	for i := range 20 {
		w := window{start: time.Duration(i) * time.Second, n: 100, p50: 2 + float64(i), p95: 10 + 10*float64(i), p99: 20 + 20*float64(i), achieved: 100 * float64(i)}
		if i == 7 { // a drain between steps
			w = window{start: w.start}
		}
		ws = append(ws, w)
	}
	return plot{title: "a <test> & more", windows: ws, width: time.Second, sloMS: 200, steps: []plotStep{
		{label: "200", phase: 1, from: 0, to: 7, target: 200, pass: true},
		{label: "300", phase: 1, from: 7.5, to: 12, target: 300, pass: false},
		{label: "1x", phase: 2, from: 12.5, to: 20, target: 100, pass: true},
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
	if got := strings.Count(byID["target"]["d"], "M"); got != 3 {
		t.Errorf("target path has %d segments, want one per step", got)
	}
	text := buf.String()
	for _, want := range []string{"a &lt;test&gt; &amp; more", "p95 objective 200 ms", "phase 1: find capacity", "phase 2", ">1x<", ">300<", "latency, ms (log scale)"} {
		if !strings.Contains(text, want) {
			t.Errorf("the SVG lacks %q", want)
		}
	}
	if got := strings.Count(text, `class="failed-step"`); got != 2 {
		t.Errorf("%d failed-step shades, want 2 (one per panel for the one failed step)", got)
	}
}

// The objective line is on the chart even when every latency is far below
// it, and higher latencies widen the axis instead of leaving it.
func TestLatencyAxisCoversObjectiveAndData(t *testing.T) {
	p := testPlot()
	l := newLayout(p)
	if y := l.yLat(200); y < latTop || y > latTop+latH {
		t.Errorf("the 200 ms line is at y=%v, outside the panel", y)
	}
	p.windows[3].p99 = 5000
	l = newLayout(p)
	if y := l.yLat(5000); y < latTop-0.01 {
		t.Errorf("5 s is at y=%v, above the panel", y)
	}
	if l.logLo != 0 || l.logHi != 4 {
		t.Errorf("decades %v..%v, want 0..4 (1 ms to 10 s)", l.logLo, l.logHi)
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
