package main

import (
	"fmt"
	"io"
	"math"
	"text/tabwriter"
)

// ABRow is one metric of the comparison of the measured binary (new) with
// a -baseline binary (old).
type ABRow struct {
	Metric       string
	Old, New     float64 // medians over rounds
	Ratio        float64 // median over rounds of each round's new/old; NaN when no round had both
	HigherBetter bool
	Format       string // for Old and New
}

// ABResult is the whole comparison.
type ABResult struct {
	TPS, CPUPerTxn, P50 ABRow
}

// Rows lists the metrics in table order.
func (a ABResult) Rows() []ABRow { return []ABRow{a.TPS, a.CPUPerTxn, a.P50} }

// compareAB compares the samples of old and new round by round. The ratio is
// the median of each round's ratio rather than the ratio of the medians:
// the two binaries ran seconds apart within a round, so a burst of other
// work on the machine moves both sides of a round's ratio alike.
func compareAB(b EndToEnd, old, new []sample) ABResult {
	field := func(s []sample, f func(sample) float64) []float64 {
		out := make([]float64, len(s))
		for i, x := range s {
			out[i] = f(x)
		}
		return out
	}
	row := func(metric string, higherBetter bool, format string, f func(sample) float64) ABRow {
		o, n := field(old, f), field(new, f)
		return ABRow{Metric: metric, Old: median(o), New: median(n), Ratio: pairedRatio(o, n), HigherBetter: higherBetter, Format: format}
	}
	return ABResult{
		TPS:       row(fmt.Sprintf("tps, %d clients", b.Clients), true, "%.0f", func(s sample) float64 { return s.tps }),
		CPUPerTxn: row("proxy CPU µs/txn", false, "%.1f", func(s sample) float64 { return us(s.cpuPerTxn) }),
		P50:       row("p50 latency µs, 1 client", false, "%.0f", func(s sample) float64 { return us(s.p50) }),
	}
}

// pairedRatio is the median over i of new[i]/old[i], skipping rounds where
// old measured nothing; NaN when no round is left.
func pairedRatio(old, new []float64) float64 {
	var ratios []float64
	for i := range min(len(old), len(new)) {
		if old[i] > 0 {
			ratios = append(ratios, new[i]/old[i])
		}
	}
	if len(ratios) == 0 {
		return math.NaN()
	}
	return median(ratios)
}

// printAB prints the comparison table; oldBin and newBin name the binaries.
func printAB(w io.Writer, a ABResult, rounds int, oldBin, newBin string) {
	fmt.Fprintf(w, "A/B: new %s vs old (baseline) %s, %d interleaved rounds each\n", newBin, oldBin, rounds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\told\tnew\tnew/old\tbetter")
	for _, r := range a.Rows() {
		better := "lower"
		if r.HigherBetter {
			better = "higher"
		}
		fmt.Fprintf(tw, "%s\t"+r.Format+"\t"+r.Format+"\t%.3f\t%s\n", r.Metric, r.Old, r.New, r.Ratio, better)
	}
	tw.Flush()
	fmt.Fprintln(w, "old and new are medians over rounds; new/old is the median of the per-round ratios.")
}

// abChecks budgets the comparison when the budget file has a baseline
// section; without one the table is for reading only.
func abChecks(l *BaselineLimits, a ABResult) []Check {
	if l == nil {
		return nil
	}
	var checks []Check
	add := func(metric string, r ABRow, limit float64, atLeast bool) {
		c := Check{Metric: metric, Measured: r.Ratio, Limit: limit, AtLeast: atLeast, Format: "%.3f",
			Detail: fmt.Sprintf("median old "+r.Format+", new "+r.Format, r.Old, r.New)}
		if math.IsNaN(r.Ratio) {
			c.Absent, c.Detail = true, "no round measured the baseline"
		}
		checks = append(checks, c)
	}
	if l.MinTPSRatio > 0 {
		add("tps new/old", a.TPS, l.MinTPSRatio, true)
	}
	if l.MaxCPUPerTxnRatio > 0 {
		add("proxy CPU/txn new/old", a.CPUPerTxn, l.MaxCPUPerTxnRatio, false)
	}
	return checks
}
