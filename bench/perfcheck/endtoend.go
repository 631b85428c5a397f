package main

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/bench/loadgen"
	"github.com/shardgate/shardgate/sandbox"
)

// target is one side of the comparison.
type target struct {
	name string
	dsn  string
	pid  int    // the proxy process; 0 for PostgreSQL itself
	mode string // pgbench -M: prepared, or simple for the pooler pair
}

// sample is one round's measurement of one target.
type sample struct {
	p50       time.Duration
	tps       float64
	cpuPerTxn time.Duration // the proxy's CPU per pgbench transaction; 0 for direct
}

// Target names: the ratio checks compare newName with directName, the
// pooler checks oneWorkerName with pgbouncerName, and the A/B table newName
// with baselineName.
const (
	directName    = "direct"
	newName       = "shardgate"
	baselineName  = "baseline"
	oneWorkerName = "shardgate-w1"
	pgbouncerName = "pgbouncer"
)

// pairMode is the pooler pair's pgbench -M. PgBouncer before 1.21 (Debian
// bookworm's is 1.18) cannot keep named prepared statements in transaction
// mode, and the simple protocol is also the path (normalise, plan cache
// hit) the prepared runs do not take.
const pairMode = "simple"

// runEndToEnd starts a one-shard sandbox and a `bin serve` process in front
// of it (and a `baseline serve` process when baseline is not empty), and
// measures them all in alternating rounds. With b.PgBouncer, and without a
// baseline (an A/B run compares two binaries, not poolers), it also starts
// the pooler pair: `bin serve` with workers: 1 and PgBouncer in transaction
// mode, each round after the others. One shard keeps the comparison
// exact: direct and proxied queries hit the same PostgreSQL and the same
// rows. The samples are keyed by target name.
func runEndToEnd(ctx context.Context, b EndToEnd, bin, baseline string, logf logFunc) (map[string][]sample, error) {
	pgbench, err := findProgram("pgbench", "/usr/lib/postgresql/15/bin/pgbench", "package postgresql-client-15")
	if err != nil {
		return nil, err
	}
	c, remove, err := sandbox.StartTemp(ctx, "shardgate-perfcheck-", sandbox.Options{Shards: 1, Replicas: sandbox.NoReplicas, Fast: true, Schema: sandbox.Schema})
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	defer remove()
	dir := c.Dir
	logf("started a 1-shard sandbox (no replicas) in %s", dir)
	targets := []target{{name: directName, dsn: c.Shards[0].Primary.DSN(c.Database), mode: "prepared"}}
	if err := load(ctx, targets[0].dsn, b.Rows); err != nil {
		return nil, fmt.Errorf("loading users: %w", err)
	}
	bins := map[string]string{newName: bin}
	names := []string{newName}
	if baseline != "" {
		bins[baselineName] = baseline
		names = append(names, baselineName)
	}
	for _, name := range names {
		p, err := startProxy(ctx, name, bins[name], dir, c, "")
		if err != nil {
			return nil, err
		}
		defer p.stop()
		logf("%s: %s serve, pid %d", name, bins[name], p.pid)
		targets = append(targets, target{name: name, dsn: p.dsn, pid: p.pid, mode: "prepared"})
	}
	var pair []target
	if b.PgBouncer != nil && baseline == "" {
		w1, err := startProxy(ctx, oneWorkerName, bin, dir, c, "workers: 1\n")
		if err != nil {
			return nil, err
		}
		defer w1.stop()
		logf("%s: %s serve with workers: 1, pid %d", oneWorkerName, bin, w1.pid)
		pgb, err := startPgBouncer(ctx, dir, c)
		if err != nil {
			return nil, err
		}
		defer pgb.stop()
		logf("%s: transaction mode, pid %d", pgbouncerName, pgb.pid)
		pair = []target{{name: oneWorkerName, dsn: w1.dsn, pid: w1.pid, mode: pairMode}, {name: pgbouncerName, dsn: pgb.dsn, pid: pgb.pid, mode: pairMode}}
	}
	r := rounds{b: b, pgbench: pgbench, script: filepath.Join(dir, "select.sql"), cpu: newCPUClock(), logf: logf}
	if err := r.writeScript(); err != nil {
		return nil, err
	}
	return r.run(ctx, targets, pair)
}

// load inserts users 1..rows and analyses them, so that both targets read
// a warm, indexed table.
func load(ctx context.Context, dsn string, rows int) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, sql := range []string{
		fmt.Sprintf("INSERT INTO users (id, name, country) SELECT g, 'user ' || g, 'NL' FROM generate_series(1, %d) g", rows),
		"VACUUM ANALYZE users",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", strings.Fields(sql)[0], err)
		}
	}
	return nil
}

// proxyProcess is a running `shardgate serve`.
type proxyProcess struct {
	dsn  string
	pid  int
	stop func()
}

// startProxy runs `bin serve` on the sandbox's config, plus extraYAML, in
// its own process, so that the proxy and the load generators do not share a
// Go runtime (and its scheduler and GC), and so that its CPU time is its
// own. name keeps its config and log apart from another proxy's in dir.
func startProxy(ctx context.Context, name, bin, dir string, c *sandbox.Cluster, extraYAML string) (proxyProcess, error) {
	addr, err := loadgen.FreeAddr()
	if err != nil {
		return proxyProcess{}, err
	}
	metricsAddr, err := loadgen.FreeAddr()
	if err != nil {
		return proxyProcess{}, err
	}
	// Metrics on, as in production, so the budget covers what they cost.
	yaml := fmt.Appendf(c.ConfigYAML(addr), "metrics_listen: %s\n%s", metricsAddr, extraYAML)
	cfg := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfg, yaml, 0o644); err != nil {
		return proxyProcess{}, err
	}
	cmd := exec.Command(bin, "serve", "--config", cfg, "--log-level", "warn")
	// SIGINT stops at once (SIGTERM would drain).
	pid, stop, err := startListening(ctx, cmd, filepath.Join(dir, name+".log"), addr, syscall.SIGINT)
	if err != nil {
		return proxyProcess{}, fmt.Errorf("%s serve: %w", bin, err)
	}
	dsn := "postgres://postgres@" + addr + "/" + c.Database + "?sslmode=disable"
	return proxyProcess{dsn: dsn, pid: pid, stop: stop}, nil
}

