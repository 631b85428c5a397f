package main

import (
	"strings"
	"testing"
)

func TestParseScenarioOutputKeepsResultsAndRest(t *testing.T) {
	out := `{"scenario": "pipeline", "ok": true, "detail": "5 statements", "seconds": 0.01}
Traceback (most recent call last):
  File "<stdin>", line 3, in <module>
{"scenario": "cancel", "ok": false, "detail": "QueryCanceled: boom (SQLSTATE 57014)", "seconds": 1.5}
{"not": "a result"}
`
	results, rest := parseScenarioOutput(out)
	if len(results) != 2 {
		t.Fatalf("got %d results, want 2: %+v", len(results), results)
	}
	if r := results[0]; r.Scenario != "pipeline" || !r.OK || r.Detail != "5 statements" {
		t.Errorf("first result: %+v", r)
	}
	if r := results[1]; r.Scenario != "cancel" || r.OK || !strings.Contains(r.Detail, "57014") || r.Seconds != 1.5 {
		t.Errorf("second result: %+v", r)
	}
	if len(rest) != 3 || rest[0] != "Traceback (most recent call last):" || rest[2] != `{"not": "a result"}` {
		t.Errorf("rest: %q", rest)
	}
}

func TestScenarioCell(t *testing.T) {
	if got := scenarioCell(scenarioResult{OK: true, Detail: "fine"}); got != "ok" {
		t.Errorf("ok cell: %q", got)
	}
	if got := scenarioCell(scenarioResult{Detail: "E: x"}); got != "**FAIL**: E: x" {
		t.Errorf("fail cell: %q", got)
	}
}

// pgbench 15's report of a TPC-B run with failures.
const pgbenchOut = `pgbench (15.10 (Debian 15.10-0+deb12u1))
starting vacuum...end.
pgbench: error: client 2 script 0 aborted in command 8 query 0: ERROR:  deadlock detected
transaction type: <builtin: TPC-B (sort of)>
scaling factor: 10
query mode: simple
number of clients: 4
number of threads: 2
maximum number of tries: 1
duration: 30 s
number of transactions actually processed: 12345
number of failed transactions: 7 (0.057%)
latency average = 9.7 ms
initial connection time = 5.123 ms
tps = 411.523456 (without initial connection time)
pgbench: error: Run was aborted; the above results are incomplete.
`

func TestParseRunReadsPgbench15(t *testing.T) {
	var r pgbenchResult
	r.parseRun(pgbenchOut)
	if r.processed != 12345 || r.failed != 7 || r.tps != "411.523456" || r.aborted != 1 {
		t.Errorf("got processed %d failed %d tps %q aborted %d", r.processed, r.failed, r.tps, r.aborted)
	}
	lines := errorLines(pgbenchOut)
	if len(lines) != 2 || !strings.Contains(lines[0], "deadlock detected") {
		t.Errorf("error lines: %q", lines)
	}
}

func TestPgbenchMDHasARowPerRun(t *testing.T) {
	rs := []*pgbenchResult{
		{mode: modeDirect, scale: 10, initOK: true, processed: 100, tps: "50.0"},
		{mode: modeTransaction, scale: 10, initErrors: []string{"ERROR: nope"}, initNote: "so ...", failed: 3, tps: "40.0"},
	}
	var b strings.Builder
	pgbenchMD(&b, rs)
	md := b.String()
	for _, want := range []string{
		"`pgbench -i -s 10`",
		"| direct | ok | 100 | **0** | 0 | 50.0 | 0 |",
		"| through shardgate, transaction mode | **FAILED** | 0 | **3** | 0 | 40.0 | 0 |",
		"    ERROR: nope",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}
