package router

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	pg "github.com/pganalyze/pg_query_go/v5"

	"github.com/shardgate/shardgate/pgerr"
)

// chainSQL is the attack from issue 14: SELECT 1+1+...+1.
func chainSQL(terms int) string { return "SELECT 1" + strings.Repeat("+1", terms-1) }

// TestDeepChainIsRefused would crash the test binary (a C stack overflow
// in pg_query) without the pre-scan: 100,000 terms, in-process.
func TestDeepChainIsRefused(t *testing.T) {
	r := testRouter(t)
	for _, terms := range []int{100_000, 30_000, 10_000, 1_001} {
		sql := chainSQL(terms)
		a, _ := r.Analyze([]byte(sql))
		assertTooComplex(t, a.Err)
		var s Scratch
		a, _, _ = r.AnalyzeSimple([]byte(sql), &s)
		assertTooComplex(t, a.Err)
		if _, err := r.SplitInsert(sql, nil, nil); err == nil || err.Code != pgerr.CodeStatementTooComplex {
			t.Fatalf("SplitInsert of %d terms: %v", terms, err)
		}
	}
}

func assertTooComplex(t *testing.T, err *pgerr.Error) {
	t.Helper()
	if err == nil || err.Code != pgerr.CodeStatementTooComplex {
		t.Fatalf("want SQLSTATE 54001, got %v", err)
	}
	if !strings.Contains(err.Message, "nested deeper than 1000 levels") || strings.Contains(err.Message, "proto") {
		t.Fatalf("message %q should name the limit and no library", err.Message)
	}
}

// TestParserLibraryErrorsAreNotShown: 10,000 terms used to come back as
// "proto: exceeded maximum recursion depth". Under the pre-scan's limit the
// decoder cannot fail that way, so its error is checked directly.
func TestParserLibraryErrorsAreNotShown(t *testing.T) {
	sql := chainSQL(10_000)
	if _, err := pg.Parse(sql); err == nil || !strings.Contains(err.Error(), "proto") {
		t.Fatalf("pg_query_go no longer fails on 10,000 terms (%v): revisit parseError", err)
	}
	_, err := pg.Parse(sql)
	e := parseError(err)
	if e.Code != pgerr.CodeStatementTooComplex || strings.Contains(e.Message, "proto") {
		t.Fatalf("library error reaches the client: %+v", e)
	}
	a, _ := testRouter(t).Analyze([]byte(sql))
	if a.Err == nil || strings.Contains(a.Err.Message, "proto") {
		t.Fatalf("10,000 terms: %+v", a.Err)
	}
}

func TestDeepParenthesesAreRefused(t *testing.T) {
	r := testRouter(t)
	for _, sql := range []string{
		"SELECT " + strings.Repeat("(", 5000) + "1" + strings.Repeat(")", 5000),
		"SELECT * FROM users WHERE id = " + strings.Repeat("(", 300) + "1" + strings.Repeat(")", 300),
		strings.Repeat("SELECT (", 300) + "1" + strings.Repeat(")", 300),
		"SELECT " + strings.Repeat("(", 100_000), // unbalanced: refused before the parser sees it
	} {
		a, _ := r.Analyze([]byte(sql))
		assertTooComplex(t, a.Err)
	}
}

func TestLongStatementIsRefused(t *testing.T) {
	sql := "SELECT '" + strings.Repeat("x", maxStatementBytes) + "'"
	a, _ := testRouter(t).Analyze([]byte(sql))
	if a.Err == nil || a.Err.Code != pgerr.CodeStatementTooComplex || !strings.Contains(a.Err.Message, "parser limit") {
		t.Fatalf("got %+v", a.Err)
	}
}

