package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/topology"
)

// TestCrossShardTransactions: with two_phase_commit, a transaction block
// that writes to several shards commits on all of them or on none, in
// both protocols; without it, the second shard's statement is refused.
func TestCrossShardTransactions(t *testing.T) {
	ctx := t.Context()
	keys := keysBy(t, 12_000_000, 2)
	a, b := keys[0][0], keys[1][0]

	plain := connect(t, pgx.QueryExecModeSimpleProtocol)
	tx, err := plain.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, tx, "INSERT INTO users (id, name) VALUES ($1, 'dtx')", a)
	if _, err := tx.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'dtx')", b); sqlState(err) != "0A000" {
		t.Fatalf("second shard without two_phase_commit: %v", err)
	}
	tx.Rollback(ctx)

	log := filepath.Join(t.TempDir(), "decisions.log")
	dsn := proxyWith(t, func(c *topology.Config) {
		c.TwoPhaseCommit, c.DecisionLog = true, log
		c.Tables["dtx"] = topology.TableConfig{ShardKey: "id"}
	})
	setup := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	if _, err := setup.Exec(ctx, "CREATE TABLE dtx (id bigint PRIMARY KEY, v int, UNIQUE (v) DEFERRABLE INITIALLY DEFERRED)"); err != nil {
		t.Fatal(err)
	}
	for i, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement} {
		conn := dial(t, dsn, mode, nil)
		base := int64(i * 10)

		// Commit: both rows land, and each shard's reads see the
		// transaction's own writes when it comes back to them.
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, tx, "INSERT INTO dtx (id, v) VALUES ($1, $2)", a, base+1)
		mustExec(t, tx, "INSERT INTO dtx (id, v) VALUES ($1, $2)", b, base+2)
		mustExec(t, tx, "UPDATE dtx SET v = v + 100 WHERE id = $1", a)
		var v int64
		if err := tx.QueryRow(ctx, "SELECT v FROM dtx WHERE id = $1", b).Scan(&v); err != nil || v != base+2 {
			t.Fatalf("%s: read inside the transaction: %v %d", mode, err, v)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatalf("%s: commit across shards: %v", mode, err)
		}
		assertDtx(t, a, base+101)
		assertDtx(t, b, base+2)

		// Rollback: neither shard keeps anything.
		tx, _ = conn.Begin(ctx)
		mustExec(t, tx, "UPDATE dtx SET v = 0 WHERE id = $1", a)
		mustExec(t, tx, "UPDATE dtx SET v = -1 WHERE id = $1", b)
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		assertDtx(t, a, base+101)
		assertDtx(t, b, base+2)

		// A failure on one shard's PREPARE (a deferred unique check) rolls
		// back the other shard's write too.
		tx, _ = conn.Begin(ctx)
		mustExec(t, tx, "UPDATE dtx SET v = 7777 WHERE id = $1", a)
		mustExec(t, tx, "INSERT INTO dtx (id, v) VALUES ($1, $2)", keys[1][1], base+2)
		err = tx.Commit(ctx)
		if sqlState(err) != "23505" {
			t.Fatalf("%s: commit with a deferred violation: %v", mode, err)
		}
		assertDtx(t, a, base+101)
		tx, _ = conn.Begin(ctx)
		mustExec(t, tx, "DELETE FROM dtx WHERE id = $1", a)
		mustExec(t, tx, "DELETE FROM dtx WHERE id = $1", b)
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		assertCount(t, conn, "SELECT count(*) FROM dtx WHERE id = $1", b, 0)

		// An error aborts the whole transaction, on every shard.
		tx, _ = conn.Begin(ctx)
		mustExec(t, tx, "INSERT INTO dtx (id, v) VALUES ($1, $2)", a, base+3)
		if _, err := tx.Exec(ctx, "INSERT INTO dtx (id, v) VALUES ($1, 1 / 0)", b); sqlState(err) != "22012" {
			t.Fatalf("%s: division by zero: %v", mode, err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1 FROM dtx WHERE id = $1", a); sqlState(err) != "25P02" {
			t.Fatalf("%s: statement after an error: %v", mode, err)
		}
		if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
			t.Fatalf("%s: commit of a failed transaction: %v", mode, err)
		}
		assertCount(t, conn, "SELECT count(*) FROM dtx WHERE id = $1", a, 0)
	}

	// Savepoints cannot span shards.
	conn := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	tx, _ = conn.Begin(ctx)
	mustExec(t, tx, "SAVEPOINT s1")
	mustExec(t, tx, "INSERT INTO dtx (id, v) VALUES ($1, 500)", a)
	if _, err := tx.Exec(ctx, "INSERT INTO dtx (id, v) VALUES ($1, 501)", b); sqlState(err) != "0A000" {
		t.Fatalf("second shard after a savepoint: %v", err)
	}
	tx.Rollback(ctx)
	assertCount(t, conn, "SELECT count(*) FROM dtx WHERE id = $1", a, 0)
	tx, _ = conn.Begin(ctx)
	mustExec(t, tx, "INSERT INTO dtx (id, v) VALUES ($1, 502)", a)
	mustExec(t, tx, "INSERT INTO dtx (id, v) VALUES ($1, 503)", b)
	mustExec(t, tx, "SET LOCAL statement_timeout = '5s'")
	if _, err := tx.Exec(ctx, "SAVEPOINT s2"); sqlState(err) != "0A000" {
		t.Fatalf("savepoint in a transaction on two shards: %v", err)
	}
	tx.Rollback(ctx)
	assertCount(t, conn, "SELECT count(*) FROM dtx WHERE id = $1", b, 0)

	// Every branch goes back to its pool: with one connection per shard,
	// transactions on both shards keep finding them.
	small := dial(t, proxyWith(t, func(c *topology.Config) {
		c.TwoPhaseCommit, c.DecisionLog = true, log
		c.Tables["dtx"] = topology.TableConfig{ShardKey: "id"}
		c.Pool.Size, c.Pool.QueryWaitTimeout = 1, topology.Duration(2*time.Second)
	}), pgx.QueryExecModeSimpleProtocol, nil)
	for i := range 3 {
		tx, err := small.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustExec(t, tx, "UPDATE dtx SET v = $2 WHERE id = $1", a, i)
		mustExec(t, tx, "UPDATE dtx SET v = $2 WHERE id = $1", b, i)
		if err := tx.Commit(ctx); err != nil {
			t.Fatalf("cross-shard transaction %d on one connection per shard: %v", i, err)
		}
	}

	if data, err := os.ReadFile(log); err != nil || len(data) == 0 {
		t.Fatalf("no commit decision was logged: %v", err)
	}
	for shard := range cluster.Shards {
		assertCount(t, connectShard(t, shard), "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE $1", "shardgate_%", 0)
	}
}

