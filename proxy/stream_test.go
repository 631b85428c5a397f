package proxy_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/topology"
)

// shardTable creates a table of its own for a test directly on every
// shard, filled by insert(shard), and drops it when the test ends.
func shardTable(t *testing.T, table string, insert func(shard int) string) {
	t.Helper()
	name, _, _ := strings.Cut(table, " ")
	for i := range cluster.Shards {
		db := connectShard(t, i)
		if _, err := db.Exec(t.Context(), "DROP TABLE IF EXISTS "+name+"; CREATE TABLE "+table+"; "+insert(i)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Exec(context.Background(), "DROP TABLE "+name) })
	}
}

// TestScatterStreams: a cross-shard SELECT is relayed as the shards produce
// it, not gathered first. Each shard holds 50,000 rows and the last one of
// s1 takes 1.5 s to produce: the client must see its first rows long before
// that, then every row in global order. A shard failing midway sends its
// error after the rows already relayed, and the connection stays usable.
func TestScatterStreams(t *testing.T) {
	ctx := t.Context()
	const perShard = 50000
	shardTable(t, "stream_rows (id bigint PRIMARY KEY)", func(i int) string {
		return fmt.Sprintf("INSERT INTO stream_rows SELECT 2 * g + %d FROM generate_series(1, %d) g", i, perShard)
	})
	last := int64(2*perShard + 1) // the highest id, on s1
	dsn := proxyWith(t, func(c *topology.Config) {
		c.Tables["stream_rows"] = topology.TableConfig{ShardKey: "id", KeyType: topology.KeyBigint}
	})
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		t.Run(mode.String(), func(t *testing.T) {
			conn := dial(t, dsn, mode, nil)
			began := time.Now()
			rows, err := conn.Query(ctx, "SELECT id, CASE WHEN id = $1 THEN pg_sleep(1.5)::text END FROM stream_rows ORDER BY id", last)
			if err != nil {
				t.Fatal(err)
			}
			var firstAt time.Duration
			n, prev := 0, int64(0)
			for rows.Next() {
				if n == 0 {
					firstAt = time.Since(began)
				}
				var id int64
				var slept *string
				if err := rows.Scan(&id, &slept); err != nil {
					t.Fatal(err)
				}
				if id <= prev {
					t.Fatalf("row %d: id %d after %d", n, id, prev)
				}
				prev = id
				n++
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			total := time.Since(began)
			t.Logf("first row after %v, all %d rows after %v", firstAt.Round(time.Millisecond), n, total.Round(time.Millisecond))
			if n != 2*perShard || prev != last {
				t.Errorf("%d rows ending at %d, want %d ending at %d", n, prev, 2*perShard, last)
			}
			if firstAt > 750*time.Millisecond || total < 1500*time.Millisecond {
				t.Errorf("first row after %v, last after %v: rows were not relayed as the shards produced them", firstAt, total)
			}

			// s1 fails at one of its rows; s0's rows may already be out.
			rows, err = conn.Query(ctx, "SELECT id, 1 / (id - $1) FROM stream_rows", last-2000)
			if err == nil {
				for rows.Next() {
				}
				err = rows.Err()
			}
			if sqlState(err) != "22012" {
				t.Fatalf("a shard's division by zero midway gave %v", err)
			}
			var one int
			if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Fatalf("connection after the failed stream: %v", err)
			}
		})
	}
}

// TestCancelScatter: a CancelRequest for a client whose query runs on
// every shard cancels it on every shard, streamed or gathered: 57014
// within a second of 30, and the connection goes on.
func TestCancelScatter(t *testing.T) {
	ctx := t.Context()
	shardTable(t, "cancel_rows (id bigint PRIMARY KEY)", func(i int) string {
		return fmt.Sprintf("INSERT INTO cancel_rows VALUES (%d)", i+1)
	})
	dsn := proxyWith(t, func(c *topology.Config) {
		c.Tables["cancel_rows"] = topology.TableConfig{ShardKey: "id", KeyType: topology.KeyBigint}
	})
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, sql := range []string{
		"SELECT id, pg_sleep(30)::text FROM cancel_rows",                 // streamed
		"SELECT count(*) FROM cancel_rows WHERE pg_sleep(30)::text = ''", // gathered
	} {
		result := make(chan error, 1)
		go func() {
			_, err := conn.Exec(context.Background(), sql).ReadAll()
			result <- err
		}()
		time.Sleep(300 * time.Millisecond)
		began := time.Now()
		if err := conn.CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-result:
			if sqlState(err) != "57014" || time.Since(began) > time.Second {
				t.Errorf("%s: got %v after %s, want 57014 within a second", sql, err, time.Since(began))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: not cancelled after 5 s", sql)
		}
		if res, err := conn.Exec(ctx, "SELECT 2").ReadAll(); err != nil || string(res[0].Rows[0][0]) != "2" {
			t.Fatalf("connection after cancel: %v", err)
		}
	}
}

// TestStreamClientGone: a client that disconnects in the middle of a
// streamed result leaves no server connection lent: the shards' readers
// stop and their connections go back (closed, being mid-answer).
func TestStreamClientGone(t *testing.T) {
	ctx := t.Context()
	shardTable(t, "gone_rows (id bigint PRIMARY KEY, pad text)", func(i int) string {
		return fmt.Sprintf("INSERT INTO gone_rows SELECT 2 * g + %d, repeat('x', 200) FROM generate_series(1, 50000) g", i)
	})
	srv, addr, stop, err := startServer(func(c *topology.Config) {
		c.Tables["gone_rows"] = topology.TableConfig{ShardKey: "id", KeyType: topology.KeyBigint}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	conn, err := pgconn.Connect(ctx, "postgres://postgres@"+addr+"/app?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	rr := conn.ExecParams(ctx, "SELECT id, pad FROM gone_rows ORDER BY id", nil, nil, nil, nil)
	for i := 0; i < 10 && rr.NextRow(); i++ {
	}
	conn.Conn().Close() // gone, without a Terminate
	active := func() float64 {
		return series(t, srv, "shardgate_pool_connections", map[string]string{"state": "active"})
	}
	for deadline := time.Now().Add(5 * time.Second); active() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v server connections still lent 5 s after the client left mid-stream", active())
		}
	}
	if n := series(t, srv, "shardgate_client_connections", nil); n != 0 {
		t.Errorf("%v client connections after the only client left", n)
	}
}
