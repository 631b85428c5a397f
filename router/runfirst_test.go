package router

import (
	"strings"
	"testing"
)

// TestRunFirstPlanned: gathered reads whose uncorrelated IN and EXISTS
// subqueries over sharded tables concatenate run those first; the plan
// keeps the gather as the fallback.
func TestRunFirstPlanned(t *testing.T) {
	r := testRouter(t)
	for _, c := range []struct {
		sql     string
		queries []string // what the shards run first
		shards  []string // where the first of them runs
	}{
		{"SELECT * FROM users WHERE id IN (SELECT followee_id FROM follows WHERE user_id = 3)",
			[]string{"SELECT followee_id FROM follows WHERE user_id = 3"}, []string{"s0"}},
		{"SELECT count(*) FROM posts WHERE user_id IN (SELECT followee_id FROM follows)",
			[]string{"SELECT followee_id FROM follows"}, []string{"s0", "s1"}},
		{"SELECT * FROM users WHERE EXISTS (SELECT 1 FROM posts WHERE likes > 1000) ORDER BY id LIMIT 3",
			[]string{"SELECT EXISTS (SELECT 1 FROM posts WHERE likes > 1000)"}, []string{"s0", "s1"}},
		{"SELECT name FROM countries WHERE code NOT IN (SELECT country FROM users WHERE country IS NOT NULL)",
			[]string{"SELECT country FROM users WHERE country IS NOT NULL"}, []string{"s0", "s1"}},
		// ORDER BY and DISTINCT do not change a set (the order is kept:
		// DISTINCT ON picks rows by it, and it may be in error).
		{"SELECT * FROM users WHERE id = ANY (SELECT DISTINCT user_id FROM posts ORDER BY 1)",
			[]string{"SELECT DISTINCT user_id FROM posts ORDER BY 1"}, []string{"s0", "s1"}},
		{"SELECT * FROM users WHERE id IN (SELECT DISTINCT ON (user_id) followee_id FROM follows WHERE user_id = 3 ORDER BY user_id, created_at DESC)",
			[]string{"SELECT DISTINCT ON (user_id) followee_id FROM follows WHERE user_id = 3 ORDER BY user_id, created_at DESC"}, []string{"s0"}},
		// Groups of the shard key are whole on each shard.
		{"SELECT * FROM users WHERE id IN (SELECT user_id FROM posts GROUP BY user_id HAVING count(*) > 2)",
			[]string{"SELECT user_id FROM posts GROUP BY user_id HAVING count(*) > 2"}, []string{"s0", "s1"}},
		// Subqueries a merge answers run so: the proxy merges their
		// shards' answers as it would theirs alone.
		{"SELECT * FROM users WHERE id IN (SELECT max(user_id) FROM posts)",
			[]string{"SELECT max(user_id) FROM posts"}, []string{"s0", "s1"}},
		{"SELECT * FROM users WHERE id IN (SELECT likes FROM posts GROUP BY likes HAVING count(*) > 2)",
			[]string{"SELECT likes FROM posts GROUP BY likes HAVING count(*) > 2"}, []string{"s0", "s1"}},
		{"SELECT * FROM users WHERE id IN (SELECT user_id FROM posts ORDER BY user_id DESC LIMIT 3)",
			[]string{"SELECT user_id FROM posts ORDER BY user_id DESC LIMIT 3"}, []string{"s0", "s1"}},
		// A scalar subquery goes in as its value.
		{"SELECT * FROM posts WHERE likes > (SELECT avg(likes) FROM posts)",
			[]string{"SELECT avg(likes) FROM posts"}, []string{"s0", "s1"}},
		{"SELECT count(*) FROM users WHERE id = (SELECT followee_id FROM follows WHERE user_id = 3 ORDER BY created_at LIMIT 1)",
			[]string{"SELECT followee_id FROM follows WHERE user_id = 3 ORDER BY created_at LIMIT 1"}, []string{"s0"}},
		// A LIMIT of some rows changes no EXISTS.
		{"SELECT * FROM users WHERE NOT EXISTS (SELECT 1 FROM posts WHERE likes > 5 LIMIT 1)",
			[]string{"SELECT EXISTS (SELECT 1 FROM posts WHERE likes > 5 LIMIT 1)"}, []string{"s0", "s1"}},
		// Names of the subquery's own nested scopes are its own.
		{"SELECT * FROM users u WHERE id IN (SELECT p.user_id FROM posts p WHERE EXISTS (SELECT 1 FROM follows f WHERE f.user_id = p.user_id))",
			[]string{"SELECT p.user_id FROM posts p WHERE EXISTS (SELECT 1 FROM follows f WHERE f.user_id = p.user_id)"}, []string{"s0", "s1"}},
		{"SELECT * FROM users u WHERE id IN (SELECT x.user_id FROM posts x JOIN follows f ON f.user_id = x.user_id)",
			[]string{"SELECT x.user_id FROM posts x JOIN follows f ON f.user_id = x.user_id"}, []string{"s0", "s1"}},
		// Two of them; the reference-table one stays in the query.
		{"SELECT * FROM users WHERE id IN (SELECT user_id FROM posts) AND id NOT IN (SELECT followee_id FROM follows WHERE user_id = 42) AND country IN (SELECT code FROM countries)",
			[]string{"SELECT user_id FROM posts", "SELECT followee_id FROM follows WHERE user_id = 42"}, []string{"s0", "s1"}},
	} {
		a, _ := r.Analyze([]byte(c.sql))
		plan := r.Route(a, nil, nil)
		if plan.RunFirst == nil || plan.Gather == nil || plan.Target != TargetMulti || plan.Err != nil {
			t.Errorf("%s: not run first: %s (%v)", c.sql, plan.Reason, plan.Err)
			continue
		}
		var got []string
		for _, q := range plan.RunFirst.Subqueries {
			got = append(got, q.SQL)
		}
		if strings.Join(got, "; ") != strings.Join(c.queries, "; ") {
			t.Errorf("%s: runs first %q, want %q", c.sql, got, c.queries)
		}
		if names := plan.RunFirst.Subqueries[0].Shards.nameList(r.Topology()); strings.Join(names, ",") != strings.Join(c.shards, ",") {
			t.Errorf("%s: first subquery on %v, want %v", c.sql, names, c.shards)
		}
		ex := r.Explain(c.sql, nil)
		if ex.Plan == nil || len(ex.Plan.Inputs) == 0 {
			t.Fatalf("%s: no plan tree", c.sql)
		}
		first := ex.Plan.Inputs[0]
		if first.Op != "route" { // merged: the route under it
			first = first.Inputs[0]
		}
		want := c.queries[0]
		if m := plan.RunFirst.Subqueries[0].Merge; m != nil && m.SQL != "" {
			want = m.SQL // rewritten for the merge (avg as sum and count)
		}
		if ex.Plan == nil || ex.Plan.Op != "run-first" || len(ex.Plan.Inputs) != len(c.queries)+1 || first.SQL != want {
			t.Errorf("%s: plan tree %s", c.sql, ex.Plan)
		}
	}
}

