package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// loadConfig bounds the load generator.
type loadConfig struct {
	workers int           // requests in flight at most, each worker on its own connection
	backlog int           // scheduled requests waiting for a worker at most; beyond: dropped
	timeout time.Duration // a request not answered this long after its scheduled start is an error
}

// openLoop issues requests on a fixed schedule whatever the system's
// answers: a slow answer delays no later request, it only queues them, and
// the queueing shows in their latency. A closed loop (each client waits for
// its answer before the next request) would instead slow its own arrivals
// and hide exactly the overload this test looks for.
//
// Each worker owns one connection to the proxy (a fixed pool of -workers
// connections): pgxpool would need go.mod to list jackc/puddle, and a
// worker never needs more than one connection at a time anyway.
type openLoop struct {
	dsn    string
	conns  []*pgx.Conn // by worker; replaced when a cancelled query closed one
	gen    *generator
	origin time.Time // samples' times are offsets from here
	cfg    loadConfig
	log    *slog.Logger
}

// run schedules rate requests per second for dur, starting now, waits until
// every request has ended, and returns their samples and the scheduled
// window as offsets from the origin.
func (o *openLoop) run(ctx context.Context, rate float64, dur time.Duration) (samples []sample, from, to time.Duration, err error) {
	jobs := make(chan job, o.cfg.backlog)
	perWorker := make([][]sample, o.cfg.workers)
	firstErrs := make([]error, o.cfg.workers)
	var wg sync.WaitGroup
	for i := range o.cfg.workers {
		wg.Go(func() { perWorker[i], firstErrs[i] = o.work(ctx, i, jobs) })
	}
	start := time.Now()
	samples = o.dispatch(ctx, jobs, start, rate, dur)
	close(jobs)
	wg.Wait() // drain: the next step starts on an idle system
	for _, s := range perWorker {
		samples = append(samples, s...)
	}
	if ctx.Err() == nil {
		o.logErrors(firstErrs)
	}
	from = start.Sub(o.origin)
	return samples, from, from + dur, ctx.Err()
}

// dispatch hands the schedule's requests to the workers at their times and
// returns the ones it dropped because the backlog was full. When it wakes
// late (timer resolution, a busy CPU) it catches up at once: every request
// keeps its scheduled time.
func (o *openLoop) dispatch(ctx context.Context, jobs chan<- job, start time.Time, rate float64, dur time.Duration) []sample {
	var dropped []sample
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	n := int(rate * dur.Seconds())
	for i := range n {
		at := start.Add(time.Duration(float64(i) * float64(time.Second) / rate))
		if !sleepUntil(ctx, timer, at) {
			break
		}
		j := o.gen.next(at)
		select {
		case jobs <- j:
		default:
			dropped = append(dropped, sample{sched: at.Sub(o.origin), shard: j.shard, outcome: outcomeDropped})
		}
	}
	return dropped
}

// sleepUntil waits for t; false if ctx ended first.
func sleepUntil(ctx context.Context, timer *time.Timer, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer.Reset(d) // Go >= 1.23: Reset needs no draining
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// work runs jobs until the channel closes; it returns their samples and
// the first error a request got, for the log.
func (o *openLoop) work(ctx context.Context, worker int, jobs <-chan job) ([]sample, error) {
	var (
		out   []sample
		first error
	)
	for j := range jobs {
		res, err := o.do(ctx, worker, j)
		out = append(out, sample{sched: j.at.Sub(o.origin), lat: time.Since(j.at), shard: j.shard, outcome: res})
		if err != nil && first == nil {
			first = err
		}
	}
	return out, first
}

// do runs one request with its deadline counted from the scheduled start,
// so a request that waited in the backlog has less time left.
func (o *openLoop) do(ctx context.Context, worker int, j job) (outcome, error) {
	deadline := j.at.Add(o.cfg.timeout)
	if !time.Now().Before(deadline) {
		return outcomeTimedOut, nil
	}
	qctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	conn, err := o.conn(qctx, worker)
	if err == nil {
		err = execute(qctx, conn, j)
	}
	switch {
	case err == nil:
		return outcomeOK, nil
	case ctx.Err() == nil && (errors.Is(qctx.Err(), context.DeadlineExceeded) || !time.Now().Before(deadline)):
		// The clock decides too: a dial that times out at the deadline can
		// return before the context reports it.
		return outcomeTimedOut, nil
	default:
		return outcomeFailed, err
	}
}

// logErrors reports the distinct first errors of the workers, at most three.
func (o *openLoop) logErrors(errs []error) {
	seen := map[string]bool{}
	for _, err := range errs {
		if err == nil || seen[err.Error()] || len(seen) == 3 {
			continue
		}
		seen[err.Error()] = true
		o.log.Warn("request failed", "err", err)
	}
}

// conn returns the worker's connection, reconnecting if pgx closed it (it
// does when a query's context ends while the query runs).
func (o *openLoop) conn(ctx context.Context, worker int) (*pgx.Conn, error) {
	if c := o.conns[worker]; c != nil && !c.IsClosed() {
		return c, nil
	}
	c, err := pgx.Connect(ctx, o.dsn)
	if err != nil {
		return nil, fmt.Errorf("connecting to the proxy: %w", err)
	}
	o.conns[worker] = c
	return c, nil
}

// connect opens every worker's connection up front, so that connection
// set-up does not land in the first step's latencies.
func (o *openLoop) connect(ctx context.Context) error {
	o.conns = make([]*pgx.Conn, o.cfg.workers)
	for i := range o.conns {
		if _, err := o.conn(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// close closes every worker's connection.
func (o *openLoop) close() {
	for _, c := range o.conns {
		if c != nil {
			c.Close(context.Background())
		}
	}
}
