package proxy_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

// runFirstTables creates rf_u (id, name, c) sharded by id and rf_f (uid,
// fid, x) sharded by uid through the proxy at dsn, and the same rows in
// schema rf_flat on shard 0's server, the one Postgres to compare with;
// it returns a connection to that server whose search_path reads rf_flat.
func runFirstTables(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx := t.Context()
	conn := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	flat := connectShard(t, 0)
	execOK(t, flat, "DROP SCHEMA IF EXISTS rf_flat CASCADE")
	execOK(t, flat, "CREATE SCHEMA rf_flat")
	t.Cleanup(func() {
		flat.Exec(context.Background(), "DROP SCHEMA IF EXISTS rf_flat CASCADE")
		conn.Exec(context.Background(), "DROP TABLE IF EXISTS rf_u, rf_f")
	})
	for _, c := range []*pgx.Conn{conn, flat} {
		prefix := ""
		if c == flat {
			prefix = "rf_flat."
		}
		// pad makes copying the tables for a gather cost more than
		// running a small subquery first (TestRunFirstRefusals).
		execOK(t, c, "CREATE TABLE "+prefix+"rf_u (id bigint PRIMARY KEY, name text, c text, pad text DEFAULT repeat('x', 100))")
		execOK(t, c, "CREATE TABLE "+prefix+"rf_f (uid bigint, fid bigint, x float8, pad text DEFAULT repeat('x', 100))")
		for id := range 40 {
			var country any = fmt.Sprintf("c%d", id%4)
			if id%7 == 0 {
				country = nil
			}
			execOK(t, c, "INSERT INTO "+prefix+"rf_u (id, name, c) VALUES ($1, $2, $3)", id, fmt.Sprintf("u%d", id), country)
		}
		for i := range 60 {
			var fid any = int64((i * 7) % 45) // some follow no user
			if i%13 == 5 {
				fid = nil
			}
			execOK(t, c, "INSERT INTO "+prefix+"rf_f (uid, fid, x) VALUES ($1, $2, $3)", i%20, fid, 0.1*float64(i)+1.0/3)
		}
	}
	execOK(t, flat, "SET search_path = rf_flat")
	_ = ctx
	return flat
}

// shardRunFirstTables shards runFirstTables' tables: rf_u by id, rf_f by uid.
func shardRunFirstTables(c *topology.Config) {
	c.Tables["rf_u"] = topology.TableConfig{ShardKey: "id", KeyType: topology.KeyBigint}
	c.Tables["rf_f"] = topology.TableConfig{ShardKey: "uid", KeyType: topology.KeyBigint}
}