// TestOrdinaryLargeStatementsPass: what ORMs and people send, long but
// flat, or deep but sane, is not refused.
func TestOrdinaryLargeStatementsPass(t *testing.T) {
	r := testRouter(t)
	var ors, ins, whens, cols, rows []string
	for i := range 10_000 {
		ors = append(ors, fmt.Sprintf("id = %d", i))
		ins = append(ins, fmt.Sprint(i))
		whens = append(whens, fmt.Sprintf("WHEN id = %d THEN 'n%d'", i, i))
		rows = append(rows, fmt.Sprintf("(%d, 'user %d')", i, i))
	}
	for i := range 1000 {
		cols = append(cols, fmt.Sprintf("coalesce(name, '') || 'x%d' AS c%d", i, i))
	}
	for name, sql := range map[string]string{
		"10k ORs":               "SELECT * FROM users WHERE " + strings.Join(ors, " OR "),
		"10k ANDs":              "SELECT * FROM users WHERE id = 1 AND " + strings.Join(ors, " AND "),
		"10k IN":                "SELECT * FROM users WHERE id IN (" + strings.Join(ins, ", ") + ")",
		"10k WHENs":             "UPDATE users SET name = CASE " + strings.Join(whens, " ") + " END WHERE id = 1",
		"1000 columns":          "SELECT " + strings.Join(cols, ", ") + " FROM users WHERE id = 1",
		"10k rows":              "INSERT INTO users (id, name) VALUES " + strings.Join(rows, ", "),
		"200 UNION ALL":         "SELECT id FROM users WHERE id = 1" + strings.Repeat(" UNION ALL SELECT id FROM users WHERE id = 1", 199),
		"100 JOINs":             "SELECT 1 FROM users u0" + joins(100) + " WHERE u0.id = 1",
		"30 nested subqueries":  strings.Repeat("SELECT * FROM users WHERE id IN (", 30) + "SELECT 1" + strings.Repeat(")", 30),
		"400-term sum":          "SELECT " + strings.Repeat("id + ", 399) + "id FROM users WHERE id = 1",
		"100 nested parens":     "SELECT * FROM users WHERE id = " + strings.Repeat("(", 100) + "1" + strings.Repeat(")", 100),
		"parens in a string":    "SELECT * FROM users WHERE name = '" + strings.Repeat("(", 100_000) + "' AND id = 1",
		"parens in comments":    "-- " + strings.Repeat("(", 5000) + "\n/* " + strings.Repeat("((", 5000) + " */ SELECT * FROM users WHERE id = 1",
		"parens in $$":          "SELECT * FROM users WHERE name = $q$ " + strings.Repeat("(", 5000) + " $q$ AND id = 1",
		"parens in identifiers": `SELECT 1 AS "` + strings.Repeat("(", 5000) + `" FROM users WHERE id = 1`,
		"E string escapes":      `SELECT * FROM users WHERE name = E'\'` + strings.Repeat("(", 5000) + `' AND id = 1`,
	} {
		a, _ := r.Analyze([]byte(sql))
		if a.Err != nil && a.Err.Code == pgerr.CodeStatementTooComplex {
			t.Errorf("%s refused: %v", name, a.Err)
		} else if a.Err != nil {
			t.Errorf("%s: %v", name, a.Err)
		}
	}
}

func joins(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, " JOIN users u%d ON u%d.id = u%d.id AND u%d.name = u%d.name", i, i, i-1, i, i-1)
	}
	return b.String()
}

// TestPreScanSeesWhatStringsHide: text after a string the pre-scan might
// end in the wrong place is still counted.
func TestPreScanSeesWhatStringsHide(t *testing.T) {
	deep := strings.Repeat("1+", 2000) + "1"
	for _, sql := range []string{
		`SELECT E'\'', ` + deep,
		"SELECT E'a'\n'\\'', " + deep, // continued with its escapes
		"SELECT 'a\\', " + deep,       // no escapes in a standard string
		"SELECT B'1''', " + deep,      // '' ends a bit string, and another follows
		"SELECT $a$ $b$ $a$, " + deep,
		"SELECT $a$ $A$ $a$, " + deep,
		"SELECT /* /* */ */ " + deep,
		"SELECT \"a\"\"\", " + deep,
		"SELECT U&'\\', " + deep,
		"SELECT 1 -- c\r" + deep,
		"SELECT $e'\\'', " + deep, // a lone $, then an E string
	} {
		if d := nestingDepth(sql, maxNesting); d <= maxNesting {
			t.Errorf("%.40q...: depth %d", sql, d)
		}
	}
}

