package proxy_test

import (
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func connectLow(t *testing.T) *pgconn.PgConn {
	t.Helper()
	conn, err := pgconn.Connect(t.Context(), proxyDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(t.Context()) })
	return conn
}

// TestCloseStatement: Close of a named statement forgets it for the client
// (a later Bind fails as in Postgres) and lets the name be prepared again.
func TestCloseStatement(t *testing.T) {
	ctx := t.Context()
	conn := connectLow(t)
	if _, err := conn.Prepare(ctx, "q", "SELECT name FROM users WHERE id = $1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Prepare(ctx, "q", "SELECT 1", nil); sqlState(err) != "42P05" {
		t.Fatalf("preparing an existing name: %v, want 42P05", err)
	}
	if err := conn.Deallocate(ctx, "q"); err != nil {
		t.Fatal(err)
	}
	res := conn.ExecPrepared(ctx, "q", [][]byte{[]byte("1")}, nil, nil).Read()
	if sqlState(res.Err) != "26000" {
		t.Fatalf("executing a closed statement: %v, want 26000", res.Err)
	}
	if _, err := conn.Prepare(ctx, "q", "SELECT $1::int + 1", nil); err != nil {
		t.Fatalf("re-prepare after close: %v", err)
	}
	res = conn.ExecPrepared(ctx, "q", [][]byte{[]byte("41")}, nil, nil).Read()
	if res.Err != nil || len(res.Rows) != 1 || string(res.Rows[0][0]) != "42" {
		t.Fatalf("re-prepared statement: %+v", res)
	}
}

