package proxy_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

// TestScatterMatchesOnePostgres loads the same rows through shardgate (2
// shards) and into one unsharded database, then requires every cross-shard
// query to return what the unsharded database returns (in order when the
// query orders totally).
func TestScatterMatchesOnePostgres(t *testing.T) {
	ctx := t.Context()
	dsn := proxyWith(t, func(c *topology.Config) {
		c.Tables["d_users"] = topology.TableConfig{ShardKey: "id", KeyType: topology.KeyBigint}
	})
	sharded := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	schema := "CREATE TABLE d_users (id bigint primary key, name text, country text, score int, active bool)"
	if _, err := sharded.Exec(ctx, schema); err != nil {
		t.Fatal(err)
	}
	admin := connectShard(t, 0)
	if _, err := admin.Exec(ctx, "CREATE DATABASE flat"); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	flat, err := pgx.Connect(ctx, strings.Replace(cluster.Shards[0].Primary.DSN("app"), "/app", "/flat", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer flat.Close(context.Background())
	flat.Exec(ctx, "DROP TABLE IF EXISTS d_users")
	if _, err := flat.Exec(ctx, schema); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	countries := []string{"de", "fr", "jp", "", "Åland", "us"}
	for id := int64(-50); id < 450; id++ {
		name := fmt.Sprintf("user-%03d", rng.IntN(300)) // duplicates on purpose
		var country, score, active any
		if c := countries[rng.IntN(len(countries))]; c != "" {
			country = c
		}
		if rng.IntN(10) > 0 {
			score = rng.IntN(100) - 20
		}
		if rng.IntN(10) > 0 {
			active = rng.IntN(2) == 0
		}
		for _, conn := range []*pgx.Conn{sharded, flat} {
			if _, err := conn.Exec(ctx, "INSERT INTO d_users (id, name, country, score, active) VALUES ($1, $2, $3, $4, $5)", id, name, country, score, active); err != nil {
				t.Fatal(err)
			}
		}
	}
	ordered := []string{
		"SELECT * FROM d_users ORDER BY id",
		"SELECT id, name FROM d_users ORDER BY name, id LIMIT 20",
		"SELECT id, name FROM d_users ORDER BY name DESC, id DESC LIMIT 15 OFFSET 30",
		"SELECT id, score FROM d_users ORDER BY score NULLS FIRST, id LIMIT 40",
		"SELECT id, score FROM d_users ORDER BY score DESC NULLS LAST, id",
		"SELECT id, country FROM d_users WHERE country IS NOT NULL ORDER BY country, id OFFSET 400",
		"SELECT id, active FROM d_users ORDER BY 2, 1 LIMIT 100",
		"SELECT country, count(*), sum(score), min(score), max(score), avg(score) FROM d_users GROUP BY country ORDER BY country NULLS FIRST",
		"SELECT active, count(*) AS n, bool_and(score > 0), bool_or(score > 50) FROM d_users GROUP BY active ORDER BY n DESC, active",
		"SELECT count(*), count(score), sum(score), avg(score), min(name), max(name) FROM d_users",
		"SELECT count(*) FROM d_users WHERE id > 1000",
		"SELECT sum(score), avg(score), max(id) FROM d_users WHERE id > 1000",
		"SELECT country, avg(id) FROM d_users WHERE id BETWEEN 0 AND 100 GROUP BY 1 ORDER BY 2, 1",
		"SELECT DISTINCT country FROM d_users ORDER BY country",
		"SELECT country, count(*) FROM d_users GROUP BY country HAVING count(*) > 80 AND avg(score) > 30 ORDER BY country NULLS FIRST",
		"SELECT active, count(DISTINCT id) FROM d_users GROUP BY active HAVING bool_or(score > 70) ORDER BY active",
		"SELECT id FROM d_users WHERE id IN (1, 2, 3, 200, 300) ORDER BY id",
		"SELECT id, name FROM d_users WHERE id = ANY('{5,6,7,8}') ORDER BY id DESC",
		// Gathered: run on one shard over copies of the rows (gather.go).
		"SELECT id, rank() OVER (ORDER BY score, id) FROM d_users ORDER BY id",
		"SELECT country, count(*) FROM d_users GROUP BY country HAVING count(*) * 2 > 3 ORDER BY country NULLS FIRST",
		"SELECT count(DISTINCT country) FROM d_users",
		"SELECT a.id, b.id FROM d_users a JOIN d_users b ON a.name = b.name ORDER BY 1, 2",
	}
	for _, q := range ordered {
		want := rowsOf(t, flat, q)
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
			got := rowsOf(t, dial(t, dsn, mode, nil), q)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s (%s):\n got %d rows %v\nwant %d rows %v", q, mode, len(got), head(got), len(want), head(want))
			}
		}
	}
	// The client's settings reach every shard of a cross-shard query.
	if _, err := sharded.Exec(ctx, "SET application_name = 'scatter-app'"); err != nil {
		t.Fatal(err)
	}
	apps := rowsOf(t, sharded, "SELECT current_setting('application_name'), count(*) FROM d_users GROUP BY 1")
	if len(apps) != 1 || apps[0][0] != "scatter-app" || apps[0][1] != "500" {
		t.Errorf("settings on the shards of a cross-shard query: %v", apps)
	}
	refused := []string{
		"SELECT * FROM d_users FOR UPDATE",
		"SELECT * FROM d_users WHERE score > 3 FOR SHARE",
	}
	for _, q := range refused {
		if _, err := sharded.Exec(ctx, q); sqlState(err) != "0A000" {
			t.Errorf("%s: got %v, want 0A000", q, err)
		}
	}
}

func rowsOf(t *testing.T, conn *pgx.Conn, q string) [][]any {
	t.Helper()
	rows, err := conn.Query(t.Context(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out [][]any
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			vals[i] = fmt.Sprint(v) // numeric and friends compare by their text
		}
		out = append(out, vals)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return out
}

func head(rows [][]any) [][]any {
	if len(rows) > 5 {
		return rows[:5]
	}
	return rows
}