// TestRunFirstNot: what cannot run first alone, or leaves a query that
// still needs a gather, is gathered as before.
func TestRunFirstNot(t *testing.T) {
	r := testRouter(t)
	for _, c := range []struct {
		sql    string
		params []string
	}{
		{sql: "SELECT * FROM users u WHERE id IN (SELECT user_id FROM posts p WHERE p.likes > u.id)"}, // correlated, qualified
		{sql: "SELECT * FROM users WHERE id IN (SELECT user_id FROM posts WHERE users.name = body)"},  // the outer's table name
		{sql: "SELECT * FROM users u WHERE id IN (SELECT p.user_id FROM posts p WHERE EXISTS (SELECT 1 FROM follows f WHERE f.user_id = u.id))"},
		{sql: "SELECT * FROM users u WHERE id IN (SELECT p.user_id FROM posts p JOIN follows f ON f.user_id = u.id)"},
		{sql: "SELECT * FROM users u WHERE id IN (SELECT x.user_id FROM posts x, LATERAL (SELECT u.id) l)"},
		{sql: "SELECT * FROM users WHERE id IN (SELECT user_id FROM posts WHERE likes > $1)", params: []string{"3"}},
		{sql: "SELECT * FROM users WHERE NOT EXISTS (SELECT 1 FROM posts LIMIT 0)"},
		{sql: "SELECT * FROM users WHERE EXISTS (SELECT 1 FROM posts HAVING count(*) > 2)"},
		{sql: "SELECT * FROM users WHERE id IN (SELECT user_id FROM posts ORDER BY likes LIMIT 3)"}, // no merge: gathered
		{sql: "SELECT * FROM users WHERE id = (SELECT user_id, likes FROM posts WHERE likes = 3)"},
		{sql: "SELECT * FROM users WHERE id = (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY user_id) FROM posts)"},
		{sql: "SELECT * FROM users WHERE id < ANY (SELECT user_id FROM posts)"},
		{sql: "SELECT * FROM users WHERE (id, name) IN (SELECT user_id, body FROM posts)"},
		{sql: "SELECT * FROM users WHERE id IN (SELECT user_id FROM posts UNION SELECT user_id FROM follows)"},
		{sql: "WITH p AS (SELECT user_id FROM posts) SELECT * FROM users WHERE id IN (SELECT user_id FROM p)"},
		// The query itself still needs a gather.
		{sql: "SELECT count(DISTINCT name) FROM users WHERE id IN (SELECT user_id FROM posts)"},
		{sql: "SELECT * FROM users u JOIN posts p ON p.id = u.id WHERE u.id IN (SELECT user_id FROM follows)"},
	} {
		a, _ := r.Analyze([]byte(c.sql))
		var params [][]byte
		for _, p := range c.params {
			params = append(params, []byte(p))
		}
		plan := r.Route(a, params, nil)
		if plan.RunFirst != nil || plan.Gather == nil {
			t.Errorf("%s: run first %v, gather %v; want only a gather (%s)", c.sql, plan.RunFirst != nil, plan.Gather != nil, plan.Reason)
		}
	}
}

