// Command compat measures how much of a real driver's own test suite passes
// through shardgate (issue 17); `make compat` runs it:
//
//	go run ./bench/compat -packages github.com/jackc/pgx/v5/pgconn -modes direct,transaction -pgbench=false
//	go run ./bench/compat -packages none   # psycopg scenarios and pgbench only
//
// It starts a one-shard sandbox (no replicas, fsync off) and two in-process
// proxies in front of it, one in session and one in transaction pool mode,
// then runs the pgx v5 test suite (the version this module's go.mod
// requires, from the module cache, built with this module's dependency
// versions) three ways: directly against the primary, through each proxy.
// Each package is its own `go test -json` with a timeout; when a test binary
// dies (a panic, a hang) the tests it did not reach run again in a new one.
// It prints pass / fail / skip per run, writes bench/results/compat.md with
// every test that passes directly but not through the proxy. It also runs
// a psycopg 3 scenario set of its own (psycopg_scenarios.py: pipelines,
// prepared statements, COPY, notices, cancel, ...) and pgbench -i and a
// TPC-B run, each in every run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/shardgate/shardgate/bench/internal/program"
)

const (
	modeDirect      = "direct"
	modeSession     = "session"
	modeTransaction = "transaction"
	pgxModule       = "github.com/jackc/pgx/v5"
)

type options struct {
	packages []string // import paths; empty: all of pgx's
	noPgx    bool     // -packages none
	modes    []string
	timeout  time.Duration
	psycopg  bool
	python   string
	pgbench  bool
	pgbenchS int
	pgbenchT time.Duration
	twoPhase bool
	out      string
	goBin    string
}

