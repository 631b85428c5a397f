package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

const pgbenchOutput = `pgbench (15.8 (Debian 15.8-1.pgdg120+1))
transaction type: /tmp/shardgate-perfcheck-1/select.sql
scaling factor: 1
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 41304
number of failed transactions: 0 (0.000%)
latency average = 0.580 ms
initial connection time = 9.861 ms
tps = 13790.512345 (without initial connection time)
`

func TestParsePgbench(t *testing.T) {
	r, err := parsePgbench([]byte(pgbenchOutput))
	if err != nil || r.tps != 13790.512345 || r.txns != 41304 {
		t.Errorf("got %+v, %v", r, err)
	}
	noCount := strings.Replace(pgbenchOutput, "number of transactions actually processed", "transactions", 1)
	if _, err := parsePgbench([]byte(noCount)); err == nil || !strings.Contains(err.Error(), "no transaction count") {
		t.Errorf("without the count: %v", err)
	}
	if _, err := parsePgbench([]byte("pgbench: error: connection refused\n")); err == nil || !strings.Contains(err.Error(), "no tps line") {
		t.Errorf("failed run: %v", err)
	}
}

func TestPerTxn(t *testing.T) {
	if got := perTxn(2*time.Second, 40000); got != 50*time.Microsecond {
		t.Errorf("2 s over 40,000 txns = %v", got)
	}
	if got := perTxn(time.Second, 0); got != 0 {
		t.Errorf("no txns = %v", got)
	}
}

func TestPairedRatio(t *testing.T) {
	// Rounds 1.1, 0.5 (disturbed), 1.2, 1.0: the median ignores the outlier.
	old := []float64{100, 200, 100, 100}
	new := []float64{110, 100, 120, 100}
	if got := pairedRatio(old, new); math.Abs(got-1.05) > 1e-9 {
		t.Errorf("pairedRatio = %v, want 1.05", got)
	}
	if got := pairedRatio([]float64{0, 100}, []float64{50, 90}); got != 0.9 {
		t.Errorf("a round where old measured 0 is skipped: %v", got)
	}
	if got := pairedRatio(nil, []float64{1}); !math.IsNaN(got) {
		t.Errorf("no pairs = %v, want NaN", got)
	}
	if got := pairedRatio([]float64{100, 100, 100}, []float64{90}); got != 0.9 {
		t.Errorf("unequal lengths pair the common rounds: %v", got)
	}
}

func abSamples() (old, new []sample) {
	us := time.Microsecond
	old = []sample{
		{p50: 200 * us, tps: 10000, cpuPerTxn: 60 * us},
		{p50: 400 * us, tps: 5000, cpuPerTxn: 62 * us},
		{p50: 200 * us, tps: 10000, cpuPerTxn: 60 * us},
	}
	new = []sample{
		{p50: 180 * us, tps: 11000, cpuPerTxn: 54 * us},
		{p50: 360 * us, tps: 5500, cpuPerTxn: 55800 * time.Nanosecond},
		{p50: 200 * us, tps: 2000, cpuPerTxn: 90 * us}, // a disturbed round
	}
	return old, new
}

