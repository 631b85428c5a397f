package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRenderReport(t *testing.T) {
	o := options{seed: seedSize{users: 100, postsPerUser: 2, followsPerUser: 3}, mix: mix{50, 25, 15, 10},
		load: loadConfig{workers: 4, backlog: 8, timeout: time.Second}, step: time.Second, duration: 2 * time.Second,
		start: 200, factor: 1.5, maxRate: 1000, slo: slo{p95: 200 * time.Millisecond, errorRate: 0.001}}
	pass := stepStats{label: "200/s", target: 200, scheduled: 1000, ok: 1000, achieved: 200, p50: time.Millisecond,
		p95: 5 * time.Millisecond, p99: 9 * time.Millisecond, routed: []int{500, 500}, server: []int64{600, 400}}
	fail := stepStats{label: "300/s", target: 300, scheduled: 1000, ok: 990, timedOut: 10, achieved: 290,
		p95: 300 * time.Millisecond, routed: []int{1, 3}, server: []int64{0, 0}}
	res := &results{capacity: []stepStats{pass, fail}, sustainable: 200, baseline: 66, phase2: []stepStats{pass},
		servers: counts{{300, 100}, {500, 100}}, serverNames: [][]string{{"s0-primary", "s0-replica1"}, {"s1-primary", "s1-replica1"}},
		pgVersion: "15.0", mix: o.mix, total: time.Minute}
	md := renderReport(reportInfo{opts: o, shardNames: []string{"s0", "s1"}, poolSize: 20, cpus: 2}, res)
	for _, want := range []string{
		"`go run ./bench/loadtest`",
		"| 200/s | 200 | 200 | 1000 | 1.0 | 5.0 | 9.0 | 0.00 | 0/0/0 | pass | 60.0 / 40.0 | 50.0 / 50.0 |",
		"| 300/s | 300 | 290 | 1000 | 0.0 | 300.0 | 0.0 | 1.00 | 0/10/0 | **FAIL** | - | 25.0 / 75.0 |",
		"**Sustainable throughput: 200 req/s**",
		"Baseline **66 req/s** (default",
		"objective held up to 3x the baseline (198 req/s)",
		"| s1 | s1-replica1 | 100 | 10.0 % |",
		"The replicas ran 20.0 % of all transactions",
		"about 60 %",
		"once every 4 requests",
		"](loadtest.svg)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q:\n%s", want, md)
		}
	}
}

// A plain run writes to a directory git ignores; only -out bench/results
// (make loadtest UPDATE=1) touches the committed example.
func TestDefaultOutputIsIgnored(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.outDir != "bench/out/loadtest" {
		t.Errorf("default -out %q, want bench/out/loadtest", o.outDir)
	}
	if !gitignored(t, o.outDir) {
		t.Errorf("%s is not in the repository's .gitignore", o.outDir)
	}
	if gitignored(t, committedOutDir) {
		t.Errorf("the committed example's directory %s is ignored", committedOutDir)
	}
	if o, err = parseFlags([]string{"-out", committedOutDir}); err != nil || o.outDir != committedOutDir {
		t.Errorf("-out %s: %q, %v", committedOutDir, o.outDir, err)
	}
}

// gitignored reports whether a root-anchored directory pattern of the
// repository's .gitignore ("/bench/out/") covers dir, a path from the root.
func gitignored(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", ".gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "/") && strings.HasSuffix(line, "/") && strings.HasPrefix("/"+dir+"/", line) {
			return true
		}
	}
	return false
}
