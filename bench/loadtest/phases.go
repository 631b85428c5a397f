package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// results is everything the report and the plot show.
type results struct {
	capacity    []stepStats // phase 1
	sustainable float64     // highest phase 1 rate that met the objective; 0: none
	capped      bool        // phase 1 reached -max-rate without a failing step
	baseline    float64
	stated      bool        // the baseline came from -baseline
	phase2      []stepStats // baseline, 2x, 3x
	samples     []sample
	servers     counts // transactions per server over both phases
	serverNames [][]string
	pgVersion   string
	mix         mix
	total       time.Duration // the whole run, sandbox start to the end of phase 2
}

// stepper runs steps and keeps what they measured.
type stepper struct {
	loop     *openLoop
	counters *serverCounters
	shards   int
	samples  []sample
	log      *slog.Logger
}

// measure runs the warm-up and both phases on e.
func measure(ctx context.Context, e *env, o options, log *slog.Logger) (*results, error) {
	counters, err := openCounters(ctx, e.cluster)
	if err != nil {
		return nil, fmt.Errorf("server counters: %w", err)
	}
	defer counters.close()
	res := &results{serverNames: counters.names, mix: o.mix}
	if err := counters.conns[0][0].QueryRow(ctx, "SHOW server_version").Scan(&res.pgVersion); err != nil {
		return nil, fmt.Errorf("server version: %w", err)
	}
	loop := &openLoop{dsn: e.proxyDSN, gen: newGenerator(o.rngSeed, o.mix, e.shardOf, o.seed.postsPerUser), cfg: o.load, log: log}
	defer loop.close()
	if err := loop.connect(ctx); err != nil {
		return nil, err
	}
	// Warm-up: prepared statements, server connections, caches.
	if _, _, _, err := loop.run(ctx, o.start, o.warmup); err != nil {
		return nil, err
	}
	first, err := counters.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	loop.origin = time.Now()
	s := &stepper{loop: loop, counters: counters, shards: len(e.cluster.Shards), log: log}
	if err := runPhases(ctx, s, o, res); err != nil {
		return nil, err
	}
	res.samples = s.samples
	// The servers' counters are exact only after their backends exit: a busy
	// backend reports its counts at most once a second.
	loop.close()
	e.stopProxy()
	time.Sleep(500 * time.Millisecond)
	last, err := counters.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	res.servers = last.sub(first)
	return res, nil
}

func runPhases(ctx context.Context, s *stepper, o options, res *results) error {
	var err error
	res.capacity, res.sustainable, err = findCapacity(ctx, s, o)
	if err != nil {
		return fmt.Errorf("phase 1: %w", err)
	}
	res.capped = len(res.capacity) > 0 && res.capacity[len(res.capacity)-1].pass(o.slo)
	res.baseline, res.stated = o.baseline, o.baseline > 0
	if !res.stated {
		res.baseline = defaultBaseline(res.sustainable, o.start)
	}
	s.log.Info("phase 2", "baseline", res.baseline, "stated", res.stated)
	for _, mult := range []float64{1, 2, 3} {
		rate := res.baseline * mult
		st, err := s.step(ctx, fmt.Sprintf("%.0fx baseline", mult), rate, o.duration, o.slo)
		if err != nil {
			return fmt.Errorf("phase 2, %.0fx: %w", mult, err)
		}
		res.phase2 = append(res.phase2, st)
	}
	return nil
}

// findCapacity raises the rate until a step misses the objective and
// returns the steps and the last rate that met it.
func findCapacity(ctx context.Context, s *stepper, o options) (steps []stepStats, sustainable float64, err error) {
	for rate := o.start; rate <= o.maxRate; rate = nextRate(rate, o.factor) {
		st, err := s.step(ctx, fmt.Sprintf("%.0f/s", rate), rate, o.step, o.slo)
		if err != nil {
			return nil, 0, err
		}
		steps = append(steps, st)
		if !st.pass(o.slo) {
			break
		}
		sustainable = rate
	}
	return steps, sustainable, nil
}

// step runs one rate for dur and measures it, on the servers too.
func (s *stepper) step(ctx context.Context, label string, rate float64, dur time.Duration, o slo) (stepStats, error) {
	before, err := s.counters.snapshot(ctx)
	if err != nil {
		return stepStats{}, err
	}
	samples, from, to, err := s.loop.run(ctx, rate, dur)
	if err != nil {
		return stepStats{}, err
	}
	after, err := s.counters.snapshot(ctx)
	if err != nil {
		return stepStats{}, err
	}
	st := summarize(samples, label, rate, from, to, s.shards)
	st.server = after.sub(before).perShard()
	s.samples = append(s.samples, samples...)
	s.log.Info("step", "label", label, "target", rate, "achieved", fmt.Sprintf("%.0f", st.achieved),
		"p50_ms", fmt.Sprintf("%.1f", ms(st.p50)), "p95_ms", fmt.Sprintf("%.1f", ms(st.p95)),
		"p99_ms", fmt.Sprintf("%.1f", ms(st.p99)), "failed", st.failed, "timed_out", st.timedOut,
		"dropped", st.dropped, "pass", st.pass(o))
	return st, nil
}
