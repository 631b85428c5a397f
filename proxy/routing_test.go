package proxy_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/topology"
)

// keysBy returns n keys from base up on each shard.
func keysBy(t *testing.T, base int64, n int) map[int][]int64 {
	out := map[int][]int64{}
	for k := base; len(out[0]) < n || len(out[1]) < n; k++ {
		s := shardOf(t, k)
		if len(out[s]) < n {
			out[s] = append(out[s], k)
		}
	}
	return out
}

// TestWriteForms writes rows through the proxy in every form the router
// supports and checks each landed where the hashing contract says.
func TestWriteForms(t *testing.T) {
	ctx := t.Context()
	keys := keysBy(t, 10_000_000, 6)
	s0, s1 := keys[0], keys[1]
	simple := connect(t, pgx.QueryExecModeSimpleProtocol)
	cached := connect(t, pgx.QueryExecModeCacheStatement)
	low := connectLow(t)
	i8 := func(k int64) []byte {
		return []byte{byte(k >> 56), byte(k >> 48), byte(k >> 40), byte(k >> 32), byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)}
	}
	steps := []struct {
		name string
		run  func() error
	}{
		{"literal", func() error {
			_, err := simple.Exec(ctx, fmt.Sprintf("INSERT INTO users (id, name) VALUES (%d, 'literal')", s0[0]))
			return err
		}},
		{"quoted literal with cast", func() error {
			_, err := simple.Exec(ctx, fmt.Sprintf("INSERT INTO users (id, name) VALUES ('%d'::bigint, 'cast')", s1[0]))
			return err
		}},
		{"binary int8 parameter", func() error {
			return low.ExecParams(ctx, "INSERT INTO users (id, name) VALUES ($1, 'binary')", [][]byte{i8(s0[1])}, []uint32{20}, []int16{1}, nil).Read().Err
		}},
		{"text parameter", func() error {
			return low.ExecParams(ctx, "INSERT INTO users (id, name) VALUES ($1, 'text')", [][]byte{[]byte(strconv.FormatInt(s1[1], 10))}, nil, nil, nil).Read().Err
		}},
		{"multi-row on one shard", func() error {
			_, err := cached.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'multi'), ($2, 'multi')", s0[2], s0[3])
			return err
		}},
		{"ON CONFLICT RETURNING", func() error {
			var id int64
			return cached.QueryRow(ctx, "INSERT INTO users (id, name) VALUES ($1, 'upsert') ON CONFLICT (id) DO UPDATE SET name = excluded.name RETURNING id", s1[2]).Scan(&id)
		}},
		{"INSERT ... SELECT from the same shard", func() error {
			_, err := cached.Exec(ctx, "INSERT INTO posts (user_id, id, body) SELECT id, 1, name FROM users WHERE id = $1", s0[0])
			return err
		}},
		{"comment hint", func() error {
			_, err := simple.Exec(ctx, fmt.Sprintf("/* shardgate: shard_key=%d */ INSERT INTO users (id, name) VALUES (%d, 'hinted')", s1[3], s1[3]))
			return err
		}},
		{"UPDATE of the key within its shard", func() error {
			_, err := cached.Exec(ctx, "UPDATE users SET id = $2 WHERE id = $1", s0[3], s0[4])
			return err
		}},
		{"= ANY(array parameter)", func() error {
			_, err := cached.Exec(ctx, "UPDATE users SET email = 'any' WHERE id = ANY($1)", []int64{s0[0], s0[1]})
			return err
		}},
		{"IN list", func() error {
			_, err := simple.Exec(ctx, fmt.Sprintf("UPDATE users SET email = 'in' WHERE id IN (%d, %d)", s1[0], s1[1]))
			return err
		}},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	want := map[int64]string{s0[0]: "literal", s1[0]: "cast", s0[1]: "binary", s1[1]: "text", s0[2]: "multi", s0[4]: "multi", s1[2]: "upsert", s1[3]: "hinted"}
	for shard := range cluster.Shards {
		rows, err := connectShard(t, shard).Query(ctx, "SELECT id, name FROM users WHERE id >= 10000000 AND id < 10001000")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id int64
			var name string
			rows.Scan(&id, &name)
			if shardOf(t, id) != shard {
				t.Errorf("user %d (%s) is on shard %d, the contract says %d", id, name, shard, shardOf(t, id))
			}
			if want[id] != name {
				t.Errorf("user %d: name %q, want %q", id, name, want[id])
			}
			delete(want, id)
		}
		rows.Close()
	}
	if len(want) != 0 {
		t.Fatalf("rows not found on any shard: %v", want)
	}
	assertCount(t, connectShard(t, 0), "SELECT count(*) FROM posts WHERE user_id = $1", s0[0], 1)
	assertCount(t, connectShard(t, 0), "SELECT count(*) FROM users WHERE email = 'any' AND id = $1", s0[1], 1)
	// Rows for several shards inside a transaction block: refused without
	// two_phase_commit (see TestWritesAcrossShardsInTransaction for with).
	tx, err := cached.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'x'), ($2, 'y')", s0[5], s1[5]); sqlState(err) != "0A000" {
		t.Fatalf("multi-shard INSERT in a transaction: %v, want 0A000", err)
	}
	tx.Rollback(ctx)
}

