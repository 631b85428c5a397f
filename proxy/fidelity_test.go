package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardgate/shardgate/topology"
)

// TestFatalStaysFatal: a server ending the client's session (the client
// terminating its own backend, an idle_in_transaction_session_timeout)
// reaches the client as the FATAL it is, with its SQLSTATE, and the proxy
// closes the client connection, as Postgres does (pgx destroys such a
// connection only then). One session ending says nothing of the server's
// health: no ban, and the next client is served at once.
func TestFatalStaysFatal(t *testing.T) {
	for _, mode := range []string{"transaction", "session"} {
		t.Run(mode, func(t *testing.T) {
			// Primary reads: a replica read is not the client's session
			// (replicaLost), and pgx's tests run on a primary.
			srv, addr, stop, err := startServer(func(c *topology.Config) {
				c.Pool.Mode = mode
				c.Consistency = "primary"
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
			dsn := "postgres://postgres@" + addr + "/app?sslmode=disable"
			ctx := t.Context()

			conn := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
			_, err = conn.BeginTx(ctx, pgx.TxOptions{BeginQuery: "select pg_terminate_backend(pg_backend_pid())"})
			assertFatal(t, conn, err, "57P01")

			conn = dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "SELECT set_config('idle_in_transaction_session_timeout', '100', true)"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(400 * time.Millisecond)
			_, err = tx.Exec(ctx, "SELECT 1")
			assertFatal(t, conn, err, "25P03")

			assertClosedAfterFatal(t, dsn)

			if bans := series(t, srv, "shardgate_server_bans_total", nil); bans != 0 {
				t.Errorf("%v bans after sessions ended by the server, want none", bans)
			}
			next := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
			var one int
			if err := next.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Fatalf("the next client: %v", err)
			}
		})
	}
}

func assertFatal(t *testing.T, conn *pgx.Conn, err error, code string) {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("got %v, want a server error", err)
	}
	if pgErr.Severity != "FATAL" || pgErr.SeverityUnlocalized != "FATAL" || pgErr.Code != code {
		t.Fatalf("got %s/%s %s %q, want FATAL %s", pgErr.Severity, pgErr.SeverityUnlocalized, pgErr.Code, pgErr.Message, code)
	}
	if !conn.IsClosed() {
		t.Fatal("the client connection is still open after a FATAL")
	}
}

// assertClosedAfterFatal checks on the wire that the proxy closes the
// client connection after relaying a FATAL (pgx alone would close its end).
func assertClosedAfterFatal(t *testing.T, dsn string) {
	t.Helper()
	pc, err := pgconn.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Conn.Close()
	hc.Conn.SetDeadline(time.Now().Add(10 * time.Second))
	fe := hc.Frontend
	fe.Send(&pgproto3.Query{String: "select pg_terminate_backend(pg_backend_pid())"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("no FATAL before the connection ended: %v", err)
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			if e.Severity != "FATAL" {
				t.Fatalf("got %s %s, want FATAL", e.Severity, e.Code)
			}
			break
		}
	}
	if msg, err := fe.Receive(); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("after the FATAL: %T %v, want the connection closed", msg, err)
	}
}

