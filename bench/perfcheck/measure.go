package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

const pointSelect = "SELECT id, name FROM users WHERE id = $1"

// rounds measures the targets side by side.
type rounds struct {
	b       EndToEnd
	pgbench string
	script  string
	cpu     cpuClock
	logf    logFunc
}

func (r rounds) writeScript() error {
	script := fmt.Sprintf("\\set id random(1, %d)\nSELECT id, name FROM users WHERE id = :id;\n", r.b.Rows)
	return os.WriteFile(r.script, []byte(script), 0o644)
}

// run warms the targets up, then measures them in b.Rounds rounds: their
// latency together, then each one's throughput, in roundOrder. The pooler
// pair (none, or shardgate at one worker and PgBouncer) has no latency
// phase: its throughput runs follow, in pairOrder.
func (r rounds) run(ctx context.Context, targets, pair []target) (map[string][]sample, error) {
	if _, err := latencyP50(ctx, targets, r.b.Rows, 300*time.Millisecond); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	all := append(slices.Clone(targets), pair...)
	for _, t := range all {
		if _, err := r.throughput(ctx, t, time.Second); err != nil {
			return nil, fmt.Errorf("%s: warm-up: %w", t.name, err)
		}
	}
	out := map[string][]sample{}
	for i := range r.b.Rounds {
		order := roundOrder(targets, i)
		p50s, err := latencyP50(ctx, order, r.b.Rows, r.b.LatencyDuration)
		if err != nil {
			return nil, fmt.Errorf("round %d latency: %w", i+1, err)
		}
		p50 := map[string]time.Duration{}
		for j, t := range order {
			p50[t.name] = p50s[j]
		}
		runs := map[string]throughputRun{}
		for _, t := range append(order, pairOrder(pair, i)...) {
			if runs[t.name], err = r.measureThroughput(ctx, t, r.b.ThroughputDuration); err != nil {
				return nil, fmt.Errorf("round %d, %s throughput: %w", i+1, t.name, err)
			}
		}
		line := fmt.Sprintf("round %d/%d:", i+1, r.b.Rounds)
		for _, t := range all {
			run := runs[t.name]
			out[t.name] = append(out[t.name], sample{p50: p50[t.name], tps: run.tps, cpuPerTxn: run.cpuPerTxn})
			line += fmt.Sprintf("  %s", t.name)
			if _, ok := p50[t.name]; ok {
				line += fmt.Sprintf(" p50 %.0f µs,", us(p50[t.name]))
			}
			line += fmt.Sprintf(" %.0f tps", run.tps)
			if t.pid != 0 {
				line += fmt.Sprintf(", %.1f µs CPU/txn", us(run.cpuPerTxn))
			}
		}
		r.logf("%s", line)
	}
	return out, nil
}

// roundOrder is the order in which round i measures the targets: which one
// runs first, and in the latency phase which one's query follows which.
// targets[0] (direct) goes first in even rounds and last in odd ones, and
// the others (the proxies) swap every two rounds. With one proxy that is
// plain alternation. With two, a plain reversal would leave the first proxy
// always in the middle and the second always right after it, and in the A/A
// test (a binary against a copy of itself) that alone made the first look
// about 4 % faster; this way each proxy takes each place equally often in
// every four rounds.
func roundOrder(targets []target, i int) []target {
	proxies := slices.Clone(targets[1:])
	if (i/2)%2 == 1 {
		slices.Reverse(proxies)
	}
	if i%2 == 0 {
		return append([]target{targets[0]}, proxies...)
	}
	return append(proxies, targets[0])
}

// pairOrder is the order in which round i runs the pooler pair: plain
// alternation, so that neither always runs right after the others.
func pairOrder(pair []target, i int) []target {
	out := slices.Clone(pair)
	if i%2 == 1 {
		slices.Reverse(out)
	}
	return out
}

// latencyP50 runs the prepared point select with random ids on one
// connection per target for d, one query at a time, taking turns query by
// query, and returns each target's median latency. One client with nothing
// queued is what shows a fixed delay added per query; taking turns this
// finely means a burst of other work on the machine delays both sides alike.
func latencyP50(ctx context.Context, targets []target, rows int, d time.Duration) ([]time.Duration, error) {
	conns := make([]*pgx.Conn, len(targets))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	lat := make([][]time.Duration, len(targets))
	for i, t := range targets {
		var err error
		if conns[i], err = pgx.Connect(ctx, t.dsn); err != nil {
			return nil, fmt.Errorf("%s: %w", t.name, err)
		}
		lat[i] = make([]time.Duration, 0, 1<<14)
	}
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for end := time.Now().Add(d); time.Now().Before(end); {
		id := 1 + rnd.Int64N(int64(rows))
		for i, c := range conns {
			took, err := pointQuery(ctx, c, id)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", targets[i].name, err)
			}
			lat[i] = append(lat[i], took)
		}
	}
	p50 := make([]time.Duration, len(targets))
	for i, l := range lat {
		slices.Sort(l)
		p50[i] = l[(len(l)-1)/2]
	}
	return p50, nil
}

