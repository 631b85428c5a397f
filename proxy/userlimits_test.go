package proxy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/topology"
)

// limitsProxy runs a proxy with admin user "admin" and the config edit
// made, and returns its address and a function that applies the config
// with a further edit, as RELOAD does.
func limitsProxy(t *testing.T, edit func(*topology.Config)) (string, func(func(*topology.Config))) {
	t.Helper()
	full := func(c *topology.Config) {
		c.AdminUsers = []string{"admin"}
		edit(c)
	}
	srv, addr, stop, err := startServer(full)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	reload := func(more func(*topology.Config)) {
		t.Helper()
		cfg, err := topology.ParseConfig("sandbox.yaml", cluster.ConfigYAML("127.0.0.1:0"))
		if err != nil {
			t.Fatal(err)
		}
		full(cfg)
		more(cfg)
		if err := srv.Apply(cfg); err != nil {
			t.Fatal(err)
		}
	}
	return addr, reload
}

func userDSN(addr, user string) string {
	return "postgres://" + user + "@" + addr + "/app?sslmode=disable"
}

// touch writes key's row, which runs on its shard's primary, and returns
// the server process that ran it.
func touch(ctx context.Context, conn interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, key int64) (int32, error) {
	var pid int32
	err := conn.QueryRow(ctx, "INSERT INTO users (id, name) VALUES ($1, 'limits') ON CONFLICT (id) DO UPDATE SET name = excluded.name RETURNING pg_backend_pid()", key).Scan(&pid)
	return pid, err
}

// poolColumn is a SHOW POOLS column of shard's primary pool.
func poolColumn(t *testing.T, admin *pgconn.PgConn, shard, column string) string {
	t.Helper()
	for _, r := range adminRows(t, admin, "SHOW POOLS") {
		if r["shard"] == shard && r["role"] == "primary" {
			return r[column]
		}
	}
	t.Fatalf("SHOW POOLS has no primary of shard %s", shard)
	return ""
}