// TestBackendPIDs: the process ids the proxy gives its clients are what a
// server's are, positive int4 values distinct among live sessions, and a
// cancel with one still reaches that client's query.
func TestBackendPIDs(t *testing.T) {
	ctx := t.Context()
	seen := map[uint32]bool{}
	var conns []*pgconn.PgConn
	for range 60 {
		c, err := pgconn.Connect(ctx, proxyDSN)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		pid := c.PID()
		if pid == 0 || pid > math.MaxInt32 {
			t.Fatalf("process id %d is not a positive int4", pid)
		}
		if seen[pid] {
			t.Fatalf("process id %d given to two live clients", pid)
		}
		seen[pid] = true
		conns = append(conns, c)
	}
	victim := conns[len(conns)/2]
	result := make(chan error, 1)
	go func() {
		_, err := victim.Exec(context.Background(), "SELECT pg_sleep(30)").ReadAll()
		result <- err
	}()
	time.Sleep(200 * time.Millisecond)
	if err := victim.CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-result:
		if sqlState(err) != "57014" {
			t.Fatalf("cancelled query: %v, want 57014", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the cancel did not reach the query")
	}
}

// TestSQLPrepare: SQL-level PREPARE, EXECUTE and DEALLOCATE belong to the
// client, not to whichever server connection it has at the moment: in
// transaction mode the statements keep working as its statements move
// between server connections and shards, and nobody else sees them.
func TestSQLPrepare(t *testing.T) {
	for _, mode := range []string{"transaction", "session"} {
		t.Run(mode, func(t *testing.T) {
			dsn := proxyWith(t, func(c *topology.Config) {
				c.Pool.Mode = mode
				c.Pool.Size = 2
			})
			ctx := t.Context()
			conn, err := pgconn.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			exec := func(sql string) ([]*pgconn.Result, error) { return conn.Exec(ctx, sql).ReadAll() }
			must := func(sql string) []*pgconn.Result {
				t.Helper()
				res, err := exec(sql)
				if err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
				return res
			}
			fails := func(sql, code string) {
				t.Helper()
				if _, err := exec(sql); sqlState(err) != code {
					t.Fatalf("%s: got %v, want SQLSTATE %s", sql, err, code)
				}
			}
			base := int64(48_000_000)
			if mode == "session" {
				base = 48_100_000
			}
			keys := keysOnShards(t, base, 20)
			must("PREPARE ins(bigint, text) AS INSERT INTO users (id, name) VALUES ($1, $2)")
			must("PREPARE sel (bigint) AS SELECT name FROM users WHERE id = $1;")
			for _, k := range keys {
				if res := must(fmt.Sprintf("EXECUTE ins(%d, 'n%d')", k, k)); res[0].CommandTag.String() != "INSERT 0 1" {
					t.Fatalf("EXECUTE ins: tag %q", res[0].CommandTag)
				}
			}
			for _, k := range keys {
				res := must(fmt.Sprintf("EXECUTE sel(%d)", k))
				if len(res[0].Rows) != 1 || string(res[0].Rows[0][0]) != fmt.Sprintf("n%d", k) {
					t.Fatalf("EXECUTE sel(%d): %q", k, res[0].Rows)
				}
			}
			// Declared parameter types are the statement's, as in Postgres.
			must("PREPARE len(text) AS SELECT length($1), pg_typeof($1)::text")
			if res := must("EXECUTE len('abcd')"); string(res[0].Rows[0][0]) != "4" || string(res[0].Rows[0][1]) != "text" {
				t.Fatalf("EXECUTE len: %q", res[0].Rows)
			}
			if res := must("EXECUTE len(upper('ab'))"); string(res[0].Rows[0][0]) != "2" {
				t.Fatalf("EXECUTE with an expression: %q", res[0].Rows)
			}
			fails(fmt.Sprintf("EXECUTE sel(%d + 0)", keys[0]), "0A000") // an expression cannot pick the shard
			fails("PREPARE sel(bigint) AS SELECT 1", "42P05")
			fails("PREPARE bad AS SELECT * FROM no_such_table", "42P01")
			fails("EXECUTE bad", "26000")

			other, err := pgconn.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close(context.Background())
			if _, err := other.Exec(ctx, "EXECUTE sel(1)").ReadAll(); sqlState(err) != "26000" {
				t.Fatalf("another client ran this client's statement: %v", err)
			}

			// In a transaction block; a failed one refuses them as any statement.
			must("BEGIN")
			must(fmt.Sprintf("EXECUTE ins(%d, 'tx')", base+100))
			must("PREPARE in_tx AS SELECT 1")
			must("COMMIT")
			must("EXECUTE in_tx")
			if res := must(fmt.Sprintf("EXECUTE sel(%d)", base+100)); len(res[0].Rows) != 1 {
				t.Fatal("the row inserted by EXECUTE in a transaction is missing")
			}
			must("BEGIN")
			fails("SELECT 1/0", "22012")
			fails(fmt.Sprintf("EXECUTE sel(%d)", keys[0]), "25P02")
			must("ROLLBACK")

			must("DEALLOCATE sel")
			fails(fmt.Sprintf("EXECUTE sel(%d)", keys[0]), "26000")
			fails("DEALLOCATE sel", "26000")
			if res := must("DEALLOCATE PREPARE ALL"); res[0].CommandTag.String() != "DEALLOCATE ALL" {
				t.Fatalf("DEALLOCATE ALL: tag %q", res[0].CommandTag)
			}
			fails("EXECUTE ins(1, 'x')", "26000")

			// Protocol-level statements share the namespace: pgx's reset
			// (DEALLOCATE ALL) lets it prepare the same names again.
			if _, err := conn.Prepare(ctx, "ps1", "SELECT $1::int + 1", nil); err != nil {
				t.Fatal(err)
			}
			if res := must("EXECUTE ps1(41)"); string(res[0].Rows[0][0]) != "42" {
				t.Fatalf("EXECUTE of a protocol-level statement: %q", res[0].Rows)
			}
			must("DEALLOCATE ALL")
			if _, err := conn.Prepare(ctx, "ps1", "SELECT $1::int + 2", nil); err != nil {
				t.Fatalf("preparing a name again after DEALLOCATE ALL: %v", err)
			}
			res := conn.ExecPrepared(ctx, "ps1", [][]byte{[]byte("40")}, nil, nil).Read()
			if res.Err != nil || string(res.Rows[0][0]) != "42" {
				t.Fatalf("the statement prepared again: %v %q", res.Err, res.Rows)
			}
		})
	}
}

// TestStaleSharedStatements: server-side statements are shared between
// clients, so one that went stale must not stay stale for the next user.
// A changed result type reaches the client once (it holds the old row
// description, and pgx expects the error, then prepares again); a type
// that was dropped and created again is cured by preparing afresh, unseen.
func TestStaleSharedStatements(t *testing.T) {
	dsn := onePoolProxy(t, "fid_stale")
	ctx := t.Context()
	setup := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	execEach(t, setup,
		"DROP TABLE IF EXISTS fid_stale",
		"CREATE TABLE fid_stale (id bigint PRIMARY KEY, f1 int NOT NULL, f2 int NOT NULL)",
		"INSERT INTO fid_stale (id, f1, f2) VALUES (1, 10, 20)",
		"DROP TYPE IF EXISTS fid_mood",
		"CREATE TYPE fid_mood AS ENUM ('sad', 'ok')")

	const get = "SELECT * FROM fid_stale WHERE id = $1"
	a := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
	var id, f1, f2 int
	if err := a.QueryRow(ctx, get, 1).Scan(&id, &f1, &f2); err != nil {
		t.Fatal(err)
	}
	if _, err := setup.Exec(ctx, "ALTER TABLE fid_stale DROP COLUMN f1"); err != nil {
		t.Fatal(err)
	}
	err := a.QueryRow(ctx, get, 1).Scan(&id, &f2)
	if err == nil || !strings.Contains(err.Error(), "cached plan must not change result type") {
		t.Fatalf("after the column went: %v, want the error Postgres gives", err)
	}
	if err := a.QueryRow(ctx, get, 1).Scan(&id, &f2); err != nil || f2 != 20 {
		t.Fatalf("prepared again after the error: %v (f2 %d)", err, f2)
	}
	b := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
	if err := b.QueryRow(ctx, get, 1).Scan(&id, &f2); err != nil || f2 != 20 {
		t.Fatalf("the next client: %v (f2 %d)", err, f2)
	}

	const mood = "SELECT $1::fid_mood::text"
	var got string
	if err := a.QueryRow(ctx, mood, "ok").Scan(&got); err != nil || got != "ok" {
		t.Fatalf("%s: %v %q", mood, err, got)
	}
	for _, sql := range []string{"DROP TYPE fid_mood", "CREATE TYPE fid_mood AS ENUM ('sad', 'ok')"} {
		if _, err := setup.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	c := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
	if err := c.QueryRow(ctx, mood, "sad").Scan(&got); err != nil || got != "sad" {
		t.Fatalf("a new client after the type was created again: %v %q", err, got)
	}
}

// TestSettingsInBatches: SET, RESET and DISCARD ALL sent with the extended
// protocol among other statements (a pgx batch, a pipeline) are the
// client's session settings like any other: they follow it to every
// server connection and shard, and leave no trace for the next client.
func TestSettingsInBatches(t *testing.T) {
	dsn := proxyWith(t, func(c *topology.Config) { c.Pool.Size = 1 })
	ctx := t.Context()
	keys := keysOnShards(t, 49_000_000, 20)
	// Checked with the simple protocol: DISCARD ALL drops pgx's prepared
	// statements, as it would on a direct connection.
	appName := func(conn *pgx.Conn, key int64) string {
		t.Helper()
		var app string
		if err := conn.QueryRow(ctx, "SELECT current_setting('application_name') FROM (SELECT 1 FROM users WHERE id = $1 UNION ALL SELECT 1) s LIMIT 1", pgx.QueryExecModeSimpleProtocol, key).Scan(&app); err != nil {
			t.Fatal(err)
		}
		return app
	}
	sendBatch := func(conn *pgx.Conn, queue func(b *pgx.Batch)) error {
		b := &pgx.Batch{}
		queue(b)
		return conn.SendBatch(ctx, b).Close()
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec} {
		conn := dial(t, dsn, mode, nil)
		err := sendBatch(conn, func(b *pgx.Batch) {
			b.Queue("SET application_name = 'fid_batch'")
			b.Queue("SELECT 1 FROM users WHERE id = $1", keys[0])
		})
		if err != nil {
			t.Fatalf("%v: batch with a SET: %v", mode, err)
		}
		for _, k := range keys[:8] {
			if app := appName(conn, k); app != "fid_batch" {
				t.Fatalf("%v: after a SET in a batch, key %d sees application_name %q", mode, k, app)
			}
		}
		other := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
		for _, k := range keys[:8] {
			if app := appName(other, k); app == "fid_batch" {
				t.Fatalf("%v: another client sees the batch's SET (key %d)", mode, k)
			}
		}
		err = sendBatch(conn, func(b *pgx.Batch) {
			b.Queue("SELECT 1 FROM users WHERE id = $1", keys[1])
			b.Queue("RESET application_name")
		})
		if err != nil {
			t.Fatalf("%v: batch with a RESET: %v", mode, err)
		}
		for _, k := range keys[:8] {
			if app := appName(conn, k); app == "fid_batch" {
				t.Fatalf("%v: after a RESET in a batch, key %d still sees the SET", mode, k)
			}
		}
		if _, err := conn.Exec(ctx, "SET application_name = 'fid_discard'"); err != nil {
			t.Fatal(err)
		}
		if err := sendBatch(conn, func(b *pgx.Batch) { b.Queue("DISCARD ALL") }); err != nil {
			t.Fatalf("%v: DISCARD ALL in a batch: %v", mode, err)
		}
		for _, k := range keys[:4] {
			if app := appName(conn, k); app == "fid_discard" {
				t.Fatalf("%v: DISCARD ALL in a batch left the SET (key %d)", mode, k)
			}
		}
	}
}

// TestDeallocateInBatch: DEALLOCATE sent with the extended protocol (as
// pipelines and pgx's non-simple modes send it) forgets the client's
// statements like the simple-protocol one does.
func TestDeallocateInBatch(t *testing.T) {
	ctx := t.Context()
	conn := connectLow(t)
	if _, err := conn.Prepare(ctx, "fid_d1", "SELECT 1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Prepare(ctx, "fid_d2", "SELECT 2", nil); err != nil {
		t.Fatal(err)
	}
	res := conn.ExecParams(ctx, "DEALLOCATE fid_d1", nil, nil, nil, nil).Read()
	if res.Err != nil || res.CommandTag.String() != "DEALLOCATE" {
		t.Fatalf("DEALLOCATE fid_d1: %v %q", res.Err, res.CommandTag)
	}
	if res := conn.ExecParams(ctx, "DEALLOCATE fid_d1", nil, nil, nil, nil).Read(); sqlState(res.Err) != "26000" {
		t.Fatalf("DEALLOCATE of a deallocated statement: %v, want 26000", res.Err)
	}
	if _, err := conn.Prepare(ctx, "fid_d1", "SELECT 11", nil); err != nil {
		t.Fatalf("preparing the name again: %v", err)
	}
	res = conn.ExecParams(ctx, "DEALLOCATE ALL", nil, nil, nil, nil).Read()
	if res.Err != nil || res.CommandTag.String() != "DEALLOCATE ALL" {
		t.Fatalf("DEALLOCATE ALL: %v %q", res.Err, res.CommandTag)
	}
	for _, name := range []string{"fid_d1", "fid_d2"} {
		if _, err := conn.Prepare(ctx, name, "SELECT 3", nil); err != nil {
			t.Fatalf("preparing %s again after DEALLOCATE ALL: %v", name, err)
		}
	}
	res = conn.ExecPrepared(ctx, "fid_d2", nil, nil, nil).Read()
	if res.Err != nil || string(res.Rows[0][0]) != "3" {
		t.Fatalf("the statement prepared again: %v %q", res.Err, res.Rows)
	}
}

// TestPrepareAfterDDL: a statement prepared again after DDL changed its
// parameter types gets the new types, as from Postgres, though another
// server-side statement with the same text predates the DDL (pgx's
// TestStmtCacheInvalidationExec, with a pool of one connection).
func TestPrepareAfterDDL(t *testing.T) {
	dsn := onePoolProxy(t, "fid_ddl")
	ctx := t.Context()
	conn := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
	execEach(t, conn, "DROP TABLE IF EXISTS fid_ddl", "CREATE TABLE fid_ddl (id bigint PRIMARY KEY, f1 int NOT NULL)")
	const insert = "INSERT INTO fid_ddl (id, f1) VALUES ($1, $2)"
	if _, err := conn.Exec(ctx, insert, 1, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "ALTER TABLE fid_ddl ALTER COLUMN f1 TYPE boolean USING f1::boolean"); err != nil {
		t.Fatal(err)
	}
	// pgx still holds int4 for $2, so it fails before sending, and
	// prepares again on the next try.
	if _, err := conn.Exec(ctx, insert, 2, true); err == nil || !strings.Contains(err.Error(), "failed to encode args[1]") {
		t.Fatalf("with the old description: %v, want pgx's encode error", err)
	}
	if _, err := conn.Exec(ctx, insert, 2, true); err != nil {
		t.Fatalf("prepared again after the DDL: %v", err)
	}
}

// execEach runs each statement on conn, failing the test at the first error.
func execEach(t *testing.T, conn *pgx.Conn, sqls ...string) {
	t.Helper()
	for _, sql := range sqls {
		if _, err := conn.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// onePoolProxy serves a proxy with one server connection per shard, reads
// on the primaries, and the table sharded by a bigint id: every client shares
// one connection, and with it the server-side statements.
func onePoolProxy(t *testing.T, table string) string {
	t.Helper()
	return proxyWith(t, func(c *topology.Config) {
		c.Pool.Size = 1
		c.Consistency = "primary"
		c.Tables[table] = topology.TableConfig{ShardKey: "id", KeyType: topology.KeyBigint}
	})
}