// nestingShapes are the ways SQL nests, each at n levels.
var nestingShapes = map[string]func(n int) string{
	"plus":     func(n int) string { return "SELECT 1" + strings.Repeat("+1", n) },
	"concat":   func(n int) string { return "SELECT 'a'" + strings.Repeat("||'a'", n) },
	"json":     func(n int) string { return "SELECT a" + strings.Repeat("->'a'", n) },
	"cast":     func(n int) string { return "SELECT 1" + strings.Repeat("::int", n) },
	"collate":  func(n int) string { return "SELECT 'a'" + strings.Repeat(` COLLATE "C"`, n) },
	"attime":   func(n int) string { return "SELECT now()" + strings.Repeat(" AT TIME ZONE 'UTC'", n) },
	"unary":    func(n int) string { return "SELECT " + strings.Repeat("- ", n) + "1" },
	"prefix":   func(n int) string { return "SELECT " + strings.Repeat("@", n) + "1" },
	"not":      func(n int) string { return "SELECT " + strings.Repeat("NOT ", n) + "true" },
	"parens":   func(n int) string { return "SELECT " + strings.Repeat("(", n) + "1" + strings.Repeat(")", n) },
	"subquery": func(n int) string { return strings.Repeat("SELECT (", n) + "SELECT 1" + strings.Repeat(")", n) },
	"fromsub": func(n int) string {
		return strings.Repeat("SELECT * FROM (", n) + "SELECT 1" + strings.Repeat(") s", n)
	},
	"exists": func(n int) string {
		return "SELECT 1 WHERE " + strings.Repeat("EXISTS (SELECT 1 WHERE ", n) + "true" + strings.Repeat(")", n)
	},
	"func":  func(n int) string { return "SELECT " + strings.Repeat("abs(", n) + "1" + strings.Repeat(")", n) },
	"array": func(n int) string { return "SELECT " + strings.Repeat("ARRAY[", n) + "1" + strings.Repeat("]", n) },
	"case": func(n int) string {
		return "SELECT " + strings.Repeat("CASE WHEN true THEN ", n) + "1" + strings.Repeat(" END", n)
	},
	"caseplus": func(n int) string { return "SELECT 1" + strings.Repeat(" + CASE WHEN a THEN 1 ELSE 2 END", n) },
	"union":    func(n int) string { return "SELECT 1, 2" + strings.Repeat(" UNION SELECT 1, 2", n) },
	"join":     func(n int) string { return "SELECT * FROM t" + strings.Repeat(" JOIN t ON a AND b", n) },
	"andparen": func(n int) string {
		return "SELECT 1 WHERE " + strings.Repeat("a = 1 AND (", n) + "true" + strings.Repeat(")", n)
	},
	"orand": func(n int) string {
		return "SELECT 1 WHERE " + strings.Repeat("(a OR b AND ", n) + "true" + strings.Repeat(")", n)
	},
	"between": func(n int) string {
		return "SELECT " + strings.Repeat("a BETWEEN 1 AND (", n) + "1" + strings.Repeat(")", n)
	},
	"rowexpr": func(n int) string { return "SELECT " + strings.Repeat("ROW(1,", n) + "1" + strings.Repeat(")", n) },
	"cte": func(n int) string {
		return strings.Repeat("WITH a AS (", n) + "SELECT 1" + strings.Repeat(") SELECT 1", n)
	},
	"coalesce": func(n int) string {
		return "SELECT " + strings.Repeat("COALESCE(1, ", n) + "1" + strings.Repeat(")", n)
	},
	"values": func(n int) string {
		return "INSERT INTO t VALUES " + strings.Repeat("((1, ", n) + "1" + strings.Repeat("))", n)
	},
	"minus":   func(n int) string { return "SELECT 1" + strings.Repeat("-1", n) },
	"opchain": func(n int) string { return "SELECT 1" + strings.Repeat("+-+-1", n) },
}

