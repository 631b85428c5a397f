package proxy_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

// gatherQuery is answered by copying g_t's rows to one shard: no merge of
// per-shard answers gives count(DISTINCT) of a non-key column.
const gatherQuery = "SELECT count(DISTINCT v) FROM g_t"

// TestGatherAnswersAndCleansUp: a gathered query answers as one Postgres
// would, again and again on the same pooled server connections (its
// temporary tables do not outlive it), in both protocols.
func TestGatherAnswersAndCleansUp(t *testing.T) {
	ctx := t.Context()
	dsn := proxyWith(t, func(c *topology.Config) {
		c.Tables["g_t"] = topology.TableConfig{ShardKey: "id", KeyType: topology.KeyBigint}
		c.Pool.Size = 2
	})
	gatherTable(t, dsn, "g_t", 300, 37)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		conn := dial(t, dsn, mode, nil)
		for i := range 5 { // more than the pool: each run reuses a connection
			var n int
			if err := conn.QueryRow(ctx, gatherQuery).Scan(&n); err != nil || n != 37 {
				t.Fatalf("%s run %d: %d, %v; want 37", mode, i, n, err)
			}
			var got []int
			rows, _ := conn.Query(ctx, "SELECT v FROM g_t WHERE id < $1 UNION SELECT v + 100 FROM g_t WHERE id < $1 ORDER BY 1 DESC LIMIT 3", 5)
			got, err := pgx.CollectRows(rows, pgx.RowTo[int])
			if err != nil || len(got) != 3 || got[0] != 104 || got[2] != 102 {
				t.Fatalf("%s run %d: UNION got %v, %v; want [104 103 102]", mode, i, got, err)
			}
		}
	}
}

// TestGatherRefusals: what a gathered query cannot do is refused with
// Postgres's SQLSTATEs, the client keeps its connection, and the server
// connections go back to the pool.
func TestGatherRefusals(t *testing.T) {
	ctx := t.Context()
	dsn := proxyWith(t, func(c *topology.Config) {
		c.Tables["g_r"] = topology.TableConfig{ShardKey: "id", KeyType: topology.KeyBigint}
		c.Tables["g_missing"] = topology.TableConfig{ShardKey: "id", KeyType: topology.KeyBigint}
		c.MaxIntermediateResultSize = 200
		c.Pool.Size = 2
	})
	conn := gatherTable(t, dsn, "g_r", 200, 5)
	// g_missing exists on shard 0 only: the copy from shard 1 fails.
	shard0 := connectShard(t, 0)
	execOK(t, shard0, "CREATE TABLE IF NOT EXISTS g_missing (id bigint, v int)")
	t.Cleanup(func() { shard0.Exec(context.Background(), "DROP TABLE IF EXISTS g_missing") })

	for i := range 4 { // twice the pool: a leaked server connection would stall
		for _, c := range []struct{ sql, code string }{
			{"SELECT count(DISTINCT v) FROM g_r", "54000"},         // 200 rows exceed 200 bytes
			{"SELECT count(DISTINCT v) FROM g_missing", "42P01"},   // shard 1 has no such table
			{"SELECT 1 / (count(*) - count(*)) FROM g_r", "54000"}, // the copy fails first
		} {
			_, err := conn.Exec(ctx, c.sql)
			if got := sqlState(err); got != c.code {
				t.Fatalf("run %d: %s: %v, want SQLSTATE %s", i, c.sql, err, c.code)
			}
			var one int
			if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Fatalf("run %d: connection unusable after %s: %v", i, c.code, err)
			}
		}
	}
	execOK(t, conn, "BEGIN")
	if _, err := conn.Exec(ctx, "SELECT id FROM g_r UNION SELECT v FROM g_r"); sqlState(err) != "0A000" {
		t.Fatalf("gather in a transaction block without two_phase_commit: %v, want 0A000", err)
	}
	execOK(t, conn, "ROLLBACK")
}

// TestGatherOuterErrors: an error of the query itself, on the coordinator,
// reaches the client as Postgres's own.
func TestGatherOuterErrors(t *testing.T) {
	ctx := t.Context()
	dsn := proxyWith(t, func(c *topology.Config) {
		c.Tables["g_e"] = topology.TableConfig{ShardKey: "id", KeyType: topology.KeyBigint}
	})
	gatherTable(t, dsn, "g_e", 10, 1)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		c := dial(t, dsn, mode, nil)
		_, err := c.Exec(ctx, "SELECT 1 / sum(v) OVER () FROM g_e")
		if sqlState(err) != "22012" {
			t.Fatalf("%s: %v, want division by zero (22012)", mode, err)
		}
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM (SELECT DISTINCT v FROM g_e) d").Scan(&n); err != nil || n != 1 {
			t.Fatalf("%s: after the error: %d, %v", mode, n, err)
		}
	}
}

