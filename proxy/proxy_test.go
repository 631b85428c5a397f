package proxy_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/topology"
)

// shardOf is the public hashing contract: where a bigint key must live.
func shardOf(t testing.TB, key int64) int {
	t.Helper()
	canon, err := topology.AppendCanonicalText(nil, topology.KeyBigint, strconv.FormatInt(key, 10))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := topology.ParseConfig("sandbox.yaml", cluster.ConfigYAML("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	topo, err := topology.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return topo.Lookup(xxhash.Sum64(canon)).Shard
}

// keysOnShards returns n keys from base up whose shards are spread: at
// least one key per shard, so a test exercises every shard.
func keysOnShards(t testing.TB, base int64, n int) []int64 {
	keys := make([]int64, n)
	seen := map[int]bool{}
	for i := range keys {
		keys[i] = base + int64(i)
		seen[shardOf(t, keys[i])] = true
	}
	if len(seen) != len(cluster.Shards) {
		t.Fatalf("keys %d..%d do not cover every shard", base, base+int64(n))
	}
	return keys
}

// TestRowsLandOnTheirShard writes 1,000 users and their posts through the
// proxy and then checks, on each shard directly, that every row is on
// exactly the shard the hashing contract names.
func TestRowsLandOnTheirShard(t *testing.T) {
	const base, n = 1_000_000, 1000
	ctx := t.Context()
	extended := connect(t, pgx.QueryExecModeCacheStatement)
	simple := connect(t, pgx.QueryExecModeSimpleProtocol)
	for i := int64(0); i < n; i++ {
		id := base + i
		if _, err := extended.Exec(ctx, "INSERT INTO users (id, name, email) VALUES ($1, $2, $3)", id, fmt.Sprintf("user %d", id), fmt.Sprintf("u%d@example.com", id)); err != nil {
			t.Fatalf("insert user %d: %v", id, err)
		}
		if _, err := simple.Exec(ctx, fmt.Sprintf("INSERT INTO posts (user_id, id, body) VALUES (%d, 1, 'hello'), (%d, 2, 'again')", id, id)); err != nil {
			t.Fatalf("insert posts of %d: %v", id, err)
		}
	}
	seen := map[int64]int{}
	for shard := range cluster.Shards {
		direct := connectShard(t, shard)
		rows, err := direct.Query(ctx, "SELECT u.id, (SELECT count(*) FROM posts p WHERE p.user_id = u.id) FROM users u WHERE u.id >= $1 AND u.id < $2", base, base+n)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id, posts int64
			if err := rows.Scan(&id, &posts); err != nil {
				t.Fatal(err)
			}
			if want := shardOf(t, id); want != shard {
				t.Errorf("user %d is on shard %d, the hashing contract says %d", id, shard, want)
			}
			if posts != 2 {
				t.Errorf("user %d has %d posts on its shard, want 2", id, posts)
			}
			seen[id]++
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		var stray int64
		if err := direct.QueryRow(ctx, "SELECT count(*) FROM posts p WHERE user_id >= $1 AND user_id < $2 AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = p.user_id)", base, base+n).Scan(&stray); err != nil {
			t.Fatal(err)
		}
		if stray != 0 {
			t.Errorf("shard %d holds %d posts whose user is elsewhere", shard, stray)
		}
	}
	if len(seen) != n {
		t.Fatalf("found %d distinct users across shards, want %d", len(seen), n)
	}
	for id, count := range seen {
		if count != 1 {
			t.Errorf("user %d found on %d shards", id, count)
		}
	}
}

// TestQueryModes runs the same CRUD cycle in every pgx execution mode: named
// prepared statements (cached across shards and server connections),
// unnamed ones, describe-then-exec, text and binary parameters, and the
// simple protocol.
func TestQueryModes(t *testing.T) {
	modes := []pgx.QueryExecMode{
		pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol,
	}
	for m, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			ctx := t.Context()
			conn := connect(t, mode)
			for _, id := range keysOnShards(t, int64(2_000_000+m*100), 20) {
				if _, err := conn.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, $2)", id, "before"); err != nil {
					t.Fatalf("insert %d: %v", id, err)
				}
				tag, err := conn.Exec(ctx, "UPDATE users SET name = $2 WHERE id = $1", id, "after")
				if err != nil || tag.RowsAffected() != 1 {
					t.Fatalf("update %d: %v, %d rows", id, err, tag.RowsAffected())
				}
				var name string
				// A text parameter for a bigint key must route like a binary one.
				if err := conn.QueryRow(ctx, "SELECT name FROM users WHERE id = $1::bigint", strconv.FormatInt(id, 10)).Scan(&name); err != nil || name != "after" {
					t.Fatalf("select %d: %q, %v", id, name, err)
				}
				if err := conn.QueryRow(ctx, "SELECT name FROM users WHERE id = "+strconv.FormatInt(id, 10)).Scan(&name); err != nil || name != "after" {
					t.Fatalf("select %d by literal: %q, %v", id, name, err)
				}
				tag, err = conn.Exec(ctx, "DELETE FROM users WHERE id = $1", id)
				if err != nil || tag.RowsAffected() != 1 {
					t.Fatalf("delete %d: %v, %d rows", id, err, tag.RowsAffected())
				}
			}
		})
	}
}

