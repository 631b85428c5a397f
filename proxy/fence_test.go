package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

// fenceProxy starts a proxy of its own (a fence would hold up every other
// test) with table sharded by id, created through it, and an admin user;
// mode is the pool mode. It returns the proxy's address and the console.
func fenceProxy(t *testing.T, table, mode string, edit func(*topology.Config)) (string, *pgconn.PgConn) {
	t.Helper()
	_, addr, stop, err := startServer(func(c *topology.Config) {
		c.AdminUsers = []string{"admin"}
		c.Pool.Mode = mode
		c.Tables[table] = topology.TableConfig{ShardKey: "id", KeyType: topology.KeyBigint}
		fastHealth(c)
		if edit != nil {
			edit(c)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	app := appConn(t, addr)
	for _, ddl := range []string{"DROP TABLE IF EXISTS %s", "CREATE TABLE %s (id bigint PRIMARY KEY, v text)"} {
		if _, err := app.Exec(t.Context(), fmt.Sprintf(ddl, table), pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
	}
	return addr, adminConn(t, addr)
}

func appConn(t *testing.T, addr string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), "postgres://postgres@"+addr+"/app?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// keyOn is the first key from base up that lives on shard.
func keyOn(t *testing.T, shard int, base int64) int64 {
	for k := base; ; k++ {
		if shardOf(t, k) == shard {
			return k
		}
	}
}

// console runs an admin command and returns its error.
func console(t *testing.T, admin *pgconn.PgConn, cmd string) error {
	t.Helper()
	_, err := admin.Exec(t.Context(), cmd).ReadAll()
	return err
}

func mustConsole(t *testing.T, admin *pgconn.PgConn, cmd string) {
	t.Helper()
	if err := console(t, admin, cmd); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
}

// async runs fn in a goroutine and returns the channel its error arrives on.
func async(fn func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return ch
}

// pending fails the test if ch delivers within d: the work is still queued.
func pending(t *testing.T, ch <-chan error, d time.Duration, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s finished while it should wait (err %v)", what, err)
	case <-time.After(d):
	}
}

// within returns what ch delivers within d, failing the test otherwise.
func within(t *testing.T, ch <-chan error, d time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("%s did not finish within %s", what, d)
		return nil
	}
}

// fenceRow is SHOW FENCES's row for shard.
func fenceRow(t *testing.T, admin *pgconn.PgConn, shard string) map[string]string {
	t.Helper()
	for _, r := range adminRows(t, admin, "SHOW FENCES") {
		if r["shard"] == shard {
			return r
		}
	}
	t.Fatalf("SHOW FENCES has no row for %s", shard)
	return nil
}

// TestFenceWaitsForOpenTransaction: a transaction already writing on s1
// keeps working while FENCE waits, and FENCE returns once it commits.
func TestFenceWaitsForOpenTransaction(t *testing.T) {
	addr, admin := fenceProxy(t, "fence_a", "transaction", nil)
	ctx := t.Context()
	app := appConn(t, addr)
	k1, k2 := keyOn(t, 1, 70_000_000), keyOn(t, 1, 70_000_100)
	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, tx, "INSERT INTO fence_a (id, v) VALUES ($1, 'a')", k1)
	fencer := adminConn(t, addr)
	fence := async(func() error { return console(t, fencer, "RESHARD FENCE 's1' TIMEOUT 10000") })
	pending(t, fence, 300*time.Millisecond, "FENCE with a transaction open on the shard")
	if got := fenceRow(t, admin, "s1"); got["fenced"] != "true" || got["transactions"] != "1" {
		t.Fatalf("SHOW FENCES while the transaction runs: %v", got)
	}
	done := async(func() error { _, err := tx.Exec(ctx, "INSERT INTO fence_a (id, v) VALUES ($1, 'b')", k2); return err })
	if err := within(t, done, 2*time.Second, "a statement of the open transaction"); err != nil {
		t.Fatal(err)
	}
	pending(t, fence, 100*time.Millisecond, "FENCE before COMMIT")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := within(t, fence, 2*time.Second, "FENCE after COMMIT"); err != nil {
		t.Fatal(err)
	}
	mustConsole(t, admin, "RESHARD UNFENCE")
	assertCount(t, app, "SELECT count(*) FROM fence_a WHERE id = $1", k2, 1)
}

// TestFenceQueuesWrites: writes and transactions that need the fenced
// shard wait (they do not fail) and run once it lifts; the other shard's
// writes and every read run meanwhile.
func TestFenceQueuesWrites(t *testing.T) {
	addr, admin := fenceProxy(t, "fence_b", "transaction", nil)
	ctx := t.Context()
	k1, k2, k0 := keyOn(t, 1, 71_000_000), keyOn(t, 1, 71_000_100), keyOn(t, 0, 71_000_000)
	seed := appConn(t, addr)
	if _, err := seed.Exec(ctx, "INSERT INTO fence_b (id, v) VALUES ($1, 'seed'), ($2, 'seed')", k2, k0); err != nil {
		t.Fatal(err)
	}
	mustConsole(t, admin, "RESHARD FENCE 's1'")

	writer, txWriter := appConn(t, addr), appConn(t, addr)
	write := async(func() error {
		_, err := writer.Exec(ctx, "INSERT INTO fence_b (id, v) VALUES ($1, 'queued')", k1)
		return err
	})
	inTx := async(func() error {
		return pgx.BeginFunc(ctx, txWriter, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "UPDATE fence_b SET v = 'tx' WHERE id = $1", k2)
			return err
		})
	})
	pending(t, write, 300*time.Millisecond, "an autocommit write on the fenced shard")
	pending(t, inTx, 50*time.Millisecond, "a transaction on the fenced shard")
	if got := fenceRow(t, admin, "s1"); got["queued"] != "2" {
		t.Fatalf("SHOW FENCES with two clients queued: %v", got)
	}

	// Reads, scatter reads and the other shard's writes are not held up.
	reader := appConn(t, addr)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{"SELECT count(*) FROM fence_b WHERE id = $1", []any{k2}},
		{"SELECT count(*) FROM fence_b", nil},
		{"UPDATE fence_b SET v = 'other shard' WHERE id = $1", []any{k0}},
	} {
		done := async(func() error { _, err := reader.Exec(ctx, q.sql, q.args...); return err })
		if err := within(t, done, 2*time.Second, q.sql+" during a fence"); err != nil {
			t.Fatal(err)
		}
	}
	var n int64
	if err := reader.QueryRow(ctx, "SELECT count(*) FROM fence_b WHERE id = $1", k2).Scan(&n); err != nil || n != 1 {
		t.Fatalf("keyed read on the fenced shard: %d, %v", n, err)
	}

	mustConsole(t, admin, "RESHARD UNFENCE")
	for _, ch := range []<-chan error{write, inTx} {
		if err := within(t, ch, 5*time.Second, "queued write after UNFENCE"); err != nil {
			t.Fatal(err)
		}
	}
	// Other clients wrote them: only the primary is sure to have them yet.
	assertCount(t, reader, "/* shardgate: role=primary */ SELECT count(*) FROM fence_b WHERE id = $1 AND v = 'queued'", k1, 1)
	assertCount(t, reader, "/* shardgate: role=primary */ SELECT count(*) FROM fence_b WHERE id = $1 AND v = 'tx'", k2, 1)
}

