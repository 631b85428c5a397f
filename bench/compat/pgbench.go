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

// pgbenchResult is pgbench -i and a TPC-B run through the transaction-mode
// proxy.
type pgbenchResult struct {
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
	pgbenchScale   = 1
	pgbenchClients = 4
	pgbenchThreads = 2
)

func runPgbench(ctx context.Context, e *env, dur time.Duration, log *slog.Logger) *pgbenchResult {
	r := &pgbenchResult{duration: dur}
	proxied := e.proxies[modeTransaction]
	log.Info("pgbench -i through the proxy", "scale", pgbenchScale)
	out, code, err := pgbench(ctx, proxied, 3*time.Minute, "-i", "-s", strconv.Itoa(pgbenchScale))
	if err != nil {
		r.err = err
		return r
	}
	r.initOK, r.initErrors = code == 0, errorLines(out)
	if !r.initOK {
		// Load directly so that the TPC-B run through the proxy is measured anyway.
		r.initNote = "so the tables were loaded directly on the primary for the run below"
		if out, code, err = pgbench(ctx, e.direct, 3*time.Minute, "-i", "-s", strconv.Itoa(pgbenchScale)); err != nil || code != 0 {
			r.initNote = fmt.Sprintf("and loading them directly failed too (exit %d, %v): %s", code, err, strings.Join(errorLines(out), "; "))
			return r
		}
	}
	log.Info("pgbench TPC-B through the proxy", "clients", pgbenchClients, "duration", dur)
	out, code, err = pgbench(ctx, proxied, dur+2*time.Minute, "-c", strconv.Itoa(pgbenchClients),
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
	init := "-i ok"
	if !r.initOK {
		init = "-i FAILED"
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

func (r *pgbenchResult) markdown(b *strings.Builder) {
	fmt.Fprintf(b, "\n## pgbench through shardgate, transaction mode\n\n")
	if r.err != nil {
		fmt.Fprintf(b, "Could not run: %s\n", mdCell(r.err.Error()))
		return
	}
	if r.initOK {
		fmt.Fprintf(b, "`pgbench -i -s %d` through the proxy: ok.\n", pgbenchScale)
	} else {
		fmt.Fprintf(b, "`pgbench -i -s %d` through the proxy **failed**, %s:\n\n", pgbenchScale, r.initNote)
		writeLines(b, r.initErrors)
	}
	fmt.Fprintf(b, "\n`pgbench -c %d -j %d -T %d` (TPC-B) through the proxy: exit %d, %d transactions processed, "+
		"**%d failed**, %d clients aborted, tps %s.\n", pgbenchClients, pgbenchThreads, int(r.duration.Seconds()),
		r.exitCode, r.processed, r.failed, r.aborted, orDash(r.tps))
	if len(r.runErrors) > 0 {
		b.WriteString("\n")
		writeLines(b, r.runErrors)
	}
}

func writeLines(b *strings.Builder, lines []string) {
	for _, l := range lines {
		fmt.Fprintf(b, "    %s\n", l)
	}
}
