package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Budget is bench/budget.yaml: how to measure and what counts as a
// regression.
type Budget struct {
	EndToEnd EndToEnd        `yaml:"end_to_end"`
	Baseline *BaselineLimits `yaml:"baseline"` // optional; enforced only with -baseline
	Micro    Micro           `yaml:"micro"`
}

// EndToEnd is the side-by-side run: the same prepared point select straight
// to PostgreSQL and through a `shardgate serve` process, in alternating
// rounds. Only ratios are budgeted: both sides share the machine, so its
// load moves them alike.
type EndToEnd struct {
	Rows               int           `yaml:"rows"`
	Rounds             int           `yaml:"rounds"`
	LatencyDuration    time.Duration `yaml:"latency_duration"`
	ThroughputDuration time.Duration `yaml:"throughput_duration"` // whole seconds: pgbench -T
	Clients            int           `yaml:"clients"`
	MaxP50Ratio        float64       `yaml:"max_p50_latency_ratio"`
	MinTPSRatio        float64       `yaml:"min_tps_ratio"`
	// PgBouncer, when set, adds the pooler pair to every round and budgets
	// shardgate at one worker against PgBouncer; absent, PgBouncer is
	// neither needed nor measured.
	PgBouncer *PoolerLimits `yaml:"pgbouncer"`
}

// PoolerLimits budget shardgate at workers: 1 against PgBouncer in
// transaction mode, both single-threaded, in the same rounds: medians of
// per-round shardgate/PgBouncer ratios.
type PoolerLimits struct {
	MinTPSRatio       float64 `yaml:"min_tps_ratio"`
	MaxCPUPerTxnRatio float64 `yaml:"max_cpu_per_txn_ratio"`
}

// BaselineLimits budget the A/B comparison of the measured binary with a
// -baseline binary: new/old ratios of paired rounds. A zero limit is not
// checked, so a team can budget CPU per transaction alone.
type BaselineLimits struct {
	MinTPSRatio       float64 `yaml:"min_tps_ratio"`
	MaxCPUPerTxnRatio float64 `yaml:"max_cpu_per_txn_ratio"`
}

// Micro is the router's and topology's Go benchmarks.
type Micro struct {
	Benchtime  string           `yaml:"benchtime"`
	Count      int              `yaml:"count"`
	Benchmarks []BenchmarkLimit `yaml:"benchmarks"`
}

// BenchmarkLimit budgets one Go benchmark. MaxAllocs is a pointer so that a
// forgotten field is an error rather than a budget of zero.
type BenchmarkLimit struct {
	Package   string  `yaml:"package"`
	Name      string  `yaml:"name"`
	MaxNsOp   float64 `yaml:"max_ns_op"`
	MaxAllocs *int64  `yaml:"max_allocs_op"`
}

// LoadBudget reads and validates a budget file.
func LoadBudget(path string) (Budget, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Budget{}, err
	}
	b, err := ParseBudget(data)
	if err != nil {
		return Budget{}, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// ParseBudget decodes a budget, refusing unknown fields so that a misspelt
// limit cannot silently stop being checked.
func ParseBudget(data []byte) (Budget, error) {
	var b Budget
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&b); err != nil {
		return Budget{}, err
	}
	return b, b.validate()
}

func (b Budget) validate() error {
	e := b.EndToEnd
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(e.Rows > 0, "end_to_end.rows must be positive")
	check(e.Rounds > 0, "end_to_end.rounds must be positive")
	check(e.Clients > 0, "end_to_end.clients must be positive")
	check(e.LatencyDuration > 0, "end_to_end.latency_duration must be positive")
	check(e.ThroughputDuration >= time.Second && e.ThroughputDuration%time.Second == 0,
		"end_to_end.throughput_duration must be whole seconds (pgbench -T), got %s", e.ThroughputDuration)
	check(e.MaxP50Ratio > 0, "end_to_end.max_p50_latency_ratio must be positive")
	check(e.MinTPSRatio > 0, "end_to_end.min_tps_ratio must be positive")
	if pl := e.PgBouncer; pl != nil {
		check(pl.MinTPSRatio > 0 && pl.MaxCPUPerTxnRatio > 0, "end_to_end.pgbouncer: min_tps_ratio and max_cpu_per_txn_ratio must be positive (or remove the section)")
	}
	if bl := b.Baseline; bl != nil {
		check(bl.MinTPSRatio >= 0 && bl.MaxCPUPerTxnRatio >= 0, "baseline: ratios must not be negative")
		check(bl.MinTPSRatio > 0 || bl.MaxCPUPerTxnRatio > 0, "baseline: set min_tps_ratio or max_cpu_per_txn_ratio (or remove the section)")
	}
	m := b.Micro
	if _, err := time.ParseDuration(m.Benchtime); err != nil && !strings.HasSuffix(m.Benchtime, "x") {
		errs = append(errs, fmt.Errorf("micro.benchtime %q: want a duration or Nx", m.Benchtime))
	}
	check(m.Count > 0, "micro.count must be positive")
	for i, l := range m.Benchmarks {
		check(l.Package != "", "micro.benchmarks[%d]: package is required", i)
		check(strings.HasPrefix(l.Name, "Benchmark"), "micro.benchmarks[%d]: name %q must start with Benchmark", i, l.Name)
		check(l.MaxNsOp > 0, "micro.benchmarks[%d] %s: max_ns_op must be positive", i, l.Name)
		check(l.MaxAllocs != nil && *l.MaxAllocs >= 0, "micro.benchmarks[%d] %s: max_allocs_op is required (0 or more)", i, l.Name)
	}
	return errors.Join(errs...)
}

