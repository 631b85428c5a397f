package proxy_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/topology"
)

// sessionStateProxy serves the sandbox in transaction mode with a pool of
// one connection per shard, so an unpinned temporary table would be seen
// by the next client, and default_shard s1 for session objects.
func sessionStateProxy(t *testing.T, pin bool) (*proxy.Server, string) {
	t.Helper()
	srv, addr, stop, err := startServerOver(cluster, func(c *topology.Config) {
		c.DefaultShard = c.Shards[1].Name
		c.Pool.Mode = "transaction"
		c.Pool.Size = 2
		c.Pool.PinSessionState = pin
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return srv, addr
}

// TestTemporaryTablePinsInTransactionMode: a temporary table keeps its
// client's server connection, so the client sees it in every later
// transaction and other clients never do; the pin ends with the client.
func TestTemporaryTablePinsInTransactionMode(t *testing.T) {
	srv, addr := sessionStateProxy(t, true)
	ctx := t.Context()
	owner := connectTo(t, addr, pgx.QueryExecModeCacheStatement)
	if _, err := owner.Exec(ctx, "CREATE TEMP TABLE pin_scratch (id int)"); err != nil {
		t.Fatal(err)
	}
	if got := series(t, srv, "shardgate_pinned_clients", nil); got != 1 {
		t.Fatalf("pinned clients after CREATE TEMP TABLE: %v, want 1", got)
	}
	other := connectTo(t, addr, pgx.QueryExecModeSimpleProtocol)
	for i := range 10 {
		if _, err := owner.Exec(ctx, "INSERT INTO pin_scratch VALUES ($1)", i); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
		_, err := other.Exec(ctx, "SELECT * FROM pin_scratch")
		if sqlState(err) != "42P01" {
			t.Fatalf("another client reading the temporary table: %v, want 42P01", err)
		}
	}
	var n int
	if err := owner.QueryRow(ctx, "SELECT count(*) FROM pin_scratch").Scan(&n); err != nil || n != 10 {
		t.Fatalf("owner counts %d rows (%v), want 10", n, err)
	}
	owner.Close(ctx)
	waitFor(t, "the pin to end with its client", func() bool {
		return series(t, srv, "shardgate_pinned_clients", nil) == 0
	})
	// DISCARD ALL dropped the table before the connection went back.
	for range 4 {
		c := connectTo(t, addr, pgx.QueryExecModeSimpleProtocol)
		if _, err := c.Exec(ctx, "SELECT * FROM pin_scratch"); sqlState(err) != "42P01" {
			t.Fatalf("a later client sees the departed client's temporary table: %v", err)
		}
		c.Close(ctx)
	}
}

// TestSessionStateRefusedWithoutPinning: with pin_session_state off,
// transaction mode refuses what it cannot keep, with 0A000 naming the
// session-mode alternative, and the connection stays usable.
func TestSessionStateRefusedWithoutPinning(t *testing.T) {
	_, addr := sessionStateProxy(t, false)
	ctx := t.Context()
	conn := connectTo(t, addr, pgx.QueryExecModeSimpleProtocol)
	for _, sql := range []string{"CREATE TEMP TABLE nopin (id int)", "LISTEN nopin"} {
		_, err := conn.Exec(ctx, sql)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "0A000" || !strings.Contains(pe.Hint, "session pool mode") {
			t.Fatalf("%s: %v, want 0A000 with a hint naming session pool mode", sql, err)
		}
	}
	if _, err := conn.Exec(ctx, "CREATE TEMP TABLE nopin (id int) ON COMMIT DROP"); err != nil {
		t.Fatalf("a temporary table that ends with its transaction: %v", err)
	}
}

// TestListenNotifyWhileIdle: a listening client gets a notification while
// idle, without sending anything, in transaction mode (pinned) and in
// session mode; notifications also arrive with the answer to a query.
func TestListenNotifyWhileIdle(t *testing.T) {
	for _, mode := range []string{"transaction", "session"} {
		t.Run(mode, func(t *testing.T) {
			_, addr, stop, err := startServerOver(cluster, func(c *topology.Config) {
				c.DefaultShard = c.Shards[1].Name
				c.Pool.Mode = mode
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
			ctx := t.Context()
			listener := connectTo(t, addr, pgx.QueryExecModeCacheStatement)
			notifier := connectTo(t, addr, pgx.QueryExecModeSimpleProtocol)
			if _, err := listener.Exec(ctx, "LISTEN chat"); err != nil {
				t.Fatal(err)
			}
			for i, payload := range []string{"first", "second"} {
				sent := make(chan error, 1)
				go func() {
					time.Sleep(50 * time.Millisecond) // the listener is waiting by then
					_, err := notifier.Exec(context.Background(), "SELECT pg_notify('chat', $1)", payload)
					sent <- err
				}()
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				n, err := listener.WaitForNotification(wctx)
				cancel()
				if err != nil {
					t.Fatalf("notification %d: %v", i, err)
				}
				if n.Channel != "chat" || n.Payload != payload {
					t.Fatalf("notification %d: %+v, want chat/%s", i, n, payload)
				}
				if err := <-sent; err != nil {
					t.Fatal(err)
				}
			}
			// The relay let go of both connections: queries still work.
			var one int
			if err := listener.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Fatalf("query after waiting: %d, %v", one, err)
			}
			if _, err := notifier.Exec(ctx, "NOTIFY chat, 'inline'"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
			if _, err := listener.Exec(ctx, "SELECT 1"); err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			n, err := listener.WaitForNotification(wctx)
			if err != nil || n.Payload != "inline" {
				t.Fatalf("notification sent while the listener ran a query: %+v, %v", n, err)
			}
		})
	}
}

// TestCursors: DECLARE routes as its query, FETCH and CLOSE follow it;
// a cursor WITH HOLD outlives its transaction in transaction mode.
func TestCursors(t *testing.T) {
	_, addr := sessionStateProxy(t, true)
	ctx := t.Context()
	conn := connectTo(t, addr, pgx.QueryExecModeSimpleProtocol)
	if _, err := conn.Exec(ctx, "CREATE TABLE cursor_rows (id int)"); err != nil {
		t.Fatal(err)
	}
	dropOn(t, 1, "DROP TABLE IF EXISTS cursor_rows")
	if _, err := conn.Exec(ctx, "INSERT INTO cursor_rows SELECT generate_series(1, 10)"); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, tx, "DECLARE c CURSOR FOR SELECT id FROM cursor_rows ORDER BY id")
	if got := fetchIDs(t, tx, "FETCH 3 FROM c"); got != "1,2,3" {
		t.Fatalf("FETCH 3: %s", got)
	}
	mustExec(t, tx, "MOVE 2 IN c")
	if got := fetchIDs(t, tx, "FETCH NEXT FROM c"); got != "6" {
		t.Fatalf("FETCH after MOVE: %s", got)
	}
	mustExec(t, tx, "CLOSE c")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	if _, err := conn.Exec(ctx, "DECLARE h CURSOR WITH HOLD FOR SELECT id FROM cursor_rows ORDER BY id DESC"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"10,9", "8,7"} {
		rows, err := conn.Query(ctx, "FETCH 2 FROM h")
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			t.Fatalf("FETCH from a cursor WITH HOLD in a later transaction: %v", err)
		}
		if got := joinInts(ids); got != want {
			t.Fatalf("FETCH 2 FROM h: %s, want %s", got, want)
		}
	}
	if _, err := conn.Exec(ctx, "DECLARE s CURSOR FOR SELECT * FROM users"); sqlState(err) != "0A000" {
		t.Fatalf("a cursor over every shard: %v, want 0A000", err)
	}
}

// TestDoAndCallOnDefaultShard: DO and CALL run on the default shard.
func TestDoAndCallOnDefaultShard(t *testing.T) {
	_, addr := sessionStateProxy(t, true)
	ctx := t.Context()
	conn := connectTo(t, addr, pgx.QueryExecModeSimpleProtocol)
	if _, err := conn.Exec(ctx, "CREATE TABLE do_log (v text)"); err != nil {
		t.Fatal(err)
	}
	dropOn(t, 1, "DROP TABLE IF EXISTS do_log")
	// A function is DDL for every shard (plpgsql checks its tables when called).
	dropOn(t, 0, "DROP PROCEDURE IF EXISTS do_note(text)")
	dropOn(t, 1, "DROP PROCEDURE IF EXISTS do_note(text)")
	if _, err := conn.Exec(ctx, "DO $$BEGIN INSERT INTO do_log VALUES ('from do'); END$$"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE PROCEDURE do_note(t text) LANGUAGE plpgsql AS $$BEGIN INSERT INTO do_log VALUES (t); END$$"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CALL do_note('from call')"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := connectShard(t, 1).QueryRow(ctx, "SELECT count(*) FROM do_log WHERE v IN ('from do', 'from call')").Scan(&n); err != nil || n != 2 {
		t.Fatalf("default shard has %d rows (%v), want 2", n, err)
	}
}

func fetchIDs(t *testing.T, tx pgx.Tx, sql string) string {
	t.Helper()
	rows, err := tx.Query(t.Context(), sql)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return joinInts(ids)
}

func joinInts(ids []int32) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(id)))
	}
	return b.String()
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