// startListening starts cmd with its output in logPath and waits until addr
// accepts connections; an error carries the log. stop sends stopSig, and
// kills the process if it has not exited 10 s later.
func startListening(ctx context.Context, cmd *exec.Cmd, logPath, addr string, stopSig os.Signal) (pid int, stop func(), err error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return 0, nil, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return 0, nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logFile.Close() }()
	stop = func() {
		cmd.Process.Signal(stopSig)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	if err := loadgen.WaitListening(ctx, addr, exited); err != nil {
		stop()
		out, _ := os.ReadFile(logPath)
		return 0, nil, fmt.Errorf("%w\n%s", err, out)
	}
	return cmd.Process.Pid, stop, nil
}

// findProgram looks for name on PATH, then at debian, where Debian
// installs it; missing says which package to install.
func findProgram(name, debian, missing string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if _, err := os.Stat(debian); err == nil {
		return debian, nil
	}
	return "", fmt.Errorf("%s not found on PATH or at %s (%s)", name, debian, missing)
}

// hostPort splits a postgres:// DSN into what pgbench takes as flags.
func hostPort(dsn string) (host, port, db string, err error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", "", "", err
	}
	return u.Hostname(), u.Port(), strings.TrimPrefix(u.Path, "/"), nil
}

// ratioChecks turns the rounds into the two budgeted ratios. Each round's
// ratio pairs measurements taken seconds apart, and the median over rounds
// drops a round that a burst of other work on the machine hit.
func ratioChecks(b EndToEnd, s map[string][]sample) []Check {
	var p50, tps, dp50, pp50, dtps, ptps []float64
	for i := range s[directName] {
		d, p := s[directName][i], s[newName][i]
		p50 = append(p50, float64(p.p50)/float64(d.p50))
		tps = append(tps, p.tps/d.tps)
		dp50, pp50 = append(dp50, us(d.p50)), append(pp50, us(p.p50))
		dtps, ptps = append(dtps, d.tps), append(ptps, p.tps)
	}
	return []Check{{
		Metric:   "p50 latency shardgate/direct",
		Measured: median(p50), Limit: b.MaxP50Ratio, Format: "%.2f",
		Detail: fmt.Sprintf("1 client, median p50 %.0f µs direct, %.0f µs shardgate", median(dp50), median(pp50)),
	}, {
		Metric:   "tps shardgate/direct",
		Measured: median(tps), Limit: b.MinTPSRatio, AtLeast: true, Format: "%.2f",
		Detail: fmt.Sprintf("%d clients, median %.0f tps direct, %.0f tps shardgate", b.Clients, median(dtps), median(ptps)),
	}}
}

// cpuCheck reports, without a limit, the proxy's median CPU per transaction
// over the rounds' pgbench runs.
func cpuCheck(b EndToEnd, s []sample) Check {
	return Check{
		Metric: "shardgate CPU µs/txn", Measured: median(cpuPerTxnUs(s)), Format: "%.1f", Info: true,
		Detail: fmt.Sprintf("proxy process utime+stime / pgbench transactions, %d clients", b.Clients),
	}
}

// poolerChecks budgets shardgate at one worker against PgBouncer: tps and
// CPU per transaction, each the median of the per-round ratios (the two ran
// seconds apart in every round). None without the pooler pair.
func poolerChecks(b EndToEnd, s map[string][]sample) []Check {
	w1, pgb := s[oneWorkerName], s[pgbouncerName]
	if b.PgBouncer == nil || len(pgb) == 0 {
		return nil
	}
	check := func(c Check) Check {
		if math.IsNaN(c.Measured) {
			c.Absent, c.Detail = true, "no round measured PgBouncer"
		}
		return c
	}
	return []Check{check(Check{
		Metric:   "tps shardgate-w1/PgBouncer",
		Measured: pairedRatio(tpsOf(pgb), tpsOf(w1)), Limit: b.PgBouncer.MinTPSRatio, AtLeast: true, Format: "%.2f",
		Detail: fmt.Sprintf("%d clients, -M %s, median %.0f tps PgBouncer, %.0f tps shardgate workers: 1", b.Clients, pairMode, median(tpsOf(pgb)), median(tpsOf(w1))),
	}), check(Check{
		Metric:   "CPU/txn shardgate-w1/PgBouncer",
		Measured: pairedRatio(cpuPerTxnUs(pgb), cpuPerTxnUs(w1)), Limit: b.PgBouncer.MaxCPUPerTxnRatio, Format: "%.2f",
		Detail: fmt.Sprintf("median %.1f µs PgBouncer, %.1f µs shardgate workers: 1 (process utime+stime / transactions)", median(cpuPerTxnUs(pgb)), median(cpuPerTxnUs(w1))),
	})}
}

func tpsOf(s []sample) []float64 {
	out := make([]float64, len(s))
	for i, x := range s {
		out[i] = x.tps
	}
	return out
}

func cpuPerTxnUs(s []sample) []float64 {
	out := make([]float64, len(s))
	for i, x := range s {
		out[i] = us(x.cpuPerTxn)
	}
	return out
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
