package proxy_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/topology"
)

func proxyWith(t *testing.T, edit func(*topology.Config)) string {
	t.Helper()
	addr, stop, err := startProxy(edit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return "postgres://postgres@" + addr + "/app?sslmode=disable"
}

// TestManyClientsSmallPool: 50 clients over 5 server connections per shard,
// with a per-connection statement cache smaller than the statements in
// use, in pgx's cached-statement mode, its unnamed-statement mode (as JDBC
// sends them) and psycopg 3 with prepare_threshold=0.
func TestManyClientsSmallPool(t *testing.T) {
	dsn := proxyWith(t, func(c *topology.Config) {
		c.Pool.Size = 5
		c.Pool.PreparedStatements = 4
	})
	keys := keysOnShards(t, 8_000_000, 200)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			var wg sync.WaitGroup
			errs := make(chan error, 50)
			for n := 0; n < 50; n++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- manyStatements(t.Context(), dsn, mode, keys, n)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	t.Run("psycopg3", func(t *testing.T) {
		script, _ := filepath.Abs("testdata/psycopg_many.py")
		out, err := exec.CommandContext(t.Context(), "/usr/bin/python3", script, dsn, "50", "20", "8100000").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "ok ") {
			t.Fatalf("psycopg 3 clients: %v\n%s", err, out)
		}
	})
}

// manyStatements runs more distinct statements than the server-side cache
// holds, so statements are evicted and prepared again under load.
func manyStatements(ctx context.Context, dsn string, mode pgx.QueryExecMode, keys []int64, n int) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return err
	}
	cfg.DefaultQueryExecMode = mode
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for i := 0; i < 30; i++ {
		key := keys[(n*30+i)%len(keys)]
		if _, err := conn.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = excluded.name", key, "k"); err != nil {
			return fmt.Errorf("client %d insert: %w", n, err)
		}
		for s := 0; s < 6; s++ {
			var got int64
			sql := fmt.Sprintf("SELECT id + %d FROM users WHERE id = $1", s)
			if err := conn.QueryRow(ctx, sql, key).Scan(&got); err != nil || got != key+int64(s) {
				return fmt.Errorf("client %d statement %d: %d, %w", n, s, got, err)
			}
		}
	}
	return nil
}

func backendPID(t *testing.T, conn *pgx.Conn) (pid int32, app string) {
	t.Helper()
	if err := conn.QueryRow(t.Context(), "SELECT pg_backend_pid(), current_setting('application_name')").Scan(&pid, &app); err != nil {
		t.Fatal(err)
	}
	return pid, app
}

// TestSessionMode: a session keeps its server connections, and the next
// client gets them back reset (DISCARD ALL), even of state the proxy did
// not see being set.
func TestSessionMode(t *testing.T) {
	dsn := proxyWith(t, func(c *topology.Config) {
		c.Pool.Mode = "session"
		c.Pool.Size = 1
	})
	first := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	pids := map[int32]bool{}
	for i := 0; i < 6; i++ {
		pid, _ := backendPID(t, first)
		pids[pid] = true
	}
	if len(pids) != len(cluster.Shards) {
		t.Fatalf("session used %d server connections over %d shards, want one per shard", len(pids), len(cluster.Shards))
	}
	for i := 0; i < len(cluster.Shards); i++ {
		if _, err := first.Exec(t.Context(), "SELECT set_config('application_name', 'leaked', false)"); err != nil {
			t.Fatal(err)
		}
	}
	first.Close(t.Context())
	second := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	for i := 0; i < 4; i++ {
		pid, app := backendPID(t, second)
		if !pids[pid] {
			t.Fatalf("second client got a new server connection %d; pool size is 1", pid)
		}
		if app == "leaked" {
			t.Fatal("session state leaked to the next client: no DISCARD ALL")
		}
	}
}

func TestStatementMode(t *testing.T) {
	dsn := proxyWith(t, func(c *topology.Config) { c.Pool.Mode = "statement" })
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		conn := dial(t, dsn, mode, nil)
		if _, err := conn.Exec(t.Context(), "BEGIN"); sqlState(err) != "0A000" {
			t.Fatalf("%s: BEGIN in statement mode: %v, want 0A000", mode, err)
		}
		if _, err := conn.Exec(t.Context(), "INSERT INTO users (id, name) VALUES ($1, 'stmt') ON CONFLICT DO NOTHING", 9_000_001); err != nil {
			t.Fatalf("%s: autocommit statement: %v", mode, err)
		}
	}
}