// pointQuery runs the point select for id, checks the answer and returns
// how long it took.
func pointQuery(ctx context.Context, conn *pgx.Conn, id int64) (time.Duration, error) {
	var got int64
	var name string
	began := time.Now()
	if err := conn.QueryRow(ctx, pointSelect, id).Scan(&got, &name); err != nil {
		return 0, fmt.Errorf("id %d: %w", id, err)
	}
	took := time.Since(began)
	if got != id {
		return 0, fmt.Errorf("asked for id %d, got %d", id, got)
	}
	return took, nil
}

// throughputRun is one pgbench run against one target.
type throughputRun struct {
	tps       float64
	cpuPerTxn time.Duration // the proxy's; 0 for a target without one
}

// measureThroughput runs pgbench against t and, when t is a proxy process,
// divides the CPU time the proxy used meanwhile by the transactions. CPU per
// transaction moves much less with the machine's load than tps does, since
// it does not count the time the proxy waited for a core.
func (r rounds) measureThroughput(ctx context.Context, t target, d time.Duration) (throughputRun, error) {
	var before time.Duration
	if t.pid != 0 {
		var err error
		if before, err = r.cpu.processCPU(t.pid); err != nil {
			return throughputRun{}, err
		}
	}
	res, err := r.throughput(ctx, t, d)
	if err != nil || t.pid == 0 {
		return throughputRun{tps: res.tps}, err
	}
	after, err := r.cpu.processCPU(t.pid)
	if err != nil {
		return throughputRun{}, err
	}
	return throughputRun{tps: res.tps, cpuPerTxn: perTxn(after-before, res.txns)}, nil
}

// perTxn divides cpu by txns; 0 for no transactions.
func perTxn(cpu time.Duration, txns int64) time.Duration {
	if txns <= 0 {
		return 0
	}
	return cpu / time.Duration(txns)
}

// pgbenchResult is what a pgbench run reported.
type pgbenchResult struct {
	tps  float64
	txns int64
}

var (
	tpsLine  = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	txnsLine = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
)

// parsePgbench reads tps and the transaction count from pgbench's summary.
func parsePgbench(out []byte) (pgbenchResult, error) {
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		return pgbenchResult{}, fmt.Errorf("no tps line in pgbench's output:\n%s", tail(out, 10))
	}
	tps, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		return pgbenchResult{}, fmt.Errorf("pgbench tps: %w", err)
	}
	m = txnsLine.FindSubmatch(out)
	if m == nil {
		return pgbenchResult{}, fmt.Errorf("no transaction count in pgbench's output:\n%s", tail(out, 10))
	}
	txns, err := strconv.ParseInt(string(m[1]), 10, 64)
	if err != nil {
		return pgbenchResult{}, fmt.Errorf("pgbench transactions: %w", err)
	}
	return pgbenchResult{tps: tps, txns: txns}, nil
}

// throughput runs pgbench against t with b.Clients clients in t's query
// mode for d (whole seconds). pgbench rather than Go clients: it needs less
// CPU per query, which leaves more of this small machine's CPU to the proxy
// and so shows more of the proxy's own cost.
func (r rounds) throughput(ctx context.Context, t target, d time.Duration) (pgbenchResult, error) {
	host, port, db, err := hostPort(t.dsn)
	if err != nil {
		return pgbenchResult{}, err
	}
	threads := min(r.b.Clients, runtime.NumCPU())
	cmd := exec.CommandContext(ctx, r.pgbench, "-n", "-M", t.mode, "-f", r.script,
		"-c", strconv.Itoa(r.b.Clients), "-j", strconv.Itoa(threads), "-T", strconv.Itoa(int(d/time.Second)),
		"-h", host, "-p", port, "-U", "postgres", db)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return pgbenchResult{}, fmt.Errorf("pgbench: %w\n%s", err, tail(out, 10))
	}
	return parsePgbench(out)
}

// tail is the last n lines of out.
func tail(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
