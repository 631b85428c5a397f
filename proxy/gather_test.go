package proxy_test

import (
	"context"
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
		t.Fatalf("gather in a transaction block: %v, want 0A000", err)
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
