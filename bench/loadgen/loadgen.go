// Package loadgen is what the benchmark programs share: an in-process proxy,
// and a closed-loop workload over pgx connections with its latencies.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/topology"
)

// Result is what a run measured: every request's latency, sorted.
type Result struct {
	N       int
	Elapsed time.Duration
	Lat     []time.Duration
}

// QPS is requests per second over the run.
func (r Result) QPS() float64 { return float64(r.N) / r.Elapsed.Seconds() }

// Pct returns the p-th quantile by nearest rank.
func (r Result) Pct(p float64) time.Duration {
	if len(r.Lat) == 0 {
		return 0
	}
	i := int(p*float64(len(r.Lat))+0.999999) - 1
	return r.Lat[max(0, min(i, len(r.Lat)-1))]
}

// Op is one request on conn; r is the connection's own random source.
type Op func(ctx context.Context, conn *pgx.Conn, r *rand.Rand) error

// Run opens clients connections to dsn, warms each up with warmup
// requests (prepared statements, caches), then has every connection loop
// op for duration. The first error ends the run.
func Run(ctx context.Context, dsn string, clients, warmup int, duration time.Duration, op Op) (Result, error) {
	conns := make([]*pgx.Conn, clients)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	rands := make([]*rand.Rand, clients)
	for i := range conns {
		var err error
		if conns[i], err = pgx.Connect(ctx, dsn); err != nil {
			return Result{}, err
		}
		rands[i] = rand.New(rand.NewPCG(uint64(i), 1))
		for range warmup {
			if err := op(ctx, conns[i], rands[i]); err != nil {
				return Result{}, err
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
			lat := make([]time.Duration, 0, 4096)
			var err error
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t := time.Now()
				if err = op(ctx, conn, rands[i]); err != nil {
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
		return Result{}, errs[0]
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	slices.Sort(all)
	return Result{N: len(all), Elapsed: elapsed, Lat: all}, nil
}

// ServeProxy runs an in-process shardgate with cfg on a free loopback port
// until stop is called, and returns the DSN of database db through it.
func ServeProxy(ctx context.Context, cfg *topology.Config, db string) (dsn string, stop func(), err error) {
	srv, err := proxy.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan struct{})
	go func() { srv.Serve(sctx, ln); close(served) }()
	return "postgres://postgres@" + ln.Addr().String() + "/" + db + "?sslmode=disable", func() { cancel(); <-served }, nil
}

// FreeAddr returns a loopback address nothing listens on, for a proxy
// process the benchmark starts.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// WaitListening polls addr until it accepts, the process reports its exit
// on exited (nil: not watched), ctx ends or 20 s pass.
func WaitListening(ctx context.Context, addr string, exited <-chan error) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			return fmt.Errorf("exited before listening: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("not listening on " + addr + " after 20s")
}

// ShardOfUsers maps user ids 1 to users to their shard index under topo
// (index 0 unused), so a benchmark can tell which shard a request hits.
func ShardOfUsers(topo *topology.Topology, users int) ([]int, error) {
	shardOf := make([]int, users+1)
	for id := 1; id <= users; id++ {
		at, err := topo.Place(topology.KeyBigint, strconv.Itoa(id))
		if err != nil {
			return nil, fmt.Errorf("user %d: %w", id, err)
		}
		shardOf[id] = at.Shard
	}
	return shardOf, nil
}

// WaitReplay waits, up to a minute, until the server at dsn (a replica)
// has replayed the WAL position lsn, so a benchmark reads what it loaded.
func WaitReplay(ctx context.Context, dsn, lsn string) error {
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

// Report is the main of the benchmark programs make bench runs one after
// another: it runs run until SIGINT or SIGTERM, prints the markdown section
// it returns and, when out is set, also writes it there. A failure ends
// the process with status 1, the error prefixed by the program's name.
func Report(name, out string, run func(ctx context.Context) (string, error)) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	md, err := run(ctx)
	if err == nil {
		fmt.Print(md)
		if out != "" {
			err = os.WriteFile(out, []byte(md), 0o644)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		stop()
		os.Exit(1)
	}
}