// TestNestingDepthBoundsTheTree: for every shape, the parse tree's
// protobuf nesting (what pg_query's C code and Go's decoder recurse over)
// stays within 2 * estimate + treeSlack. The crash depths in nesting.go
// are in the same units.
func TestNestingDepthBoundsTheTree(t *testing.T) {
	for name, shape := range nestingShapes {
		for _, n := range []int{1, 2, 3, 10, 50, 200, 450} {
			sql := shape(n)
			checkNestingBound(t, name+fmt.Sprint(n), sql)
		}
	}
}

func checkNestingBound(t *testing.T, name, sql string) {
	t.Helper()
	est := nestingDepth(sql, 1<<30)
	tree, err := pg.Parse(sql)
	if err != nil {
		return
	}
	if got := messageDepth(tree.ProtoReflect(), 1<<30); got > 2*est+treeSlack {
		t.Errorf("%s: tree nests %d messages, pre-scan estimated %d levels", name, got, est)
	}
}

// TestRewritesRefuseDeepTrees: statements that shardgate rewrites per
// shard are deparsed, which needs five times the C stack of parsing.
func TestRewritesRefuseDeepTrees(t *testing.T) {
	r := testRouter(t)
	deep := strings.Repeat("'b' || ", 150) + "'b'"
	sql := "INSERT INTO users (id, name) VALUES (1, 'a'), (2, 'a'), (3, 'a'), (4, 'a'), (5, " + deep + ")"
	a, _ := r.Analyze([]byte(sql))
	if p := r.Route(a, nil, nil); !p.Split {
		t.Fatalf("not a split plan: %+v", p)
	}
	_, err := r.SplitInsert(sql, nil, nil)
	if err == nil || err.Code != pgerr.CodeStatementTooComplex || !strings.Contains(err.Message, "nested deeper than 100 levels") {
		t.Fatalf("SplitInsert: %v", err)
	}
	a, _ = r.Analyze([]byte("SELECT count(*), sum(" + strings.Repeat("id + ", 150) + "id) FROM users OFFSET 1"))
	p := r.Route(a, nil, nil)
	if p.Err == nil || p.Scatter != nil || !strings.Contains(p.Err.Message, "nested deeper than 100 levels") {
		t.Fatalf("scatter: %+v", p)
	}
	a, _ = r.Analyze([]byte("SELECT count(*), sum(" + strings.Repeat("id + ", 20) + "id) FROM users OFFSET 1"))
	if p := r.Route(a, nil, nil); p.Scatter == nil || p.Scatter.SQL == "" {
		t.Fatalf("a shallow aggregate is rewritten: %+v", p)
	}
}

// TestOnlyParseGoCallsC: every call into pg_query's C code goes through
// parse.go's guards; a new call elsewhere could crash the process.
func TestOnlyParseGoCallsC(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	calls := regexp.MustCompile(`\bpg\.(Parse|Deparse|Normalize|Fingerprint|Scan|Split|ParseToJSON|ParsePlPgSql)\w*\(|\bparser\.\w+\(`)
	for _, f := range files {
		if f == "parse.go" || strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if m := calls.Find(src); m != nil {
			t.Errorf("%s calls %s outside parse.go", f, m)
		}
	}
}

// TestPreScanIsLinear: the pre-scan runs on every statement before the
// parser, so no text may make it quadratic. A run of 1 MiB of + signs
// (Postgres takes it apart one operator at a time, rescanning the rest)
// took hours before; the bound here is a thousand times what linear costs.
func TestPreScanIsLinear(t *testing.T) {
	r := testRouter(t)
	for _, run := range []string{"+", "+-", "~+", "*+", "@"} {
		sql := "SELECT 1 " + strings.Repeat(run, (1<<20)/len(run)) + " 1"
		began := time.Now()
		a, _ := r.Analyze([]byte(sql))
		if took := time.Since(began); took > 5*time.Second {
			t.Fatalf("1 MiB of %q took %s to analyse", run, took)
		}
		if a.Err == nil {
			t.Fatalf("1 MiB of %q: no error", run)
		}
	}
}
