// Command replicas benchmarks replica reads: the same keyed point select
// through an in-process shardgate over 2 shards with 2 replicas each, with
// reads on the primaries only (consistency: primary), on one replica per
// shard and on two (consistency: eventual), and prints a markdown section.
// bench/run.sh runs it after bench/scatter:
//
//	go run ./bench/replicas -rows 100000 -duration 10s -clients 16 -out replicas.md
//
// It starts its own sandbox in a temporary directory (removed at the end),
// loads users 1..rows straight into the shards' primaries, waits for every
// replica to replay them, then for each configuration starts a proxy, checks
// that reads land where the configuration says, and runs -clients pgx
// connections looping SELECT id, name FROM users WHERE id = $1 with random
// ids for -duration.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/bench/loadgen"
	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

const (
	shards   = 2
	replicas = 2
	query    = "SELECT id, name FROM users WHERE id = $1"
)

type setup struct {
	name        string
	consistency string
	replicas    int // replicas per shard in the proxy's config
}

var setups = []setup{
	{"primary only (consistency: primary)", "primary", replicas},
	{"1 replica per shard (eventual)", "eventual", 1},
	{"2 replicas per shard (eventual)", "eventual", 2},
}

func main() {
	def := 10 * time.Second
	if s, err := strconv.Atoi(os.Getenv("BENCH_DURATION")); err == nil && s > 0 {
		def = time.Duration(s) * time.Second
	}
	rows := flag.Int("rows", 100000, "rows in users")
	duration := flag.Duration("duration", def, "how long each configuration runs (default: BENCH_DURATION seconds, else 10s)")
	clients := flag.Int("clients", 16, "concurrent connections")
	out := flag.String("out", "", "also write the markdown section to this file")
	flag.Parse()
	if *rows < 1 || *clients < 1 || *duration <= 0 {
		fatalf("-rows, -clients and -duration must be positive")
	}
	loadgen.Report("replicas", *out, func(ctx context.Context) (string, error) {
		return run(ctx, *rows, *duration, *clients)
	})
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "replicas: "+format+"\n", args...)
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "replicas: "+format+"\n", args...)
}

func run(ctx context.Context, rows int, duration time.Duration, clients int) (string, error) {
	logf("starting a %d-shard sandbox with %d replicas per shard", shards, replicas)
	c, remove, err := sandbox.StartTemp(ctx, "shardgate-replicas-", sandbox.Options{Shards: shards, Replicas: replicas, Fast: true, Schema: sandbox.Schema})
	if err != nil {
		return "", fmt.Errorf("sandbox: %w", err)
	}
	defer remove()
	if err := load(ctx, c, rows); err != nil {
		return "", fmt.Errorf("loading: %w", err)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "## Replica reads (2 shards, each a primary and 2 replicas)\n\n")
	fmt.Fprintf(&b, "`%s` with random ids in 1..%d, through an in-process shardgate (pool.size per server as configured by the sandbox), "+
		"%d clients, each its own pgx connection (prepared statements), for %s per configuration; all servers share this machine's %d CPUs. "+
		"Replicas listed in the config are the only difference between the runs. Latencies in ms (nearest rank); ratios are to primary only.\n\n",
		query, rows, clients, duration, numCPU())
	b.WriteString("| reads on | queries | qps | p50 ms | p99 ms | qps ratio | p99 ratio |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	var base loadgen.Result
	for i, s := range setups {
		r, err := runSetup(ctx, c, s, rows, duration, clients)
		if err != nil {
			return "", fmt.Errorf("%s: %w", s.name, err)
		}
		if i == 0 {
			base = r
		}
		logf("%-36s %8d queries, %.0f qps, p50 %.3f ms, p99 %.3f ms", s.name, r.N, r.QPS(), ms(r.Pct(0.50)), ms(r.Pct(0.99)))
		fmt.Fprintf(&b, "| %s | %d | %.0f | %.3f | %.3f | %.2f | %.2f |\n", s.name, r.N, r.QPS(), ms(r.Pct(0.50)), ms(r.Pct(0.99)),
			r.QPS()/base.QPS(), float64(r.Pct(0.99))/float64(max(base.Pct(0.99), 1)))
	}
	b.WriteString("\n")
	return b.String(), nil
}

func numCPU() int { return runtime.NumCPU() }

// load copies users 1..rows onto the primaries (each row on its shard) and
// waits until every replica has replayed them.
func load(ctx context.Context, c *sandbox.Cluster, rows int) error {
	cfg, err := topology.ParseConfig("bench.yaml", c.ConfigYAML("127.0.0.1:0"))
	if err != nil {
		return err
	}
	topo, err := topology.New(cfg)
	if err != nil {
		return err
	}
	perShard := make([][][]any, shards)
	for id := int64(1); id <= int64(rows); id++ {
		at, err := topo.Place(topology.KeyBigint, strconv.FormatInt(id, 10))
		if err != nil {
			return err
		}
		s := at.Shard
		perShard[s] = append(perShard[s], []any{id, "user " + strconv.FormatInt(id, 10), "de"})
	}
	for i, sh := range c.Shards {
		conn, err := pgx.Connect(ctx, sh.Primary.DSN(c.Database))
		if err != nil {
			return err
		}
		_, err = conn.CopyFrom(ctx, pgx.Identifier{"users"}, []string{"id", "name", "country"}, pgx.CopyFromRows(perShard[i]))
		if err == nil {
			_, err = conn.Exec(ctx, "VACUUM ANALYZE users")
		}
		var lsn string
		if err == nil {
			err = conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn)
		}
		conn.Close(context.Background())
		if err != nil {
			return fmt.Errorf("shard %s: %w", sh.Name, err)
		}
		logf("shard %s: %d rows", sh.Name, len(perShard[i]))
		for _, r := range sh.Replicas {
			if err := loadgen.WaitReplay(ctx, r.DSN(c.Database), lsn); err != nil {
				return fmt.Errorf("replica %s: %w", r.Name, err)
			}
		}
	}
	return nil
}

