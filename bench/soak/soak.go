package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// result is what a soak measured, for the summary and the verdict.
type result struct {
	start, peak, end resources
	ended            bool // the end sample was taken
	proxyDied        string
	finalCheck       error // a new client after the run
	totals           totals
	hostile          map[string]map[string]int
	peakHalfOpen     int
	began            time.Time // of the main phase
	commit           string    // of the working tree, when it is a git checkout
	elapsed          time.Duration
	pid              int
}

// soak runs the phases: warm-up (workload alone), the start sample, the
// main phase (workload, hostile clients, faults), settling (workload
// alone), the end sample and a last check with a new client. A proxy that
// dies ends the run at once.
func soak(ctx context.Context, e *env, o options, log *slog.Logger) (*result, error) {
	res := &result{pid: e.proxy.pid(), commit: gitCommit(), began: time.Now()}
	l := newLedger(o.grace)
	w := &workload{dsn: e.proxy.dsn(e.cluster.Database), o: o, shardOf: e.shardOf, ledger: l}
	// died ends every phase when the proxy exits.
	ctx, died := context.WithCancelCause(ctx)
	defer died(nil)
	go func() {
		select {
		case <-e.proxy.exited:
			_, how := e.proxy.dead()
			died(fmt.Errorf("the proxy exited: %s", how))
		case <-ctx.Done():
		}
	}()
	var peakDone <-chan struct{}
	// finish ends the run early or normally: a dead proxy is a result (the
	// verdict fails it), any other error is the harness's.
	finish := func(err error) (*result, error) {
		if peakDone != nil {
			<-peakDone
		}
		res.totals = l.totals()
		if dead, how := e.proxy.dead(); dead {
			e.proxy.stop()
			res.proxyDied = how + "; last lines of its log:\n" + e.proxy.logTail
			return res, nil
		}
		if err == nil {
			err = context.Cause(ctx)
		}
		return res, err
	}

	wctx, stopWork := context.WithCancel(ctx)
	workDone := w.start(wctx)
	stopWorkload := func() { stopWork(); <-workDone }
	defer stopWorkload()
	log.Info("warm-up: well-behaved workload alone", "for", o.warmup, "workers", o.workers, "churners", o.churners)
	sleep(ctx, o.warmup)
	if ctx.Err() != nil {
		return finish(nil)
	}
	var err error
	if res.start, err = median3(ctx, e.proxy); err != nil {
		return finish(err)
	}
	log.Info("start sample", "rss_mib", mib(res.start.rss), "goroutines", res.start.goroutines, "fds", res.start.fds)
	sctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	peakDone = sampleUntil(sctx, e.proxy, &res.peak, res.start)

	res.began = time.Now()
	if err := mainPhase(ctx, e, o, l, res, log); err != nil {
		stopSampling()
		return finish(err)
	}
	res.elapsed = time.Since(res.began)
	if ctx.Err() != nil {
		return finish(nil)
	}
	log.Info("hostile clients gone; settling", "for", o.settle)
	sleep(ctx, o.settle)
	if res.end, err = median3(ctx, e.proxy); err != nil {
		stopSampling()
		return finish(err)
	}
	res.ended = true
	log.Info("end sample", "rss_mib", mib(res.end.rss), "goroutines", res.end.goroutines, "fds", res.end.fds)
	stopSampling()
	stopWorkload()
	if ctx.Err() == nil {
		res.finalCheck = finalCheck(ctx, w.dsn)
	}
	return finish(nil)
}

// mainPhase runs the hostile clients and the faults for o.duration and
// waits until all hostile connections are closed.
func mainPhase(ctx context.Context, e *env, o options, l *ledger, res *result, log *slog.Logger) error {
	log.Info("main phase: workload, hostile clients and faults", "for", o.duration, "probes", o.probes)
	hctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	h := &hostile{addr: e.proxy.addr, db: e.cluster.Database, o: o}
	hostileDone := h.start(hctx, o.probes)
	faultErr := make(chan error, 1)
	go func() { faultErr <- injectFaults(hctx, e.cluster, o, l, log) }()
	<-hctx.Done()
	<-hostileDone
	err := <-faultErr
	h.mu.Lock()
	res.hostile, res.peakHalfOpen = h.outcomes, h.peakHalf
	h.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("injecting a fault: %w", err)
	}
	return nil
}

// median3 samples the proxy three times a second apart and takes each
// value's median, so that one burst of requests in flight does not decide.
func median3(ctx context.Context, p *proxyProcess) (resources, error) {
	var rs []resources
	for i := range 3 {
		if i > 0 {
			sleep(ctx, time.Second)
		}
		r, err := p.sample(ctx)
		if err != nil {
			return resources{}, err
		}
		rs = append(rs, r)
	}
	med := func(f func(resources) int64) int64 {
		v := []int64{f(rs[0]), f(rs[1]), f(rs[2])}
		slices.Sort(v)
		return v[1]
	}
	return resources{
		rss:        med(func(r resources) int64 { return r.rss }),
		goroutines: int(med(func(r resources) int64 { return int64(r.goroutines) })),
		fds:        int(med(func(r resources) int64 { return int64(r.fds) })),
	}, nil
}

// sampleUntil keeps the highest of each resource in peak, starting from
// from, every 500 ms until ctx ends; peak may be read once the returned
// channel is closed. Failed samples (the proxy is gone) are skipped.
func sampleUntil(ctx context.Context, p *proxyProcess, peak *resources, from resources) <-chan struct{} {
	*peak = from
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if r, err := p.sample(ctx); err == nil {
				peak.rss, peak.goroutines, peak.fds = max(peak.rss, r.rss), max(peak.goroutines, r.goroutines), max(peak.fds, r.fds)
			}
			sleep(ctx, 500*time.Millisecond)
		}
	}()
	return done
}

// finalCheck connects a new client after everything else stopped and runs
// a query: the proxy still serves.
func finalCheck(ctx context.Context, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var n int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil {
		return err
	}
	if n <= 0 {
		return errors.New("SELECT count(*) FROM users found no users")
	}
	return nil
}

// gitCommit names the checkout the run measured, with "+" when it has
// uncommitted changes other than bench/results (which runs overwrite), or
// "" outside one.
func gitCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	commit := strings.TrimSpace(string(out))
	changed, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results").Output()
	if err != nil || len(changed) > 0 {
		commit += "+"
	}
	return commit
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