func main() { program.Main("compat", "compat run failed", parseFlags, run) }

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("compat", flag.ContinueOnError)
	pkgs := fs.String("packages", "all", "pgx packages to test, comma-separated import paths, \"all\" ("+pgxModule+"/...) or \"none\"")
	modes := fs.String("modes", "direct,session,transaction", "runs, comma-separated: direct, session, transaction")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Minute, "go test -timeout of each test binary; a test still running then counts as never ended")
	fs.BoolVar(&o.psycopg, "psycopg", true, "also run the psycopg 3 scenarios (psycopg_scenarios.py) in every run")
	fs.StringVar(&o.python, "python", "/usr/bin/python3", "the python that has psycopg 3")
	fs.BoolVar(&o.pgbench, "pgbench", true, "also run pgbench -i and a TPC-B run in every run")
	fs.IntVar(&o.pgbenchS, "pgbench-scale", 10, "pgbench -i -s")
	fs.DurationVar(&o.pgbenchT, "pgbench-time", 30*time.Second, "length of the TPC-B run (pgbench -T)")
	fs.BoolVar(&o.twoPhase, "two-phase-commit", false, "set two_phase_commit in the proxies' config")
	fs.StringVar(&o.out, "out", "bench/results/compat.md", "the markdown report")
	fs.StringVar(&o.goBin, "go", "go", "the go command that builds and runs the tests")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch *pkgs {
	case "all":
	case "none":
		o.noPgx = true
	default:
		o.packages = splitList(*pkgs)
	}
	o.modes = splitList(*modes)
	for _, m := range o.modes {
		if m != modeDirect && m != modeSession && m != modeTransaction {
			return o, fmt.Errorf("-modes: unknown run %q (want direct, session, transaction)", m)
		}
	}
	switch {
	case len(o.modes) == 0:
		return o, errors.New("-modes: name at least one run")
	case o.timeout <= 0 || o.pgbenchT < time.Second || o.pgbenchS < 1:
		return o, errors.New("-timeout must be positive, -pgbench-time at least 1s and -pgbench-scale at least 1")
	case o.noPgx && !o.psycopg && !o.pgbench:
		return o, errors.New("-packages none with -psycopg=false and -pgbench=false runs nothing")
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// run sets up the sandbox and proxies, runs everything and reports; the
// sandbox is stopped and removed whatever happens, Ctrl-C included.
func run(ctx context.Context, o options, log *slog.Logger) error {
	began := time.Now()
	dir, pgxVersion, err := moduleInfo(ctx, o.goBin)
	if err != nil {
		return err
	}
	s := &suite{goBin: o.goBin, dir: dir, timeout: o.timeout, log: log}
	pkgs := o.packages
	if len(pkgs) == 0 && !o.noPgx {
		if pkgs, err = testPackages(ctx, s); err != nil {
			return err
		}
	}
	e, err := startEnv(ctx, o.modes, o.twoPhase, log)
	if err != nil {
		return err
	}
	defer e.close(log)
	rep := &report{pgxVersion: pgxVersion, config: e.configNote, packages: pkgs, started: began,
		runs: map[string]*modeRun{}}
	for _, mode := range o.modes {
		if o.noPgx {
			break
		}
		mr, err := runMode(ctx, s, e, mode, pkgs, log)
		if err != nil {
			return err
		}
		rep.modes = append(rep.modes, mode)
		rep.runs[mode] = mr
	}
	if o.psycopg {
		rep.python = o.python
		if rep.psycopg, err = runPsycopg(ctx, o.python, e, o.modes, log); err != nil {
			return err
		}
	}
	if o.pgbench {
		rep.pgbench = runPgbench(ctx, e, o.modes, o.pgbenchS, o.pgbenchT, log)
	}
	rep.elapsed = time.Since(began)
	fmt.Print(rep.table())
	if err := os.WriteFile(o.out, []byte(rep.markdown()), 0o644); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	fmt.Printf("\nreport: %s (took %s)\n", o.out, rep.elapsed.Round(time.Second))
	return nil
}

// modeRun is one run of the whole suite: every package's results.
type modeRun struct {
	pkgs    map[string]*pkgResult
	elapsed time.Duration
}

func runMode(ctx context.Context, s *suite, e *env, mode string, pkgs []string, log *slog.Logger) (*modeRun, error) {
	began := time.Now()
	mr := &modeRun{pkgs: map[string]*pkgResult{}}
	for _, pkg := range pkgs {
		t := time.Now()
		res, err := s.runPackage(ctx, pkg, e.dsn(mode))
		if err != nil {
			return nil, fmt.Errorf("%s run: %w", mode, err)
		}
		mr.pkgs[pkg] = res
		c := res.counts()
		log.Info("package done", "run", mode, "package", pkg, "pass", c.Pass, "fail", c.Fail, "skip", c.Skip,
			"never_ended", c.Hung, "took", time.Since(t).Round(time.Millisecond))
	}
	mr.elapsed = time.Since(began)
	return mr, nil
}

// moduleInfo returns this module's root and the pgx version it requires.
func moduleInfo(ctx context.Context, goBin string) (dir, version string, err error) {
	out, err := exec.CommandContext(ctx, goBin, "list", "-m", "-f", "{{.Dir}} {{.Version}}", pgxModule).Output()
	if err != nil {
		return "", "", fmt.Errorf("go list -m %s (run from the shardgate module): %w", pgxModule, err)
	}
	modDir, version, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	root, err := exec.CommandContext(ctx, goBin, "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", "", fmt.Errorf("go list -m: %w", err)
	}
	if _, err := os.Stat(modDir); err != nil {
		return "", "", fmt.Errorf("pgx %s is not in the module cache (go mod download %s): %w", version, pgxModule, err)
	}
	return strings.TrimSpace(string(root)), version, nil
}

// testPackages lists pgx's packages that have tests.
func testPackages(ctx context.Context, s *suite) ([]string, error) {
	cmd := exec.CommandContext(ctx, s.goBin, "list", "-f", "{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}", pgxModule+"/...")
	cmd.Dir = s.dir
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list %s/...: %w", pgxModule, err)
	}
	return strings.Fields(string(out)), nil
}
