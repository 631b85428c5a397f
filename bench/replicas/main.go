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
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate"
	"github.com/shardgate/shardgate/proxy"
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	md, err := run(ctx, *rows, *duration, *clients)
	if err != nil {
		fatalf("%v", err)
	}
	fmt.Print(md)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
			fatalf("%v", err)
		}
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "replicas: "+format+"\n", args...)
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "replicas: "+format+"\n", args...)
}

func run(ctx context.Context, rows int, duration time.Duration, clients int) (string, error) {
	dir, err := os.MkdirTemp("", "shardgate-replicas-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil { // PostgreSQL runs as postgres when we are root
		return "", err
	}
	logf("starting a %d-shard sandbox with %d replicas per shard in %s", shards, replicas, dir)
	c, err := sandbox.Start(ctx, sandbox.Options{Dir: dir, Shards: shards, Replicas: replicas, Fast: true, Schema: shardgate.SandboxSchema})
	if err != nil {
		return "", fmt.Errorf("sandbox: %w", err)
	}
	defer c.Stop()
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
	var base result
	for i, s := range setups {
		r, err := runSetup(ctx, c, s, rows, duration, clients)
		if err != nil {
			return "", fmt.Errorf("%s: %w", s.name, err)
		}
		if i == 0 {
			base = r
		}
		logf("%-36s %8d queries, %.0f qps, p50 %.3f ms, p99 %.3f ms", s.name, r.n, r.qps(), ms(r.pct(0.50)), ms(r.pct(0.99)))
		fmt.Fprintf(&b, "| %s | %d | %.0f | %.3f | %.3f | %.2f | %.2f |\n", s.name, r.n, r.qps(), ms(r.pct(0.50)), ms(r.pct(0.99)),
			r.qps()/base.qps(), float64(r.pct(0.99))/float64(max(base.pct(0.99), 1)))
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
	var key []byte
	for id := int64(1); id <= int64(rows); id++ {
		key, err = topology.AppendCanonicalText(key[:0], topology.KeyBigint, strconv.FormatInt(id, 10))
		if err != nil {
			return err
		}
		s := topo.Lookup(topology.Hash(key)).Shard
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
			if err := waitReplay(ctx, r.DSN(c.Database), lsn); err != nil {
				return fmt.Errorf("replica %s: %w", r.Name, err)
			}
		}
	}
	return nil
}

func waitReplay(ctx context.Context, dsn, lsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(time.Minute)
	for {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn).Scan(&ok); err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("did not replay %s within a minute", lsn)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runSetup starts a proxy configured by s, checks where reads go and
// measures the workload.
func runSetup(ctx context.Context, c *sandbox.Cluster, s setup, rows int, duration time.Duration, clients int) (result, error) {
	cfg, err := topology.ParseConfig("bench.yaml", c.ConfigYAML("127.0.0.1:0"))
	if err != nil {
		return result{}, err
	}
	cfg.Consistency = s.consistency
	cfg.HealthCheckInterval = topology.Duration(100 * time.Millisecond)
	for i := range cfg.Shards {
		cfg.Shards[i].Replicas = cfg.Shards[i].Replicas[:min(s.replicas, len(cfg.Shards[i].Replicas))]
	}
	srv, err := proxy.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return result{}, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan struct{})
	go func() { srv.Serve(sctx, ln); close(served) }()
	defer func() { cancel(); <-served }()
	dsn := "postgres://postgres@" + ln.Addr().String() + "/" + c.Database + "?sslmode=disable"
	if err := checkPlacement(ctx, dsn, rows, s.consistency != "primary"); err != nil {
		return result{}, err
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

type result struct {
	n       int
	elapsed time.Duration
	lat     []time.Duration // sorted
}

func (r result) qps() float64 { return float64(r.n) / r.elapsed.Seconds() }

// pct returns the p-th quantile by nearest rank.
func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(p*float64(len(r.lat))+0.999999) - 1
	return r.lat[max(0, min(i, len(r.lat)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// measure runs the point select with random ids on clients connections.
func measure(ctx context.Context, dsn string, rows int, duration time.Duration, clients int) (result, error) {
	conns := make([]*pgx.Conn, clients)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	pick := func(r *rand.Rand) int64 { return 1 + r.Int64N(int64(rows)) }
	for i := range conns {
		var err error
		if conns[i], err = pgx.Connect(ctx, dsn); err != nil {
			return result{}, err
		}
		r := rand.New(rand.NewPCG(uint64(i), 1))
		for range 20 { // warm up: prepare on the servers, fill caches
			if err := get(ctx, conns[i], pick(r)); err != nil {
				return result{}, err
			}
		}
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		all  []time.Duration
		errs []error
	)
	start := time.Now()
	deadline := start.Add(duration)
	for i, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 2))
			lat := make([]time.Duration, 0, 4096)
			var err error
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t := time.Now()
				if err = get(ctx, conn, pick(r)); err != nil {
					break
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			all = append(all, lat...)
			if err != nil {
				errs = append(errs, err)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(errs) > 0 {
		return result{}, errs[0]
	}
	if err := ctx.Err(); err != nil {
		return result{}, err
	}
	slices.Sort(all)
	return result{n: len(all), elapsed: elapsed, lat: all}, nil
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
