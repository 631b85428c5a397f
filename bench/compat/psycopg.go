package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"time"
)

// psycopgScript is the scenario set; it is fed to python on stdin so that
// the command runs from any directory.
//
//go:embed psycopg_scenarios.py
var psycopgScript []byte

// scenarioTimeout bounds one scenario's process: a proxy that hangs a
// scenario costs a minute, not the run.
const scenarioTimeout = time.Minute

// scenarioResult is one line of the script's output.
type scenarioResult struct {
	Scenario string  `json:"scenario"`
	OK       bool    `json:"ok"`
	Detail   string  `json:"detail"`
	Seconds  float64 `json:"seconds"`
}

// psycopgRuns are the scenarios' results per run.
type psycopgRuns struct {
	scenarios []string
	modes     []string
	results   map[string]map[string]scenarioResult // mode -> scenario -> result
}

// runPsycopg runs every scenario, each in its own python process, in each
// mode. A scenario that fails, even by killing its process, is a result;
// only a script that cannot list its scenarios is an error.
func runPsycopg(ctx context.Context, python string, e *env, modes []string, log *slog.Logger) (*psycopgRuns, error) {
	out, err := python3(ctx, python, scenarioTimeout, "--list")
	if err != nil {
		return nil, fmt.Errorf("psycopg scenarios --list: %w\n%s", err, out)
	}
	pr := &psycopgRuns{scenarios: strings.Fields(out), modes: modes, results: map[string]map[string]scenarioResult{}}
	for _, mode := range modes {
		pr.results[mode] = map[string]scenarioResult{}
		for _, name := range pr.scenarios {
			r := runScenario(ctx, python, e.dsn(mode), name)
			pr.results[mode][name] = r
			log.Info("psycopg scenario", "run", mode, "scenario", name, "ok", r.OK, "detail", truncate(r.Detail, 200))
		}
	}
	return pr, ctx.Err()
}

func runScenario(ctx context.Context, python, dsn, name string) scenarioResult {
	out, err := python3(ctx, python, scenarioTimeout, dsn, name)
	results, rest := parseScenarioOutput(out)
	for _, r := range results {
		if r.Scenario == name {
			return r
		}
	}
	detail := "no result line"
	if err != nil {
		detail += ": " + err.Error()
	}
	if tail := lastLines(rest, 3); tail != "" {
		detail += ": " + tail
	}
	return scenarioResult{Scenario: name, Detail: detail}
}

// python3 runs the embedded script with args; err is set when it did not
// exit 0, out is its stdout and stderr.
func python3(ctx context.Context, python string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, append([]string{"-"}, args...)...)
	cmd.Stdin = bytes.NewReader(psycopgScript)
	b, err := cmd.CombinedOutput()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %s", timeout)
	}
	return string(b), err
}

// parseScenarioOutput splits the script's output into its result lines and
// everything else (tracebacks, warnings).
func parseScenarioOutput(out string) (results []scenarioResult, rest []string) {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		var r scenarioResult
		if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &r) == nil && r.Scenario != "" {
			results = append(results, r)
		} else if line != "" {
			rest = append(rest, line)
		}
	}
	return results, rest
}

func lastLines(lines []string, n int) string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return truncate(strings.Join(lines, " / "), 400)
}

func (pr *psycopgRuns) passed(mode string) int {
	n := 0
	for _, r := range pr.results[mode] {
		if r.OK {
			n++
		}
	}
	return n
}

// table is the terminal's summary: one line per run, the failures named.
func (pr *psycopgRuns) table(b *strings.Builder) {
	fmt.Fprintf(b, "\npsycopg 3 scenarios (%d)\n", len(pr.scenarios))
	for _, mode := range pr.modes {
		var failed []string
		for _, name := range pr.scenarios {
			if !pr.results[mode][name].OK {
				failed = append(failed, name)
			}
		}
		fmt.Fprintf(b, "%-38s %d ok", runTitle(mode), pr.passed(mode))
		if len(failed) > 0 {
			fmt.Fprintf(b, ", failed: %s", strings.Join(failed, ", "))
		}
		b.WriteString("\n")
	}
}

func (pr *psycopgRuns) markdown(b *strings.Builder, python string) {
	fmt.Fprintf(b, "\n## psycopg 3 scenarios\n\n")
	fmt.Fprintf(b, "bench/compat/psycopg_scenarios.py with %s (%s), each scenario its own process with a %s timeout; "+
		"a scenario checks that it gets what PostgreSQL itself returns.\n\n", python, psycopgVersion(python), scenarioTimeout)
	b.WriteString("| scenario |")
	for _, mode := range pr.modes {
		fmt.Fprintf(b, " %s |", mode)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(pr.modes)) + "\n")
	for _, name := range pr.scenarios {
		fmt.Fprintf(b, "| %s |", name)
		for _, mode := range pr.modes {
			fmt.Fprintf(b, " %s |", mdCell(scenarioCell(pr.results[mode][name])))
		}
		b.WriteString("\n")
	}
	b.WriteString("| **ok** |")
	for _, mode := range pr.modes {
		fmt.Fprintf(b, " %d / %d |", pr.passed(mode), len(pr.scenarios))
	}
	b.WriteString("\n\nWhat each scenario checked (direct run):\n\n")
	ref := pr.modes[0]
	for _, name := range pr.scenarios {
		fmt.Fprintf(b, "- %s (%s): %s\n", name, ref, mdCell(pr.results[ref][name].Detail))
	}
}

func scenarioCell(r scenarioResult) string {
	if r.OK {
		return "ok"
	}
	return "**FAIL**: " + truncate(r.Detail, 300)
}

func psycopgVersion(python string) string {
	out, err := exec.Command(python, "-c", "import psycopg; print('psycopg', psycopg.__version__, psycopg.pq.__impl__)").Output()
	if err != nil {
		return "psycopg version unknown"
	}
	return strings.TrimSpace(string(out))
}