// TestUnpartitionedRowsNotMerged: a query whose rows come from tables
// every shard holds, with a sharded table only in a subquery, is not
// merged from the shards' answers (each shard would filter every row by
// its own rows alone).
func TestUnpartitionedRowsNotMerged(t *testing.T) {
	r := testRouter(t)
	for _, sql := range []string{
		"SELECT name FROM countries WHERE code IN (SELECT country FROM users)",
		"SELECT count(*) FROM countries c WHERE EXISTS (SELECT 1 FROM users u WHERE u.country = c.code)",
		"SELECT (SELECT count(*) FROM users)",
		"SELECT * FROM (SELECT * FROM countries WHERE code IN (SELECT country FROM users WHERE id IN (3, 42))) c",
	} {
		a, _ := r.Analyze([]byte(sql))
		plan := r.Route(a, nil, nil)
		if plan.Target == TargetMulti && plan.Scatter != nil && plan.Gather == nil {
			t.Errorf("%s: merged from the shards: %s", sql, plan.Reason)
		}
		if plan.Gather == nil && plan.Err == nil {
			t.Errorf("%s: neither gathered nor refused: %s", sql, plan.Reason)
		}
	}
	// A sharded table in FROM still splits the rows among the shards.
	a, _ := r.Analyze([]byte("SELECT * FROM users u JOIN countries c ON c.code = u.country WHERE c.code IN (SELECT code FROM countries)"))
	if plan := r.Route(a, nil, nil); plan.Scatter == nil || plan.Gather != nil {
		t.Errorf("a sharded read joined with a reference table: %s", plan.Reason)
	}
}

