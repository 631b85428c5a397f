// Command perfcheck is the performance budget behind `make perf-check`: it
// fails when shardgate got measurably slower.
//
//	go run ./bench/perfcheck -budget bench/budget.yaml -bin bin/shardgate
//
// It starts a one-shard PostgreSQL sandbox and a `shardgate serve` process in
// front of it, then measures both side by side in alternating rounds: the p50
// latency of a prepared point select on one connection and pgbench's tps with
// several clients. Only the medians of the per-round ratios shardgate/direct
// are budgeted, so load from other work on a shared machine slows both sides
// alike and cancels out, while a real regression in the proxy does not. With
// the budget's end_to_end.pgbouncer section every round also runs pgbench
// against a second serve process with workers: 1 and against PgBouncer in
// transaction mode, and budgets their tps and CPU-per-transaction ratios,
// shardgate at one worker against single-threaded PgBouncer. Then
// it runs the router's Go benchmarks and budgets their ns/op (generously)
// and allocs/op (exactly). It prints a table and exits 1 if anything is over
// budget, 2 if it could not measure. See bench/README.md.
//
// With -baseline OLD it also runs OLD serve beside the measured binary and
// compares the two in the same interleaved rounds (tps, proxy CPU per
// transaction, p50), which is how a refactoring shows it costs nothing
// (without the PgBouncer pair, which compares poolers, not binaries):
//
//	go run ./bench/perfcheck -bin bin/shardgate -baseline /tmp/old-shardgate -skip-micro
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// logFunc prints a progress line.
type logFunc func(format string, args ...any)

func main() { os.Exit(run()) }

// run returns the exit status: 0 within budget, 1 over budget, 2 when it
// could not measure, so CI logs tell a regression from a broken setup.
func run() int {
	budgetPath := flag.String("budget", "bench/budget.yaml", "budget file")
	bin := flag.String("bin", "bin/shardgate", "shardgate binary to measure (make perf-check builds it)")
	goCmd := flag.String("go", "go", "go command for the benchmarks")
	skipE2E := flag.Bool("skip-e2e", false, "only run the Go benchmarks (no PostgreSQL needed)")
	skipMicro := flag.Bool("skip-micro", false, "only run the side-by-side benchmark")
	baseline := flag.String("baseline", "", "a second shardgate binary (the old one) to compare -bin with in the same run")
	timeout := flag.Duration("timeout", 4*time.Minute, "give up after this long (a hung run must not hang CI)")
	flag.Parse()

	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[perfcheck %3.0fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	b, err := LoadBudget(*budgetPath)
	if err != nil {
		return fatal(err)
	}
	if *baseline != "" && *skipE2E {
		return fatal(fmt.Errorf("-baseline compares end to end: it cannot go with -skip-e2e"))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	var checks []Check
	var ab *ABResult
	if !*skipE2E {
		s, err := runEndToEnd(ctx, b.EndToEnd, *bin, *baseline, logf)
		if err != nil {
			return fatal(fmt.Errorf("side-by-side benchmark: %w", err))
		}
		checks = append(checks, ratioChecks(b.EndToEnd, s)...)
		checks = append(checks, cpuCheck(b.EndToEnd, s[newName]))
		checks = append(checks, poolerChecks(b.EndToEnd, s)...)
		if *baseline != "" {
			a := compareAB(b.EndToEnd, s[baselineName], s[newName])
			ab = &a
			checks = append(checks, abChecks(b.Baseline, a)...)
		}
	}
	if !*skipMicro {
		c, err := runMicro(ctx, b.Micro, *goCmd, logf)
		if err != nil {
			return fatal(fmt.Errorf("micro-benchmarks: %w", err))
		}
		checks = append(checks, c...)
	}
	printTable(os.Stdout, checks)
	if ab != nil {
		fmt.Println()
		printAB(os.Stdout, *ab, b.EndToEnd.Rounds, *baseline, *bin)
	}
	fmt.Printf("\nperf-check took %.0fs (budget file %s)\n", time.Since(start).Seconds(), *budgetPath)
	if failed := Failed(checks); len(failed) > 0 {
		fmt.Printf("perf-check: FAIL: over budget: %s\n", strings.Join(failed, "; "))
		return 1
	}
	fmt.Println("perf-check: ok")
	return 0
}

func printTable(w io.Writer, checks []Check) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tmeasured\tbudget\tresult\tdetail")
	for _, c := range checks {
		result := "ok"
		switch {
		case c.Info:
			result = "info"
		case !c.OK():
			result = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Metric, c.Value(), c.Budget(), result, c.Detail)
	}
	tw.Flush()
}

// fatal reports a run that could not measure and returns its exit status.
func fatal(err error) int {
	fmt.Fprintf(os.Stderr, "perfcheck: %v\n", err)
	return 2
}
