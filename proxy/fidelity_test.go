package proxy_test

import (
	"context"
	"errors"
	"io"
	"math"
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
