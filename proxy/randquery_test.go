package proxy_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestRandomQueries is the differential suite's random half, in the spirit
// of Vitess's random query tests and SQLancer: it generates queries over the
// differential data set (scans, filters, pinned keys, aggregates and
// expressions over them, GROUP BY and HAVING, DISTINCT, window functions,
// ORDER BY with LIMIT/OFFSET, set operations, co-located, reference and
// untied joins, subqueries), runs each through shardgate and on the
// unsharded database in the same protocol mode, and requires the same
// columns and rows, or the same error. A refusal (0A000) is counted, not
// failed. A mismatch is shrunk, clause by clause, to a smallest query that
// still differs, which the failure prints for testdata/differential.
// SHARDGATE_RANDOM_QUERIES sets how many: 1,000 by default (make test,
// under -race), 10,000 in make difftest. The seed is fixed.
func TestRandomQueries(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own 3-shard sandbox")
	}
	n := 1000
	if v := os.Getenv("SHARDGATE_RANDOM_QUERIES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	began := time.Now()
	dsn, flatDSN := startDiff(t)
	ctx := t.Context()
	modes := []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement}
	pairs := make([]diffPair, len(modes))
	for i, mode := range modes {
		pairs[i] = diffPair{dsn: dsn, flatDSN: flatDSN, mode: mode}
		pairs[i].dial(t)
	}
	rng := rand.New(rand.NewPCG(20261206, 1))
	var refused, failedOnBoth, mismatches int
	plans := map[string]int{}
	for i := range n {
		q := genQuery(rng)
		plans[planKind(ctx, t, pairs[0].conn, q.sql())]++
		p := &pairs[i%len(pairs)]
		switch p.compare(ctx, t, q) {
		case outcomeRefused:
			refused++
		case outcomeBothFailed:
			failedOnBoth++
		case outcomeDiffers:
			mismatches++
			small := shrink(ctx, t, p, q)
			t.Errorf("mismatch (%s), shrunk to:\n  %s\n  from: %s", p.mode, small.sql(), q.sql())
			if mismatches >= 5 {
				t.Fatalf("stopping after %d mismatches", mismatches)
			}
		}
	}
	t.Logf("%d random queries: %d matched, %d refused (0A000), %d failed alike on both sides, %d mismatches; took %v",
		n, n-refused-failedOnBoth-mismatches, refused, failedOnBoth, mismatches, time.Since(began).Round(time.Millisecond))
	t.Logf("plans: %v", plans)
	if refused > n/20 {
		t.Errorf("%d of %d random queries refused: the generator should stay within what shardgate answers", refused, n)
	}
}

// planKind is how shardgate runs sql, from EXPLAIN (SHARDGATE): the root
// of its plan tree, "keyed groups" for groups the shards compute whole, or
// "one shard".
func planKind(ctx context.Context, t *testing.T, conn *pgx.Conn, sql string) string {
	rows, err := conn.Query(ctx, "EXPLAIN (SHARDGATE) "+sql, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	plan := ""
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		plan, _ = vals[len(vals)-1].(string)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("EXPLAIN (SHARDGATE) %s: %v", sql, err)
	}
	switch {
	case plan == "":
		return "one shard"
	case strings.HasPrefix(plan, "run-first"):
		return "run-first"
	case strings.Contains(plan, "computed whole"):
		return "keyed groups"
	}
	return strings.Fields(plan)[0]
}

type outcome int

const (
	outcomeMatched outcome = iota
	outcomeRefused
	outcomeBothFailed
	outcomeDiffers
)

// diffPair is a connection through shardgate and one to the unsharded
// database, in the same mode.
type diffPair struct {
	dsn, flatDSN string
	mode         pgx.QueryExecMode
	conn, flat   *pgx.Conn
	last         string // what differed, for the report
}

func (p *diffPair) dial(t *testing.T) {
	p.conn = dial(t, p.dsn, p.mode, nil)
	p.flat = dial(t, p.flatDSN, p.mode, nil)
}

