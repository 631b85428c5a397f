// Command scatter benchmarks cross-shard (scatter-gather) queries: the same
// SELECTs through shardgate over 3 shards and straight to one PostgreSQL
// database holding all the rows, and prints a markdown section with the
// latencies. bench/run.sh runs it as the last step of `make bench`:
//
//	go run ./bench/scatter -rows 200000 -duration 10s -clients 4 -out scatter.md
//
// It starts its own 3-shard sandbox (no replicas) in a temporary directory and
// an in-process proxy, loads users 1..rows into the shards (each row where the
// hashing contract places it) and into database "flat" on shard 0's primary,
// checks that both targets return identical results, then runs each query
// for -duration with -clients connections per target, targets taking turns.
// Last, it COPYs -copy-rows rows into posts straight into "flat" and through
// a `shardgate serve` process (-shardgate), reporting throughput and the
// proxy's RSS, and checks every row landed on its shard.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/bench/loadgen"
	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

const shards = 3

var queries = []struct{ name, sql string }{
	{"count", "SELECT count(*) FROM users"},
	{"order-by-limit", "SELECT id, name FROM users ORDER BY name LIMIT 10"},
	{"group-by", "SELECT country, count(*), avg(id) FROM users GROUP BY country ORDER BY country"},
}

var countries = []string{"de", "fr", "jp", "us"}

func main() {
	rows := flag.Int("rows", 200000, "rows in users")
	duration := flag.Duration("duration", 10*time.Second, "how long each query runs per target")
	clients := flag.Int("clients", 4, "concurrent connections per run")
	out := flag.String("out", "", "also write the markdown section to this file")
	copyRows := flag.Int("copy-rows", 1_000_000, "rows for the COPY FROM step; 0 skips it")
	bin := flag.String("shardgate", "bin/shardgate", "the shardgate binary the COPY step runs")
	flag.Parse()
	if *rows < 1 || *clients < 1 || *duration <= 0 {
		fatalf("-rows, -clients and -duration must be positive")
	}
	loadgen.Report("scatter", *out, func(ctx context.Context) (string, error) {
		return run(ctx, *rows, *duration, *clients, *copyRows, *bin)
	})
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "scatter: "+format+"\n", args...)
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "scatter: "+format+"\n", args...)
}

func run(ctx context.Context, rows int, duration time.Duration, clients, copyRows int, bin string) (string, error) {
	logf("starting a %d-shard sandbox", shards)
	c, remove, err := sandbox.StartTemp(ctx, "shardgate-scatter-", sandbox.Options{Shards: shards, Replicas: sandbox.NoReplicas, Fast: true, Schema: sandbox.Schema})
	if err != nil {
		return "", fmt.Errorf("sandbox: %w", err)
	}
	defer remove()
	dir := c.Dir

	cfg, err := topology.ParseConfig("bench.yaml", c.ConfigYAML("127.0.0.1:0"))
	if err != nil {
		return "", err
	}
	topo, err := topology.New(cfg)
	if err != nil {
		return "", err
	}
	proxyDSN, stopProxy, err := loadgen.ServeProxy(ctx, cfg, c.Database)
	if err != nil {
		return "", err
	}
	defer stopProxy()
	flatDSN := c.Shards[0].Primary.DSN("flat")

	logf("loading %d users into %d shards and into database flat", rows, shards)
	if err := load(ctx, c, topo, rows); err != nil {
		return "", fmt.Errorf("loading: %w", err)
	}

	targets := []struct{ name, dsn string }{{"postgres (flat)", flatDSN}, {"shardgate (3 shards)", proxyDSN}}
	var b strings.Builder
	fmt.Fprintf(&b, "## Cross-shard queries (3 shards vs one Postgres with all rows)\n\n")
	fmt.Fprintf(&b, "`users` with %d rows: spread over %d shards (no replicas) behind shardgate (in-process proxy, pool.size 20), "+
		"and all in one database on one of the same PostgreSQL instances (flat). %d clients per run, each its own pgx "+
		"connection (default exec mode: prepared statements) looping the query for %s; targets take turns per query. "+
		"Results were checked to be identical on both targets. Latencies in ms (nearest rank); ratios are shardgate/flat.\n\n",
		rows, shards, clients, duration)
	b.WriteString("| query | target | queries | qps | p50 ms | p95 ms | p99 ms | p50 ratio | p99 ratio |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, q := range queries {
		if err := verify(ctx, proxyDSN, flatDSN, q.sql); err != nil {
			return "", fmt.Errorf("%s: %w", q.name, err)
		}
		var res [2]loadgen.Result
		for i, t := range targets {
			r, err := measure(ctx, t.dsn, q.sql, duration, clients)
			if err != nil {
				return "", fmt.Errorf("%s via %s: %w", q.name, t.name, err)
			}
			res[i] = r
			logf("%-15s %-21s %7d queries, p50 %.3f ms, p99 %.3f ms", q.name, t.name, r.N, ms(r.Pct(0.50)), ms(r.Pct(0.99)))
		}
		for i, t := range targets {
			r := res[i]
			r50, r99 := "", ""
			if i == 1 {
				r50 = ratio(r.Pct(0.50), res[0].Pct(0.50))
				r99 = ratio(r.Pct(0.99), res[0].Pct(0.99))
			}
			fmt.Fprintf(&b, "| `%s` | %s | %d | %.0f | %.3f | %.3f | %.3f | %s | %s |\n", q.sql, t.name, r.N,
				float64(r.N)/r.Elapsed.Seconds(), ms(r.Pct(0.50)), ms(r.Pct(0.95)), ms(r.Pct(0.99)), r50, r99)
		}
	}
	b.WriteString("\n")
	if copyRows > 0 {
		md, err := copyStep(ctx, c, topo, bin, dir, copyRows)
		if err != nil {
			return "", fmt.Errorf("COPY step: %w", err)
		}
		b.WriteString(md)
	}
	return b.String(), nil
}

