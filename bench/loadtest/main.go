// Command loadtest runs a social-app workload through shardgate on a local
// sandbox and writes a report and a latency-over-time plot; `make loadtest`
// runs it:
//
//	go run ./bench/loadtest -step 3s -duration 5s   # a quick smoke run
//
// It starts its own sandbox (2 shards, each a primary and a streaming
// replica, fsync off) in a temporary directory and an in-process proxy
// (consistency: read_your_writes), COPYs the seed through the proxy, then
// drives an open-loop mix of timeline reads, profile reads, posts and
// follows at a paced rate. Phase 1 raises the rate step by step until a step
// misses the objective (p95 < 200 ms and errors < 0.1 %); the last step that
// met it is the sustainable throughput. Phase 2 runs at a baseline (-baseline,
// default a third of that) and at 2x and 3x it. The report goes to
// bench/out/loadtest (ignored by git) unless -out says otherwise;
// `make loadtest UPDATE=1` writes the committed example in bench/results.
// See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"time"

	"github.com/shardgate/shardgate/bench/internal/program"
)

// Output directories, relative to the repository root. Runs go to the
// ignored one by default, so that trying the load test does not overwrite
// the committed example.
const (
	defaultOutDir   = "bench/out/loadtest"
	committedOutDir = "bench/results"
)

// options are the command line's settings.
type options struct {
	seed     seedSize
	mix      mix
	load     loadConfig
	step     time.Duration // length of a phase 1 step
	duration time.Duration // length of a phase 2 step
	warmup   time.Duration
	start    float64 // phase 1's first rate, req/s
	factor   float64 // phase 1's rate multiplier per step
	maxRate  float64 // phase 1 stops after this rate even if it passes
	baseline float64 // phase 2's 1x rate; 0: a third of the capacity found
	slo      slo
	outDir   string
	rngSeed  uint64
}

func main() { program.Main("loadtest", "load test failed", parseFlags, run) }

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.IntVar(&o.seed.users, "users", 20000, "seeded users")
	fs.IntVar(&o.seed.postsPerUser, "posts", 5, "seeded posts per user")
	fs.IntVar(&o.seed.followsPerUser, "follows", 10, "seeded follows per user")
	mixFlag := fs.String("mix", "timeline=50,profile=25,post=15,follow=10", "request weights")
	fs.IntVar(&o.load.workers, "workers", 64, "requests in flight at most (one proxy connection each)")
	fs.IntVar(&o.load.backlog, "backlog", 1024, "scheduled requests waiting for a worker at most; more are dropped and count as errors")
	fs.DurationVar(&o.load.timeout, "timeout", time.Second, "a request unanswered this long after its scheduled start is an error")
	fs.DurationVar(&o.step, "step", 5*time.Second, "length of each phase 1 (capacity) step")
	fs.DurationVar(&o.duration, "duration", 15*time.Second, "length of each phase 2 (baseline, 2x, 3x) step")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load at the first rate before phase 1")
	fs.Float64Var(&o.start, "start", 200, "phase 1's first rate, req/s")
	fs.Float64Var(&o.factor, "factor", 1.5, "phase 1 multiplies the rate by this per step")
	fs.Float64Var(&o.maxRate, "max-rate", 20000, "phase 1 stops after this rate even if it passes, req/s")
	fs.Float64Var(&o.baseline, "baseline", 0, "phase 2's baseline, req/s: your real peak; 0: a third of the sustainable throughput")
	fs.DurationVar(&o.slo.p95, "p95", 200*time.Millisecond, "objective: p95 latency below this")
	maxErr := fs.Float64("max-errors", 0.1, "objective: error rate below this, percent")
	fs.StringVar(&o.outDir, "out", defaultOutDir, "directory for loadtest.md and loadtest.svg; "+committedOutDir+" updates the committed example (make loadtest UPDATE=1)")
	fs.Uint64Var(&o.rngSeed, "seed", 1, "random seed of the request sequence")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.slo.errorRate = *maxErr / 100
	var err error
	if o.mix, err = parseMix(*mixFlag); err != nil {
		return o, err
	}
	return o, o.validate()
}

func (o options) validate() error {
	switch {
	case o.seed.users < 2 || o.seed.postsPerUser < 1 || o.seed.followsPerUser < 0:
		return errors.New("-users must be at least 2, -posts at least 1, -follows at least 0")
	case o.load.workers < 1 || o.load.backlog < 1 || o.load.timeout <= 0:
		return errors.New("-workers, -backlog and -timeout must be positive")
	case o.step <= 0 || o.duration <= 0 || o.warmup < 0:
		return errors.New("-step and -duration must be positive, -warmup not negative")
	case o.start <= 0 || o.factor <= 1 || o.maxRate < o.start || o.baseline < 0:
		return errors.New("-start must be positive, -factor above 1, -max-rate at least -start, -baseline not negative")
	case o.slo.p95 <= 0 || o.slo.errorRate <= 0:
		return errors.New("-p95 and -max-errors must be positive")
	}
	return nil
}

// run sets up the sandbox and proxy, measures, and writes the report; the
// sandbox is stopped and removed whatever happens, Ctrl-C included.
func run(ctx context.Context, o options, log *slog.Logger) error {
	began, loadBefore := time.Now(), loadAvg()
	e, err := startEnv(ctx, o.seed, log)
	if err != nil {
		return err
	}
	defer e.close(log)
	res, err := measure(ctx, e, o, log)
	if err != nil {
		return err
	}
	res.total = time.Since(began)
	return writeOutputs(o, e, res, loadBefore, log)
}
