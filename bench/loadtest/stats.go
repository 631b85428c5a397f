package main

import (
	"math"
	"slices"
	"time"
)

// outcome is how a scheduled request ended.
type outcome uint8

const (
	outcomeOK       outcome = iota
	outcomeFailed           // the server or the proxy answered with an error
	outcomeTimedOut         // no answer within -timeout of its scheduled start
	outcomeDropped          // the backlog was full: never sent
)

// sample is one scheduled request. Latency runs from the scheduled start,
// not from when a worker picked the request up, so time spent queued behind
// a slow system counts (no coordinated omission).
type sample struct {
	sched   time.Duration // scheduled start, since the run's origin
	lat     time.Duration // scheduled start to answer (or to giving up)
	shard   int           // the shard the request's user id routes to
	outcome outcome
}

func (s sample) done() time.Duration { return s.sched + s.lat }

// slo is the pass criterion of a step.
type slo struct {
	p95       time.Duration // p95 must stay below this
	errorRate float64       // fraction of scheduled requests; must stay below this
}

// stepStats summarises one step of a phase.
type stepStats struct {
	label     string
	target    float64       // scheduled req/s
	from, to  time.Duration // scheduled window, since the run's origin
	scheduled int
	ok        int
	failed    int
	timedOut  int
	dropped   int
	achieved  float64 // successful answers per second within [from, to)
	p50, p95  time.Duration
	p99       time.Duration
	routed    []int   // scheduled requests per shard, from the routing of their user ids
	server    []int64 // transactions per shard (primary + replicas) from pg_stat_database
}

func (s stepStats) errors() int { return s.failed + s.timedOut + s.dropped }

// errorRate is the share of scheduled requests that did not succeed.
func (s stepStats) errorRate() float64 {
	if s.scheduled == 0 {
		return 0
	}
	return float64(s.errors()) / float64(s.scheduled)
}

// pass reports whether the step met the objective. A step with no
// successful request has no meaningful p95 and fails.
func (s stepStats) pass(o slo) bool {
	return s.ok > 0 && s.p95 < o.p95 && s.errorRate() < o.errorRate
}

// percentile returns the p-th quantile (0 < p <= 1) of sorted by nearest
// rank, 0 for no values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// summarize aggregates the samples scheduled in [from, to). Percentiles are
// over successful requests; the others count as errors.
func summarize(samples []sample, label string, target float64, from, to time.Duration, shards int) stepStats {
	st := stepStats{label: label, target: target, from: from, to: to, routed: make([]int, shards)}
	var lats []time.Duration
	answered := 0
	for _, s := range samples {
		if s.sched < from || s.sched >= to {
			continue
		}
		st.scheduled++
		if s.shard >= 0 && s.shard < shards {
			st.routed[s.shard]++
		}
		switch s.outcome {
		case outcomeOK:
			st.ok++
			lats = append(lats, s.lat)
			if s.done() < to {
				answered++
			}
		case outcomeFailed:
			st.failed++
		case outcomeTimedOut:
			st.timedOut++
		case outcomeDropped:
			st.dropped++
		}
	}
	slices.Sort(lats)
	st.p50, st.p95, st.p99 = percentile(lats, 0.50), percentile(lats, 0.95), percentile(lats, 0.99)
	if d := (to - from).Seconds(); d > 0 {
		st.achieved = float64(answered) / d
	}
	return st
}

// window is one slice of the run for the plot.
type window struct {
	start         time.Duration
	n             int     // successful requests scheduled in the window
	errored       int     // failed or timed-out requests scheduled in it
	dropped       int     // requests scheduled in it but never sent (backlog full)
	p50, p95, p99 float64 // ms, over the successful requests
	achieved      float64 // successful answers per second completed in the window
}

// windows cuts [0, end) into width-long windows: latency percentiles by
// scheduled start (what a user arriving then saw), throughput by completion
// time (what the system delivered then).
func windows(samples []sample, width, end time.Duration) []window {
	if width <= 0 || end <= 0 {
		return nil
	}
	count := int((end + width - 1) / width)
	lats := make([][]time.Duration, count)
	ws := make([]window, count)
	for i := range ws {
		ws[i].start = time.Duration(i) * width
	}
	for _, s := range samples {
		i := int(s.sched / width)
		if s.sched < 0 || i >= count {
			continue
		}
		switch s.outcome {
		case outcomeFailed, outcomeTimedOut:
			ws[i].errored++
			continue
		case outcomeDropped:
			ws[i].dropped++
			continue
		}
		lats[i] = append(lats[i], s.lat)
		if j := int(s.done() / width); j < count {
			ws[j].achieved++
		}
	}
	for i := range ws {
		slices.Sort(lats[i])
		ws[i].n = len(lats[i])
		ws[i].p50, ws[i].p95, ws[i].p99 = ms(percentile(lats[i], 0.50)), ms(percentile(lats[i], 0.95)), ms(percentile(lats[i], 0.99))
		ws[i].achieved /= width.Seconds()
	}
	return ws
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// nextRate is the ramp's next target: rate times factor, rounded to two
// significant digits so the report shows round numbers, and always higher.
func nextRate(rate, factor float64) float64 {
	next := roundSig(rate*factor, 2, math.Round)
	if next <= rate {
		next = rate + 1
	}
	return next
}

// defaultBaseline is a third of the sustainable throughput rounded down to
// two significant digits, so that 3x the baseline is about the capacity.
// With no capacity found it is a third of the first step's rate.
func defaultBaseline(capacity, firstRate float64) float64 {
	if capacity <= 0 {
		capacity = firstRate
	}
	return max(1, roundSig(capacity/3, 2, math.Floor))
}

// roundSig rounds x to digits significant digits with round.
func roundSig(x float64, digits int, round func(float64) float64) float64 {
	if x <= 0 {
		return 0
	}
	scale := math.Pow(10, float64(digits-1)-math.Floor(math.Log10(x)))
	return round(x*scale) / scale
}
