package proxy_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

// onePerShard starts a proxy whose pools hold one server connection per
// shard, so every client shares the same server connections.
func onePerShard(t *testing.T) string {
	t.Helper()
	addr, stop, err := startProxy(func(c *topology.Config) { c.Pool.Size = 1 })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return "postgres://postgres@" + addr + "/app?sslmode=disable"
}

func dial(t *testing.T, dsn string, mode pgx.QueryExecMode, params map[string]string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func setting(t *testing.T, conn *pgx.Conn, name string) string {
	t.Helper()
	var v string
	if err := conn.QueryRow(t.Context(), "SELECT current_setting($1)", name).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestInterleavedSearchPath: two clients with different search_path share
// one server connection per shard and each always sees its own.
func TestInterleavedSearchPath(t *testing.T) {
	dsn := onePerShard(t)
	a := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
	b := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	if _, err := a.Exec(t.Context(), "SET search_path = sa, public"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(t.Context(), "SET search_path TO sb"); err != nil {
		t.Fatal(err)
	}
	plain := dial(t, dsn, pgx.QueryExecModeExec, nil)
	for i := 0; i < 20; i++ {
		if got := setting(t, a, "search_path"); got != "sa, public" {
			t.Fatalf("round %d: client a sees search_path %q", i, got)
		}
		if got := setting(t, b, "search_path"); got != "sb" {
			t.Fatalf("round %d: client b sees search_path %q", i, got)
		}
		if got := setting(t, plain, "search_path"); got != `"$user", public` {
			t.Fatalf("round %d: a client that set nothing sees %q", i, got)
		}
	}
}

func TestSettingsFollowTransactions(t *testing.T) {
	dsn := onePerShard(t)
	ctx := t.Context()
	conn := dial(t, dsn, pgx.QueryExecModeCacheStatement, map[string]string{"application_name": "startup-name"})
	if got := setting(t, conn, "application_name"); got != "startup-name" {
		t.Fatalf("startup application_name: %q", got)
	}
	if got := conn.PgConn().ParameterStatus("application_name"); got != "startup-name" {
		t.Fatalf("ParameterStatus application_name at startup: %q", got)
	}

	tx, _ := conn.Begin(ctx)
	if _, err := tx.Exec(ctx, "SET application_name = 'rolled-back'"); err != nil {
		t.Fatal(err)
	}
	tx.Rollback(ctx)
	if got := setting(t, conn, "application_name"); got != "startup-name" {
		t.Fatalf("after a rolled-back SET: %q", got)
	}

	tx, _ = conn.Begin(ctx)
	if _, err := tx.Exec(ctx, "SELECT 1 FROM users WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SET application_name = 'committed'"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := setting(t, conn, "application_name"); got != "committed" {
		t.Fatalf("after a committed SET: %q", got)
	}
	if got := conn.PgConn().ParameterStatus("application_name"); got != "committed" {
		t.Fatalf("ParameterStatus after SET: %q", got)
	}

	if _, err := conn.Exec(ctx, "RESET application_name"); err != nil {
		t.Fatal(err)
	}
	if got := setting(t, conn, "application_name"); got != "startup-name" {
		t.Fatalf("RESET should return to the startup value: %q", got)
	}
	if _, err := conn.Exec(ctx, "SET TIME ZONE 'America/New_York'"); err != nil {
		t.Fatal(err)
	}
	if got := conn.PgConn().ParameterStatus("TimeZone"); got != "America/New_York" {
		t.Fatalf("ParameterStatus TimeZone: %q", got)
	}
	if _, err := conn.Exec(ctx, "RESET ALL"); err != nil {
		t.Fatal(err)
	}
	if got := setting(t, conn, "TimeZone"); got == "America/New_York" {
		t.Fatal("RESET ALL kept the time zone")
	}
	if _, err := conn.Exec(ctx, "SET statement_timeout = 'not a duration'"); sqlState(err) != "22023" {
		t.Fatalf("invalid value: got %v, want Postgres's 22023", err)
	}
}

// TestStatementTimeoutIsPerClient: a client's statement_timeout applies to
// it alone, though the server connection is shared.
func TestStatementTimeoutIsPerClient(t *testing.T) {
	dsn := onePerShard(t)
	ctx := t.Context()
	short := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	other := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	if _, err := short.Exec(ctx, "SET statement_timeout = '50ms'"); err != nil {
		t.Fatal(err)
	}
	if _, err := short.Exec(ctx, "SELECT pg_sleep(0.5)"); sqlState(err) != "57014" {
		t.Fatalf("client with a 50ms timeout: got %v, want 57014", err)
	}
	began := time.Now()
	if _, err := other.Exec(ctx, "SELECT pg_sleep(0.2)"); err != nil {
		t.Fatalf("client without a timeout: %v", err)
	}
	if time.Since(began) < 200*time.Millisecond {
		t.Fatal("sleep returned early")
	}
}

func TestDiscardAll(t *testing.T) {
	conn := connectLow(t)
	ctx := t.Context()
	if _, err := conn.Prepare(ctx, "d", "SELECT 1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SET search_path = nowhere").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "DISCARD ALL").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if res := conn.ExecPrepared(ctx, "d", nil, nil, nil).Read(); sqlState(res.Err) != "26000" {
		t.Fatalf("prepared statement survived DISCARD ALL: %v", res.Err)
	}
	res, err := conn.Exec(ctx, "SELECT current_setting('search_path')").ReadAll()
	if err != nil || string(res[0].Rows[0][0]) != `"$user", public` {
		t.Fatalf("search_path after DISCARD ALL: %v %v", res, err)
	}
	if _, err := conn.Exec(ctx, "BEGIN; DISCARD ALL").ReadAll(); err == nil {
		t.Fatal("DISCARD ALL in a transaction block succeeded")
	}
}

// TestSetAmongStatements: a SET among a simple query's statements counts
// when their implicit transaction commits, and is undone with it when a
// later statement fails, as in Postgres; the client's later statements,
// on whichever server connection, see the outcome.
func TestSetAmongStatements(t *testing.T) {
	dsn := onePerShard(t)
	conn := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	ctx := t.Context()
	if _, err := conn.Exec(ctx, "SET search_path = among, public; SELECT 1"); err != nil {
		t.Fatal(err)
	}
	other := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	for range 5 {
		if got := setting(t, conn, "search_path"); got != "among, public" {
			t.Fatalf("after a committed SET among statements: %q", got)
		}
		if got := setting(t, other, "search_path"); got != `"$user", public` {
			t.Fatalf("another client sees %q", got)
		}
	}
	_, err := conn.Exec(ctx, "SET statement_timeout = '1ms'; SELECT pg_sleep(1)")
	if sqlState(err) != "57014" {
		t.Fatalf("statement timeout among statements: %v, want 57014", err)
	}
	if got := setting(t, conn, "statement_timeout"); got != "0" {
		t.Fatalf("statement_timeout after its implicit transaction failed: %q, want 0", got)
	}
}

// TestStartupSettingsShared: clients that started alike share their
// startup settings until one changes a setting; the change stays its own,
// and RESET ALL takes it back to what it started with.
func TestStartupSettingsShared(t *testing.T) {
	dsn := proxyWith(t, func(*topology.Config) {})
	params := map[string]string{"application_name": "shared-start", "search_path": "public"}
	a := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, params)
	b := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, params)
	show := func(conn *pgx.Conn) string {
		t.Helper()
		var v string
		if err := conn.QueryRow(t.Context(), "SHOW application_name").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if _, err := a.Exec(t.Context(), "SET application_name = 'changed'"); err != nil {
		t.Fatal(err)
	}
	if got, other := show(a), show(b); got != "changed" || other != "shared-start" {
		t.Fatalf("after one client's SET: it sees %q, the other %q", got, other)
	}
	c := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, params)
	if got := show(c); got != "shared-start" {
		t.Fatalf("a client starting after another's SET sees %q", got)
	}
	if _, err := a.Exec(t.Context(), "RESET ALL"); err != nil {
		t.Fatal(err)
	}
	if got := show(a); got != "shared-start" {
		t.Fatalf("after RESET ALL: %q", got)
	}
}