// runFirstQueries are answered by running their subqueries first.
var runFirstQueries = []string{
	"SELECT id, name FROM rf_u WHERE id IN (SELECT fid FROM rf_f WHERE uid = 3) ORDER BY id",
	"SELECT count(*) FROM rf_u WHERE id IN (SELECT fid FROM rf_f)",
	"SELECT id FROM rf_u WHERE id = ANY (SELECT fid FROM rf_f WHERE x > 3) ORDER BY id",
	// NOT IN with a NULL among the values: no row passes.
	"SELECT count(*) FROM rf_u WHERE id NOT IN (SELECT fid FROM rf_f)",
	"SELECT id FROM rf_u WHERE id NOT IN (SELECT fid FROM rf_f WHERE fid IS NOT NULL) ORDER BY id",
	// An empty result: IN is false, NOT IN true, for a NULL c too.
	"SELECT count(*) FROM rf_u WHERE c IN (SELECT name FROM rf_u WHERE id < 0)",
	"SELECT count(*) FROM rf_u WHERE c NOT IN (SELECT name FROM rf_u WHERE id < 0)",
	"SELECT id FROM rf_u WHERE EXISTS (SELECT 1 FROM rf_f WHERE x > 5) ORDER BY id LIMIT 3",
	"SELECT count(*) FROM rf_u WHERE EXISTS (SELECT 1 FROM rf_f WHERE x > 500)",
	"SELECT count(*) FROM rf_u WHERE NOT EXISTS (SELECT 1 FROM rf_f WHERE x > 500)",
	"SELECT count(*) FROM rf_u WHERE NOT EXISTS (SELECT 1 FROM rf_f WHERE x > 5 LIMIT 1)",
	// Floats must keep every digit, whatever extra_float_digits says.
	"SELECT count(*) FROM rf_f WHERE x IN (SELECT x FROM rf_f WHERE uid = 4)",
	"SELECT c, count(*) FROM rf_u WHERE c IN (SELECT DISTINCT 'c' || (fid % 3) FROM rf_f WHERE fid IS NOT NULL) GROUP BY c ORDER BY c",
	"SELECT id FROM rf_u WHERE id IN (SELECT fid FROM rf_f WHERE uid = 3) AND id NOT IN (SELECT fid FROM rf_f WHERE uid = 4 AND fid IS NOT NULL) ORDER BY id",
	// A subquery failing alone where Postgres never runs it: gathered.
	"SELECT id FROM rf_u WHERE id < 0 AND id IN (SELECT fid / 0 FROM rf_f)",
	"SELECT id FROM rf_u WHERE id > 0 AND id IN (SELECT fid / 0 FROM rf_f) ORDER BY id",
	// Scalar subqueries, and ones the proxy merges as it would them alone.
	"SELECT count(*) FROM rf_f WHERE x > (SELECT avg(x) FROM rf_f)",
	"SELECT id, name FROM rf_u WHERE id = (SELECT max(fid) FROM rf_f WHERE uid < 10)",
	"SELECT count(*) FROM rf_u WHERE id IS DISTINCT FROM (SELECT fid FROM rf_f WHERE uid = -1)",
	"SELECT id FROM rf_u WHERE id IN (SELECT fid FROM rf_f WHERE fid IS NOT NULL ORDER BY fid DESC LIMIT 4) ORDER BY id",
	"SELECT id FROM rf_u WHERE id IN (SELECT count(*) FROM rf_f GROUP BY uid) ORDER BY id",
	// Dates and intervals go in as the client's settings print them and
	// are read back under the same settings.
	"SELECT count(*) FROM rf_u WHERE timestamptz '2024-01-01 00:00:00+00' + id * interval '1 day' IN (SELECT timestamptz '2024-01-01 00:00:00+00' + fid * interval '1 day' FROM rf_f)",
	"SELECT count(*) FROM rf_u WHERE id * interval '1 hour 2 min' IN (SELECT fid * interval '1 hour 2 min' FROM rf_f)",
	// A scalar of several rows: Postgres raises 21000 when it evaluates
	// it, and only then (which depends on its plan: an index scan on id
	// evaluates it first thing), so the proxy leaves it to the gather.
	"SELECT count(*) FROM rf_u WHERE id = (SELECT fid FROM rf_f)",
	// Correlated without a qualifier: the subquery fails alone (42703),
	// and the query is gathered.
	"SELECT id FROM rf_u WHERE EXISTS (SELECT 1 FROM rf_f WHERE fid = id AND uid <> id) ORDER BY id",
}

// TestRunFirstMatchesOnePostgres: queries whose subqueries run first
// answer exactly as one Postgres holding all the rows, in the simple and
// extended protocols (binary results too).
func TestRunFirstMatchesOnePostgres(t *testing.T) {
	ctx := t.Context()
	dsn := proxyWith(t, shardRunFirstTables)
	flat := runFirstTables(t, dsn)
	execOK(t, flat, "SET extra_float_digits = 0")
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement} {
		conn := dial(t, dsn, mode, map[string]string{"extra_float_digits": "0", "DateStyle": "SQL, DMY"})
		for _, q := range runFirstQueries {
			got, err := allRows(ctx, conn, q)
			want, ferr := allRows(ctx, flat, q)
			if sqlState(err) != sqlState(ferr) || (err == nil) != (ferr == nil) {
				t.Fatalf("%s: %s: %v; one Postgres: %v", mode, q, err, ferr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: %s:\n got %v\nwant %v", mode, q, got, want)
			}
		}
		// The client's parameters stay in the query.
		q := "SELECT id FROM rf_u WHERE id IN (SELECT fid FROM rf_f) AND id > $1 ORDER BY id"
		got, err := allRows(ctx, conn, q, 20)
		want, ferr := allRows(ctx, flat, q, 20)
		if err != nil || ferr != nil || !reflect.DeepEqual(got, want) || len(want) == 0 {
			t.Errorf("%s: %s: got %v, %v; want %v, %v", mode, q, got, err, want, ferr)
		}
	}
	simple := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	for _, c := range []struct{ sql, plan string }{
		{runFirstQueries[0], "run-first"},
		{"SELECT count(*) FROM rf_f WHERE x > (SELECT avg(x) FROM rf_f)", "run-first"},
		{runFirstQueries[len(runFirstQueries)-1], "run-first"}, // planned so; gathered when run
		{"SELECT id FROM rf_u u WHERE EXISTS (SELECT 1 FROM rf_f f WHERE f.fid = u.id)", "gather"},
	} {
		var plan string
		rows, err := simple.Query(ctx, "EXPLAIN (SHARDGATE) "+c.sql)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			vals, _ := rows.Values()
			plan = fmt.Sprint(vals[len(vals)-1])
		}
		if rows.Err() != nil || !strings.HasPrefix(plan, c.plan+" ") {
			t.Errorf("EXPLAIN (SHARDGATE) %s: plan %q, %v; want %s", c.sql, plan, rows.Err(), c.plan)
		}
	}
}

