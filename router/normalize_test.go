package router

import (
	"slices"
	"testing"
)

func TestNormalize(t *testing.T) {
	cases := []struct {
		sql, key string
		params   []string
		ok       bool
	}{
		{"SELECT * FROM users WHERE id = 42", "SELECT * FROM users WHERE id = $1", []string{"42"}, true},
		{"select * from t1 where id=-5 and x = 'it''s'", "select * from t1 where id=$1 and x = $2", []string{"-5", "it's"}, true},
		{"SELECT a - 5, 3.5e-2, .5 FROM t", "SELECT a - $1, $2, $3 FROM t", []string{"5", "3.5e-2", ".5"}, true},
		{"INSERT INTO t (a, b) VALUES (1, -2)", "INSERT INTO t (a, b) VALUES ($1, $2)", []string{"1", "-2"}, true},
		{`SELECT "col1", x2 FROM "t 9" -- 42 stays`, `SELECT "col1", x2 FROM "t 9" -- 42 stays`, nil, true},
		{"SELECT /* 7 /* nested */ */ 8", "SELECT /* 7 /* nested */ */ $1", []string{"8"}, true},
		{"SELECT $$ 5 'x' $$, $a$ 6 $a$", "SELECT $$ 5 'x' $$, $a$ 6 $a$", nil, true},
		{"SELECT * FROM t WHERE id = $1", "", nil, false},
		{"SELECT E'\\n'", "", nil, false},
		{"SELECT 'unterminated", "", nil, false},
		{"SELECT '日本'", "SELECT $1", []string{"日本"}, true},
	}
	var n normalizer
	for _, c := range cases {
		ok := n.normalize([]byte(c.sql))
		if ok != c.ok {
			t.Errorf("%q: ok=%v, want %v", c.sql, ok, c.ok)
			continue
		}
		if !ok {
			continue
		}
		var params []string
		for _, p := range n.params {
			params = append(params, string(p))
		}
		if string(n.key) != c.key || !slices.Equal(params, c.params) {
			t.Errorf("%q:\n got %q %q\nwant %q %q", c.sql, n.key, params, c.key, c.params)
		}
	}
}

// TestSimpleMatchesLiteralRouting: routing a simple query through
// normalisation gives the plan a full parse of the literal text gives.
func TestSimpleMatchesLiteralRouting(t *testing.T) {
	routers := caseRouters{}
	var s Scratch
	for _, c := range loadCases(t) {
		if c.Params != nil {
			continue
		}
		r := routers.get(t, c.Topology)
		want := route(r.Topology(), analyzeText(r.Topology(), c.SQL), nil, nil, nil, nil)
		a, params, _ := r.AnalyzeSimple([]byte(c.SQL), &s)
		got := r.Route(a, params, nil)
		if got.Target != want.Target || got.Shard != want.Shard || got.Role != want.Role || got.Split != want.Split || (got.Err == nil) != (want.Err == nil) ||
			(got.Err != nil && got.Err.Code != want.Err.Code) {
			t.Errorf("%s:\n normalised %+v\n literal    %+v", c.SQL, got, want)
		}
	}
}

func BenchmarkRouteCached(b *testing.B) {
	r := testRouter(b)
	var s Scratch
	queries := [][]byte{[]byte("SELECT id, name FROM users WHERE id = 42"), []byte("SELECT id, name FROM users WHERE id = 43")}
	a, params, _ := r.AnalyzeSimple(queries[0], &s)
	r.Route(a, params, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a, params, _ := r.AnalyzeSimple(queries[i&1], &s)
		if p := r.Route(a, params, nil); p.Target != TargetShard {
			b.Fatal(p.Err)
		}
	}
}

func BenchmarkRouteUncached(b *testing.B) {
	r := testRouter(b)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.cache.clear()
		a, _ := r.Analyze([]byte("SELECT p.id, p.body FROM posts p JOIN users u ON u.id = p.user_id WHERE u.id = 42 AND p.user_id = 42 ORDER BY p.created_at DESC LIMIT 20"))
		if p := r.Route(a, nil, nil); p.Target != TargetShard {
			b.Fatal(p.Err)
		}
	}
}

func TestRedact(t *testing.T) {
	for sql, want := range map[string]string{
		"SELECT * FROM users WHERE id = 42 AND name = 'hunter2'": "SELECT * FROM users WHERE id = $1 AND name = $2",
		"ALTER ROLE app PASSWORD 'secret'":                       "ALTER ROLE app PASSWORD $1",
		"SELECT * FROM users WHERE id = $1":                      "SELECT * FROM users WHERE id = $1",
		"SELECT * FROM users WHERE id = $1 AND name = 'hunter2'": "(query withheld: its constants could not be separated)",
		"SELECT E'hunter2'":                                      "(query withheld: its constants could not be separated)",
		"SELECT now()":                                           "SELECT now()",
	} {
		if got := Redact([]byte(sql)); got != want {
			t.Errorf("Redact(%q) = %q, want %q", sql, got, want)
		}
	}
}
