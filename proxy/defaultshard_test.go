package proxy_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

// connectTo opens a pgx connection through the proxy at addr.
func connectTo(t *testing.T, addr string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	return dial(t, "postgres://postgres@"+addr+"/app?sslmode=disable", mode, nil)
}

// relationOn reports whether a shard's primary has the relation.
func relationOn(t *testing.T, shard int, name string) bool {
	t.Helper()
	var exists bool
	if err := connectShard(t, shard).QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	return exists
}

// dropOn runs cleanup SQL on a shard's primary once the test is over
// (its context is done by then).
func dropOn(t *testing.T, shard int, sql string) {
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), cluster.Shards[shard].Primary.DSN("app"))
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), sql); err != nil {
			t.Error(err)
		}
	})
}

// oneShard makes the sandbox's config a one-shard topology over shard 0.
func oneShard(c *topology.Config) {
	c.Shards = c.Shards[:1]
	c.Keyspace = []topology.RangeConfig{{Range: "-", Shard: c.Shards[0].Name}}
}

// TestDefaultShardUnlistedTables: with default_shard, a table the config
// does not name is created, written and read on the default shard alone,
// in the simple and the extended protocol; a temporary table works in
// session mode; a join with a sharded table whose key is elsewhere is
// refused.
func TestDefaultShardUnlistedTables(t *testing.T) {
	addr := serveOver(t, cluster, func(c *topology.Config) {
		c.DefaultShard = c.Shards[1].Name
		c.Pool.Mode = "session"
	})
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		conn := connectTo(t, addr, mode)
		ctx := t.Context()
		if _, err := conn.Exec(ctx, "CREATE TABLE defshard_notes (id int PRIMARY KEY, body text)"); err != nil {
			t.Fatalf("%v: create: %v", mode, err)
		}
		dropOn(t, 1, "DROP TABLE IF EXISTS defshard_notes")
		if !relationOn(t, 1, "defshard_notes") || relationOn(t, 0, "defshard_notes") {
			t.Fatalf("%v: the table must be on the default shard alone", mode)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO defshard_notes (id, body) VALUES ($1, $2)", 7, "seven"); err != nil {
			t.Fatalf("%v: insert: %v", mode, err)
		}
		var body string
		if err := conn.QueryRow(ctx, "SELECT body FROM defshard_notes WHERE id = $1", 7).Scan(&body); err != nil || body != "seven" {
			t.Fatalf("%v: select: %q, %v", mode, body, err)
		}
		if _, err := conn.Exec(ctx, "CREATE TEMP TABLE defshard_scratch (n int)"); err != nil {
			t.Fatalf("%v: create temp: %v", mode, err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO defshard_scratch VALUES (1), (2)"); err != nil {
			t.Fatalf("%v: insert temp: %v", mode, err)
		}
		var sum int
		if err := conn.QueryRow(ctx, "SELECT sum(n) FROM defshard_scratch").Scan(&sum); err != nil || sum != 3 {
			t.Fatalf("%v: temp table sum %d, %v", mode, sum, err)
		}
		// users id 3 lives on the first shard, not the default one.
		_, err := conn.Exec(ctx, "SELECT * FROM users u JOIN defshard_notes n ON n.id = u.id WHERE u.id = 3")
		if sqlState(err) != "0A000" {
			t.Fatalf("%v: mixed join across shards: %v, want 0A000", mode, err)
		}
		if _, err := conn.Exec(ctx, "DROP TABLE defshard_notes"); err != nil {
			t.Fatalf("%v: drop: %v", mode, err)
		}
		if relationOn(t, 1, "defshard_notes") {
			t.Fatalf("%v: DROP did not reach the default shard", mode)
		}
	}
}

