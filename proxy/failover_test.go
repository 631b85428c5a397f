package proxy_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/topology"
)

// TestPrimaryFailover stops a shard's primary (its own sandbox: one shard,
// one replica): writes fail fast with 08006 naming the shard, keyed reads
// go on from the replica; once the replica is promoted, writes resume
// through the same proxy, on it, with every earlier row there.
func TestPrimaryFailover(t *testing.T) {
	ctx := t.Context()
	hc := ownCluster(t, 1, 1)

	cfg, err := topology.ParseConfig("failover.yaml", hc.ConfigYAML("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.HealthCheckInterval = topology.Duration(100 * time.Millisecond)
	cfg.BanTime = topology.Duration(time.Second)
	cfg.AdminUsers = []string{"admin"}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("SHARDGATE_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := proxy.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srvCtx, stopSrv := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		srv.Serve(srvCtx, ln)
		close(served)
	}()
	t.Cleanup(func() { stopSrv(); <-served })
	addr := ln.Addr().String()
	dsn := "postgres://postgres@" + addr + "/app?sslmode=disable"
	sh := hc.Shards[0]
	replica := sh.Replicas[0]

	writer := dialPlain(t, dsn)
	const rows = 100
	for id := 1; id <= rows; id++ {
		if _, err := writer.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'u')", id); err != nil {
			t.Fatal(err)
		}
	}
	// The replica must have replayed them before the primary goes.
	direct := dialPlain(t, replica.DSN("app"))
	for deadline := time.Now().Add(10 * time.Second); ; {
		var n int
		if err := direct.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == rows {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica has %d of %d rows after 10s", n, rows)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := hc.StopServer(ctx, sh.Primary); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// A write fails with 08006 naming the shard within 1s of the stop
	// (the first may instead meet a pooled connection the stop killed).
	var failFast, lastTry time.Duration
	for id := rows + 1; ; id++ {
		began := time.Now()
		_, err := writer.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'u')", id)
		lastTry = time.Since(began)
		if err == nil {
			t.Fatal("a write succeeded with the primary stopped")
		}
		if sqlState(err) != "08006" {
			t.Fatalf("write with the primary stopped: %v, want SQLSTATE 08006", err)
		}
		if strings.Contains(err.Error(), "shard "+sh.Name+" has no reachable primary") {
			failFast = time.Since(stopped)
			break
		}
		if time.Since(stopped) > time.Second {
			t.Fatalf("no fail-fast refusal within 1s of the stop; last: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("primary stopped: writes refused %v after the stop (that refusal took %v)", failFast.Round(time.Millisecond), lastTry.Round(time.Microsecond))
	if failFast > time.Second || lastTry > 200*time.Millisecond {
		t.Errorf("writes refused %v after the stop, the refusal took %v; want within 1s, immediately", failFast, lastTry)
	}

	reader := dialPlain(t, dsn)
	var port, n int
	if err := reader.QueryRow(ctx, "SELECT inet_server_port(), count(*) FROM users WHERE id = $1", 42).Scan(&port, &n); err != nil {
		t.Fatalf("keyed read with the primary stopped: %v", err)
	}
	if port != replica.Port || n != 1 {
		t.Errorf("keyed read: port %d, %d rows; want the replica's port %d, 1 row", port, n, replica.Port)
	}

	if err := hc.PromoteServer(ctx, replica); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	for id := 1000; ; id++ {
		_, err := writer.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'after')", id)
		if err == nil {
			break
		}
		if time.Since(promoted) > 5*time.Second {
			t.Fatalf("writes did not resume within 5s of the promotion: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("replica promoted: writes resumed %v after pg_ctl promote returned", time.Since(promoted).Round(time.Millisecond))

	if err := writer.QueryRow(ctx, "SELECT inet_server_port(), count(*) FROM users WHERE id BETWEEN 1 AND $1", rows).Scan(&port, &n); err != nil {
		t.Fatal(err)
	}
	if port != replica.Port || n != rows {
		t.Errorf("after promotion: port %d holds %d of the %d earlier rows; want port %d", port, n, rows, replica.Port)
	}

	admin, err := pgconn.Connect(ctx, "postgres://admin@"+addr+"/shardgate?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	p := strconv.Itoa(replica.Port)
	found := false
	for _, row := range adminRows(t, admin, "SHOW SERVERS") {
		if row["port"] == p {
			found = true
			if row["role"] != "primary" {
				t.Errorf("SHOW SERVERS: promoted server has role %q, want primary", row["role"])
			}
		}
	}
	if !found {
		t.Errorf("SHOW SERVERS lists no connection to the promoted server: %v", adminRows(t, admin, "SHOW SERVERS"))
	}
	found = false
	for _, row := range adminRows(t, admin, "SHOW SHARDS") {
		if strings.Contains(row["server"], ":"+p+"/") {
			found = true
			if row["role"] != "primary" {
				t.Errorf("SHOW SHARDS: promoted server has role %q, want primary", row["role"])
			}
		} else if row["role"] != "demoted" {
			t.Errorf("SHOW SHARDS: stopped primary %s has role %q, want demoted", row["server"], row["role"])
		}
	}
	if !found {
		t.Errorf("SHOW SHARDS lists no promoted server: %v", adminRows(t, admin, "SHOW SHARDS"))
	}

	// RELOAD with a config that names the promoted server the primary.
	next := *cfg
	next.Shards = []topology.ShardConfig{cfg.Shards[0]}
	next.Shards[0].Primary, next.Shards[0].Replicas = cfg.Shards[0].Replicas[0], []string{cfg.Shards[0].Primary}
	if err := srv.Apply(&next); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'reloaded')", 2000); err != nil {
		t.Fatalf("write after RELOAD naming the promoted server the primary: %v", err)
	}
	if err := writer.QueryRow(ctx, "SELECT inet_server_port(), count(*) FROM users WHERE id = $1", 2000).Scan(&port, &n); err != nil || port != replica.Port || n != 1 {
		t.Errorf("after RELOAD: port %d, %d rows, err %v; want port %d, 1 row", port, n, err, replica.Port)
	}
}
