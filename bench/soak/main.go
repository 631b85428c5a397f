// Command soak runs shardgate for a bounded time under a well-behaved
// workload, hostile clients and injected server faults, and fails when the
// proxy died, leaked memory, goroutines or file descriptors, or made
// well-behaved clients fail for reasons other than the faults; `make soak`
// runs it:
//
//	go run ./bench/soak -bin bin/shardgate -duration 3m
//	go run ./bench/soak -probes slowloris -restart=false -stall 0   # one probe alone
//
// It starts a throwaway sandbox (2 shards, each a primary and a streaming
// replica) and `shardgate serve` as its own process, so that the proxy's
// RSS and open files (/proc/PID) and goroutines (go_goroutines on its
// /metrics) are its own. See bench/README.md for the phases and the bounds.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// options are the command line's settings.
type options struct {
	bin      string
	out      string
	duration time.Duration // the main phase: workload, hostile clients and faults
	warmup   time.Duration // workload alone before the start sample
	settle   time.Duration // workload alone after the hostile clients left, before the end sample

	users     int
	workers   int           // well-behaved clients that keep their connection
	churners  int           // well-behaved clients that reconnect after a few requests
	think     time.Duration // pause between a client's requests, at most
	opTimeout time.Duration // a well-behaved request unanswered this long fails

	maxClientConn int
	probes        []string
	slowloris     int           // half-open logins per wave
	waveEvery     time.Duration // a new wave at the latest this long after the last
	terms         int           // terms of the long expression, values of the IN list
	depth         int           // parentheses of the deep query

	restart bool          // restart a shard's primary
	stall   time.Duration // SIGSTOP a replica this long; 0: no stall
	grace   time.Duration // errors this long after a fault ended are still the fault's

	bounds bounds
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The whole run is bounded, setup and teardown included.
	ctx, cancel := context.WithTimeout(ctx, o.warmup+o.duration+o.settle+3*time.Minute)
	passed, err := run(ctx, o, log)
	cancel()
	stop()
	switch {
	case err != nil:
		log.Error("soak failed", "err", err)
		os.Exit(1)
	case !passed:
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	o := options{bounds: defaultBounds()}
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.StringVar(&o.bin, "bin", "bin/shardgate", "the shardgate binary to run (make build)")
	fs.StringVar(&o.out, "out", "bench/results/soak.md", "where to write the summary (empty: nowhere)")
	fs.DurationVar(&o.duration, "duration", 3*time.Minute, "main phase: workload, hostile clients and faults")
	fs.DurationVar(&o.warmup, "warmup", 15*time.Second, "workload alone before the start sample")
	fs.DurationVar(&o.settle, "settle", 20*time.Second, "workload alone after the hostile clients left, before the end sample")
	fs.IntVar(&o.users, "users", 2000, "seeded users (keys of the workload)")
	fs.IntVar(&o.workers, "workers", 12, "well-behaved clients that keep their connection")
	fs.IntVar(&o.churners, "churners", 4, "well-behaved clients that reconnect after 1-3 requests")
	fs.DurationVar(&o.think, "think", 50*time.Millisecond, "pause between a client's requests, at most (random)")
	fs.DurationVar(&o.opTimeout, "op-timeout", 10*time.Second, "a well-behaved request unanswered this long is an error")
	fs.IntVar(&o.maxClientConn, "max-client-conn", 300, "the proxy's max_client_conn")
	probes := fs.String("probes", strings.Join(probeNames(), ","), "hostile probes to run (comma-separated; empty: none)")
	fs.IntVar(&o.slowloris, "slowloris", 250, "half-open logins per slowloris wave")
	fs.DurationVar(&o.waveEvery, "slowloris-every", 30*time.Second, "a new slowloris wave once the proxy closed the last, or after this long")
	fs.IntVar(&o.terms, "terms", 100000, "terms of the long expression and values of the IN list")
	fs.IntVar(&o.depth, "depth", 100000, "nesting of the parenthesised query")
	fs.BoolVar(&o.restart, "restart", true, "restart a shard's primary once")
	fs.DurationVar(&o.stall, "stall", 15*time.Second, "SIGSTOP a replica this long, once (0: never); longer than -op-timeout, so that waiting for it fails")
	fs.DurationVar(&o.grace, "grace", 20*time.Second, "errors up to this long after a fault ended are still the fault's")
	fs.Float64Var(&o.bounds.rssFactor, "max-rss-factor", o.bounds.rssFactor, "fail when end RSS > max(factor x start, start + slack)")
	fs.Int64Var(&o.bounds.rssSlackMiB, "max-rss-slack-mib", o.bounds.rssSlackMiB, "see -max-rss-factor")
	fs.Int64Var(&o.bounds.rssPeakMiB, "max-rss-peak-mib", o.bounds.rssPeakMiB, "fail when peak RSS > start + this")
	fs.IntVar(&o.bounds.goroutines, "max-goroutine-growth", o.bounds.goroutines, "fail when end goroutines > start + this")
	fs.IntVar(&o.bounds.fds, "max-fd-growth", o.bounds.fds, "fail when end open files > start + this")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, p := range strings.Split(*probes, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if !slices.Contains(probeNames(), p) {
			return o, fmt.Errorf("-probes: unknown probe %q (known: %s)", p, strings.Join(probeNames(), ", "))
		}
		o.probes = append(o.probes, p)
	}
	return o, o.validate()
}

func (o options) validate() error {
	switch {
	case o.duration <= 0 || o.warmup < 0 || o.settle < 0 || o.grace < 0 || o.stall < 0:
		return errors.New("-duration must be positive; -warmup, -settle, -grace and -stall not negative")
	case o.users < o.workers+o.churners || o.workers < 1 || o.churners < 0 || o.think < 0 || o.opTimeout <= 0:
		return errors.New("-users at least -workers + -churners, -workers at least 1, -churners and -think not negative, -op-timeout positive")
	case o.maxClientConn < o.workers+o.churners+10:
		return errors.New("-max-client-conn must leave room for the well-behaved clients and the probes")
	case o.slowloris < 1 || o.waveEvery <= 0 || o.terms < 1 || o.depth < 1:
		return errors.New("-slowloris, -slowloris-every, -terms and -depth must be positive")
	}
	return o.bounds.validate()
}

// run starts the sandbox and the proxy, runs the phases and prints the
// summary; passed is the verdict, err a failure of the harness itself.
func run(ctx context.Context, o options, log *slog.Logger) (passed bool, err error) {
	e, err := startEnv(ctx, o, log)
	if err != nil {
		return false, err
	}
	defer e.close(log)
	res, err := soak(ctx, e, o, log)
	if err != nil {
		return false, err
	}
	md := res.markdown(o)
	fmt.Print(md)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			return false, err
		}
		log.Info("summary written", "file", o.out)
	}
	return res.passed(o), nil
}