func TestCompareAB(t *testing.T) {
	old, new := abSamples()
	a := compareAB(EndToEnd{Clients: 8}, old, new)
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if r := a.TPS; r.Old != 10000 || r.New != 5500 || !near(r.Ratio, 1.1) || !r.HigherBetter || r.Metric != "tps, 8 clients" {
		t.Errorf("tps row %+v: want medians 10000 and 5500, paired ratio 1.1", r)
	}
	if r := a.CPUPerTxn; r.Old != 60 || r.New != 55.8 || !near(r.Ratio, 0.9) || r.HigherBetter {
		t.Errorf("CPU row %+v: want medians 60 and 55.8, paired ratio 0.9", r)
	}
	if r := a.P50; r.Old != 200 || r.New != 200 || !near(r.Ratio, 0.9) {
		t.Errorf("p50 row %+v", r)
	}
	var out bytes.Buffer
	printAB(&out, a, 3, "/old", "bin/new")
	for _, want := range []string{"new bin/new vs old (baseline) /old, 3 interleaved rounds", "proxy CPU µs/txn", "60.0", "55.8", "0.900", "1.100", "higher"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestABChecks(t *testing.T) {
	old, new := abSamples()
	a := compareAB(EndToEnd{Clients: 8}, old, new)
	if c := abChecks(nil, a); c != nil {
		t.Errorf("no baseline budget, checks %+v", c)
	}
	checks := abChecks(&BaselineLimits{MinTPSRatio: 1.15, MaxCPUPerTxnRatio: 0.95}, a)
	if len(checks) != 2 {
		t.Fatalf("%d checks", len(checks))
	}
	if c := checks[0]; c.Metric != "tps new/old" || c.OK() || !c.AtLeast {
		t.Errorf("tps ratio 1.1 against at least 1.15 must fail: %+v", c)
	}
	if c := checks[1]; c.Metric != "proxy CPU/txn new/old" || !c.OK() || c.AtLeast {
		t.Errorf("CPU ratio 0.9 against at most 0.95 passes: %+v", c)
	}
	if got := abChecks(&BaselineLimits{MaxCPUPerTxnRatio: 1.1}, a); len(got) != 1 || got[0].Metric != "proxy CPU/txn new/old" {
		t.Errorf("a zero limit is not checked: %+v", got)
	}
	none := compareAB(EndToEnd{}, nil, new)
	if c := abChecks(&BaselineLimits{MinTPSRatio: 0.9}, none); len(c) != 1 || !c[0].Absent || c[0].OK() {
		t.Errorf("an unmeasured baseline fails: %+v", c)
	}
}

func TestParseBudgetBaseline(t *testing.T) {
	b, err := ParseBudget([]byte(validBudget + "baseline:\n  min_tps_ratio: 0.9\n  max_cpu_per_txn_ratio: 1.1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b.Baseline == nil || b.Baseline.MinTPSRatio != 0.9 || b.Baseline.MaxCPUPerTxnRatio != 1.1 {
		t.Errorf("baseline decoded as %+v", b.Baseline)
	}
	if b, err := ParseBudget([]byte(validBudget)); err != nil || b.Baseline != nil {
		t.Errorf("no baseline section: %+v, %v", b.Baseline, err)
	}
	for name, c := range map[string]struct{ section, want string }{
		"empty":    {"baseline: {}\n", "set min_tps_ratio or max_cpu_per_txn_ratio"},
		"negative": {"baseline: {min_tps_ratio: -1}\n", "must not be negative"},
		"misspelt": {"baseline: {max_cpu_ratio: 1.1}\n", "field max_cpu_ratio not found"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseBudget([]byte(validBudget + c.section))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestCPUCheck: the proxy's CPU per transaction is reported but never fails
// the run.
func TestCPUCheck(t *testing.T) {
	_, new := abSamples()
	c := cpuCheck(EndToEnd{Clients: 8}, new)
	if c.Measured != 55.8 || !c.OK() || c.Budget() != "-" || c.Value() != "55.8" {
		t.Errorf("%+v", c)
	}
	if f := Failed([]Check{c}); len(f) != 0 {
		t.Errorf("an info check failed: %v", f)
	}
	var out bytes.Buffer
	printTable(&out, []Check{c})
	if !strings.Contains(out.String(), "info") {
		t.Errorf("table:\n%s", out.String())
	}
}

func orderNames(ts []target) string {
	var names []string
	for _, t := range ts {
		names = append(names, t.name)
	}
	return strings.Join(names, " ")
}

// TestRoundOrder: with one proxy, plain alternation (as before -baseline
// existed); with two, each proxy runs first of the pair, and follows direct,
// in as many rounds of every four as the other.
func TestRoundOrder(t *testing.T) {
	d, n, o := target{name: "d"}, target{name: "n"}, target{name: "o"}
	for i, want := range []string{"d n", "n d", "d n", "n d"} {
		if got := orderNames(roundOrder([]target{d, n}, i)); got != want {
			t.Errorf("one proxy, round %d: %q, want %q", i, got, want)
		}
	}
	for i, want := range []string{"d n o", "n o d", "d o n", "o n d", "d n o"} {
		if got := orderNames(roundOrder([]target{d, n, o}, i)); got != want {
			t.Errorf("two proxies, round %d: %q, want %q", i, got, want)
		}
	}
	targets := []target{d, n, o}
	roundOrder(targets, 3)
	if orderNames(targets) != "d n o" {
		t.Error("roundOrder modified its argument")
	}
}