func TestTransactions(t *testing.T) {
	ctx := t.Context()
	conn := connect(t, pgx.QueryExecModeCacheStatement)
	keys := keysOnShards(t, 3_000_000, 20)
	var a, b int64 = keys[0], -1
	for _, k := range keys {
		if shardOf(t, k) != shardOf(t, a) {
			b = k
			break
		}
	}

	t.Run("commit", func(t *testing.T) {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, tx, "INSERT INTO users (id, name) VALUES ($1, 'committed')", a)
		mustExec(t, tx, "INSERT INTO posts (user_id, id, body) VALUES ($1, 1, 'in tx')", a)
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		assertCount(t, connectShard(t, shardOf(t, a)), "SELECT count(*) FROM posts WHERE user_id = $1", a, 1)
	})

	t.Run("rollback", func(t *testing.T) {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, tx, "INSERT INTO posts (user_id, id, body) VALUES ($1, 2, 'rolled back')", a)
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		assertCount(t, connectShard(t, shardOf(t, a)), "SELECT count(*) FROM posts WHERE user_id = $1", a, 1)
	})

	t.Run("second shard aborts the transaction", func(t *testing.T) {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, tx, "INSERT INTO posts (user_id, id, body) VALUES ($1, 3, 'never')", a)
		_, err = tx.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'other shard')", b)
		if sqlState(err) != "0A000" {
			t.Fatalf("second-shard write: got %v, want SQLSTATE 0A000", err)
		}
		_, err = tx.Exec(ctx, "SELECT 1")
		if sqlState(err) != "25P02" {
			t.Fatalf("statement after abort: got %v, want 25P02", err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		assertCount(t, connectShard(t, shardOf(t, a)), "SELECT count(*) FROM posts WHERE user_id = $1", a, 1)
		assertCount(t, connectShard(t, shardOf(t, b)), "SELECT count(*) FROM users WHERE id = $1", b, 0)
		var one int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("connection unusable after the aborted transaction: %v", err)
		}
	})

	t.Run("simple protocol script", func(t *testing.T) {
		simple := connect(t, pgx.QueryExecModeSimpleProtocol)
		script := fmt.Sprintf("BEGIN; UPDATE users SET name = 'script' WHERE id = %d; COMMIT;", a)
		if _, err := simple.Exec(ctx, script); err != nil {
			t.Fatal(err)
		}
		var name string
		if err := connectShard(t, shardOf(t, a)).QueryRow(ctx, "SELECT name FROM users WHERE id = $1", a).Scan(&name); err != nil || name != "script" {
			t.Fatalf("name = %q, %v", name, err)
		}
	})
}

func mustExec(t *testing.T, tx pgx.Tx, sql string, args ...any) {
	t.Helper()
	if _, err := tx.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func assertCount(t *testing.T, conn *pgx.Conn, sql string, arg any, want int64) {
	t.Helper()
	var got int64
	if err := conn.QueryRow(t.Context(), sql, arg).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("%s [%v] = %d, want %d", sql, arg, got, want)
	}
}

// TestDDLBroadcast creates and drops a table through the proxy in both
// protocols and checks every shard followed.
func TestDDLBroadcast(t *testing.T) {
	ctx := t.Context()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		conn := connect(t, mode)
		table := "ddl_" + strings.ReplaceAll(mode.String(), " ", "_")
		if _, err := conn.Exec(ctx, "CREATE TABLE "+table+" (id bigint primary key, note text)"); err != nil {
			t.Fatalf("%s: create: %v", mode, err)
		}
		if _, err := conn.Exec(ctx, "CREATE INDEX ON "+table+" (note)"); err != nil {
			t.Fatalf("%s: create index: %v", mode, err)
		}
		assertTableOnShards(t, table, true)
		// A failing DDL reports Postgres's own error.
		_, err := conn.Exec(ctx, "CREATE TABLE "+table+" (id int)")
		if sqlState(err) != "42P07" {
			t.Fatalf("%s: duplicate create: got %v, want 42P07", mode, err)
		}
		if _, err := conn.Exec(ctx, "DROP TABLE "+table); err != nil {
			t.Fatalf("%s: drop: %v", mode, err)
		}
		assertTableOnShards(t, table, false)
	}
}

func assertTableOnShards(t *testing.T, table string, want bool) {
	t.Helper()
	for shard := range cluster.Shards {
		var exists bool
		if err := connectShard(t, shard).QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists != want {
			t.Errorf("table %s on shard %d: exists=%v, want %v", table, shard, exists, want)
		}
	}
}