// TestSessionHints routes keyless statements with SET shardgate.* and
// asks the proxy for its plan with EXPLAIN (SHARDGATE).
func TestSessionHints(t *testing.T) {
	ctx := t.Context()
	keys := keysBy(t, 10_100_000, 1)
	conn := connect(t, pgx.QueryExecModeSimpleProtocol)
	// Without a hint a keyless count runs on every shard; with one, on one.
	total := func() int64 {
		var n, sum int64
		for shard := range cluster.Shards {
			if err := connectShard(t, shard).QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil {
				t.Fatal(err)
			}
			sum += n
		}
		return sum
	}
	var all int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&all); err != nil || all != total() {
		t.Fatalf("keyless count without a hint: %d, shards hold %d (%v)", all, total(), err)
	}
	// The count is compared with the primary's, so it must not come from
	// a replica still replaying other tests' writes.
	if _, err := conn.Exec(ctx, "SET shardgate.shard = 's1'"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SET shardgate.role = 'primary'"); err != nil {
		t.Fatal(err)
	}
	var viaHint, direct int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&viaHint); err != nil {
		t.Fatalf("keyless count with a session hint: %v", err)
	}
	if err := connectShard(t, 1).QueryRow(ctx, "SELECT count(*) FROM users").Scan(&direct); err != nil || viaHint != direct {
		t.Fatalf("hinted count %d, shard s1 has %d (%v)", viaHint, direct, err)
	}
	if _, err := conn.Exec(ctx, "RESET shardgate.role"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SET shardgate.shard = 'nowhere'"); sqlState(err) != "22023" {
		t.Fatalf("unknown shard in a hint: %v", err)
	}
	if _, err := conn.Exec(ctx, "RESET shardgate.shard"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "DELETE FROM follows WHERE followee_id = -1"); sqlState(err) != "0A000" {
		t.Fatalf("after RESET the hint still applies: %v", err)
	}
	// SET LOCAL lasts for the transaction only.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL shardgate.shard_key = '%d'", keys[0][0])); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM follows WHERE followee_id = -1"); err != nil {
		t.Fatalf("transaction hint: %v", err)
	}
	tx.Commit(ctx)
	if _, err := conn.Exec(ctx, "DELETE FROM follows WHERE followee_id = -1"); sqlState(err) != "0A000" {
		t.Fatalf("SET LOCAL outlived its transaction: %v", err)
	}

	res, err := conn.PgConn().Exec(ctx, "EXPLAIN (SHARDGATE) SELECT * FROM users WHERE id = 42").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	row := map[string]string{}
	for i, f := range res[0].FieldDescriptions {
		row[f.Name] = string(res[0].Rows[0][i])
	}
	if row["shards"] != "s1" || row["role"] != "replica" || !strings.Contains(row["keys"], "a2c396223f8bdbdf") || !strings.Contains(row["keys"], "80-") {
		t.Fatalf("EXPLAIN (SHARDGATE): %v", row)
	}
	// The plan a LIMIT query runs, not that of its normalised text (LIMIT $1).
	res, err = conn.PgConn().Exec(ctx, "EXPLAIN (SHARDGATE) SELECT name FROM users ORDER BY 1 LIMIT 15 OFFSET 10").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if plan := string(res[0].Rows[0][6]); !strings.HasPrefix(plan, "stream-merge (merge-sort, OFFSET 10, LIMIT 15)") {
		t.Fatalf("EXPLAIN (SHARDGATE) of a LIMIT query: plan %q", plan)
	}
	res, err = conn.PgConn().Exec(ctx, "EXPLAIN (SHARDGATE) DELETE FROM users").ReadAll()
	if err != nil || !strings.Contains(string(res[0].Rows[0][5]), "0A000") {
		t.Fatalf("EXPLAIN (SHARDGATE) of a refused query should explain the refusal: %v %v", res, err)
	}
}

func TestShowRouter(t *testing.T) {
	_, addr, stop, err := startServer(func(c *topology.Config) { c.AdminUsers = []string{"admin"} })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	app, err := pgconn.Connect(t.Context(), "postgres://postgres@"+addr+"/app?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	for i := 0; i < 5; i++ {
		app.Exec(t.Context(), fmt.Sprintf("SELECT * FROM users WHERE id = %d", i)).ReadAll()
	}
	row := adminRows(t, adminConn(t, addr), "SHOW ROUTER")[0]
	if hits, _ := strconv.Atoi(row["cache_hits"]); hits < 4 || row["cache_hit_ratio"] == "" {
		t.Fatalf("SHOW ROUTER: %v", row)
	}
}