// load fills users on every shard with the ids the hashing contract places
// there, and database flat on shard 0's primary with all of them.
func load(ctx context.Context, c *sandbox.Cluster, topo *topology.Topology, rows int) error {
	perShard := make([][][]any, shards)
	all := make([][]any, 0, rows)
	for id := int64(1); id <= int64(rows); id++ {
		at, err := topo.Place(topology.KeyBigint, strconv.FormatInt(id, 10))
		if err != nil {
			return err
		}
		row := []any{id, "user " + strconv.FormatInt(id, 10), countries[id%4]}
		s := at.Shard
		perShard[s] = append(perShard[s], row)
		all = append(all, row)
	}
	admin, err := pgx.Connect(ctx, c.Shards[0].Primary.DSN(c.Database))
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE flat"); err != nil {
		return err
	}
	fill := func(dsn string, schema bool, data [][]any) error {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		if schema {
			if _, err := conn.Exec(ctx, sandbox.Schema); err != nil {
				return err
			}
		}
		if _, err := conn.CopyFrom(ctx, pgx.Identifier{"users"}, []string{"id", "name", "country"}, pgx.CopyFromRows(data)); err != nil {
			return err
		}
		_, err = conn.Exec(ctx, "VACUUM ANALYZE users")
		return err
	}
	for i, sh := range c.Shards {
		if err := fill(sh.Primary.DSN(c.Database), false, perShard[i]); err != nil {
			return fmt.Errorf("shard %s: %w", sh.Name, err)
		}
		logf("shard %s: %d rows", sh.Name, len(perShard[i]))
	}
	return fill(c.Shards[0].Primary.DSN("flat"), true, all)
}

// verify runs sql once on both targets (simple protocol, text results) and
// fails unless the results are identical.
func verify(ctx context.Context, proxyDSN, flatDSN, sql string) error {
	get := func(dsn string) ([][][]byte, error) {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return nil, err
		}
		defer conn.Close(ctx)
		res, err := conn.PgConn().Exec(ctx, sql).ReadAll()
		if err != nil {
			return nil, err
		}
		if len(res) != 1 {
			return nil, fmt.Errorf("%d results", len(res))
		}
		return res[0].Rows, nil
	}
	got, err := get(proxyDSN)
	if err != nil {
		return fmt.Errorf("through shardgate: %w", err)
	}
	want, err := get(flatDSN)
	if err != nil {
		return fmt.Errorf("on flat: %w", err)
	}
	if len(want) == 0 || !slices.EqualFunc(got, want, func(a, b [][]byte) bool {
		return slices.EqualFunc(a, b, bytes.Equal)
	}) {
		return fmt.Errorf("results differ:\nshardgate: %s\nflat:      %s", show(got), show(want))
	}
	return nil
}

func show(rows [][][]byte) string {
	var parts []string
	for _, r := range rows {
		var cols []string
		for _, v := range r {
			cols = append(cols, string(v))
		}
		parts = append(parts, "("+strings.Join(cols, ", ")+")")
	}
	return strings.Join(parts, " ")
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func ratio(a, b time.Duration) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(a)/float64(b))
}

// measure runs sql on clients connections to dsn for duration.
func measure(ctx context.Context, dsn, sql string, duration time.Duration, clients int) (loadgen.Result, error) {
	return loadgen.Run(ctx, dsn, clients, 3, duration, func(ctx context.Context, conn *pgx.Conn, _ *rand.Rand) error {
		return query(ctx, conn, sql)
	})
}

func query(ctx context.Context, conn *pgx.Conn, sql string) error {
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return err
	}
	for rows.Next() {
	}
	rows.Close()
	return rows.Err()
}
