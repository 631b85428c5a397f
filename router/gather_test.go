package router

import (
	"strings"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v5"
)

// TestGatherPushesFilters: the shards filter a table's rows before copying
// them by exactly the conditions that cannot change the answer.
func TestGatherPushesFilters(t *testing.T) {
	topo := testRouter(t).Topology()
	for _, c := range []struct {
		sql  string
		want map[string]string // table: its pulled SELECT ("" for all rows)
	}{
		{"SELECT id FROM users WHERE country = 'de' UNION SELECT user_id FROM posts WHERE likes > 5 AND body <> ''",
			map[string]string{"users": "SELECT * FROM users users WHERE country = 'de'",
				"posts": "SELECT * FROM posts posts WHERE likes > 5 AND body <> ''"}},
		// Twice in the query: each use filters differently.
		{"SELECT * FROM users WHERE id = 3 UNION SELECT * FROM users WHERE id = 42",
			map[string]string{"users": ""}},
		// A correlated subquery: only its own qualified columns.
		{"SELECT u.id FROM users u WHERE u.name > 'b' AND EXISTS (SELECT 1 FROM follows f WHERE f.followee_id = u.id AND f.user_id > 3 AND user_id < 9)",
			map[string]string{"users": "SELECT * FROM users u WHERE u.name > 'b'", "follows": "SELECT * FROM follows f WHERE f.user_id > 3"}},
		// Joins: inner ON terms too; never the nullable side of an outer join.
		{"SELECT count(DISTINCT u.country) FROM users u JOIN follows f ON f.followee_id = u.id AND f.user_id < 0 LEFT JOIN posts p ON p.likes = f.user_id WHERE p.likes IS NULL AND u.id > 7",
			map[string]string{"users": "SELECT * FROM users u WHERE u.id > 7", "follows": "SELECT * FROM follows f WHERE f.user_id < 0", "posts": ""}},
		// Parameters, subqueries, volatile functions stay in the query.
		{"SELECT count(DISTINCT country) FROM users WHERE id > $1 AND random() < 0.5 AND id IN (SELECT 1) AND (name = 'a' OR id < 0)",
			map[string]string{"users": "SELECT * FROM users users WHERE name = 'a' OR id < 0"}},
	} {
		tree, err := pg.Parse(c.sql)
		if err != nil {
			t.Fatal(err)
		}
		root := tree.Stmts[0].Stmt
		ts, bad := classifyTables(topo, root)
		if bad != nil {
			t.Fatalf("%s: %v", c.sql, bad.Err)
		}
		g := gatherSpec(topo, root, ts)
		if g == nil {
			t.Fatalf("%s: not gathered", c.sql)
		}
		if len(g.Tables) != len(c.want) {
			t.Errorf("%s: pulls %+v, want %v", c.sql, g.Tables, c.want)
		}
		for _, p := range g.Tables {
			if want, ok := c.want[p.Table.Name]; !ok || p.Select != want {
				t.Errorf("%s: %s copied by %q, want %q", c.sql, p.Table.Name, p.Select, want)
			}
		}
		if !strings.Contains(g.SQL, "pg_temp."+gatherPrefix) {
			t.Errorf("%s: rewritten as %s", c.sql, g.SQL)
		}
	}
}

// TestExplainPlanTree: a cross-shard read explains itself as the operator
// tree the proxy runs.
func TestExplainPlanTree(t *testing.T) {
	r := testRouter(t)
	for _, c := range []struct{ sql, want string }{
		{"SELECT count(*) FROM users", "merge (combine partial aggregates) <- [route s0,s1]"},
		{"SELECT * FROM users ORDER BY id LIMIT 3", "stream-merge (merge-sort, LIMIT 3) <- [route s0,s1 (the statement as sent)]"},
		{"SELECT id FROM users WHERE country = 'x' UNION SELECT user_id FROM posts",
			"gather s0 (the query over the copies) <- [copy s0,s1 (users into pg_temp.shardgate_pulled_users on s0); " +
				"copy s0,s1 (posts into pg_temp.shardgate_pulled_posts on s0)]"},
		{"SELECT * FROM users WHERE id = 1", ""},
	} {
		ex := r.Explain(c.sql, nil)
		if got := ex.Plan.String(); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.sql, got, c.want)
		}
	}
	g := r.Explain("SELECT id FROM users WHERE country = 'x' UNION SELECT user_id FROM posts", nil).Plan
	if g.Inputs[0].SQL != "SELECT * FROM users users WHERE country = 'x'" || !strings.Contains(g.SQL, "pg_temp.shardgate_pulled_posts posts") {
		t.Errorf("gather SQL %q, copies %q", g.SQL, g.Inputs[0].SQL)
	}
}