// compare runs q on both sides.
func (p *diffPair) compare(ctx context.Context, t *testing.T, q *randQuery) outcome {
	sql := q.sql()
	wantCols, want, wantErr := diffRows(ctx, p.flat, sql)
	gotCols, got, gotErr := diffRows(ctx, p.conn, sql)
	if p.conn.IsClosed() || p.conn.Ping(ctx) != nil || p.flat.IsClosed() || p.flat.Ping(ctx) != nil {
		p.dial(t)
	}
	switch {
	case gotErr != nil && sqlState(gotErr) == "0A000" && wantErr == nil:
		return outcomeRefused
	case wantErr != nil || gotErr != nil:
		if sqlState(wantErr) != "" && sqlState(wantErr) == sqlState(gotErr) {
			return outcomeBothFailed
		}
		p.last = fmt.Sprintf("error %v, want %v", gotErr, wantErr)
		return outcomeDiffers
	}
	if !q.ordered {
		sortRows(got)
		sortRows(want)
	}
	if gotCols != wantCols {
		p.last = fmt.Sprintf("columns %s, want %s", gotCols, wantCols)
		return outcomeDiffers
	}
	if !reflect.DeepEqual(got, want) {
		p.last = describeDiff(got, want)
		return outcomeDiffers
	}
	return outcomeMatched
}

// shrink removes clauses from q while the result still differs.
func shrink(ctx context.Context, t *testing.T, p *diffPair, q *randQuery) *randQuery {
	for changed := true; changed; {
		changed = false
		for _, smaller := range q.smaller() {
			if p.compare(ctx, t, smaller) == outcomeDiffers {
				q, changed = smaller, true
				break
			}
		}
	}
	p.compare(ctx, t, q)
	t.Logf("shrunk mismatch: %s", p.last)
	return q
}

// randQuery is a generated SELECT, kept in parts so that it can shrink.
type randQuery struct {
	from     randFrom
	distinct bool
	items    []string // select list
	group    []string
	where    []string // AND-ed
	having   []string
	ordered  bool // ORDER BY every output column, for LIMIT/OFFSET
	limit    int  // -1: none
	offset   int
	setOp    string     // "": none
	right    *randQuery // the set operation's right branch
	// outer, when set, is a query over this one's rows as t(c1, c2, ...):
	// a format with one %s, where the SELECT goes.
	outer string
}

func (q *randQuery) sql() string {
	if q.outer != "" {
		return fmt.Sprintf(q.outer, q.selectSQL())
	}
	s := q.selectSQL()
	if q.setOp != "" {
		s = "(" + s + ") " + q.setOp + " (" + q.right.selectSQL() + ")"
	}
	if q.ordered {
		cols := make([]string, len(q.items))
		for i := range cols {
			cols[i] = strconv.Itoa(i + 1)
		}
		s += " ORDER BY " + strings.Join(cols, ", ")
	}
	if q.limit >= 0 {
		s += " LIMIT " + strconv.Itoa(q.limit)
	}
	if q.offset > 0 {
		s += " OFFSET " + strconv.Itoa(q.offset)
	}
	return s
}

func (q *randQuery) selectSQL() string {
	var b strings.Builder
	b.WriteString("SELECT ")
	if q.distinct {
		b.WriteString("DISTINCT ")
	}
	for i, item := range q.items {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(item)
		if q.outer != "" {
			fmt.Fprintf(&b, " AS c%d", i+1)
		}
	}
	b.WriteString(" FROM " + q.from.sql)
	if len(q.where) > 0 {
		b.WriteString(" WHERE " + strings.Join(q.where, " AND "))
	}
	if len(q.group) > 0 {
		b.WriteString(" GROUP BY " + strings.Join(q.group, ", "))
	}
	if len(q.having) > 0 {
		b.WriteString(" HAVING " + strings.Join(q.having, " AND "))
	}
	return b.String()
}

// smaller lists q with one part less each.
func (q *randQuery) smaller() []*randQuery {
	var out []*randQuery
	edit := func(f func(c *randQuery)) {
		c := *q
		c.items, c.group, c.where, c.having = clone(q.items), clone(q.group), clone(q.where), clone(q.having)
		f(&c)
		out = append(out, &c)
	}
	if q.setOp != "" {
		edit(func(c *randQuery) { c.setOp, c.right = "", nil })
	}
	if q.outer != "" {
		edit(func(c *randQuery) { c.outer = "" })
	}
	for i := range q.where {
		edit(func(c *randQuery) { c.where = append(c.where[:i], c.where[i+1:]...) })
	}
	for i := range q.having {
		edit(func(c *randQuery) { c.having = append(c.having[:i], c.having[i+1:]...) })
	}
	if q.limit >= 0 || q.offset > 0 {
		edit(func(c *randQuery) { c.limit, c.offset, c.ordered = -1, 0, false })
	}
	if q.distinct {
		edit(func(c *randQuery) { c.distinct = false })
	}
	if len(q.items) > 1 && q.setOp == "" {
		for i := range q.items {
			edit(func(c *randQuery) {
				item := c.items[i]
				c.items = append(c.items[:i], c.items[i+1:]...)
				for g := range c.group {
					if c.group[g] == item {
						c.group = append(c.group[:g], c.group[g+1:]...)
						break
					}
				}
			})
		}
	}
	return out
}