// TestPipelineWithFlush sends a pipeline with a Flush in the middle: the
// proxy must answer what was sent so far, hold the server connection, and
// finish the batch at Sync.
func TestPipelineWithFlush(t *testing.T) {
	ctx := t.Context()
	conn := connectLow(t)
	keys := keysOnShards(t, 7_000_000, 20)
	for _, k := range keys[:2] {
		if _, err := conn.Exec(ctx, "INSERT INTO users (id, name) VALUES ("+strconv.FormatInt(k, 10)+", 'piped')").ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	p := conn.StartPipeline(ctx)
	p.SendPrepare("byid", "SELECT name FROM users WHERE id = $1", nil)
	p.SendQueryPrepared("byid", [][]byte{[]byte(strconv.FormatInt(keys[0], 10))}, nil, nil)
	p.SendFlushRequest()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.GetResults(); err != nil { // statement description
		t.Fatal(err)
	}
	first, err := p.GetResults()
	if err != nil {
		t.Fatal(err)
	}
	rows := first.(*pgconn.ResultReader).Read()
	if rows.Err != nil || len(rows.Rows) != 1 || string(rows.Rows[0][0]) != "piped" {
		t.Fatalf("first result before Sync: %+v", rows)
	}
	p.SendQueryPrepared("byid", [][]byte{[]byte(strconv.FormatInt(keys[0], 10))}, nil, nil)
	p.SendPipelineSync()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	second, err := p.GetResults()
	if err != nil {
		t.Fatal(err)
	}
	if rows := second.(*pgconn.ResultReader).Read(); rows.Err != nil || len(rows.Rows) != 1 {
		t.Fatalf("second result: %+v", rows)
	}
	if _, err := p.GetResults(); err != nil { // PipelineSync
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if res, err := conn.Exec(ctx, "SELECT 1").ReadAll(); err != nil || string(res[0].Rows[0][0]) != "1" {
		t.Fatalf("after the pipeline: %v", err)
	}
}

// TestPipelineFlushAfterError: after an error in a flushed batch the
// server ignores everything up to Sync, so statements flushed after it get
// no answer (not a hang), and the Sync ends the skipping, as in Postgres.
func TestPipelineFlushAfterError(t *testing.T) {
	ctx := t.Context()
	conn := connectLow(t)
	p := conn.StartPipeline(ctx)
	p.SendQueryParams("SELECT 1", nil, nil, nil, nil)
	p.SendQueryParams("SELECT 1/(3-n) FROM generate_series(1, 10) n", nil, nil, nil, nil)
	p.SendQueryParams("SELECT 2", nil, nil, nil, nil)
	p.SendFlushRequest()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := pipelineValue(t, p); got != "1" {
		t.Fatalf("first result %q, want 1", got)
	}
	res, err := p.GetResults()
	if err != nil {
		t.Fatal(err)
	}
	if rr := res.(*pgconn.ResultReader).Read(); sqlState(rr.Err) != "22012" {
		t.Fatalf("second result: %v, want 22012", rr.Err)
	}
	if res, err := p.GetResults(); res != nil || err != nil {
		t.Fatalf("after the error: %#v, %v; want nothing until Sync", res, err)
	}
	p.SendQueryParams("SELECT 3", nil, nil, nil, nil)
	p.SendFlushRequest()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if res, err := p.GetResults(); res != nil || err != nil {
		t.Fatalf("a statement flushed while the server skips: %#v, %v; want nothing", res, err)
	}
	p.SendQueryParams("SELECT 4", nil, nil, nil, nil)
	p.SendPipelineSync()
	p.SendQueryParams("SELECT 5", nil, nil, nil, nil)
	p.SendFlushRequest()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	expectPipelineSync(t, p)
	if got := pipelineValue(t, p); got != "5" {
		t.Fatalf("after Sync: %q, want 5", got)
	}
	p.SendPipelineSync()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	expectPipelineSync(t, p)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if res, err := conn.Exec(ctx, "SELECT 6").ReadAll(); err != nil || string(res[0].Rows[0][0]) != "6" {
		t.Fatalf("after the pipeline: %v", err)
	}
}

// TestDeferredErrorAtSync: a deferred constraint fails when the Sync
// commits the implicit transaction: the error answers the Sync, then
// ReadyForQuery follows, as from Postgres, and the session goes on.
func TestDeferredErrorAtSync(t *testing.T) {
	_, addr := sessionStateProxy(t, true)
	ctx := t.Context()
	conn := connectTo(t, addr, pgx.QueryExecModeExec)
	if _, err := conn.Exec(ctx, `CREATE TEMP TABLE deferred_t (id text PRIMARY KEY, n int NOT NULL,
		UNIQUE (n) DEFERRABLE INITIALLY DEFERRED); INSERT INTO deferred_t VALUES ('a', 1), ('b', 2)`); err != nil {
		t.Fatal(err)
	}
	r := conn.PgConn().ExecParams(ctx, "UPDATE deferred_t SET n = n + 1 WHERE id = 'a' RETURNING *", nil, nil, nil, nil).Read()
	if sqlState(r.Err) != "23505" {
		t.Fatalf("deferred unique violation: %v, want 23505", r.Err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT n FROM deferred_t WHERE id = 'a'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after the failed commit: n = %d, %v; want 1", n, err)
	}
}

// expectPipelineSync reads the next pipeline result, which must be a Sync's.
func expectPipelineSync(t *testing.T, p *pgconn.Pipeline) {
	t.Helper()
	res, err := p.GetResults()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.(*pgconn.PipelineSync); !ok {
		t.Fatalf("got %#v, want a PipelineSync", res)
	}
}

// pipelineValue reads the next pipeline result, one row of one column.
func pipelineValue(t *testing.T, p *pgconn.Pipeline) string {
	t.Helper()
	res, err := p.GetResults()
	if err != nil {
		t.Fatal(err)
	}
	rr, ok := res.(*pgconn.ResultReader)
	if !ok {
		t.Fatalf("got %#v, want a result", res)
	}
	r := rr.Read()
	if r.Err != nil || len(r.Rows) != 1 {
		t.Fatalf("result: %+v", r)
	}
	return string(r.Rows[0][0])
}

// TestNoticesReachTheClient: a COMMIT outside a transaction is answered by a
// server with a WARNING, which must reach the client.
func TestNoticesReachTheClient(t *testing.T) {
	var notices []string
	cfg, err := pgconn.ParseConfig(proxyDSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Code) }
	conn, err := pgconn.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), "COMMIT").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if len(notices) != 1 || notices[0] != "25P01" {
		t.Fatalf("notices %v, want one 25P01 warning", notices)
	}
}

// TestLargeResult streams a result far larger than the relay's buffers.
func TestLargeResult(t *testing.T) {
	conn := connect(t, pgx.QueryExecModeCacheStatement)
	var total int64
	rows, err := conn.Query(t.Context(), "SELECT g, repeat('x', 1000) FROM generate_series(1, 20000) g")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var g int64
		var pad string
		if err := rows.Scan(&g, &pad); err != nil {
			t.Fatal(err)
		}
		total += g
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if total != 20000*20001/2 {
		t.Fatalf("sum %d", total)
	}
	var big string
	if err := conn.QueryRow(t.Context(), "SELECT repeat('y', 100000)").Scan(&big); err != nil || len(big) != 100000 {
		t.Fatalf("a 100 kB row: len %d, %v", len(big), err)
	}
}