func TestIdleTransactionTimeout(t *testing.T) {
	dsn := proxyWith(t, func(c *topology.Config) {
		c.Pool.IdleTransactionTimeout = topology.Duration(200 * time.Millisecond)
		c.Pool.Size = 1
	})
	ctx := t.Context()
	conn := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT * FROM users WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if _, err := tx.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("transaction survived idle_transaction_timeout")
	}
	// The server connection went back to the pool (size 1) for others.
	other := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	if _, err := other.Exec(ctx, "SELECT * FROM users WHERE id = 1"); err != nil {
		t.Fatalf("pool not freed: %v", err)
	}
	// Idle outside a transaction is fine without client_idle_timeout.
	time.Sleep(300 * time.Millisecond)
	if _, err := other.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
}

func TestClientIdleTimeout(t *testing.T) {
	dsn := proxyWith(t, func(c *topology.Config) { c.Pool.ClientIdleTimeout = topology.Duration(200 * time.Millisecond) })
	conn := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	if _, err := conn.Exec(t.Context(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if _, err := conn.Exec(t.Context(), "SELECT 1"); err == nil {
		t.Fatal("client survived client_idle_timeout")
	}
}

func TestMaxClientConn(t *testing.T) {
	dsn := proxyWith(t, func(c *topology.Config) { c.Pool.MaxClientConn = 2 })
	dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	_, err := pgx.Connect(t.Context(), dsn)
	if sqlState(err) != "53300" {
		t.Fatalf("third client: %v, want 53300", err)
	}
}

// TestServerConnectTimeout: an unreachable shard fails a client's query
// with a connection error in about server_connect_timeout, and the
// client's connection stays usable.
func TestServerConnectTimeout(t *testing.T) {
	// A listener that accepts and never answers: connecting hangs.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	dsn := proxyWith(t, func(c *topology.Config) {
		c.Shards[1].Primary = "postgres://postgres@" + ln.Addr().String() + "/app"
		c.Pool.ServerConnectTimeout = topology.Duration(time.Second) // the real s0 must still connect under -race load
		c.Consistency = "primary"                                    // the reads below must reach the primaries, not s1's healthy replica
	})
	conn := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	onShard := map[int]int64{}
	for _, k := range keysOnShards(t, 9_100_000, 20) {
		onShard[shardOf(t, k)] = k
	}
	began := time.Now()
	_, err = conn.Exec(t.Context(), fmt.Sprintf("SELECT * FROM users WHERE id = %d", onShard[1]))
	if sqlState(err) != "08006" || time.Since(began) > 3*time.Second {
		t.Fatalf("got %v after %s, want 08006 after about 1s", err, time.Since(began))
	}
	if _, err := conn.Exec(t.Context(), fmt.Sprintf("SELECT * FROM users WHERE id = %d", onShard[0])); err != nil {
		t.Fatalf("a query for the healthy shard failed: %v", err)
	}
}

// TestEvictionSkippedByError: when an error earlier in a batch makes the
// server skip the proxy's Close of an evicted statement, the proxy must
// still know the server has it.
func TestEvictionSkippedByError(t *testing.T) {
	dsn := proxyWith(t, func(c *topology.Config) {
		c.Pool.Size = 1
		c.Pool.PreparedStatements = 1
	})
	ctx := t.Context()
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Prepare(ctx, "a", "SELECT 1 FROM users WHERE id = 1", nil); err != nil {
		t.Fatal(err)
	}
	if res := conn.ExecPrepared(ctx, "a", nil, nil, nil).Read(); res.Err != nil {
		t.Fatal(res.Err)
	}
	p := conn.StartPipeline(ctx)
	p.SendQueryParams("SELECT 1/0 FROM users WHERE id = 1", nil, nil, nil, nil)
	p.SendPrepare("b", "SELECT 2 FROM users WHERE id = 1", nil)
	p.SendPipelineSync()
	p.Flush()
	for {
		r, err := p.GetResults()
		if _, ok := r.(*pgconn.PipelineSync); ok || (r == nil && err == nil) {
			break
		}
		if rr, ok := r.(*pgconn.ResultReader); ok {
			rr.Close()
		}
	}
	p.Close()
	for i := 0; i < 3; i++ {
		if res := conn.ExecPrepared(ctx, "a", nil, nil, nil).Read(); res.Err != nil {
			t.Fatalf("statement a after a batch whose eviction was skipped: %v", res.Err)
		}
	}
}
