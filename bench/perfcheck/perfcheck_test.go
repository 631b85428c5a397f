package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

const validBudget = `
end_to_end:
  rows: 100
  rounds: 3
  latency_duration: 1500ms
  throughput_duration: 2s
  clients: 4
  max_p50_latency_ratio: 4.5
  min_tps_ratio: 0.25
micro:
  benchtime: 100ms
  count: 2
  benchmarks:
    - {package: ./router, name: BenchmarkRouteBind, max_ns_op: 500, max_allocs_op: 0}
`

func TestParseBudget(t *testing.T) {
	b, err := ParseBudget([]byte(validBudget))
	if err != nil {
		t.Fatal(err)
	}
	e := b.EndToEnd
	if e.LatencyDuration != 1500*time.Millisecond || e.ThroughputDuration != 2*time.Second || e.MaxP50Ratio != 4.5 || e.MinTPSRatio != 0.25 {
		t.Errorf("end_to_end decoded as %+v", e)
	}
	if l := b.Micro.Benchmarks; len(l) != 1 || l[0].MaxAllocs == nil || *l[0].MaxAllocs != 0 || l[0].MaxNsOp != 500 {
		t.Errorf("benchmarks decoded as %+v", l)
	}
}

// TestParseBudgetRejects: a budget that would silently check less than it
// says is an error.
func TestParseBudgetRejects(t *testing.T) {
	for name, c := range map[string]struct{ old, new, want string }{
		"misspelt field":         {"min_tps_ratio", "min_tps_ration", "field min_tps_ration not found"},
		"fractional -T":          {"throughput_duration: 2s", "throughput_duration: 2500ms", "whole seconds"},
		"no allocs budget":       {", max_allocs_op: 0}", "}", "max_allocs_op is required"},
		"not a benchmark name":   {"name: BenchmarkRouteBind", "name: RouteBind", "must start with Benchmark"},
		"zero ratio":             {"max_p50_latency_ratio: 4.5", "max_p50_latency_ratio: 0", "max_p50_latency_ratio must be positive"},
		"unparseable benchtime":  {"benchtime: 100ms", "benchtime: fast", "micro.benchtime"},
		"duration without units": {"latency_duration: 1500ms", "latency_duration: 1500", "into time.Duration"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseBudget([]byte(strings.Replace(validBudget, c.old, c.new, 1)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestRepoBudget keeps bench/budget.yaml loadable, so a bad edit fails
// `go test ./bench/...` before it fails CI's perf-check.
func TestRepoBudget(t *testing.T) {
	if _, err := os.Stat("../budget.yaml"); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBudget("../budget.yaml"); err != nil {
		t.Fatal(err)
	}
}

func TestCheckDirection(t *testing.T) {
	for _, c := range []struct {
		check Check
		ok    bool
	}{
		{Check{Measured: 2, Limit: 3}, true},
		{Check{Measured: 3, Limit: 3}, true}, // at the limit is within budget
		{Check{Measured: 3.01, Limit: 3}, false},
		{Check{Measured: 0.3, Limit: 0.25, AtLeast: true}, true},
		{Check{Measured: 0.2, Limit: 0.25, AtLeast: true}, false},
		{Check{Absent: true, Limit: 3}, false},
	} {
		if got := c.check.OK(); got != c.ok {
			t.Errorf("%+v: OK() = %v, want %v", c.check, got, c.ok)
		}
	}
	if got := (Check{Limit: 0.25, AtLeast: true, Format: "%.2f"}).Budget(); got != ">= 0.25" {
		t.Errorf("Budget() = %q", got)
	}
}

const benchOutput = `goos: linux
goarch: amd64
pkg: github.com/shardgate/shardgate/router
cpu: Oxide Virtual Turin-like Processor
BenchmarkRouteBind-2       	 2282011	       111.3 ns/op	       0 B/op	       0 allocs/op
BenchmarkRouteBind-2       	 2200000	       140.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkRouteUncached-2   	    4194	     64404 ns/op	    8744 B/op	     194 allocs/op
BenchmarkRouteUncached-2   	    4194	     61000 ns/op	    8744 B/op	     195 allocs/op
BenchmarkSplitInsert       	    1000	     99999 ns/op	    1000 B/op	      12 allocs/op
PASS
ok  	github.com/shardgate/shardgate/router	0.994s
`

func TestParseBenchOutput(t *testing.T) {
	r := ParseBenchOutput([]byte(benchOutput))
	if len(r) != 3 {
		t.Fatalf("got %d benchmarks, want 3: %v", len(r), r)
	}
	if b := r["BenchmarkRouteBind"]; b == nil || len(b.NsOp) != 2 || b.NsOp[1] != 140 || b.AllocsOp[0] != 0 {
		t.Errorf("RouteBind: %+v", b)
	}
	if b := r["BenchmarkSplitInsert"]; b == nil || b.AllocsOp[0] != 12 {
		t.Errorf("SplitInsert (GOMAXPROCS=1, no suffix): %+v", b)
	}
}

func TestMicroChecks(t *testing.T) {
	zero, budget194 := int64(0), int64(194)
	limits := []BenchmarkLimit{
		{Package: "./router", Name: "BenchmarkRouteBind", MaxNsOp: 120, MaxAllocs: &zero},
		{Package: "./router", Name: "BenchmarkRouteUncached", MaxNsOp: 300000, MaxAllocs: &budget194},
		{Package: "./router", Name: "BenchmarkGone", MaxNsOp: 1, MaxAllocs: &zero},
	}
	checks := MicroChecks(limits, ParseBenchOutput([]byte(benchOutput)))
	want := map[string]struct {
		measured float64
		ok       bool
	}{
		"RouteBind ns/op":         {111.3, true}, // the fastest run counts
		"RouteBind allocs/op":     {0, true},
		"RouteUncached ns/op":     {61000, true},
		"RouteUncached allocs/op": {195, false}, // the most allocating run counts
		"Gone ns/op":              {0, false},   // a budgeted benchmark that did not run fails
		"Gone allocs/op":          {0, false},
	}
	if len(checks) != len(want) {
		t.Fatalf("got %d checks, want %d", len(checks), len(want))
	}
	for _, c := range checks {
		w, ok := want[c.Metric]
		if !ok || c.Measured != w.measured || c.OK() != w.ok {
			t.Errorf("%s: measured %v ok %v, want %+v", c.Metric, c.Measured, c.OK(), w)
		}
	}
	failed := Failed(checks)
	if strings.Join(failed, ",") != "RouteUncached allocs/op,Gone ns/op,Gone allocs/op" {
		t.Errorf("Failed = %q", failed)
	}
}

func TestMedian(t *testing.T) {
	in := []float64{5, 1, 4}
	if m := median(in); m != 4 {
		t.Errorf("median %v = %v", in, m)
	}
	if in[0] != 5 {
		t.Error("median sorted its argument")
	}
	if m := median([]float64{1, 2, 3, 10}); m != 2.5 {
		t.Errorf("even median = %v", m)
	}
	if m := median(nil); m != 0 {
		t.Errorf("median of none = %v", m)
	}
}

// TestRatioChecks: ratios pair each round's two sides, and the median over
// rounds ignores one disturbed round.
func TestRatioChecks(t *testing.T) {
	us := time.Microsecond
	s := map[string][]sample{
		"direct":    {{p50: 50 * us, tps: 1000}, {p50: 100 * us, tps: 500}, {p50: 50 * us, tps: 1000}},
		"shardgate": {{p50: 100 * us, tps: 500}, {p50: 200 * us, tps: 250}, {p50: 500 * us, tps: 100}},
	}
	checks := ratioChecks(EndToEnd{MaxP50Ratio: 3, MinTPSRatio: 0.4, Clients: 8}, s)
	if len(checks) != 2 {
		t.Fatalf("%d checks", len(checks))
	}
	if c := checks[0]; c.Measured != 2 || !c.OK() {
		t.Errorf("p50: %+v, want ratio 2 (rounds 2, 2, 10) within 3", c)
	}
	if c := checks[1]; c.Measured != 0.5 || !c.OK() || !c.AtLeast {
		t.Errorf("tps: %+v, want ratio 0.5 (rounds 0.5, 0.5, 0.1), at least 0.4", c)
	}
}

// TestPoolerChecks: the pooler ratios pair shardgate-w1 with PgBouncer
// round by round; without the budget section or PgBouncer's samples there
// are none.
func TestPoolerChecks(t *testing.T) {
	us := time.Microsecond
	s := map[string][]sample{
		pgbouncerName: {{tps: 1000, cpuPerTxn: 20 * us}, {tps: 500, cpuPerTxn: 20 * us}, {tps: 1000, cpuPerTxn: 10 * us}},
		oneWorkerName: {{tps: 800, cpuPerTxn: 30 * us}, {tps: 450, cpuPerTxn: 32 * us}, {tps: 200, cpuPerTxn: 60 * us}},
	}
	b := EndToEnd{Clients: 8, PgBouncer: &PoolerLimits{MinTPSRatio: 0.55, MaxCPUPerTxnRatio: 1.55}}
	checks := poolerChecks(b, s)
	if len(checks) != 2 {
		t.Fatalf("%d checks, want 2", len(checks))
	}
	if c := checks[0]; c.Measured != 0.8 || !c.AtLeast || !c.OK() {
		t.Errorf("tps: %+v, want 0.8 (rounds 0.8, 0.9, 0.2), at least 0.55", c)
	}
	if c := checks[1]; c.Measured != 1.6 || c.AtLeast || c.OK() {
		t.Errorf("CPU: %+v, want 1.6 (rounds 1.5, 1.6, 6) over 1.55", c)
	}
	if checks := poolerChecks(EndToEnd{}, s); checks != nil {
		t.Errorf("no pgbouncer section: %+v", checks)
	}
	if checks := poolerChecks(b, map[string][]sample{}); checks != nil {
		t.Errorf("no PgBouncer samples (an A/B run): %+v", checks)
	}
}

func TestParseBudgetPgBouncer(t *testing.T) {
	// The section goes inside end_to_end, which ends where micro starts.
	with := strings.Replace(validBudget, "micro:", "  pgbouncer: {min_tps_ratio: 0.5, max_cpu_per_txn_ratio: 2.5}\nmicro:", 1)
	b, err := ParseBudget([]byte(with))
	if err != nil {
		t.Fatal(err)
	}
	if p := b.EndToEnd.PgBouncer; p == nil || p.MinTPSRatio != 0.5 || p.MaxCPUPerTxnRatio != 2.5 {
		t.Errorf("pgbouncer decoded as %+v", p)
	}
	zero := strings.Replace(with, "max_cpu_per_txn_ratio: 2.5", "max_cpu_per_txn_ratio: 0", 1)
	if _, err := ParseBudget([]byte(zero)); err == nil || !strings.Contains(err.Error(), "end_to_end.pgbouncer") {
		t.Errorf("a zero pooler limit: %v", err)
	}
	if b, err := ParseBudget([]byte(validBudget)); err != nil || b.EndToEnd.PgBouncer != nil {
		t.Errorf("without the section: %+v, %v", b.EndToEnd.PgBouncer, err)
	}
}

func TestPairOrder(t *testing.T) {
	w, p := target{name: "w"}, target{name: "p"}
	pair := []target{w, p}
	for i, want := range []string{"w p", "p w", "w p"} {
		if got := orderNames(pairOrder(pair, i)); got != want {
			t.Errorf("round %d: %q, want %q", i, got, want)
		}
	}
	if orderNames(pair) != "w p" {
		t.Error("pairOrder modified its argument")
	}
}