// TestRunFirstRefusals: subquery results past max_intermediate_result_size
// are refused with 54000, queries whose gather would exceed it run first
// within it, and inside a transaction block a run-first is refused like a
// gather; the connection stays usable.
func TestRunFirstRefusals(t *testing.T) {
	ctx := t.Context()
	dsn := proxyWith(t, func(c *topology.Config) {
		shardRunFirstTables(c)
		// A run-first of a few values fits (about 330 bytes a held
		// row, heldRowCost); a gather copying rf_u and rf_f (over 5 KB
		// from the other shards) or a run-first of all of rf_f's 60
		// values does not.
		c.MaxIntermediateResultSize = 1500
		c.Pool.Size = 2
	})
	runFirstTables(t, dsn)
	conn := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	for i := range 4 { // twice the pool: a leaked server connection would stall
		_, err := conn.Exec(ctx, "SELECT count(*) FROM rf_u WHERE id IN (SELECT fid FROM rf_f)")
		if sqlState(err) != "54000" || !strings.Contains(err.Error(), "subqueries") {
			t.Fatalf("run %d: %v, want 54000 for the subquery's rows", i, err)
		}
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM rf_u WHERE id IN (SELECT fid FROM rf_f WHERE uid = 3)").Scan(&n); err != nil || n != 3 {
			t.Fatalf("run %d: a small subquery: %d, %v; want 3", i, n, err)
		}
	}
	// Within a budget that gathering the tables exceeds: these ran first.
	for _, q := range []string{runFirstQueries[0], runFirstQueries[5], runFirstQueries[6], runFirstQueries[7], runFirstQueries[9], runFirstQueries[10]} {
		if _, err := allRows(ctx, conn, q); err != nil {
			t.Errorf("%s: %v", q, err)
		}
	}
	// The correlated one fell back to the gather, which exceeds it.
	_, err := conn.Exec(ctx, runFirstQueries[len(runFirstQueries)-1])
	if sqlState(err) != "54000" || !strings.Contains(err.Error(), "copies between shards") {
		t.Errorf("the gather fallback: %v, want the gather's 54000", err)
	}
	execOK(t, conn, "BEGIN")
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM rf_u WHERE id IN (SELECT fid FROM rf_f WHERE uid = 3)"); sqlState(err) != "0A000" {
		t.Fatalf("run-first in a transaction block: %v, want 0A000", err)
	}
	execOK(t, conn, "ROLLBACK")
}

// allRows reads a query's rows as text.
func allRows(ctx context.Context, conn *pgx.Conn, sql string, args ...any) ([][]string, error) {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return nil, err
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			row[i] = fmt.Sprint(v)
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

// TestRunFirstManyValuesGathered: a subquery with more values than a query
// text should hold (router.MaxRunFirstValues) leaves the query to the
// gather, which answers it, rather than refusing it.
func TestRunFirstManyValuesGathered(t *testing.T) {
	ctx := t.Context()
	dsn := proxyWith(t, func(c *topology.Config) {
		c.Tables["rf_big"] = topology.TableConfig{ShardKey: "id", KeyType: topology.KeyBigint}
	})
	conn := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	execOK(t, conn, "CREATE TABLE rf_big (id bigint PRIMARY KEY, v bigint)")
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP TABLE IF EXISTS rf_big") })
	const n = 200_000
	var data strings.Builder
	for i := range n {
		fmt.Fprintf(&data, "%d\t%d\n", i, n-i)
	}
	if _, err := conn.PgConn().CopyFrom(ctx, strings.NewReader(data.String()), "COPY rf_big (id, v) FROM STDIN"); err != nil {
		t.Fatal(err)
	}
	var got int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM rf_big WHERE id IN (SELECT v FROM rf_big WHERE v % 2 = 0)").Scan(&got); err != nil || got != n/2-1 {
		t.Fatalf("count: %d, %v; want %d", got, err, n/2-1)
	}
}

// TestRunFirstEmptyKeepsParameters: a subquery with no rows leaves the
// tested expression in place, so the client's parameters in it are still
// the query's (extended protocol).
func TestRunFirstEmptyKeepsParameters(t *testing.T) {
	ctx := t.Context()
	dsn := proxyWith(t, shardRunFirstTables)
	flat := runFirstTables(t, dsn)
	conn := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
	q := "SELECT count(*) FROM rf_u WHERE id > $1 AND $2::text NOT IN (SELECT name FROM rf_u WHERE id < 0)"
	var got, want int
	if err := conn.QueryRow(ctx, q, 3, "x").Scan(&got); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if err := flat.QueryRow(ctx, q, 3, "x").Scan(&want); err != nil || got != want || want == 0 {
		t.Fatalf("%s: %d, want %d (%v)", q, got, want, err)
	}
}