func clone(s []string) []string { return append([]string(nil), s...) }

// randFrom is a FROM clause and what its columns are.
type randFrom struct {
	sql   string
	ints  []string // integer columns
	texts []string
	times []string
	keys  []string // shard key columns, pinned by some filters
	order string   // a unique ordering of its rows
}

var randFroms = []randFrom{
	{sql: "users u", ints: []string{"u.id"}, texts: []string{"u.name", "u.email", "u.country"}, times: []string{"u.created_at"},
		keys: []string{"u.id"}, order: "u.id"},
	{sql: "posts p", ints: []string{"p.user_id", "p.id", "p.likes"}, texts: []string{"p.body"}, times: []string{"p.created_at"},
		keys: []string{"p.user_id"}, order: "p.user_id, p.id"},
	{sql: "follows f", ints: []string{"f.user_id", "f.followee_id"}, times: []string{"f.created_at"},
		keys: []string{"f.user_id"}, order: "f.user_id, f.followee_id"},
	{sql: "users u JOIN posts p ON p.user_id = u.id", ints: []string{"u.id", "p.id", "p.likes"},
		texts: []string{"u.name", "u.country", "p.body"}, times: []string{"p.created_at"}, keys: []string{"u.id"}, order: "p.user_id, p.id"},
	{sql: "users u LEFT JOIN posts p ON p.user_id = u.id", ints: []string{"u.id", "p.likes"},
		texts: []string{"u.name", "p.body"}, keys: []string{"u.id"}, order: "u.id, p.id"},
	{sql: "follows f JOIN users u ON u.id = f.followee_id", ints: []string{"f.user_id", "u.id"},
		texts: []string{"u.name", "u.country"}, times: []string{"f.created_at"}, order: "f.user_id, f.followee_id"},
	{sql: "users u JOIN countries c ON c.code = u.country", ints: []string{"u.id"}, texts: []string{"u.name", "c.name", "c.code"},
		keys: []string{"u.id"}, order: "u.id"},
	{sql: "users u JOIN (SELECT user_id, count(*) AS n, max(likes) AS top, string_agg(body, ',' ORDER BY id) AS bodies FROM posts GROUP BY user_id) pc ON pc.user_id = u.id",
		ints: []string{"u.id", "pc.n", "pc.top"}, texts: []string{"u.name", "pc.bodies"}, keys: []string{"u.id", "pc.user_id"}, order: "u.id"},
	{sql: "(SELECT * FROM posts WHERE likes > 3) p LEFT JOIN users u ON u.id = p.user_id", ints: []string{"p.user_id", "p.id", "p.likes"},
		texts: []string{"p.body", "u.name"}, keys: []string{"p.user_id"}, order: "p.user_id, p.id"},
}

func pick[T any](rng *rand.Rand, s []T) T { return s[rng.IntN(len(s))] }

func genQuery(rng *rand.Rand) *randQuery {
	switch rng.IntN(8) {
	case 0:
		return genSetOp(rng)
	case 1:
		return genNested(rng)
	}
	from := pick(rng, randFroms)
	q := &randQuery{from: from, limit: -1}
	for range rng.IntN(3) {
		q.where = append(q.where, genPredicate(rng, from))
	}
	if rng.IntN(5) == 0 {
		q.where = append(q.where, genSubquery(rng, from))
	}
	switch rng.IntN(3) {
	case 0:
		genAggregate(rng, q)
	default:
		genRows(rng, q)
	}
	if rng.IntN(3) == 0 {
		q.ordered, q.limit = true, rng.IntN(30)
		if rng.IntN(2) == 0 {
			q.offset = rng.IntN(20)
		}
	}
	return q
}

func genRows(rng *rand.Rand, q *randQuery) {
	cols := q.from.columns()
	for range 1 + rng.IntN(3) {
		q.items = append(q.items, pick(rng, cols))
	}
	switch rng.IntN(6) {
	case 0:
		q.distinct = true
	case 1:
		q.items = append(q.items, "rank() OVER (ORDER BY "+pick(rng, cols)+", "+q.from.order+")")
	case 2:
		if len(q.from.ints) > 0 {
			q.items = append(q.items, "sum("+pick(rng, q.from.ints)+") OVER (PARTITION BY "+pick(rng, cols)+")")
		}
	case 3:
		if len(q.from.keys) > 0 { // the shards compute it (co-located)
			q.items = append(q.items, "row_number() OVER (PARTITION BY "+pick(rng, q.from.keys)+" ORDER BY "+q.from.order+")")
		}
	}
}

