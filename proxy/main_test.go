package proxy_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

// The package's tests share one sandbox (2 shards, 1 replica each) and one
// proxy; each test works in its own key range or its own tables.
var (
	cluster  *sandbox.Cluster
	proxyDSN string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if fuzzing() {
		// Fuzz targets need no PostgreSQL, and each fuzz worker process
		// would start its own sandbox.
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

// fuzzing reports whether this process runs (or serves) `go test -fuzz`.
func fuzzing() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, remove, err := sandbox.StartTemp(ctx, "shardgate-proxy-test-", sandbox.Options{Shards: 2, Replicas: 1, Schema: sandbox.Schema, Fast: true})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start sandbox:", err)
		return 1
	}
	defer remove()
	cluster = c
	addr, stop, err := startProxy(func(*topology.Config) {})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start proxy:", err)
		return 1
	}
	defer stop()
	proxyDSN = "postgres://postgres@" + addr + "/app?sslmode=disable"
	return m.Run()
}

// startProxy runs a proxy over the sandbox with the config adjusted by edit,
// on a free port, and returns its address and a stop function.
func startProxy(edit func(*topology.Config)) (string, func(), error) {
	_, addr, stop, err := startServer(edit)
	return addr, stop, err
}

// startServer is startProxy that also returns the server.
func startServer(edit func(*topology.Config)) (*proxy.Server, string, func(), error) {
	return startServerOver(cluster, edit)
}

// ownCluster starts a sandbox of shards shards and replicas replicas
// each for one test, stopped when it ends: for tests that stop, freeze or
// promote servers, which the shared cluster must not see.
func ownCluster(t *testing.T, shards, replicas int) *sandbox.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, err := sandbox.Start(ctx, sandbox.Options{Dir: t.TempDir(), Shards: shards, Replicas: replicas, Fast: true, Schema: sandbox.Schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	return c
}

// serveOver runs a proxy over a test's own sandbox c, with the config
// adjusted by edit, until the test ends; it returns the listen address.
func serveOver(t *testing.T, c *sandbox.Cluster, edit func(*topology.Config)) string {
	t.Helper()
	_, addr, stop, err := startServerOver(c, edit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return addr
}

// startServerOver is startServer over the sandbox c.
func startServerOver(c *sandbox.Cluster, edit func(*topology.Config)) (*proxy.Server, string, func(), error) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("SHARDGATE_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return startLogged(c, edit, log)
}

// startLogged is startServerOver logging to log.
func startLogged(c *sandbox.Cluster, edit func(*topology.Config), log *slog.Logger) (*proxy.Server, string, func(), error) {
	cfg, err := topology.ParseConfig("sandbox.yaml", c.ConfigYAML("127.0.0.1:0"))
	if err != nil {
		return nil, "", nil, err
	}
	edit(cfg)
	srv, err := proxy.New(cfg, log)
	if err != nil {
		return nil, "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		srv.Serve(ctx, ln)
		close(done)
	}()
	return srv, ln.Addr().String(), func() { cancel(); <-done }, nil
}

func connect(t testing.TB, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(proxyDSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatalf("connect through proxy: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// connectShard opens a direct connection to a shard's primary, bypassing
// the proxy, to check where rows really are.
func connectShard(t testing.TB, shard int) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), cluster.Shards[shard].Primary.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// sqlState returns the SQLSTATE of a Postgres error, or "" for others.
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