// assertDtx checks a dtx row directly on the shard the contract names.
func assertDtx(t *testing.T, id, want int64) {
	t.Helper()
	var v int64
	err := connectShard(t, shardOf(t, id)).QueryRow(t.Context(), "SELECT v FROM dtx WHERE id = $1", id).Scan(&v)
	if err != nil || v != want {
		t.Fatalf("dtx %d on its shard: %v, v=%d want %d", id, err, v, want)
	}
	for shard := range cluster.Shards {
		if shard != shardOf(t, id) {
			assertCount(t, connectShard(t, shard), "SELECT count(*) FROM dtx WHERE id = $1", id, 0)
		}
	}
}

// TestSplitInsert: a multi-row INSERT whose rows belong to several shards
// runs as one INSERT per shard, in both protocols, with RETURNING rows
// gathered and counts summed; a failing row on one shard leaves nothing on
// any shard.
func TestSplitInsert(t *testing.T) {
	ctx := t.Context()
	keys := keysBy(t, 14_000_000, 8)
	for i, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement} {
		conn := connect(t, mode)
		a, b, c := keys[0][2*i], keys[1][2*i], keys[0][2*i+1]
		tag, err := conn.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'a'), ($2, 'b'), ($3, $4)", a, b, c, "c")
		if err != nil || tag.String() != "INSERT 0 3" {
			t.Fatalf("%s: split INSERT: %v %q", mode, err, tag)
		}
		for _, id := range []int64{a, b, c} {
			assertCount(t, connectShard(t, shardOf(t, id)), "SELECT count(*) FROM users WHERE id = $1", id, 1)
		}
		d := keys[1][2*i+1]
		rows := rowsOf(t, conn, fmt.Sprintf("INSERT INTO users (id, name) VALUES (%d, 'dup'), (%d, 'new') ON CONFLICT (id) DO NOTHING RETURNING id", a, d))
		if len(rows) != 1 || rows[0][0] != fmt.Sprint(d) {
			t.Fatalf("%s: ON CONFLICT ... RETURNING across shards: %v", mode, rows)
		}
		// b exists on shard 1: the whole INSERT fails, and the shard-0 row
		// stays out too.
		e := keys[0][6+i%2]
		if _, err := conn.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'e'), ($2, 'again')", e, b); sqlState(err) != "23505" {
			t.Fatalf("%s: duplicate in a split INSERT: %v", mode, err)
		}
		assertCount(t, connectShard(t, 0), "SELECT count(*) FROM users WHERE id = $1", e, 0)
	}
}

