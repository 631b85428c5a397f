package reshard

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

// TestCopyTakesTheMovingRowsAsOfTheSnapshot: exactly the rows whose key
// moves reach the target, with their values, and a row written after the
// snapshot does not (the catch-up will bring it).
func TestCopyTakesTheMovingRowsAsOfTheSnapshot(t *testing.T) {
	src := cluster.Shards[1].Primary.DSN(cluster.Database)
	dst := cluster.Shards[2].Primary.DSN(cluster.Database)
	const create = "CREATE TABLE cp_users (id bigint PRIMARY KEY, name text, note text)"
	exec(t, src, create,
		`INSERT INTO cp_users SELECT i, 'user ' || i, CASE WHEN i % 7 = 0 THEN NULL ELSE E'tab\there' END FROM generate_series(1, 3000) i`)
	exec(t, dst, create)

	cfg, _ := liveConfig(t, map[string]string{"cp_users": "id"})
	moving, err := topology.ParseKeyRange("c0-")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := OpenSnapshot(t.Context(), src, "cp_test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec(t, src, "SELECT pg_drop_replication_slot('cp_test')") })
	exec(t, src, "INSERT INTO cp_users VALUES (5000, 'after the snapshot', NULL)", "UPDATE cp_users SET name = 'changed' WHERE id <= 100")

	n, err := CopyTable(t.Context(), snap, src, dst, moving, "cp_users", cfg.Tables["cp_users"], nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Close(t.Context()); err != nil {
		t.Fatal(err)
	}

	want := map[int64]bool{}
	for id := int64(1); id <= 3000; id++ {
		ks, err := topology.KeyspaceID(topology.KeyBigint, strconv.FormatInt(id, 10))
		if err != nil {
			t.Fatal(err)
		}
		if moving.Contains(ks) {
			want[id] = true
		}
	}
	if len(want) == 0 || len(want) == 3000 || n != int64(len(want)) {
		t.Fatalf("copied %d rows; %d of 3000 keys move", n, len(want))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, "SELECT id, name, note FROM cp_users")
	got := 0
	for rows.Next() {
		var (
			id   int64
			name string
			note *string
		)
		if err := rows.Scan(&id, &name, &note); err != nil {
			t.Fatal(err)
		}
		got++
		wantNote := "tab\there"
		if !want[id] || name != fmt.Sprintf("user %d", id) || (id%7 == 0) != (note == nil) || (note != nil && *note != wantNote) {
			t.Fatalf("target row %d %q %v: not a moving row as of the snapshot", id, name, note)
		}
	}
	if rows.Err() != nil || got != len(want) {
		t.Fatalf("target has %d rows, want %d (%v)", got, len(want), rows.Err())
	}
}

func TestSlotNamesAreChecked(t *testing.T) {
	for _, name := range []string{"", "Upper", "a b", "x; DROP", string(make([]byte, 64))} {
		if _, err := OpenSnapshot(t.Context(), "postgres://x@127.0.0.1:1/app", name); err == nil || !strings.Contains(err.Error(), "slot name") {
			t.Errorf("slot name %q: %v, want it refused before connecting", name, err)
		}
	}
}
