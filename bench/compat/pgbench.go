package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// pgbenchResult is pgbench -i and a TPC-B run in one mode.
type pgbenchResult struct {
	mode       string
	scale      int
	initOK     bool
	initErrors []string
	initNote   string // what was done when init failed through the proxy
	duration   time.Duration
	exitCode   int
	processed  int
	failed     int
	aborted    int // clients that aborted on an error
	tps        string
	runErrors  []string
	err        error // pgbench could not be run at all
}

const (
	pgbenchClients = 4
	pgbenchThreads = 2
)

// runPgbench runs pgbench -i and then TPC-B in each mode, one after the
// other: each -i drops and loads the tables again.
func runPgbench(ctx context.Context, e *env, modes []string, scale int, dur time.Duration, log *slog.Logger) []*pgbenchResult {
	var out []*pgbenchResult
	for _, mode := range modes {
		r := pgbenchMode(ctx, e, mode, scale, dur, log)
		log.Info("pgbench done", "run", mode, "summary", r.summary())
		out = append(out, r)
	}
	return out
}

func pgbenchMode(ctx context.Context, e *env, mode string, scale int, dur time.Duration, log *slog.Logger) *pgbenchResult {
	r := &pgbenchResult{mode: mode, scale: scale, duration: dur}
	dsn := e.dsn(mode)
	log.Info("pgbench -i", "run", mode, "scale", scale)
	out, code, err := pgbench(ctx, dsn, 5*time.Minute, "-i", "-s", strconv.Itoa(scale))
	if err != nil {
		r.err = err
		return r
	}
	r.initOK, r.initErrors = code == 0, errorLines(out)
	if !r.initOK {
		// Load directly so that the TPC-B run through the proxy is measured anyway.
		r.initNote = "so the tables were loaded directly on the primary for the run below"
		if out, code, err = pgbench(ctx, e.direct, 5*time.Minute, "-i", "-s", strconv.Itoa(scale)); err != nil || code != 0 {
			r.initNote = fmt.Sprintf("and loading them directly failed too (exit %d, %v): %s", code, err, strings.Join(errorLines(out), "; "))
			return r
		}
	}
	log.Info("pgbench TPC-B", "run", mode, "clients", pgbenchClients, "duration", dur)
	out, code, err = pgbench(ctx, dsn, dur+2*time.Minute, "-c", strconv.Itoa(pgbenchClients),
		"-j", strconv.Itoa(pgbenchThreads), "-T", strconv.Itoa(int(dur.Seconds())))
	if err != nil {
		r.err = err
		return r
	}
	r.exitCode, r.runErrors = code, errorLines(out)
	r.parseRun(out)
	return r
}

// pgbench runs pgbench against dsn's host, port and database; code is its
// exit status, err only says it could not be run.
func pgbench(ctx context.Context, dsn string, timeout time.Duration, args ...string) (out string, code int, err error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", 0, fmt.Errorf("pgbench: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	full := append([]string{"-h", u.Hostname(), "-p", u.Port(), "-U", "postgres"}, args...)
	full = append(full, strings.TrimPrefix(u.Path, "/"))
	cmd := exec.CommandContext(ctx, "pgbench", full...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PG") })
	b, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok && ctx.Err() == nil {
		return string(b), ee.ExitCode(), nil
	}
	if err != nil {
		return string(b), -1, fmt.Errorf("pgbench %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return string(b), 0, nil
}

var (
	processedRE = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	failedRE    = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	tpsRE       = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
	abortedRE   = regexp.MustCompile(`(?m)client \d+ (script \d+ )?aborted`)
)

func (r *pgbenchResult) parseRun(out string) {
	atoi := func(re *regexp.Regexp) int {
		if m := re.FindStringSubmatch(out); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
		return 0
	}
	r.processed, r.failed = atoi(processedRE), atoi(failedRE)
	if m := tpsRE.FindStringSubmatch(out); m != nil {
		r.tps = m[1]
	}
	r.aborted = len(abortedRE.FindAllString(out, -1))
}

// errorLines are pgbench's error messages, each once, at most 8.
func errorLines(out string) []string {
	var lines []string
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if (strings.Contains(line, "error") || strings.Contains(line, "ERROR") || strings.Contains(line, "FATAL")) &&
			!slices.Contains(lines, line) && len(lines) < 8 {
			lines = append(lines, truncate(line, 240))
		}
	}
	return lines
}

func (r *pgbenchResult) summary() string {
	if r.err != nil {
		return "could not run: " + r.err.Error()
	}
	init := fmt.Sprintf("-i -s %d ok", r.scale)
	if !r.initOK {
		init = fmt.Sprintf("-i -s %d FAILED", r.scale)
	}
	return fmt.Sprintf("%s; -T %d: %d transactions, %d failed, %d clients aborted, tps %s, exit %d",
		init, int(r.duration.Seconds()), r.processed, r.failed, r.aborted, orDash(r.tps), r.exitCode)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// pgbenchMD is the pgbench section: a row per run, then the errors.
func pgbenchMD(b *strings.Builder, rs []*pgbenchResult) {
	if len(rs) == 0 {
		return
	}
	r0 := rs[0]
	fmt.Fprintf(b, "\n## pgbench\n\n`pgbench -i -s %d`, then `pgbench -c %d -j %d -T %d` (TPC-B), in each run; "+
		"through shardgate the pgbench tables are configured as sharded tables (%s).\n\n",
		r0.scale, pgbenchClients, pgbenchThreads, int(r0.duration.Seconds()), pgbenchTablesNote())
	b.WriteString("| run | -i | transactions | failed | clients aborted | tps | exit |\n|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		if r.err != nil {
			fmt.Fprintf(b, "| %s | could not run: %s | | | | | |\n", runTitle(r.mode), mdCell(r.err.Error()))
			continue
		}
		init := "ok"
		if !r.initOK {
			init = "**FAILED**"
		}
		fmt.Fprintf(b, "| %s | %s | %d | **%d** | %d | %s | %d |\n", runTitle(r.mode), init, r.processed, r.failed,
			r.aborted, orDash(r.tps), r.exitCode)
	}
	for _, r := range rs {
		if r.err == nil && !r.initOK {
			fmt.Fprintf(b, "\n%s: `pgbench -i` **failed**, %s:\n\n", runTitle(r.mode), r.initNote)
			writeLines(b, r.initErrors)
		}
		if len(r.runErrors) > 0 {
			fmt.Fprintf(b, "\n%s: errors of the TPC-B run:\n\n", runTitle(r.mode))
			writeLines(b, r.runErrors)
		}
	}
}

func writeLines(b *strings.Builder, lines []string) {
	for _, l := range lines {
		fmt.Fprintf(b, "    %s\n", l)
	}
}