// TestFenceTimeout: a transaction left open makes FENCE fail after its
// TIMEOUT; the fence is lifted, so writes run again.
func TestFenceTimeout(t *testing.T) {
	addr, admin := fenceProxy(t, "fence_d", "transaction", nil)
	ctx := t.Context()
	app := appConn(t, addr)
	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	mustExec(t, tx, "INSERT INTO fence_d (id, v) VALUES ($1, 'open')", keyOn(t, 1, 72_000_000))
	began := time.Now()
	err = console(t, admin, "RESHARD FENCE 's1' TIMEOUT 300")
	if sqlState(err) != "57014" || !strings.Contains(err.Error(), "1 transactions still ran") {
		t.Fatalf("FENCE past its timeout: %v, want 57014 naming 1 transaction", err)
	}
	if d := time.Since(began); d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("FENCE TIMEOUT 300 answered after %s", d)
	}
	if got := fenceRow(t, admin, "s1"); got["fenced"] != "false" {
		t.Fatalf("fence after a failed FENCE: %v", got)
	}
	other, k := appConn(t, addr), keyOn(t, 1, 72_000_100)
	done := async(func() error {
		_, err := other.Exec(ctx, "INSERT INTO fence_d (id, v) VALUES ($1, 'after')", k)
		return err
	})
	if err := within(t, done, 2*time.Second, "a write after the fence was lifted"); err != nil {
		t.Fatal(err)
	}
}