// TestShardPoolSettings: a shard's pool_size caps its primary's pool while
// the other shard's does not, min_pool_size opens connections on its shard
// only, and RELOAD raises the cap for a client waiting now.
func TestShardPoolSettings(t *testing.T) {
	one, two := 1, 2
	addr, reload := limitsProxy(t, func(c *topology.Config) {
		c.Pool.QueryWaitTimeout = topology.Duration(400 * time.Millisecond)
		c.Shards[0].PoolSize = &one
		c.Shards[1].MinPoolSize = &two
	})
	ctx := t.Context()
	admin := adminConn(t, addr)
	s0, s1 := cluster.Shards[0].Name, cluster.Shards[1].Name
	deadline := time.Now().Add(5 * time.Second)
	for poolColumn(t, admin, s1, "sv_open") != "2" {
		if time.Now().After(deadline) {
			t.Fatalf("min_pool_size 2: shard %s has %s server connections open", s1, poolColumn(t, admin, s1, "sv_open"))
		}
		time.Sleep(100 * time.Millisecond)
	}

	holder := dial(t, userDSN(addr, "postgres"), pgx.QueryExecModeCacheStatement, nil)
	other := dial(t, userDSN(addr, "postgres"), pgx.QueryExecModeCacheStatement, nil)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := touch(ctx, tx, keyOn(t, 0, 57_000_000)); err != nil {
		t.Fatal(err)
	}
	if _, err := touch(ctx, other, keyOn(t, 0, 57_000_100)); sqlState(err) != "53300" {
		t.Fatalf("second client of shard %s with pool_size 1: %v, want 53300", s0, err)
	}
	if _, err := touch(ctx, other, keyOn(t, 1, 57_000_000)); err != nil {
		t.Fatalf("shard %s, not capped: %v", s1, err)
	}
	if got := poolColumn(t, admin, s0, "sv_open"); got != "1" {
		t.Fatalf("shard %s with pool_size 1 has %s connections open", s0, got)
	}

	reload(func(c *topology.Config) { c.Shards[0].PoolSize = &two })
	if _, err := touch(ctx, other, keyOn(t, 0, 57_000_100)); err != nil {
		t.Fatalf("after RELOAD raised shard %s's pool_size to 2: %v", s0, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestUserPoolSize: with pool_size 1, a user's second client in a
// transaction waits for the first one's commit, another user's client does
// not wait, and a wait past query_wait_timeout ends in 53300.
func TestUserPoolSize(t *testing.T) {
	addr, _ := limitsProxy(t, func(c *topology.Config) {
		c.Pool.QueryWaitTimeout = topology.Duration(time.Second)
		c.Users = map[string]topology.UserPoolConfig{"alice": {PoolSize: 1}}
	})
	ctx := t.Context()
	a1 := dial(t, userDSN(addr, "alice"), pgx.QueryExecModeCacheStatement, nil)
	a2 := dial(t, userDSN(addr, "alice"), pgx.QueryExecModeCacheStatement, nil)
	bob := dial(t, userDSN(addr, "bob"), pgx.QueryExecModeCacheStatement, nil)
	k1, k2, k3 := keyOn(t, 0, 57_100_000), keyOn(t, 0, 57_100_100), keyOn(t, 0, 57_100_200)

	tx1, err := a1.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := touch(ctx, tx1, k1); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		tx2, err := a2.Begin(ctx)
		if err == nil {
			_, err = touch(ctx, tx2, k2)
		}
		if err == nil {
			err = tx2.Commit(ctx)
		}
		done <- err
	}()
	if _, err := touch(ctx, bob, k3); err != nil {
		t.Fatalf("another user while alice's pool_size is in use: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("alice's second transaction ran beside her first (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("alice's second transaction after her first committed: %v", err)
	}

	tx1, err = a1.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx1.Rollback(context.Background())
	if _, err := touch(ctx, tx1, k1); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if _, err := touch(ctx, a2, k2); sqlState(err) != "53300" {
		t.Fatalf("alice over her pool_size past query_wait_timeout: %v, want 53300", err)
	}
	if waited := time.Since(began); waited < 900*time.Millisecond || waited > 5*time.Second {
		t.Fatalf("waited %s, want about the 1s query_wait_timeout", waited)
	}
}

// TestMaxUserClientConnections: logins past a user's max_user_client_connections are
// refused with PgBouncer's words and 53300, other users still log in, a
// client leaving frees its place, and RELOAD raises the limit.
func TestMaxUserClientConnections(t *testing.T) {
	addr, reload := limitsProxy(t, func(c *topology.Config) {
		c.Users = map[string]topology.UserPoolConfig{"carol": {MaxUserClientConnections: 2}}
	})
	ctx := t.Context()
	connect := func(user string) (*pgx.Conn, error) {
		conn, err := pgx.Connect(ctx, userDSN(addr, user))
		if err == nil {
			t.Cleanup(func() { conn.Close(context.Background()) })
		}
		return conn, err
	}
	first, err := connect("carol")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := connect("carol"); err != nil {
		t.Fatal(err)
	}
	_, err = connect("carol")
	if sqlState(err) != "53300" || !strings.Contains(err.Error(), "no more connections allowed (max_user_client_connections)") {
		t.Fatalf("third login of carol: %v, want 53300 no more connections allowed (max_user_client_connections)", err)
	}
	if _, err := connect("dan"); err != nil {
		t.Fatalf("another user: %v", err)
	}
	first.Close(ctx)
	var again *pgx.Conn
	deadline := time.Now().Add(5 * time.Second)
	for again, err = connect("carol"); err != nil; again, err = connect("carol") {
		if time.Now().After(deadline) {
			t.Fatalf("carol after one of her clients left: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := again.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	reload(func(c *topology.Config) { c.Users["carol"] = topology.UserPoolConfig{MaxUserClientConnections: 3} })
	if _, err := connect("carol"); err != nil {
		t.Fatalf("third login of carol after RELOAD raised her limit to 3: %v", err)
	}
	if _, err := connect("carol"); sqlState(err) != "53300" {
		t.Fatalf("fourth login of carol: %v, want 53300", err)
	}
}

// TestUserPoolMode: a user with pool_mode session keeps one server
// connection across transactions, held while idle, where the transaction
// mode of the others gives it back after each.
func TestUserPoolMode(t *testing.T) {
	addr, _ := limitsProxy(t, func(c *topology.Config) {
		c.Users = map[string]topology.UserPoolConfig{"dave": {PoolMode: "session"}}
	})
	ctx := t.Context()
	admin := adminConn(t, addr)
	s0 := cluster.Shards[0].Name
	key := keyOn(t, 0, 57_200_000)
	erin := dial(t, userDSN(addr, "erin"), pgx.QueryExecModeCacheStatement, nil)
	if _, err := touch(ctx, erin, key); err != nil {
		t.Fatal(err)
	}
	if got := poolColumn(t, admin, s0, "sv_active"); got != "0" {
		t.Fatalf("transaction mode: %s server connections held by idle clients, want 0", got)
	}
	dave := dial(t, userDSN(addr, "dave"), pgx.QueryExecModeCacheStatement, nil)
	first, err := touch(ctx, dave, key)
	if err != nil {
		t.Fatal(err)
	}
	if got := poolColumn(t, admin, s0, "sv_active"); got != "1" {
		t.Fatalf("dave's session mode: %s server connections held by idle clients, want 1", got)
	}
	other := dial(t, userDSN(addr, "erin"), pgx.QueryExecModeCacheStatement, nil)
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if pid, err := touch(ctx, tx, keyOn(t, 0, 57_200_100)); err != nil || pid == first {
		t.Fatalf("erin's transaction: pid %d (dave's is %d), err %v; want another connection", pid, first, err)
	}
	for range 3 {
		if pid, err := touch(ctx, dave, key); err != nil || pid != first {
			t.Fatalf("dave's next transaction: pid %d, err %v; want his session's %d", pid, err, first)
		}
	}
}