// TestWritesAcrossShardsInTransaction: with two_phase_commit, a multi-row
// INSERT split by shard and a reference-table write run inside a
// transaction block, on its branch per shard: committed with the rest of
// the transaction, or rolled back with it; a failing part aborts the whole
// transaction. Without two_phase_commit they are refused with 0A000.
func TestWritesAcrossShardsInTransaction(t *testing.T) {
	ctx := t.Context()
	keys := keysBy(t, 15_000_000, 12)
	refused := connect(t, pgx.QueryExecModeSimpleProtocol)
	tx, _ := refused.Begin(ctx)
	if _, err := tx.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'x'), ($2, 'y')", keys[0][11], keys[1][11]); sqlState(err) != "0A000" {
		t.Fatalf("split INSERT in a transaction without two_phase_commit: %v", err)
	}
	tx.Rollback(ctx)
	tx, _ = refused.Begin(ctx)
	if _, err := tx.Exec(ctx, "SELECT count(*) FROM users"); sqlState(err) != "0A000" {
		t.Fatalf("cross-shard SELECT in a transaction without two_phase_commit: %v", err)
	}
	tx.Rollback(ctx)

	dsn := proxyWith(t, func(c *topology.Config) {
		c.TwoPhaseCommit, c.DecisionLog = true, filepath.Join(t.TempDir(), "decisions.log")
	})
	t.Cleanup(func() {
		for shard := range cluster.Shards {
			db, err := pgx.Connect(context.Background(), cluster.Shards[shard].Primary.DSN("app"))
			if err == nil {
				db.Exec(context.Background(), "DELETE FROM countries WHERE code IN ('T0', 'T1', 'T2')")
				db.Close(context.Background())
			}
		}
	})
	onShard := func(id int64) int64 {
		var n int64
		if err := connectShard(t, shardOf(t, id)).QueryRow(ctx, "SELECT count(*) FROM users WHERE id = $1", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for i, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement} {
		conn := dial(t, dsn, mode, nil)
		a, b, c := keys[0][3*i], keys[1][3*i], keys[0][3*i+1]
		country := fmt.Sprintf("T%d", i)

		// Commit: the split INSERT's rows, a row on one shard and a
		// reference-table row all land.
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		rows, err := tx.Query(ctx, "INSERT INTO users (id, name) VALUES ($1, 'a'), ($2, 'b') RETURNING id", a, b)
		if err == nil {
			ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		}
		if err != nil || len(ids) != 2 {
			t.Fatalf("%s: split INSERT ... RETURNING in a transaction: %v %v", mode, err, ids)
		}
		mustExec(t, tx, "INSERT INTO users (id, name) VALUES ($1, 'c')", c)
		mustExec(t, tx, "INSERT INTO countries (code, name) VALUES ($1, 'test')", country)
		var seen int64
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM users WHERE id = $1", b).Scan(&seen); err != nil || seen != 1 {
			t.Fatalf("%s: the transaction does not see its own split row: %v %d", mode, err, seen)
		}
		// A query across shards inside the transaction runs on its
		// branches, so it sees the transaction's uncommitted rows.
		var got []int64
		rows, err = tx.Query(ctx, "SELECT id FROM users WHERE id IN ($1, $2, $3) ORDER BY id DESC", a, b, c)
		if err == nil {
			got, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		}
		if want := []int64{max(a, b, c), a + b + c - max(a, b, c) - min(a, b, c), min(a, b, c)}; err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: cross-shard SELECT in the transaction: %v %v, want %v", mode, err, got, want)
		}
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM users WHERE id IN ($1, $2, $3)", a, b, c).Scan(&seen); err != nil || seen != 3 {
			t.Fatalf("%s: cross-shard count in the transaction: %v %d", mode, err, seen)
		}
		if onShard(a) != 0 {
			t.Fatalf("%s: a row is visible before COMMIT", mode)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatalf("%s: commit: %v", mode, err)
		}
		for _, id := range []int64{a, b, c} {
			if onShard(id) != 1 {
				t.Errorf("%s: row %d missing on its shard after COMMIT", mode, id)
			}
		}
		for shard := range cluster.Shards {
			assertCount(t, connectShard(t, shard), "SELECT count(*) FROM countries WHERE code = $1", country, 1)
		}

		// Rollback: nothing of the split INSERT, nor of a reference-table
		// write that opened the transaction, stays.
		d, e := keys[0][3*i+2], keys[1][3*i+1]
		tx, _ = conn.Begin(ctx)
		mustExec(t, tx, "INSERT INTO countries (code, name) VALUES ($1, 'rolled back')", country+"R")
		mustExec(t, tx, "INSERT INTO users (id, name) VALUES ($1, 'd'), ($2, 'e')", d, e)
		tx.Rollback(ctx)
		if onShard(d)+onShard(e) != 0 {
			t.Errorf("%s: rows of a rolled-back split INSERT stayed", mode)
		}
		for shard := range cluster.Shards {
			assertCount(t, connectShard(t, shard), "SELECT count(*) FROM countries WHERE code = $1", country+"R", 0)
		}

		// A duplicate on one shard aborts the whole transaction, the row
		// written before it on the other shard included.
		tx, _ = conn.Begin(ctx)
		mustExec(t, tx, "INSERT INTO users (id, name) VALUES ($1, 'd')", d)
		if _, err := tx.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'e'), ($2, 'dup')", e, b); sqlState(err) != "23505" {
			t.Fatalf("%s: duplicate in a split INSERT in a transaction: %v", mode, err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); sqlState(err) != "25P02" {
			t.Fatalf("%s: statement after the failed split INSERT: %v", mode, err)
		}
		if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
			t.Fatalf("%s: commit of the failed transaction: %v", mode, err)
		}
		if onShard(d)+onShard(e) != 0 {
			t.Errorf("%s: rows of an aborted transaction stayed", mode)
		}
	}
	for shard := range cluster.Shards {
		assertCount(t, connectShard(t, shard), "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE $1", "shardgate_%", 0)
	}
}