// TestFenceCancel: a client's cancel request ends its wait behind a fence
// with 57014, and the connection stays usable.
func TestFenceCancel(t *testing.T) {
	addr, admin := fenceProxy(t, "fence_h", "transaction", nil)
	ctx := t.Context()
	app, k := appConn(t, addr), keyOn(t, 1, 73_000_000)
	mustConsole(t, admin, "RESHARD FENCE 's1'")
	defer console(t, admin, "RESHARD UNFENCE")
	write := async(func() error {
		_, err := app.Exec(ctx, "INSERT INTO fence_h (id, v) VALUES ($1, 'x')", k)
		return err
	})
	pending(t, write, 200*time.Millisecond, "a write behind the fence")
	if err := app.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := within(t, write, 2*time.Second, "the canceled write"); sqlState(err) != "57014" {
		t.Fatalf("canceled queued write: %v, want 57014", err)
	}
	if got := fenceRow(t, admin, "s1"); got["queued"] != "0" {
		t.Fatalf("SHOW FENCES after the cancel: %v", got)
	}
	assertCount(t, app, "SELECT count(*) FROM fence_h WHERE id = $1", k, 0) // reads run while fenced
}

// TestDDLLock: RESHARD DDL LOCK refuses DDL on sharded tables with 0A000
// until DDL UNLOCK; other statements run.
func TestDDLLock(t *testing.T) {
	addr, admin := fenceProxy(t, "fence_f", "transaction", nil)
	ctx := t.Context()
	app := appConn(t, addr)
	mustConsole(t, admin, "RESHARD DDL LOCK")
	_, err := app.Exec(ctx, "ALTER TABLE fence_f ADD COLUMN IF NOT EXISTS extra int")
	if sqlState(err) != "0A000" || !strings.Contains(err.Error(), `table "fence_f" is being resharded`) {
		t.Fatalf("ALTER TABLE under DDL LOCK: %v, want 0A000", err)
	}
	_, err = app.Exec(ctx, "DROP TABLE IF EXISTS fence_f", pgx.QueryExecModeSimpleProtocol)
	if sqlState(err) != "0A000" {
		t.Fatalf("DROP TABLE under DDL LOCK: %v, want 0A000", err)
	}
	if _, err := app.Exec(ctx, "INSERT INTO fence_f (id, v) VALUES (1, 'dml runs')"); err != nil {
		t.Fatalf("INSERT under DDL LOCK: %v", err)
	}
	if _, err := app.Exec(ctx, "CREATE TABLE IF NOT EXISTS fence_f_unrelated (id int)"); err != nil {
		t.Fatalf("DDL on a table not in the config under DDL LOCK: %v", err)
	}
	mustConsole(t, admin, "RESHARD DDL UNLOCK")
	if _, err := app.Exec(ctx, "ALTER TABLE fence_f ADD COLUMN IF NOT EXISTS extra int"); err != nil {
		t.Fatalf("ALTER TABLE after DDL UNLOCK: %v", err)
	}
}

// switchLayout is RESHARD SWITCH's JSON for the sandbox with shard 1
// replaced by name on database db of the same servers.
func switchLayout(t *testing.T, name, db string, floor string) string {
	t.Helper()
	s0, s1 := cluster.Shards[0], cluster.Shards[1]
	spec := map[string]any{
		"shards": []map[string]any{
			{"name": s0.Name, "primary": dsn(s0.Primary, "app"), "replicas": []string{dsn(s0.Replicas[0], "app")}},
			{"name": name, "primary": dsn(s1.Primary, db), "replicas": []string{dsn(s1.Replicas[0], db)}},
		},
		"keyspace":   []map[string]string{{"range": "-80", "shard": s0.Name}, {"range": "80-", "shard": name}},
		"read_floor": map[string]string{name: floor},
	}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return "RESHARD SWITCH '" + string(b) + "'"
}

