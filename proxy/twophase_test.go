package proxy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

// TestBroadcastWrites: UPDATE/DELETE without a key are refused by default;
// with allow_broadcast_writes they run on every shard, counts summed and
// RETURNING rows gathered, and with two_phase_commit a failure on one shard
// leaves no shard changed.
func TestBroadcastWrites(t *testing.T) {
	ctx := t.Context()
	keys := keysBy(t, 11_000_000, 3)
	conn := connect(t, pgx.QueryExecModeSimpleProtocol)
	for _, ks := range keys {
		for _, k := range ks {
			if _, err := conn.Exec(ctx, fmt.Sprintf("INSERT INTO users (id, name, email) VALUES (%d, 'bw', 'bw@x')", k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := conn.Exec(ctx, "UPDATE users SET name = 'no' WHERE email = 'bw@x'"); sqlState(err) != "0A000" {
		t.Fatalf("broadcast write without allow_broadcast_writes: %v", err)
	}
	for _, twoPC := range []bool{false, true} {
		log := filepath.Join(t.TempDir(), "2pc.log")
		dsn := proxyWith(t, func(c *topology.Config) {
			c.AllowBroadcastWrites, c.TwoPhaseCommit, c.DecisionLog = true, twoPC, log
		})
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
			bw := dial(t, dsn, mode, nil)
			tag, err := bw.Exec(ctx, "UPDATE users SET name = $1 WHERE email = 'bw@x'", fmt.Sprintf("bw-%v-%s", twoPC, mode))
			if err != nil || tag.RowsAffected() != 6 || tag.String() != "UPDATE 6" {
				t.Fatalf("2pc=%v %s: broadcast UPDATE: %v %q", twoPC, mode, err, tag)
			}
			rows := rowsOf(t, bw, "UPDATE users SET email = 'bw@x' WHERE email = 'bw@x' RETURNING id")
			if len(rows) != 6 {
				t.Fatalf("2pc=%v %s: RETURNING gathered %d rows, want 6", twoPC, mode, len(rows))
			}
		}
		// A failure on one shard: id is the primary key, so setting every
		// row's id to the same value fails on any shard with two rows.
		bw := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
		_, err := bw.Exec(ctx, "UPDATE users SET name = 'half', id = 11000000 WHERE email = 'bw@x'")
		if err == nil {
			t.Fatal("failing broadcast write succeeded")
		}
		if twoPC {
			for shard := range cluster.Shards {
				assertCount(t, connectShard(t, shard), "SELECT count(*) FROM users WHERE name = $1", "half", 0)
			}
			if b, _ := os.ReadFile(log); len(b) == 0 {
				t.Fatal("no commit decision was logged for the successful writes")
			}
		}
	}
	if _, err := conn.Exec(ctx, "DELETE FROM users WHERE email = 'bw@x'"); sqlState(err) != "0A000" {
		t.Fatalf("broadcast DELETE without allow_broadcast_writes: %v", err)
	}
}

// TestRecoverInDoubt: prepared transactions left by a crash between the two
// phases are committed if the log says so and rolled back otherwise.
func TestRecoverInDoubt(t *testing.T) {
	ctx := t.Context()
	log := filepath.Join(t.TempDir(), "2pc.log")
	direct := connectShard(t, 0)
	for i, gid := range []string{"shardgate_decided", "shardgate_undecided"} {
		tx, err := direct.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO countries (code, name) VALUES ($1, 'in doubt')", fmt.Sprintf("indoubt-%d", i)); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "PREPARE TRANSACTION '"+gid+"'"); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, log, "shardgate_decided\n")
	srv, _, stop, err := startServer(func(c *topology.Config) { c.TwoPhaseCommit, c.DecisionLog = true, log })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := srv.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	assertCount(t, direct, "SELECT count(*) FROM countries WHERE code = $1", "indoubt-0", 1)
	assertCount(t, direct, "SELECT count(*) FROM countries WHERE code = $1", "indoubt-1", 0)
	assertCount(t, direct, "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE $1", "shardgate_%", 0)
}

// TestReferenceWriteAllOrNothing: a reference-table write that fails on one
// shard leaves every shard unchanged.
func TestReferenceWriteAllOrNothing(t *testing.T) {
	ctx := t.Context()
	if _, err := connectShard(t, 1).Exec(ctx, "INSERT INTO countries (code, name) VALUES ('only-s1', 'diverged')"); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, pgx.QueryExecModeCacheStatement)
	_, err := conn.Exec(ctx, "INSERT INTO countries (code, name) VALUES ($1, 'new'), ($2, 'new')", "fresh-ref", "only-s1")
	if sqlState(err) != "23505" {
		t.Fatalf("duplicate on one shard: got %v, want 23505", err)
	}
	for shard := range cluster.Shards {
		assertCount(t, connectShard(t, shard), "SELECT count(*) FROM countries WHERE code = $1", "fresh-ref", 0)
	}
	tag, err := conn.Exec(ctx, "INSERT INTO countries (code, name) VALUES ($1, 'ok')", "fresh-ref2")
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("reference insert: %v, %q (one row, as one Postgres would say)", err, tag)
	}
	for shard := range cluster.Shards {
		assertCount(t, connectShard(t, shard), "SELECT count(*) FROM countries WHERE code = $1", "fresh-ref2", 1)
	}
}