// Check is one budgeted measurement.
type Check struct {
	Metric   string
	Measured float64
	Limit    float64
	AtLeast  bool   // the limit is a minimum (throughput), not a maximum
	Format   string // for Measured and Limit, e.g. "%.2f"
	Detail   string // the raw numbers behind a ratio
	Absent   bool   // nothing was measured: always a failure
	Info     bool   // reported, not budgeted: Limit is ignored
}

// OK says whether the measurement is within budget.
func (c Check) OK() bool {
	switch {
	case c.Info:
		return true
	case c.Absent:
		return false
	case c.AtLeast:
		return c.Measured >= c.Limit
	}
	return c.Measured <= c.Limit
}

// Value renders the measurement, "-" when there is none.
func (c Check) Value() string {
	if c.Absent {
		return "-"
	}
	return fmt.Sprintf(c.Format, c.Measured)
}

// Budget renders the limit with its direction, e.g. "<= 2.50", or "-"
// when there is none.
func (c Check) Budget() string {
	if c.Info {
		return "-"
	}
	op := "<="
	if c.AtLeast {
		op = ">="
	}
	return op + " " + fmt.Sprintf(c.Format, c.Limit)
}

// Failed lists the metrics of the checks that are over budget.
func Failed(checks []Check) []string {
	var names []string
	for _, c := range checks {
		if !c.OK() {
			names = append(names, c.Metric)
		}
	}
	return names
}

// median of xs (not modified); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// BenchResult is what `go test -bench -benchmem` printed for one benchmark
// over all its -count runs.
type BenchResult struct {
	NsOp     []float64
	AllocsOp []float64
}

// benchLine matches a result line: name, optional -GOMAXPROCS suffix,
// iterations, then value/unit pairs.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// ParseBenchOutput collects ns/op and allocs/op per benchmark name (without
// the -GOMAXPROCS suffix) from `go test -bench -benchmem` output.
func ParseBenchOutput(out []byte) map[string]*BenchResult {
	results := map[string]*BenchResult{}
	for _, line := range strings.Split(string(out), "\n") {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		r := results[m[1]]
		if r == nil {
			r = &BenchResult{}
			results[m[1]] = r
		}
		f := strings.Fields(m[2])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				r.NsOp = append(r.NsOp, v)
			case "allocs/op":
				r.AllocsOp = append(r.AllocsOp, v)
			}
		}
	}
	return results
}

// MicroChecks compares benchmark results with their limits. ns/op takes the
// fastest of the runs: interference from other work on the machine only ever
// slows a run down, so the minimum is the steadiest estimate of the code's
// own cost. allocs/op takes the largest, although it does not vary.
func MicroChecks(limits []BenchmarkLimit, results map[string]*BenchResult) []Check {
	var checks []Check
	for _, l := range limits {
		short := strings.TrimPrefix(l.Name, "Benchmark")
		ns := Check{Metric: short + " ns/op", Limit: l.MaxNsOp, Format: "%.0f", Detail: l.Package}
		allocs := Check{Metric: short + " allocs/op", Limit: float64(*l.MaxAllocs), Format: "%.0f", Detail: l.Package}
		r := results[l.Name]
		if r == nil || len(r.NsOp) == 0 || len(r.AllocsOp) == 0 {
			ns.Absent, allocs.Absent = true, true
			ns.Detail += ": no result (renamed or removed?)"
			allocs.Detail = ns.Detail
		} else {
			ns.Measured, allocs.Measured = slices.Min(r.NsOp), slices.Max(r.AllocsOp)
		}
		checks = append(checks, ns, allocs)
	}
	return checks
}
