package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// reportInfo is what the report says about the set-up, beside the results.
type reportInfo struct {
	opts       options
	args       string // the command line's flags
	shardNames []string
	poolSize   int
	cpus       int
	loadBefore string // 1-minute load average before the run; "" if unknown
	loadAfter  string // and after it
	date       time.Time
}

// writeOutputs writes loadtest.md and loadtest.svg and prints the report.
func writeOutputs(o options, e *env, res *results, loadBefore string, log *slog.Logger) error {
	info := reportInfo{opts: o, args: strings.Join(os.Args[1:], " "), shardNames: e.shardNames(),
		poolSize: e.cfg.Pool.Size, cpus: runtime.NumCPU(), loadBefore: loadBefore, loadAfter: loadAvg(), date: time.Now()}
	md := renderReport(info, res)
	var svg bytes.Buffer
	if err := renderSVG(&svg, buildPlot(res, o)); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	mdPath, svgPath := filepath.Join(o.outDir, "loadtest.md"), filepath.Join(o.outDir, "loadtest.svg")
	if err := os.WriteFile(mdPath, []byte(md), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.WriteFile(svgPath, svg.Bytes(), 0o644); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	fmt.Print(md)
	log.Info("wrote", "report", mdPath, "plot", svgPath, "took", res.total.Round(time.Second))
	return nil
}

// loadAvg is the 1-minute load average, to show how busy the machine was.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// renderReport is the markdown report.
func renderReport(info reportInfo, res *results) string {
	var b strings.Builder
	b.WriteString("# Load test: social-app workload through shardgate\n\n")
	fmt.Fprintf(&b, "Written by `make loadtest` (`%s`) on %s; the whole run, sandbox start to end, took %s.\n\n",
		strings.TrimSpace("go run ./bench/loadtest "+info.args), info.date.UTC().Format("2006-01-02 15:04 UTC"), res.total.Round(time.Second))
	writeEnvironment(&b, info, res)
	writePhase1(&b, info, res)
	writePhase2(&b, info, res)
	writeBalance(&b, res)
	b.WriteString("## Latency over time\n\n")
	fmt.Fprintf(&b, "![p50, p95 and p99 latency, achieved and offered req/s, and failed, timed-out and dropped requests per 1 s window, over both phases](loadtest.svg)\n\n")
	b.WriteString("Each point is one 1 s window: latency percentiles of the successful requests scheduled in it, achieved req/s " +
		"counted by completion, and bars of the failed or timed-out and of the dropped requests scheduled in it, per second. " +
		"All three panels have log scales; each step is labeled with its offered req/s. Shaded steps missed the objective. " +
		"Every step waits for its last requests before the next starts, so a window can span the end of one step and the " +
		"start of the next.\n")
	return b.String()
}

func writeEnvironment(b *strings.Builder, info reportInfo, res *results) {
	o := info.opts
	load := ""
	if info.loadBefore != "" && info.loadAfter != "" {
		load = fmt.Sprintf(", 1-minute load average %s before the run and %s after it", info.loadBefore, info.loadAfter)
	}
	fmt.Fprintf(b, "**Environment:** %d CPUs (%s/%s%s); %d shards, each a primary and %d streaming replica, PostgreSQL %s "+
		"sandbox (fsync off); in-process shardgate, consistency %s, pool.size %d per server; seed %d users, %d posts, %d follows; "+
		"mix %s, user ids uniformly random. Open loop: %d workers (one proxy connection each), backlog %d, timeout %s. "+
		"The load generator, the proxy and all %d PostgreSQL servers share these CPUs, so the numbers are the whole stack's "+
		"on one machine, and noisy.\n\n",
		info.cpus, runtime.GOOS, runtime.GOARCH, load, len(info.shardNames), replicasPerShard, res.pgVersion, consistency, info.poolSize,
		o.seed.users, o.seed.users*o.seed.postsPerUser, o.seed.users*o.seed.followsPerUser, o.mix,
		o.load.workers, o.load.backlog, o.load.timeout, len(info.shardNames)*(1+replicasPerShard))
	fmt.Fprintf(b, "**Objective:** a step passes when p95 < %s and errors < %s %% of the scheduled requests. Latency runs from each "+
		"request's scheduled start, so time queued behind a slow system counts; failed, timed-out (> %s) and dropped "+
		"(backlog full) requests are errors and are not in the percentiles.\n\n",
		o.slo.p95, trimFloat(o.slo.errorRate*100), o.load.timeout)
}

func writePhase1(b *strings.Builder, info reportInfo, res *results) {
	o := info.opts
	fmt.Fprintf(b, "## Phase 1: find capacity\n\n%s per step, the rate multiplied by %s (two significant digits) from %.0f req/s "+
		"until a step fails or %.0f req/s passed.\n\n", o.step, trimFloat(o.factor), o.start, o.maxRate)
	b.WriteString(stepTable(res.capacity, o.slo, info.shardNames))
	switch {
	case res.sustainable == 0:
		b.WriteString("\n**Sustainable throughput: none** — even the first step failed.\n\n")
	case res.capped:
		fmt.Fprintf(b, "\n**Sustainable throughput: at least %.0f req/s** (every step passed; raise `-max-rate`).\n\n", res.sustainable)
	default:
		last := res.capacity[len(res.capacity)-1]
		fmt.Fprintf(b, "\n**Sustainable throughput: %.0f req/s**, the last step that passed (%s failed: p95 %.1f ms, errors %.2f %%).\n\n",
			res.sustainable, last.label, ms(last.p95), 100*last.errorRate())
	}
}

func writePhase2(b *strings.Builder, info reportInfo, res *results) {
	o := info.opts
	how := "default: a third of the sustainable throughput, rounded down to two significant digits; state your real peak with `-baseline`"
	if res.stated {
		how = "stated with `-baseline`"
	}
	fmt.Fprintf(b, "## Phase 2: baseline, 2x and 3x\n\nBaseline **%.0f req/s** (%s), %s per step.\n\n", res.baseline, how, o.duration)
	b.WriteString(stepTable(res.phase2, o.slo, info.shardNames))
	var failed []string
	for _, st := range res.phase2 {
		if !st.pass(o.slo) {
			failed = append(failed, st.label)
		}
	}
	if len(failed) == 0 {
		fmt.Fprintf(b, "\n**Headroom:** the objective held up to 3x the baseline (%.0f req/s).\n\n", 3*res.baseline)
	} else {
		fmt.Fprintf(b, "\n**Headroom:** the objective was missed at %s.\n\n", strings.Join(failed, ", "))
	}
}

// stepTable is one markdown table row per step.
func stepTable(steps []stepStats, o slo, shardNames []string) string {
	var b strings.Builder
	names := strings.Join(shardNames, "/")
	fmt.Fprintf(&b, "| step | target req/s | achieved req/s | requests | p50 ms | p95 ms | p99 ms | errors %% | failed/timed out/dropped "+
		"| result | %s servers %% | %s routed %% |\n", names, names)
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n")
	for _, st := range steps {
		result := "pass"
		if !st.pass(o) {
			result = "**FAIL**"
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %d | %.1f | %.1f | %.1f | %.2f | %d/%d/%d | %s | %s | %s |\n",
			st.label, st.target, st.achieved, st.scheduled, ms(st.p50), ms(st.p95), ms(st.p99), 100*st.errorRate(),
			st.failed, st.timedOut, st.dropped, result, shares(st.server), shares(st.routed))
	}
	return b.String()
}

// shares formats counts as percentages of their sum, "50.2 / 49.8".
func shares[T int | int64](counts []T) string {
	var total T
	for _, n := range counts {
		total += n
	}
	if total <= 0 {
		return "-"
	}
	parts := make([]string, len(counts))
	for i, n := range counts {
		parts[i] = fmt.Sprintf("%.1f", 100*float64(n)/float64(total))
	}
	return strings.Join(parts, " / ")
}

func writeBalance(b *strings.Builder, res *results) {
	b.WriteString("## Shard balance\n\n")
	b.WriteString("*servers %* is each shard's share of the transactions its servers ran during the step: deltas of " +
		"`pg_stat_database.xact_commit + xact_rollback` of the app database, summed over the shard's primary and replica, read " +
		"on the servers themselves. Every statement the proxy relays outside a transaction block is one transaction; the " +
		"proxy's health probes add about one per server and second. PostgreSQL publishes a busy backend's counts at most once " +
		"a second, so per-step shares are approximate. *routed %* is the generator's count: each request's user id hashed " +
		"to its shard with the hashing contract, as the proxy routes it.\n\n")
	writeServerTable(b, res)
	fmt.Fprintf(b, "\nThe replicas ran %.1f %% of all transactions; had every read gone to a replica, they would have run about "+
		"%.0f %% (reads over reads plus two per write: the write and the WAL-position query the proxy sends after it). "+
		"With read_your_writes (ryw_wait 0), a connection's reads go to its shard's primary until the replica has replayed "+
		"that connection's last write there", replicaShare(res.servers), idealReplicaShare(res.mix))
	if n := writeEvery(res.mix); n > 0 {
		fmt.Fprintf(b, "; each worker connection here writes about once every %s requests", trimFloat(n))
	}
	b.WriteString(".\n\n")
}

// writeServerTable gives every server's transactions over both phases.
func writeServerTable(b *strings.Builder, res *results) {
	b.WriteString("Both phases, per server (exact: read after the proxy's server connections closed):\n\n")
	b.WriteString("| shard | server | transactions | share of all |\n|---|---|---:|---:|\n")
	var total int64
	for _, n := range res.servers.perShard() {
		total += n
	}
	for i, servers := range res.servers {
		for j, n := range servers {
			share := 0.0
			if total > 0 {
				share = 100 * float64(n) / float64(total)
			}
			fmt.Fprintf(b, "| %s | %s | %d | %.1f %% |\n", shardOfServer(res.serverNames[i][j]), res.serverNames[i][j], n, share)
		}
	}
}

// shardOfServer is the shard part of a sandbox server name, "s0-primary" -> "s0".
func shardOfServer(name string) string {
	shard, _, _ := strings.Cut(name, "-")
	return shard
}

// trimFloat formats f without trailing zeros.
func trimFloat(f float64) string { return fmt.Sprintf("%g", f) }

// replicaShare is the percentage of transactions that ran on replicas
// (every server after the first of a shard).
func replicaShare(c counts) float64 {
	var all, replicas int64
	for _, servers := range c {
		for j, n := range servers {
			all += n
			if j > 0 {
				replicas += n
			}
		}
	}
	if all == 0 {
		return 0
	}
	return 100 * float64(replicas) / float64(all)
}

// idealReplicaShare is the percentage of transactions replicas would run
// if every read went to one: a read is one transaction, a write two.
func idealReplicaShare(m mix) float64 {
	reads, writes := m[opTimeline]+m[opProfile], m[opPost]+m[opFollow]
	if reads+writes == 0 {
		return 0
	}
	return 100 * float64(reads) / float64(reads+2*writes)
}

// writeEvery is how many requests of the mix there are per write, to one
// decimal; 0 when the mix has no writes.
func writeEvery(m mix) float64 {
	writes := m[opPost] + m[opFollow]
	if writes == 0 {
		return 0
	}
	return math.Round(10*float64(m.total())/float64(writes)) / 10
}