// TestMissingTableAnswers42P01: without default_shard, a table that
// exists nowhere answers Postgres's 42P01 in both protocols, while one
// that exists but is not in the config keeps shardgate's 0A000.
func TestMissingTableAnswers42P01(t *testing.T) {
	for shard := range 2 {
		if _, err := connectShard(t, shard).Exec(t.Context(), "CREATE TABLE IF NOT EXISTS defshard_unlisted (id int)"); err != nil {
			t.Fatal(err)
		}
		dropOn(t, shard, "DROP TABLE IF EXISTS defshard_unlisted")
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		conn := connect(t, mode)
		_, err := conn.Exec(t.Context(), "SELECT * FROM defshard_nowhere WHERE id = $1", 1)
		if sqlState(err) != "42P01" || err.Error() != `ERROR: relation "defshard_nowhere" does not exist (SQLSTATE 42P01)` {
			t.Errorf("%v: missing table: %v", mode, err)
		}
		_, err = conn.Exec(t.Context(), "INSERT INTO nosuchschema.defshard_nowhere VALUES ($1)", 1)
		if sqlState(err) != "42P01" {
			t.Errorf("%v: missing qualified table: %v", mode, err)
		}
		_, err = conn.Exec(t.Context(), "SELECT * FROM defshard_unlisted WHERE id = $1", 1)
		if sqlState(err) != "0A000" {
			t.Errorf("%v: existing unlisted table: %v, want 0A000", mode, err)
		}
	}
}

// TestOneShardDDLInTransaction: on a one-shard topology, DDL and TRUNCATE
// run inside transaction blocks, committed or rolled back with them; a
// READ ONLY block gets the server's 25006 for a write and VACUUM the
// server's own refusal.
func TestOneShardDDLInTransaction(t *testing.T) {
	addr := serveOver(t, cluster, oneShard)
	dropOn(t, 0, "DROP TABLE IF EXISTS defshard_tx, defshard_gone; DROP DOMAIN IF EXISTS defshard_pos")
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheDescribe} {
		conn := connectTo(t, addr, mode)
		ctx := t.Context()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, sql := range []string{
			"CREATE DOMAIN defshard_pos AS int CHECK (VALUE > 0)",
			"CREATE TABLE defshard_tx (id defshard_pos)",
			"TRUNCATE defshard_tx",
			"ALTER TABLE defshard_tx ADD COLUMN note text",
		} {
			if _, err := tx.Exec(ctx, sql); err != nil {
				t.Fatalf("%v: %s in a transaction block: %v", mode, sql, err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatalf("%v: commit: %v", mode, err)
		}
		if !relationOn(t, 0, "defshard_tx") {
			t.Fatalf("%v: committed CREATE TABLE is missing", mode)
		}
		tx, err = conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "DROP TABLE defshard_tx; DROP DOMAIN defshard_pos; CREATE TABLE defshard_gone (id int)"); err != nil && mode == pgx.QueryExecModeSimpleProtocol {
			t.Fatalf("%v: DDL batch in a transaction block: %v", mode, err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatalf("%v: rollback: %v", mode, err)
		}
		if !relationOn(t, 0, "defshard_tx") || relationOn(t, 0, "defshard_gone") {
			t.Fatalf("%v: rolled-back DDL took effect", mode)
		}
		if _, err := conn.Exec(ctx, "DROP TABLE defshard_tx; DROP DOMAIN defshard_pos"); err != nil && mode == pgx.QueryExecModeSimpleProtocol {
			t.Fatalf("%v: cleanup: %v", mode, err)
		} else if err != nil {
			conn.Exec(ctx, "DROP TABLE defshard_tx")
			conn.Exec(ctx, "DROP DOMAIN defshard_pos")
		}

		tx, err = conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
		if err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, "CREATE TABLE defshard_ro (id int)")
		if sqlState(err) != "25006" {
			t.Errorf("%v: write in READ ONLY block: %v, want 25006", mode, err)
		}
		tx.Rollback(ctx)

		tx, err = conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, "VACUUM")
		if sqlState(err) != "25001" {
			t.Errorf("%v: VACUUM in a transaction block: %v, want the server's 25001", mode, err)
		}
		tx.Rollback(ctx)
	}
}
