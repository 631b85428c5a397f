package proxy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestSessionToken: with replay paused on every replica, a write made
// through one connection under SET shardgate.session is seen by a new
// connection that sets the same token (its read goes to the primary),
// while a connection without the token reads the stale replica. RESET
// stops a connection's writes from reaching the token.
func TestSessionToken(t *testing.T) {
	ctx := t.Context()
	dsn := proxyWith(t, fastHealth)
	keys := keysBy(t, 34_000_000, 2)
	k0, k1 := keys[0][0], keys[1][0]
	probe := dialPlain(t, dsn)
	waitReplicaRead(t, probe, k0)
	waitReplicaRead(t, probe, k1)

	// Rows exist on the replicas before replay stops.
	seed := dialPlain(t, dsn)
	for _, k := range []int64{k0, k1} {
		if _, err := seed.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'before') ON CONFLICT (id) DO UPDATE SET name = 'before'", k); err != nil {
			t.Fatal(err)
		}
	}
	waitReplicaName(t, probe, k0, "before")
	waitReplicaName(t, probe, k1, "before")

	pauseReplay(t)

	cfg, _ := pgx.ParseConfig(dsn)
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	c1, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close(context.Background())
	execOK(t, c1, "SET shardgate.session = 'request-A'")
	execOK(t, c1, "UPDATE users SET name = 'after' WHERE id = $1", k0)

	read := func(conn *pgx.Conn, k int64) (string, bool) {
		t.Helper()
		var name string
		var rec bool
		if err := conn.QueryRow(ctx, "SELECT name, pg_is_in_recovery() FROM users WHERE id = $1", k).Scan(&name, &rec); err != nil {
			t.Fatal(err)
		}
		return name, rec
	}

	// A new connection with the token (extended protocol) sees the write.
	c2 := dialPlain(t, dsn)
	execOK(t, c2, "SET shardgate.session = 'request-A'")
	if name, rec := read(c2, k0); name != "after" || rec {
		t.Fatalf("token holder read %q (replica: %v), want the write from the primary", name, rec)
	}
	// Without the token: the paused replica, without the write.
	c3 := dialPlain(t, dsn)
	if name, rec := read(c3, k0); name != "before" || !rec {
		t.Fatalf("client without the token read %q (replica: %v), want the stale replica", name, rec)
	}
	// Positions are per shard: the token holder still reads the other
	// shard from its replica.
	if _, rec := read(c2, k1); !rec {
		t.Fatal("token holder's read of a shard the token never wrote went to the primary")
	}

	// After RESET, c1's writes are its own again.
	execOK(t, c1, "RESET shardgate.session")
	execOK(t, c1, "UPDATE users SET name = 'after' WHERE id = $1", k1)
	c4 := dialPlain(t, dsn)
	execOK(t, c4, "SET shardgate.session = 'request-A'")
	if name, rec := read(c4, k1); name != "before" || !rec {
		t.Fatalf("a write after RESET reached the token: read %q (replica: %v)", name, rec)
	}
	if name, rec := read(c4, k0); name != "after" || rec {
		t.Fatalf("token holder read %q (replica: %v)", name, rec)
	}
	// Another token shares nothing.
	c5 := dialPlain(t, dsn)
	execOK(t, c5, "SET shardgate.session = 'request-B'")
	if _, rec := read(c5, k0); !rec {
		t.Fatal("a different token inherited request-A's write")
	}

	// Validation.
	_, err = c5.Exec(ctx, "SET shardgate.session = '"+strings.Repeat("x", 65)+"'")
	if sqlState(err) != "22023" {
		t.Fatalf("65-byte token: %v, want 22023", err)
	}
	execOK(t, c5, "SET shardgate.session = '"+strings.Repeat("x", 64)+"'")
	tx, err := c5.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, "SET LOCAL shardgate.session = 'x'")
	tx.Rollback(ctx)
	if sqlState(err) != "0A000" {
		t.Fatalf("SET LOCAL shardgate.session: %v, want 0A000", err)
	}
}

func execOK(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// waitReplicaName waits until a replica read of k returns name.
func waitReplicaName(t *testing.T, conn *pgx.Conn, k int64, name string) {
	t.Helper()
	for i := 0; ; i++ {
		var got string
		var rec bool
		err := conn.QueryRow(t.Context(), "SELECT name, pg_is_in_recovery() FROM users WHERE id = $1", k).Scan(&got, &rec)
		if err != nil && err != pgx.ErrNoRows {
			t.Fatal(err)
		}
		if err == nil && rec && got == name {
			return
		}
		if i > 500 {
			t.Fatalf("replica never showed %q for key %d", name, k)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