// dsn is a server's DSN as the sandbox's config spells it.
func dsn(s *sandbox.Server, db string) string {
	return strings.TrimSuffix(s.DSN(db), "?sslmode=disable")
}

// newDatabase creates db on shard 1's primary with table, the stand-in for
// the reshard's target server.
func newDatabase(t *testing.T, db, table string) *pgx.Conn {
	t.Helper()
	ctx := t.Context()
	direct := connectShard(t, 1)
	if _, err := direct.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	target := dialPlain(t, cluster.Shards[1].Primary.DSN(db))
	if _, err := target.Exec(ctx, fmt.Sprintf("CREATE TABLE %s (id bigint PRIMARY KEY, v text)", table)); err != nil {
		t.Fatal(err)
	}
	return target
}

func currentLSN(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var lsn string
	if err := conn.QueryRow(t.Context(), "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	return lsn
}

// TestSwitch: writes queued behind the fence run on the new server after
// SWITCH and UNFENCE, never the retired one; session-mode connections kept
// to the retired server are let go; a repeated SWITCH does nothing.
func TestSwitch(t *testing.T) {
	for i, mode := range []string{"transaction", "session"} {
		t.Run(mode, func(t *testing.T) {
			table, db := fmt.Sprintf("fence_e%d", i), fmt.Sprintf("fence_target%d", i)
			addr, admin := fenceProxy(t, table, mode, nil)
			ctx := t.Context()
			target := newDatabase(t, db, table)
			source := connectShard(t, 1)
			base := int64(74_000_000 + i*1000)
			before, queued, after := keyOn(t, 1, base), keyOn(t, 1, base+100), keyOn(t, 1, base+200)

			// A session-mode client keeps its connection to s1 from here.
			kept := appConn(t, addr)
			if _, err := kept.Exec(ctx, fmt.Sprintf("INSERT INTO %s (id, v) VALUES ($1, 'before')", table), before); err != nil {
				t.Fatal(err)
			}
			mustConsole(t, admin, "RESHARD FENCE 's1'")
			writer := appConn(t, addr)
			write := async(func() error {
				_, err := writer.Exec(ctx, fmt.Sprintf("INSERT INTO %s (id, v) VALUES ($1, 'queued')", table), queued)
				return err
			})
			pending(t, write, 300*time.Millisecond, "a write behind the fence")

			cmd := switchLayout(t, "s9", db, currentLSN(t, target))
			mustConsole(t, admin, cmd)
			pending(t, write, 200*time.Millisecond, "a write after SWITCH, before UNFENCE")
			if got := fenceRow(t, admin, "s9"); got["fenced"] != "true" || got["queued"] != "1" {
				t.Fatalf("SHOW FENCES after SWITCH: %v", got)
			}
			mustConsole(t, admin, cmd) // idempotent
			mustConsole(t, admin, "RESHARD UNFENCE")
			if err := within(t, write, 5*time.Second, "the queued write after UNFENCE"); err != nil {
				t.Fatal(err)
			}
			if _, err := kept.Exec(ctx, fmt.Sprintf("INSERT INTO %s (id, v) VALUES ($1, 'after')", table), after); err != nil {
				t.Fatal(err)
			}
			for _, k := range []int64{queued, after} {
				assertCount(t, target, fmt.Sprintf("SELECT count(*) FROM %s WHERE id = $1", table), k, 1)
				assertCount(t, source, fmt.Sprintf("SELECT count(*) FROM %s WHERE id = $1", table), k, 0)
			}
			assertCount(t, source, fmt.Sprintf("SELECT count(*) FROM %s WHERE id = $1", table), before, 1)
			// Reads follow the new layout: the row written before the
			// switch stays on the retired server.
			assertCount(t, kept, fmt.Sprintf("SELECT count(*) FROM %s WHERE id = $1", table), before, 0)
			assertCount(t, kept, fmt.Sprintf("SELECT count(*) FROM %s WHERE id = $1", table), queued, 1)
			rows := adminRows(t, admin, "SHOW SHARDS")
			if rows[1]["shard"] != "s9" || !strings.Contains(rows[1]["primary"], "/"+db) {
				t.Fatalf("SHOW SHARDS after SWITCH: %v", rows[1])
			}
		})
	}
}

// TestSwitchReadFloor: a replica of a switched shard serves no read until
// it has replayed the shard's read_floor.
func TestSwitchReadFloor(t *testing.T) {
	const table, db = "fence_r", "fence_floor"
	addr, admin := fenceProxy(t, table, "transaction", func(c *topology.Config) {
		c.Consistency, c.RYWWait = "eventual", 0 // below the floor: straight to the primary
	})
	target := newDatabase(t, db, table)
	k := keyOn(t, 1, 75_000_000)
	if _, err := target.Exec(t.Context(), "INSERT INTO "+table+" (id, v) VALUES ($1, 'x')", k); err != nil {
		t.Fatal(err)
	}
	mustConsole(t, admin, "RESHARD FENCE 's1'")
	mustConsole(t, admin, switchLayout(t, "s8", db, "FF/0")) // a position no replica reaches
	mustConsole(t, admin, "RESHARD UNFENCE")
	app := appConn(t, addr)
	q := "SELECT pg_is_in_recovery(), count(*) FROM " + table + " WHERE id = $1"
	for range 20 {
		var replica bool
		var n int64
		if err := app.QueryRow(t.Context(), q, k).Scan(&replica, &n); err != nil {
			t.Fatal(err)
		}
		if replica || n != 1 {
			t.Fatalf("read below the read floor: replica %v, rows %d", replica, n)
		}
	}
}

// TestSwitchRefused: an invalid layout, or one changing a shard that is not
// fenced, is refused and the old layout keeps serving.
func TestSwitchRefused(t *testing.T) {
	addr, admin := fenceProxy(t, "fence_g", "transaction", nil)
	app := appConn(t, addr)
	s0, s1 := cluster.Shards[0], cluster.Shards[1]
	gap := fmt.Sprintf(`RESHARD SWITCH '{"shards":[{"name":"s0","primary":%q},{"name":"s7","primary":%q}],"keyspace":[{"range":"-80","shard":"s0"}]}'`,
		s0.Primary.DSN("app"), s1.Primary.DSN("app"))
	removal := fmt.Sprintf(`RESHARD SWITCH '{"shards":[{"name":"s0","primary":%q}],"keyspace":[{"range":"-","shard":"s0"}]}'`, s0.Primary.DSN("app"))
	for _, cmd := range []string{gap, removal, `RESHARD SWITCH '{"shards": [}'`} {
		if err := console(t, admin, cmd); err == nil {
			t.Fatalf("%s: accepted", cmd)
		}
	}
	err := console(t, admin, switchLayout(t, "s7", "app", "0/0"))
	if sqlState(err) != "55000" {
		t.Fatalf("SWITCH of an unfenced shard: %v, want 55000", err)
	}
	rows := adminRows(t, admin, "SHOW SHARDS")
	if rows[0]["shard"] != "s0" || rows[1]["shard"] != "s1" {
		t.Fatalf("layout after refused switches: %v", rows)
	}
	k := keyOn(t, 1, 76_000_000)
	if _, err := app.Exec(t.Context(), "INSERT INTO fence_g (id, v) VALUES ($1, 'old layout')", k); err != nil {
		t.Fatal(err)
	}
	assertCount(t, connectShard(t, 1), "SELECT count(*) FROM fence_g WHERE id = $1", k, 1)
}

// keyAbove is the first key from base up whose keyspace id is at least
// bound.
func keyAbove(t *testing.T, base int64, bound uint64) int64 {
	for k := base; ; k++ {
		id, err := topology.KeyspaceID(topology.KeyBigint, strconv.FormatInt(k, 10))
		if err != nil {
			t.Fatal(err)
		}
		if id >= bound {
			return k
		}
	}
}

// TestSwitchAppendsThenRemoves: a split appends a shard; an abort switches
// back, removing it, and the keys it had go back to the source.
func TestSwitchAppendsThenRemoves(t *testing.T) {
	const table, db = "fence_h", "fence_target_h"
	addr, admin := fenceProxy(t, table, "transaction", nil)
	app := appConn(t, addr)
	target := newDatabase(t, db, table)
	source := connectShard(t, 1)
	s0, s1 := cluster.Shards[0], cluster.Shards[1]
	layout := func(extra bool) string {
		shards := []map[string]any{
			{"name": "s0", "primary": dsn(s0.Primary, "app"), "replicas": []string{dsn(s0.Replicas[0], "app")}},
			{"name": "s1", "primary": dsn(s1.Primary, "app"), "replicas": []string{dsn(s1.Replicas[0], "app")}},
		}
		keyspace := []map[string]string{{"range": "-80", "shard": "s0"}, {"range": "80-", "shard": "s1"}}
		if extra {
			shards = append(shards, map[string]any{"name": "s9", "primary": dsn(s1.Primary, db)})
			keyspace = []map[string]string{{"range": "-80", "shard": "s0"}, {"range": "80-c0", "shard": "s1"}, {"range": "c0-", "shard": "s9"}}
		}
		b, err := json.Marshal(map[string]any{"shards": shards, "keyspace": keyspace})
		if err != nil {
			t.Fatal(err)
		}
		return "RESHARD SWITCH '" + string(b) + "'"
	}
	insert := fmt.Sprintf("INSERT INTO %s (id, v) VALUES ($1, 'x')", table)
	count := fmt.Sprintf("SELECT count(*) FROM %s WHERE id = $1", table)

	mustConsole(t, admin, "RESHARD FENCE 's1'")
	mustConsole(t, admin, layout(true))
	mustConsole(t, admin, "RESHARD UNFENCE")
	k1 := keyAbove(t, 77_000_000, 0xc000000000000000)
	if _, err := app.Exec(t.Context(), insert, k1); err != nil {
		t.Fatal(err)
	}
	assertCount(t, target, count, k1, 1)

	if err := console(t, admin, layout(false)); sqlState(err) != "55000" {
		t.Fatalf("removing an unfenced shard: %v, want 55000", err)
	}
	mustConsole(t, admin, "RESHARD FENCE 's1'")
	mustConsole(t, admin, "RESHARD FENCE 's9'")
	mustConsole(t, admin, layout(false))
	mustConsole(t, admin, "RESHARD UNFENCE")
	k2 := keyAbove(t, k1+1, 0xc000000000000000)
	if _, err := app.Exec(t.Context(), insert, k2); err != nil {
		t.Fatal(err)
	}
	assertCount(t, source, count, k2, 1)
	assertCount(t, target, count, k2, 0)
	for _, row := range adminRows(t, admin, "SHOW SHARDS") {
		if row["shard"] == "s9" {
			t.Fatalf("SHOW SHARDS after removing s9 still has it: %v", row)
		}
	}
}

// TestFenceLeaseLiftsItself: a fence no one lifts (the reshard command
// died) lifts itself after its lease, and the queued write runs.
func TestFenceLeaseLiftsItself(t *testing.T) {
	addr, admin := fenceProxy(t, "fence_i", "transaction", nil)
	app := appConn(t, addr)
	began := time.Now() // the lease runs from the command, so measure from before it
	mustConsole(t, admin, "RESHARD FENCE 's1' TIMEOUT 1000 LEASE 400")
	write := async(func() error {
		_, err := app.Exec(t.Context(), "INSERT INTO fence_i (id, v) VALUES ($1, 'queued')", keyOn(t, 1, 78_000_000))
		return err
	})
	pending(t, write, 200*time.Millisecond, "a write behind a leased fence")
	if err := within(t, write, 5*time.Second, "the write once the lease expired"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d < 400*time.Millisecond {
		t.Fatalf("the write ran after %s, before the 400 ms lease", d)
	}
	if got := fenceRow(t, admin, "s1"); got["fenced"] != "false" {
		t.Fatalf("fence after its lease: %v", got)
	}
}