// TestDDLInTransaction: with two_phase_commit, a migration's transaction
// (as Django, Rails and Flyway run them) creates its tables on every shard
// at COMMIT, or on none after ROLLBACK or an error; without it, DDL in a
// transaction block is refused with 0A000 and a hint.
func TestDDLInTransaction(t *testing.T) {
	ctx := t.Context()
	tx, _ := connect(t, pgx.QueryExecModeSimpleProtocol).Begin(ctx)
	_, err := tx.Exec(ctx, "CREATE TABLE ddl_tx_refused (id bigint)")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "0A000" || !strings.Contains(pgErr.Hint, "two_phase_commit") {
		t.Fatalf("DDL in a transaction without two_phase_commit: %v", err)
	}
	tx.Rollback(ctx)

	dsn := proxyWith(t, func(c *topology.Config) {
		c.TwoPhaseCommit, c.DecisionLog = true, filepath.Join(t.TempDir(), "decisions.log")
	})
	exists := func(table string) int64 {
		var n int64
		for shard := range cluster.Shards {
			var found bool
			if err := connectShard(t, shard).QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&found); err != nil {
				t.Fatal(err)
			}
			if found {
				n++
			}
		}
		return n
	}
	for i, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		conn := dial(t, dsn, mode, nil)
		table := fmt.Sprintf("ddl_tx_%d", i)
		t.Cleanup(func() {
			for shard := range cluster.Shards {
				db, err := pgx.Connect(context.Background(), cluster.Shards[shard].Primary.DSN("app"))
				if err == nil {
					db.Exec(context.Background(), "DROP TABLE IF EXISTS "+table)
					db.Close(context.Background())
				}
			}
		})
		for _, end := range []string{"ROLLBACK", "error", "COMMIT"} {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			mustExec(t, tx, "CREATE TABLE "+table+" (id bigint PRIMARY KEY, v text)")
			mustExec(t, tx, "CREATE INDEX ON "+table+" (v)")
			if tag, err := tx.Exec(ctx, "ALTER TABLE "+table+" ADD COLUMN w int"); err != nil || tag.String() != "ALTER TABLE" {
				t.Fatalf("%s: ALTER TABLE in the transaction: %v %q", mode, err, tag)
			}
			switch end {
			case "ROLLBACK":
				tx.Rollback(ctx)
			case "error":
				if _, err := tx.Exec(ctx, "CREATE TABLE "+table+" (id bigint)"); sqlState(err) != "42P07" {
					t.Fatalf("%s: duplicate CREATE TABLE: %v", mode, err)
				}
				if err := tx.Commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
					t.Fatalf("%s: commit after the error: %v", mode, err)
				}
			case "COMMIT":
				if err := tx.Commit(ctx); err != nil {
					t.Fatalf("%s: commit: %v", mode, err)
				}
			}
			want := int64(0)
			if end == "COMMIT" {
				want = int64(len(cluster.Shards))
			}
			if n := exists(table); n != want {
				t.Fatalf("%s: after %s the table is on %d shards, want %d", mode, end, n, want)
			}
		}
	}
}