func genAggregate(rng *rand.Rand, q *randQuery) {
	cols := q.from.columns()
	if len(q.from.keys) > 0 && rng.IntN(3) == 0 { // the shards compute every group whole
		k := pick(rng, q.from.keys)
		q.items, q.group = append(q.items, k), append(q.group, k)
	}
	for range rng.IntN(3) {
		c := pick(rng, cols)
		q.items, q.group = append(q.items, c), append(q.group, c)
	}
	for range 1 + rng.IntN(3) {
		q.items = append(q.items, genAggExpr(rng, q.from))
	}
	if rng.IntN(4) == 0 {
		q.having = append(q.having, "count(*) "+pick(rng, []string{">", "<", ">=", "="})+" "+strconv.Itoa(rng.IntN(5)))
	}
	if rng.IntN(6) == 0 {
		q.having = append(q.having, genAggExpr(rng, q.from)+" IS NOT NULL")
	}
}

func genAggExpr(rng *rand.Rand, f randFrom) string {
	cols := f.columns()
	c := pick(rng, cols)
	if len(f.ints) == 0 {
		return pick(rng, []string{"count(*)", "count(" + c + ")", "max(" + c + ")", "count(DISTINCT " + c + ")"})
	}
	i := pick(rng, f.ints)
	exprs := []string{
		"count(*)", "count(" + c + ")", "sum(" + i + ")", "min(" + c + ")", "max(" + c + ")", "avg(" + i + ")",
		"count(DISTINCT " + c + ")", "coalesce(sum(" + i + "), 0)", "round(avg(" + i + "), 2)", "max(" + c + ") IS NOT NULL",
		"sum(" + i + ") / nullif(count(*), 0)", "count(*) FILTER (WHERE " + genPredicate(rng, f) + ")",
		// Over numeric: the ids reach ±2^63, and a bigint overflow may or
		// may not be raised by one Postgres itself, as a plan that stops at
		// a LIMIT never computes the rows after it.
		"bool_or(" + i + " > 10)", "max(" + i + ")::numeric - min(" + i + ")",
	}
	if len(f.texts) > 0 {
		t := pick(rng, f.texts)
		exprs = append(exprs, "string_agg("+t+", ',' ORDER BY "+t+", "+f.order+")", "count(DISTINCT lower("+t+"))")
	}
	return pick(rng, exprs)
}

func (f randFrom) columns() []string {
	return append(append(clone(f.ints), f.texts...), f.times...)
}

func genPredicate(rng *rand.Rand, f randFrom) string {
	switch rng.IntN(7) {
	case 0:
		if len(f.keys) > 0 {
			k := pick(rng, f.keys)
			if rng.IntN(2) == 0 {
				return fmt.Sprintf("%s = %d", k, rng.IntN(80)-20)
			}
			return fmt.Sprintf("%s IN (%d, %d, %d)", k, rng.IntN(80)-20, rng.IntN(80)-20, rng.IntN(80)-20)
		}
		fallthrough
	case 1, 2:
		if len(f.ints) > 0 {
			return fmt.Sprintf("%s %s %d", pick(rng, f.ints), pick(rng, []string{"<", ">", "<=", ">=", "<>"}), rng.IntN(200)-50)
		}
		fallthrough
	case 3:
		if len(f.texts) > 0 {
			t := pick(rng, f.texts)
			return pick(rng, []string{t + " IS NULL", t + " IS NOT NULL", t + " LIKE 'u%'", t + " = 'de'", t + " > 'm'", "length(" + t + ") < 5"})
		}
		fallthrough
	case 4:
		if len(f.times) > 0 {
			return fmt.Sprintf("%s < '2024-01-%02d 00:00:00+00'", pick(rng, f.times), 1+rng.IntN(28))
		}
		fallthrough
	case 5:
		return "(" + genPredicate(rng, f) + " OR " + genPredicate(rng, f) + ")"
	}
	return "NOT (" + genPredicate(rng, f) + ")"
}

