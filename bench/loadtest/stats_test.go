package main

import (
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	var lats []time.Duration
	for i := 1; i <= 100; i++ {
		lats = append(lats, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{0.50, 50 * time.Millisecond}, {0.95, 95 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0.001, time.Millisecond}} {
		if got := percentile(lats, tc.p); got != tc.want {
			t.Errorf("percentile(1..100 ms, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile(nil) = %v, want 0", got)
	}
	if got := percentile([]time.Duration{7}, 0.99); got != 7 {
		t.Errorf("percentile of one value = %v, want it", got)
	}
}

// ok is a successful sample scheduled at sched seconds taking lat ms.
func ok(sched float64, lat float64, shard int) sample {
	return sample{sched: time.Duration(sched * float64(time.Second)), lat: time.Duration(lat * float64(time.Millisecond)), shard: shard}
}

func TestSummarizeCountsErrorsAndWindow(t *testing.T) {
	samples := []sample{
		ok(0.1, 10, 0), ok(0.2, 20, 1), ok(0.3, 30, 0),
		{sched: 400 * time.Millisecond, shard: 1, outcome: outcomeDropped},
		{sched: 500 * time.Millisecond, lat: time.Second, shard: 0, outcome: outcomeTimedOut},
		{sched: 600 * time.Millisecond, lat: time.Millisecond, shard: 0, outcome: outcomeFailed},
		ok(0.9, 200, 1), // answered after the step's end: not achieved
		ok(1.5, 1, 0),   // another step
	}
	st := summarize(samples, "x", 7, 0, time.Second, 2)
	if st.scheduled != 7 || st.ok != 4 || st.failed != 1 || st.timedOut != 1 || st.dropped != 1 {
		t.Fatalf("counts = %+v", st)
	}
	if got, want := st.errorRate(), 3.0/7; got != want {
		t.Errorf("errorRate = %v, want %v", got, want)
	}
	if st.achieved != 3 {
		t.Errorf("achieved = %v req/s, want 3 (the 4th answer came after the step)", st.achieved)
	}
	if st.p50 != 20*time.Millisecond || st.p95 != 200*time.Millisecond {
		t.Errorf("p50, p95 = %v, %v; want 20ms, 200ms", st.p50, st.p95)
	}
	if st.routed[0] != 4 || st.routed[1] != 3 {
		t.Errorf("routed = %v, want [4 3]", st.routed)
	}
}

func TestPass(t *testing.T) {
	o := slo{p95: 200 * time.Millisecond, errorRate: 0.001}
	for _, tc := range []struct {
		name string
		st   stepStats
		want bool
	}{
		{"fast, no errors", stepStats{scheduled: 1000, ok: 1000, p95: 5 * time.Millisecond}, true},
		{"p95 at the limit", stepStats{scheduled: 1000, ok: 1000, p95: 200 * time.Millisecond}, false},
		{"one error in a thousand", stepStats{scheduled: 1000, ok: 999, dropped: 1, p95: time.Millisecond}, false},
		{"one error in two thousand", stepStats{scheduled: 2000, ok: 1999, failed: 1, p95: time.Millisecond}, true},
		{"nothing succeeded", stepStats{scheduled: 10, timedOut: 10}, false},
	} {
		if got := tc.st.pass(o); got != tc.want {
			t.Errorf("%s: pass = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestWindows(t *testing.T) {
	samples := []sample{
		ok(0.1, 1, 0), ok(0.5, 3, 0), ok(0.9, 200, 0), // the last completes in window 1
		{sched: 1200 * time.Millisecond, outcome: outcomeDropped},
		{sched: 1300 * time.Millisecond, lat: time.Second, outcome: outcomeTimedOut},
		{sched: 1400 * time.Millisecond, lat: time.Millisecond, outcome: outcomeFailed},
		ok(2.5, 7, 1),
		ok(-1, 1, 0), ok(9, 1, 0), // outside [0, end): ignored
	}
	ws := windows(samples, time.Second, 3*time.Second)
	if len(ws) != 3 {
		t.Fatalf("%d windows, want 3", len(ws))
	}
	if w := ws[0]; w.n != 3 || w.p50 != 3 || w.p99 != 200 || w.achieved != 2 || w.errored != 0 || w.dropped != 0 {
		t.Errorf("window 0 = %+v", w)
	}
	if w := ws[1]; w.n != 0 || w.errored != 2 || w.dropped != 1 || w.achieved != 1 {
		t.Errorf("window 1 = %+v, want no successes, two errors (failed, timed out), one drop, one late completion", w)
	}
	if w := ws[2]; w.n != 1 || w.p95 != 7 || w.start != 2*time.Second {
		t.Errorf("window 2 = %+v", w)
	}
	if ws := windows(samples, time.Second, 2500*time.Millisecond); len(ws) != 3 {
		t.Errorf("a partial last window: %d windows, want 3", len(ws))
	}
	if ws := windows(samples, 0, time.Second); ws != nil {
		t.Errorf("zero width gave %d windows", len(ws))
	}
}

func TestRateSteps(t *testing.T) {
	rate, got := 200.0, []float64{200}
	for range 9 {
		rate = nextRate(rate, 1.5)
		got = append(got, rate)
	}
	want := []float64{200, 300, 450, 680, 1000, 1500, 2300, 3500, 5300, 8000}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ramp = %v, want %v", got, want)
		}
	}
	if r := nextRate(10, 1.01); r != 11 {
		t.Errorf("nextRate(10, 1.01) = %v, want 11 (always higher)", r)
	}
	for _, tc := range []struct{ capacity, first, want float64 }{
		{3500, 200, 1100}, {1000, 200, 330}, {300, 200, 100}, {0, 200, 66}, {2, 200, 1},
	} {
		if got := defaultBaseline(tc.capacity, tc.first); got != tc.want {
			t.Errorf("defaultBaseline(%v, %v) = %v, want %v", tc.capacity, tc.first, got, tc.want)
		}
	}
}

func TestParseMix(t *testing.T) {
	m, err := parseMix("timeline=50, profile=25,post=15,follow=10")
	if err != nil {
		t.Fatal(err)
	}
	if m != (mix{50, 25, 15, 10}) || m.total() != 100 {
		t.Fatalf("mix = %v", m)
	}
	if m.pick(0) != opTimeline || m.pick(49) != opTimeline || m.pick(50) != opProfile || m.pick(90) != opFollow {
		t.Errorf("pick does not follow the weights")
	}
	if m.String() != "timeline=50,profile=25,post=15,follow=10" {
		t.Errorf("String = %q", m)
	}
	if m, err := parseMix("post=1"); err != nil || m.pick(0) != opPost {
		t.Errorf("post only: %v, %v", m, err)
	}
	for _, bad := range []string{"", "timeline", "timeline=x", "feed=1", "timeline=-1", "timeline=0"} {
		if _, err := parseMix(bad); err == nil {
			t.Errorf("parseMix(%q) accepted", bad)
		}
	}
}
