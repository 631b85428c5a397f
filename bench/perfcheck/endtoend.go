package main

import (
	"context"
	"errors"
	"fmt"
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
}

// sample is one round's measurement of one target.
type sample struct {
	p50 time.Duration
	tps float64
}

// runEndToEnd starts a one-shard sandbox and a `shardgate serve` process in
// front of it, measures both in alternating rounds and returns the two ratio
// checks. One shard keeps the comparison exact: direct and proxied queries
// hit the same PostgreSQL and the same rows.
func runEndToEnd(ctx context.Context, b EndToEnd, bin string, logf logFunc) ([]Check, error) {
	pgbench, err := findPgbench()
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
	direct := target{"direct", c.Shards[0].Primary.DSN(c.Database)}
	if err := load(ctx, direct.dsn, b.Rows); err != nil {
		return nil, fmt.Errorf("loading users: %w", err)
	}
	proxyDSN, stop, err := startProxy(ctx, bin, dir, c)
	if err != nil {
		return nil, err
	}
	defer stop()
	r := rounds{b: b, pgbench: pgbench, script: filepath.Join(dir, "select.sql"), logf: logf}
	if err := r.writeScript(); err != nil {
		return nil, err
	}
	samples, err := r.run(ctx, direct, target{"shardgate", proxyDSN})
	if err != nil {
		return nil, err
	}
	return ratioChecks(b, samples), nil
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

// startProxy runs `bin serve` on the sandbox's config in its own process,
// so that the proxy and the load generators do not share a Go runtime (and
// its scheduler and GC), and returns its DSN and a function that stops it.
func startProxy(ctx context.Context, bin, dir string, c *sandbox.Cluster) (dsn string, stop func(), err error) {
	addr, err := loadgen.FreeAddr()
	if err != nil {
		return "", nil, err
	}
	metricsAddr, err := loadgen.FreeAddr()
	if err != nil {
		return "", nil, err
	}
	// Metrics on, as in production, so the budget covers what they cost.
	yaml := fmt.Appendf(c.ConfigYAML(addr), "metrics_listen: %s\n", metricsAddr)
	cfg := filepath.Join(dir, "shardgate.yaml")
	if err := os.WriteFile(cfg, yaml, 0o644); err != nil {
		return "", nil, err
	}
	logPath := filepath.Join(dir, "shardgate.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, "serve", "--config", cfg, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return "", nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logFile.Close() }()
	stop = func() {
		// SIGINT stops at once (SIGTERM would drain); kill if it hangs.
		cmd.Process.Signal(syscall.SIGINT)
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
		return "", nil, fmt.Errorf("%s serve: %w\n%s", bin, err, out)
	}
	return "postgres://postgres@" + addr + "/" + c.Database + "?sslmode=disable", stop, nil
}

// findPgbench looks on PATH, then where Debian installs PostgreSQL 15.
func findPgbench() (string, error) {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	const debian = "/usr/lib/postgresql/15/bin/pgbench"
	if _, err := os.Stat(debian); err == nil {
		return debian, nil
	}
	return "", errors.New("pgbench not found on PATH or in /usr/lib/postgresql/15/bin (package postgresql-client-15)")
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
	for i := range s["direct"] {
		d, p := s["direct"][i], s["shardgate"][i]
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

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