// genSetOp combines two single-column SELECTs of one type.
func genSetOp(rng *rand.Rand) *randQuery {
	side := func(kind int) *randQuery {
		for {
			f := pick(rng, randFroms)
			cols := [][]string{f.ints, f.texts}[kind]
			if len(cols) == 0 {
				continue
			}
			q := &randQuery{from: f, limit: -1, items: []string{pick(rng, cols)}}
			if rng.IntN(2) == 0 {
				q.where = append(q.where, genPredicate(rng, f))
			}
			return q
		}
	}
	kind := rng.IntN(2)
	q := side(kind)
	q.setOp, q.right = pick(rng, []string{"UNION", "UNION ALL", "INTERSECT", "INTERSECT ALL", "EXCEPT", "EXCEPT ALL"}), side(kind)
	if rng.IntN(2) == 0 {
		q.ordered, q.limit = true, rng.IntN(20)
	}
	return q
}

// genNested is a derived table or a CTE, grouped by the shard key or not,
// under an outer query the proxy merges (or gathers).
func genNested(rng *rand.Rand) *randQuery {
	from := pick(rng, randFroms)
	q := &randQuery{from: from, limit: -1}
	if rng.IntN(2) == 0 {
		q.where = append(q.where, genPredicate(rng, from))
	}
	if rng.IntN(3) == 0 {
		genRows(rng, q)
	} else {
		genAggregate(rng, q)
	}
	c := func() string { return "c" + strconv.Itoa(1+rng.IntN(len(q.items))) }
	outer := pick(rng, []string{
		"SELECT count(*), count(" + c() + "), max(" + c() + "::text) FROM (%s) t",
		"SELECT " + c() + "::text AS k, count(*) FROM (%s) t GROUP BY 1",
		"SELECT * FROM (%s) t WHERE " + c() + " IS NOT NULL",
		"SELECT min(" + c() + "::text), count(DISTINCT " + c() + "::text) FROM (%s) t",
	})
	if rng.IntN(2) == 0 {
		outer = strings.Replace(outer, "(%s) t", "t", 1)
		outer = "WITH t AS (%s) " + outer
	}
	q.outer = outer
	return q
}

// genSubquery is an IN, EXISTS or scalar subquery over other shards' rows, which
// shardgate runs first when it can (or gathers the query).
func genSubquery(rng *rand.Rand, f randFrom) string {
	n := strconv.Itoa(rng.IntN(100) - 20)
	not := pick(rng, []string{"", "NOT "})
	switch {
	case rng.IntN(4) == 0:
		return not + "EXISTS (SELECT 1 FROM posts p2 WHERE p2.likes > " + strconv.Itoa(rng.IntN(80)) + "0)"
	case len(f.ints) > 0 && rng.IntN(3) == 0:
		return pick(rng, f.ints) + " " + pick(rng, []string{">", "<=", "=", "<>"}) + " " + pick(rng, []string{
			"(SELECT avg(p2.likes) FROM posts p2 WHERE p2.user_id < " + n + ")",
			"(SELECT max(f2.followee_id) FROM follows f2 WHERE f2.user_id = " + n + ")",
			"(SELECT count(*) FROM users u2 WHERE u2.country = 'de')",
			"(SELECT u2.id FROM users u2 WHERE u2.id > " + n + " ORDER BY u2.id LIMIT 1)",
		})
	case len(f.ints) > 0 && rng.IntN(2) == 0:
		return pick(rng, f.ints) + " " + not + "IN (" + pick(rng, []string{
			"SELECT f2.followee_id FROM follows f2 WHERE f2.user_id < " + n,
			"SELECT u2.id FROM users u2 WHERE u2.country = '" + pick(rng, []string{"de", "se", "xx", ""}) + "'",
			"SELECT DISTINCT p2.likes FROM posts p2 WHERE p2.user_id > " + n,
			"SELECT max(p2.user_id) FROM posts p2 GROUP BY p2.likes",
			"SELECT f2.followee_id FROM follows f2 ORDER BY f2.followee_id DESC LIMIT " + strconv.Itoa(1+rng.IntN(20)),
		}) + ")"
	case len(f.texts) > 0:
		return pick(rng, f.texts) + " " + not + "IN (" + pick(rng, []string{
			"SELECT p2.body FROM posts p2 WHERE p2.likes < " + n,
			"SELECT u2.country FROM users u2 WHERE u2.id > " + n,
			"SELECT c2.code FROM countries c2 WHERE c2.name IS NOT NULL",
		}) + ")"
	}
	return not + "EXISTS (SELECT 1 FROM users u2 WHERE u2.id = " + n + ")"
}