// runSetup starts a proxy configured by s, checks where reads go and
// measures the workload.
func runSetup(ctx context.Context, c *sandbox.Cluster, s setup, rows int, duration time.Duration, clients int) (loadgen.Result, error) {
	cfg, err := topology.ParseConfig("bench.yaml", c.ConfigYAML("127.0.0.1:0"))
	if err != nil {
		return loadgen.Result{}, err
	}
	cfg.Consistency = s.consistency
	cfg.HealthCheckInterval = topology.Duration(100 * time.Millisecond)
	for i := range cfg.Shards {
		cfg.Shards[i].Replicas = cfg.Shards[i].Replicas[:min(s.replicas, len(cfg.Shards[i].Replicas))]
	}
	dsn, stop, err := loadgen.ServeProxy(ctx, cfg, c.Database)
	if err != nil {
		return loadgen.Result{}, err
	}
	defer stop()
	if err := checkPlacement(ctx, dsn, rows, s.consistency != "primary"); err != nil {
		return loadgen.Result{}, err
	}
	return measure(ctx, dsn, rows, duration, clients)
}

// checkPlacement waits until keyed reads land on replicas (wantReplica) or
// checks they stay on primaries.
func checkPlacement(ctx context.Context, dsn string, rows int, wantReplica bool) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		var rec bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery() FROM users WHERE id = $1", 1+i%rows).Scan(&rec); err != nil {
			return err
		}
		switch {
		case wantReplica && rec && i >= 20:
			return nil // the monitor marked the replicas healthy: reads go there
		case !wantReplica && rec:
			return fmt.Errorf("a read went to a replica")
		case !wantReplica && i >= 100:
			return nil
		case wantReplica && !rec:
			i = 0
			if time.Now().After(deadline) {
				return fmt.Errorf("reads did not reach the replicas within 10s")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// measure runs the point select with random ids on clients connections.
func measure(ctx context.Context, dsn string, rows int, duration time.Duration, clients int) (loadgen.Result, error) {
	return loadgen.Run(ctx, dsn, clients, 20, duration, func(ctx context.Context, conn *pgx.Conn, r *rand.Rand) error {
		return get(ctx, conn, 1+r.Int64N(int64(rows)))
	})
}

func get(ctx context.Context, conn *pgx.Conn, id int64) error {
	var got int64
	var name string
	if err := conn.QueryRow(ctx, query, id).Scan(&got, &name); err != nil {
		return fmt.Errorf("id %d: %w", id, err)
	}
	if got != id {
		return fmt.Errorf("asked for id %d, got %d", id, got)
	}
	return nil
}
