package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// runMicro runs the budgeted Go benchmarks, one `go test` per package, and
// compares them with their limits.
func runMicro(ctx context.Context, m Micro, goCmd string, logf logFunc) ([]Check, error) {
	var pkgs []string
	names := map[string][]string{}
	for _, l := range m.Benchmarks {
		if names[l.Package] == nil {
			pkgs = append(pkgs, l.Package)
		}
		names[l.Package] = append(names[l.Package], regexp.QuoteMeta(l.Name))
	}
	results := map[string]*BenchResult{}
	for _, pkg := range pkgs {
		args := []string{"test", "-run", "^$", "-benchmem",
			"-bench", "^(" + strings.Join(names[pkg], "|") + ")$",
			"-benchtime", m.Benchtime, "-count", strconv.Itoa(m.Count), pkg}
		logf("%s %s", goCmd, strings.Join(args, " "))
		out, err := exec.CommandContext(ctx, goCmd, args...).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("go test %s: %w\n%s", pkg, err, tail(out, 20))
		}
		// Benchmark names are unique per package; across packages a clash
		// would merge two benchmarks' samples, so refuse it.
		for name, r := range ParseBenchOutput(out) {
			if results[name] != nil {
				return nil, fmt.Errorf("benchmark %s is budgeted in two packages", name)
			}
			results[name] = r
		}
	}
	return MicroChecks(m.Benchmarks, results), nil
}