func TestReferenceTables(t *testing.T) {
	ctx := t.Context()
	conn := connect(t, pgx.QueryExecModeCacheStatement)
	if _, err := conn.Exec(ctx, "INSERT INTO countries (code, name) VALUES ($1, $2)", "zz-ref", "Testland"); err != nil {
		t.Fatal(err)
	}
	for shard := range cluster.Shards {
		assertCount(t, connectShard(t, shard), "SELECT count(*) FROM countries WHERE code = $1", "zz-ref", 1)
	}
	// Reads go to one shard; joins with a sharded table stay on the key's shard.
	for i := 0; i < 4; i++ {
		var name string
		if err := conn.QueryRow(ctx, "SELECT name FROM countries WHERE code = $1", "zz-ref").Scan(&name); err != nil || name != "Testland" {
			t.Fatalf("read %d: %q, %v", i, name, err)
		}
	}
	id := int64(4_000_000)
	if _, err := conn.Exec(ctx, "INSERT INTO users (id, name, country) VALUES ($1, 'joiner', 'zz-ref')", id); err != nil {
		t.Fatal(err)
	}
	var country string
	if err := conn.QueryRow(ctx, "SELECT c.name FROM users u JOIN countries c ON c.code = u.country WHERE u.id = $1", id).Scan(&country); err != nil || country != "Testland" {
		t.Fatalf("join: %q, %v", country, err)
	}
}

// TestRefusalsKeepTheConnection checks each refusal carries its SQLSTATE
// and leaves the connection usable, in both protocols.
func TestRefusalsKeepTheConnection(t *testing.T) {
	cases := []struct{ sql, code string }{
		{"DELETE FROM posts WHERE body = 'x'", "0A000"},               // a write to every shard
		{"SELECT * FROM users FOR UPDATE", "0A000"},                   // row locks on every shard
		{"INSERT INTO users (name) VALUES ('no key')", "0A000"},       // key column missing
		{"SELECT * FROM not_configured WHERE id = 1", "42P01"},        // a table that exists nowhere, as Postgres answers
		{"SELEC 1", "42601"},                                          // Postgres's syntax error
		{"SET ROLE postgres", "0A000"},                                // would change the shared server connection's identity
		{"UPDATE users SET id = 3 WHERE id = 1", "0A000"},             // moving a row between shards
		{"INSERT INTO users (id, name) VALUES ('abc', 'x')", "22P02"}, // key that is not a bigint
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		conn := connect(t, mode)
		for _, c := range cases {
			_, err := conn.Exec(t.Context(), c.sql)
			if sqlState(err) != c.code {
				t.Errorf("%s: %q: got %v, want SQLSTATE %s", mode, c.sql, err, c.code)
			}
			var one int
			if err := conn.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Fatalf("%s: connection unusable after %q: %v", mode, c.sql, err)
			}
		}
	}
	conn := connect(t, pgx.QueryExecModeSimpleProtocol)
	bad := "SELECT 1 FROM users WHERE id = 1 ORDR BY 1"
	_, err := conn.Exec(t.Context(), bad)
	var pgErr *pgconn.PgError
	if want := int32(strings.Index(bad, "ORDR") + 1); !errors.As(err, &pgErr) || pgErr.Position != want {
		t.Fatalf("syntax error should carry Postgres's position %d: %#v", want, err)
	}
}

func TestUnknownDatabase(t *testing.T) {
	cfg, _ := pgx.ParseConfig(proxyDSN)
	cfg.Database = "nope"
	_, err := pgx.ConnectConfig(t.Context(), cfg)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" {
		t.Fatalf("got %v, want 3D000", err)
	}
}

// TestPoolWaitTimeout fills a one-connection pool with an open transaction
// and expects a second client to get a clear error, then succeed once the
// connection is free.
func TestPoolWaitTimeout(t *testing.T) {
	dsn := proxyWith(t, func(c *topology.Config) {
		c.Pool.Size = 1
		c.Pool.QueryWaitTimeout = topology.Duration(300 * time.Millisecond)
	})
	ctx := t.Context()
	holder := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
	waiter := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
	key := int64(5_000_000)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT * FROM users WHERE id = $1", key); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err = waiter.Exec(ctx, "SELECT * FROM users WHERE id = $1", key)
	if sqlState(err) != "53300" {
		t.Fatalf("got %v, want 53300 after the wait timeout", err)
	}
	if waited := time.Since(began); waited < 250*time.Millisecond || waited > 5*time.Second {
		t.Fatalf("waited %s, want about 300ms", waited)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := waiter.Exec(ctx, "SELECT * FROM users WHERE id = $1", key); err != nil {
		t.Fatalf("after the holder committed: %v", err)
	}
}