// gatherTable creates table (id bigint PRIMARY KEY, v int) through the
// proxy at dsn with rows ids 0.. and v = id % mod, dropped at the end, and
// returns the connection that made it.
func gatherTable(t *testing.T, dsn, table string, rows, mod int) *pgx.Conn {
	t.Helper()
	conn := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	execOK(t, conn, "CREATE TABLE "+table+" (id bigint PRIMARY KEY, v int)")
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP TABLE "+table) })
	for id := range rows {
		execOK(t, conn, "INSERT INTO "+table+" (id, v) VALUES ($1, $2)", id, id%mod)
	}
	return conn
}

// TestGatherInTransaction: inside a transaction block (with
// two_phase_commit) a gathered query reads through the transaction, so it
// sees its writes on every shard and in reference tables, and the
// transaction still commits in two phases (the copies live outside it); a
// failing gather aborts the transaction, as an error does in Postgres.
func TestGatherInTransaction(t *testing.T) {
	ctx := t.Context()
	dsn := proxyWith(t, func(c *topology.Config) {
		c.Tables["g_x"] = topology.TableConfig{ShardKey: "id", KeyType: topology.KeyBigint}
		c.ReferenceTables = append(c.ReferenceTables, "g_ref")
		c.TwoPhaseCommit, c.DecisionLog = true, filepath.Join(t.TempDir(), "decisions.log")
		c.Pool.Size = 3
	})
	conn := gatherTable(t, dsn, "g_x", 40, 7)
	execOK(t, conn, "CREATE TABLE g_ref (v int PRIMARY KEY, label text)")
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP TABLE g_ref") })
	execOK(t, conn, "INSERT INTO g_ref (v, label) VALUES (0, 'zero'), (1, 'one')")
	distinct := func(q pgx.Tx) int {
		var n int
		if err := q.QueryRow(ctx, "SELECT count(DISTINCT v) FROM g_x").Scan(&n); err != nil {
			t.Fatalf("gathered count in the transaction: %v", err)
		}
		return n
	}

	// The first round commits, the second rolls back.
	for round, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		c := dial(t, dsn, mode, nil)
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n := distinct(tx); n != 7+2*round {
			t.Fatalf("%s: before the writes: %d distinct, want %d", mode, n, 7+2*round)
		}
		// Two new values in four rows, which keyspace puts on both shards.
		for _, id := range []int{1000, 1001, 1002, 1003} {
			id += 100 * round
			if _, err := tx.Exec(ctx, "INSERT INTO g_x (id, v) VALUES ($1, $2)", id, 100+10*round+id%2); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := tx.Exec(ctx, "INSERT INTO g_ref (v, label) VALUES ($1, 'hundred')", 100+10*round); err != nil {
			t.Fatal(err)
		}
		if n := distinct(tx); n != 9+2*round {
			t.Fatalf("%s: the gather does not see the transaction's writes: %d distinct, want %d", mode, n, 9+2*round)
		}
		var labels int
		if err := tx.QueryRow(ctx, "SELECT count(DISTINCT r.label) FROM g_x x JOIN g_ref r ON r.v = x.v").Scan(&labels); err != nil || labels != 3 {
			t.Fatalf("%s: gathered join with a reference table written in the transaction: %d, %v; want 3", mode, labels, err)
		}
		if mode == pgx.QueryExecModeSimpleProtocol {
			if err := tx.Commit(ctx); err != nil {
				t.Fatalf("commit after gathers: %v", err)
			}
		} else if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM g_x WHERE id >= 1000").Scan(&n); err != nil || n != 4 {
		t.Fatalf("committed rows: %d, %v; want 4 (the rolled-back transaction's not counted twice)", n, err)
	}

	// A failing gather aborts the transaction and rolls back its writes.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO g_x (id, v) VALUES (2000, 5)"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1 / (count(DISTINCT v) - count(DISTINCT v)) FROM g_x"); sqlState(err) != "22012" {
		t.Fatalf("failing gather in a transaction: %v, want 22012", err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); sqlState(err) != "25P02" {
		t.Fatalf("after a failed gather: %v, want 25P02 (transaction aborted)", err)
	}
	tx.Rollback(ctx)
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM g_x WHERE id = 2000").Scan(&n); err != nil || n != 0 {
		t.Fatalf("the aborted transaction's row: %d, %v; want 0", n, err)
	}
}