// TestRunFirstOuterSQL: the results go in with SQL's semantics kept (NULL
// among the values, empty results, quoting) and the query routes by the
// values as its shard keys.
func TestRunFirstOuterSQL(t *testing.T) {
	r := testRouter(t)
	sql := "SELECT * FROM users WHERE id IN (SELECT followee_id FROM follows WHERE user_id = 3) AND NOT (name IN (SELECT body FROM posts)) AND EXISTS (SELECT 1 FROM posts WHERE likes > 3)"
	a, _ := r.Analyze([]byte(sql))
	spec := r.Route(a, nil, nil).RunFirst
	if spec == nil || len(spec.Subqueries) != 3 {
		t.Fatalf("not run first: %+v", spec)
	}
	res := []RunFirstResult{
		{Type: "pg_catalog.int8", Values: [][]byte{[]byte("3")}},
		{Type: "pg_catalog.text", Values: [][]byte{[]byte(`it's`), nil, []byte(`a\b"c`)}},
		{Exists: true},
	}
	want := `SELECT * FROM users WHERE ((id) = ANY ('{"3"}'::pg_catalog.int8[])) AND NOT ((name) = ANY (E'{"it''s",NULL,"a\\\\b\\"c"}'::pg_catalog.text[])) AND true`
	if got := spec.OuterSQL(res); got != want {
		t.Errorf("OuterSQL:\n got %s\nwant %s", got, want)
	}
	// No rows: still = ANY, so the tested expression and its $n stay.
	empty := []RunFirstResult{{Type: "pg_catalog.int8"}, {Type: "pg_catalog.text"}, res[2]}
	if got := spec.OuterSQL(empty); !strings.Contains(got, `((id) = ANY ('{}'::pg_catalog.int8[]))`) {
		t.Errorf("OuterSQL of no rows: %s", got)
	}
	// Box arrays are delimited by ;: boxes go in as a list.
	boxes := []RunFirstResult{{Type: "pg_catalog.box", Values: [][]byte{[]byte("(1,1),(0,0)")}}, res[1], res[2]}
	if got := spec.OuterSQL(boxes); !strings.Contains(got, `((id) IN ('(1,1),(0,0)'::pg_catalog.box))`) {
		t.Errorf("OuterSQL of boxes: %s", got)
	}
	// An array of arrays would not read back: arrays go in as a list.
	arrays := []RunFirstResult{{Type: "pg_catalog.int8[]", Values: [][]byte{[]byte("{1,2}")}}, res[1], res[2]}
	if got := spec.OuterSQL(arrays); !strings.Contains(got, `((id) IN ('{1,2}'::pg_catalog.int8[]))`) {
		t.Errorf("OuterSQL of array values: %s", got)
	}
	plan, _ := r.RouteRunFirst(spec, res, nil, nil)
	if plan.Target != TargetShard || r.Topology().Shards[plan.Shard].Name != "s0" {
		t.Errorf("id 3: routed %s %d (%s)", plan.Target, plan.Shard, plan.Reason)
	}
	res[0].Values = append(res[0].Values, []byte("42"))
	if plan, _ := r.RouteRunFirst(spec, res, nil, nil); plan.Target != TargetMulti || plan.Scatter == nil || plan.Gather != nil {
		t.Errorf("ids 3 and 42: routed %s (%s)", plan.Target, plan.Reason)
	}
	res[0].Values, res[1].Values, res[2].Exists = nil, nil, false
	got, _ := r.RouteRunFirst(spec, res, nil, nil)
	if want := "SELECT * FROM users WHERE ((id) = ANY ('{}'::pg_catalog.int8[])) AND NOT ((name) = ANY ('{}'::pg_catalog.text[])) AND false"; spec.OuterSQL(res) != want || got.Scatter == nil {
		t.Errorf("empty results: %s, routed %s", spec.OuterSQL(res), got.Target)
	}
	if !strings.Contains(spec.Template(), "(id) IN (<values 1>)") || !strings.Contains(spec.Template(), "<exists 3>") {
		t.Errorf("template %s", spec.Template())
	}
}

// TestRunFirstMarkerInText: a client's literal that spells the marker
// leaves the query gathered rather than spliced in the wrong place.
func TestRunFirstMarkerInText(t *testing.T) {
	r := testRouter(t)
	a, _ := r.Analyze([]byte("SELECT * FROM users WHERE name <> 'shardgate_run_first_0' AND id IN (SELECT user_id FROM posts)"))
	if plan := r.Route(a, nil, nil); plan.RunFirst != nil || plan.Gather == nil {
		t.Errorf("run first %v, gather %v", plan.RunFirst != nil, plan.Gather != nil)
	}
}
