package router

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	pg "github.com/pganalyze/pg_query_go/v5"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/topology"
)

// splitRouter is testRouter plus tables keyed by text and by uuid, and one
// whose names need quoting.
func splitRouter(t testing.TB) *Router {
	t.Helper()
	cfg, err := topology.LoadConfig("../testdata/config/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tables["docs"] = topology.TableConfig{ShardKey: "slug", KeyType: topology.KeyText}
	cfg.Tables["devices"] = topology.TableConfig{ShardKey: "id", KeyType: topology.KeyUUID}
	cfg.Tables["Audit Log"] = topology.TableConfig{ShardKey: "Tenant"}
	topo, err := topology.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return New(topo, 1000)
}

// contractShard is the shard the public hashing contract gives a key
// written as text, computed without the router.
func contractShard(t testing.TB, topo *topology.Topology, kt topology.KeyType, key string) int {
	t.Helper()
	canon, err := topology.AppendCanonicalText(nil, kt, key)
	if err != nil {
		t.Fatal(err)
	}
	return topo.Lookup(xxhash.Sum64(canon)).Shard
}

// rowStatements parses an INSERT and returns each VALUES row as a
// single-row INSERT with the rest of the statement, its parameters
// numbered as the client's through a part's Params (nil: as written).
func rowStatements(t testing.TB, sql string, params []int) []string {
	t.Helper()
	tree, err := pg.Parse(sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if len(tree.Stmts) != 1 || tree.Stmts[0].Stmt.GetInsertStmt() == nil {
		t.Fatalf("not one INSERT: %s", sql)
	}
	if params != nil {
		walk(tree.Stmts[0].Stmt, func(m any) bool {
			if p, ok := m.(*pg.ParamRef); ok {
				p.Number = int32(params[p.Number-1] + 1)
			}
			return true
		})
	}
	sel := tree.Stmts[0].Stmt.GetInsertStmt().GetSelectStmt().GetSelectStmt()
	rows := sel.ValuesLists
	out := make([]string, len(rows))
	for i, row := range rows {
		sel.ValuesLists = []*pg.Node{row}
		if out[i], err = pg.Deparse(tree); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// paramOrder lists a statement's parameter numbers in textual order, each
// at its first appearance.
func paramOrder(t testing.TB, sql string) []int {
	tree, err := pg.Parse(sql)
	if err != nil {
		t.Fatal(err)
	}
	var refs []*pg.ParamRef
	walk(tree.Stmts[0].Stmt, func(m any) bool {
		if p, ok := m.(*pg.ParamRef); ok {
			refs = append(refs, p)
		}
		return true
	})
	slices.SortFunc(refs, func(a, b *pg.ParamRef) int { return cmp.Compare(a.Location, b.Location) })
	var order []int
	for _, p := range refs {
		if !slices.Contains(order, int(p.Number)) {
			order = append(order, int(p.Number))
		}
	}
	return order
}

// checkSplit splits sql and checks the parts against Route: each row is in
// the part of the shard that Route gives it as a single-row INSERT, in its
// original order, and nowhere else, so the parts together hold exactly the
// statement's rows; the parts' shards are the plan's; each part parses,
// numbers its parameters $1..$k in order, and binds the client's values.
// It returns the parts and the original rows.
func checkSplit(t testing.TB, r *Router, sql string, params [][]byte, formats []int16) ([]InsertPart, []string) {
	t.Helper()
	parts, err := r.SplitInsert(sql, params, formats)
	if err != nil {
		t.Fatalf("SplitInsert(%s): %v", sql, err)
	}
	a, _ := r.Analyze([]byte(sql))
	plan := r.Route(a, params, formats)
	var shards ShardSet
	for i, p := range parts {
		if i > 0 && p.Shard <= parts[i-1].Shard {
			t.Fatalf("parts out of shard order: %+v", parts)
		}
		shards |= 1 << p.Shard
	}
	switch {
	case len(parts) > 1 && (plan.Target != TargetMulti || !plan.Split || plan.Err == nil || plan.Shards != shards):
		t.Fatalf("parts on shards %v, plan %+v", shards.Slice(), plan)
	case len(parts) == 1 && (plan.Target != TargetShard || plan.Shard != parts[0].Shard || plan.Split):
		t.Fatalf("one part on shard %d, plan %+v", parts[0].Shard, plan)
	}
	rows := rowStatements(t, sql, nil)
	rowShard := make([]int, len(rows))
	for i, row := range rows {
		ra, _ := r.Analyze([]byte(row))
		p := r.Route(ra, params, formats)
		if p.Target != TargetShard {
			t.Fatalf("row %s routes to %+v", row, p)
		}
		rowShard[i] = p.Shard
	}
	var union []string
	for _, part := range parts {
		var want []string
		for i, row := range rows {
			if rowShard[i] == part.Shard {
				want = append(want, row)
			}
		}
		got := rowStatements(t, part.SQL, part.Params)
		if !slices.Equal(got, want) {
			t.Fatalf("shard %d: part %s %v has rows\n%q\nwant\n%q", part.Shard, part.SQL, part.Params, got, want)
		}
		union = append(union, got...)
		if got := paramOrder(t, part.SQL); len(got) != len(part.Params) || !slices.IsSorted(got) || (len(got) > 0 && got[len(got)-1] != len(got)) {
			t.Fatalf("part %s numbers its parameters %v, maps %v", part.SQL, got, part.Params)
		}
		values, codes := part.Bind(params, formats)
		for i, c := range part.Params {
			if !bytes.Equal(values[i], params[c]) || codes[i] != paramFormat(formats, c) {
				t.Fatalf("part %s binds $%d to %q/%d, want client $%d %q", part.SQL, i+1, values[i], codes[i], c+1, params[c])
			}
		}
	}
	slices.Sort(union)
	if !slices.Equal(union, slices.Sorted(slices.Values(rows))) {
		t.Fatalf("the parts of %s hold rows\n%q", sql, union)
	}
	return parts, rows
}

// splitShards is the set of shards SplitInsert's parts run on.
func splitShards(r *Router, sql string, params [][]byte, formats []int16) (ShardSet, *pgerr.Error) {
	parts, err := r.SplitInsert(sql, params, formats)
	var set ShardSet
	for _, p := range parts {
		set |= 1 << p.Shard
	}
	return set, err
}

// bind turns test parameters into Bind values: "binary:<hex>" is binary,
// anything else text.
func bind(t testing.TB, in []string) ([][]byte, []int16) {
	var params [][]byte
	var formats []int16
	for _, p := range in {
		if h, ok := strings.CutPrefix(p, "binary:"); ok {
			b, err := hex.DecodeString(h)
			if err != nil {
				t.Fatal(err)
			}
			params, formats = append(params, b), append(formats, 1)
			continue
		}
		params, formats = append(params, []byte(p)), append(formats, 0)
	}
	return params, formats
}

func TestSplitInsert(t *testing.T) {
	const uuidA, uuidB, uuidC = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "00000000-0000-0000-0000-000000000001"
	cases := []struct {
		name   string
		sql    string
		params []string // text, or "binary:<hex>"
		keys   []string // each row's shard key as text, for the hashing contract
		want   []InsertPart
	}{{
		name: "literals",
		sql:  "INSERT INTO users (id, name) VALUES (1, 'a'), (3, 'b'), (42, 'c'), (6, 'd')",
		keys: []string{"1", "3", "42", "6"},
		want: []InsertPart{
			{Shard: 0, SQL: "INSERT INTO users (id, name) VALUES (3, 'b'), (6, 'd')"},
			{Shard: 1, SQL: "INSERT INTO users (id, name) VALUES (1, 'a'), (42, 'c')"},
		},
	}, {
		name:   "shared parameters, ON CONFLICT, RETURNING",
		sql:    "INSERT INTO users (id, name) VALUES ($1, $2), ($3, $2), ($4, 'lit') ON CONFLICT (id) DO UPDATE SET name = $5 RETURNING id, $6::text",
		params: []string{"3", "a", "42", "6", "b", "c"},
		keys:   []string{"3", "42", "6"},
		want: []InsertPart{
			{Shard: 0, SQL: "INSERT INTO users (id, name) VALUES ($1, $2), ($3, 'lit') ON CONFLICT (id) DO UPDATE SET name = $4 RETURNING id, $5::text", Params: []int{0, 1, 3, 4, 5}},
			{Shard: 1, SQL: "INSERT INTO users (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = $3 RETURNING id, $4::text", Params: []int{2, 1, 4, 5}},
		},
	}, {
		name:   "parameters out of order, some unused",
		sql:    "INSERT INTO users (id, name) VALUES ($4, $2), ($5, lower($2)), ($6, $1)",
		params: []string{"x", "y", "unused", "42", "3", "binary:0000000000000006"},
		keys:   []string{"42", "3", "6"},
		want: []InsertPart{
			{Shard: 0, SQL: "INSERT INTO users (id, name) VALUES ($1, lower($2)), ($3, $4)", Params: []int{4, 1, 5, 0}},
			{Shard: 1, SQL: "INSERT INTO users (id, name) VALUES ($1, $2)", Params: []int{3, 1}},
		},
	}, {
		name:   "parameters in textual order, also where the walk is not",
		sql:    "INSERT INTO users (id, name) VALUES (42, 'a'), (3, (SELECT name FROM countries WHERE code = $2 ORDER BY length(name) + $1 LIMIT 1))",
		params: []string{"1", "de"},
		keys:   []string{"42", "3"},
		want: []InsertPart{
			{Shard: 0, SQL: "INSERT INTO users (id, name) VALUES (3, (SELECT name FROM countries WHERE code = $1 ORDER BY length(name) + $2 LIMIT 1))", Params: []int{1, 0}},
			{Shard: 1, SQL: "INSERT INTO users (id, name) VALUES (42, 'a')"},
		},
	}, {
		name: "quoted and schema-qualified names, alias, OVERRIDING, ON CONFLICT WHERE",
		sql: `INSERT INTO app."Audit Log" AS a ("Tenant", "What") OVERRIDING USER VALUE VALUES (3, 'x'), (42, $2), (6, DEFAULT)` +
			` ON CONFLICT ("Tenant") WHERE "What" <> '' DO UPDATE SET "What" = excluded."What" || $1 WHERE a."Tenant" > 0 RETURNING a."Tenant", $1::text`,
		params: []string{"p", "q"},
		keys:   []string{"3", "42", "6"},
		want: []InsertPart{
			{Shard: 0, SQL: `INSERT INTO app."Audit Log" AS a ("Tenant", "What") OVERRIDING USER VALUE VALUES (3, 'x'), (6, DEFAULT)` +
				` ON CONFLICT ("Tenant") WHERE "What" <> '' DO UPDATE SET "What" = excluded."What" || $1 WHERE a."Tenant" > 0 RETURNING a."Tenant", $1::text`, Params: []int{0}},
			{Shard: 1, SQL: `INSERT INTO app."Audit Log" AS a ("Tenant", "What") OVERRIDING USER VALUE VALUES (42, $1)` +
				` ON CONFLICT ("Tenant") WHERE "What" <> '' DO UPDATE SET "What" = excluded."What" || $2 WHERE a."Tenant" > 0 RETURNING a."Tenant", $2::text`, Params: []int{1, 0}},
		},
	}, {
		name: "negative and extreme bigint literals",
		sql:  "INSERT INTO follows (user_id, followee_id) VALUES (-1, 1), (9223372036854775807, 2), (-9223372036854775808, 3), (0, 4), ('-42', 5), ('-7'::bigint, 6)",
		keys: []string{"-1", "9223372036854775807", "-9223372036854775808", "0", "-42", "-7"},
	}, {
		name:   "negative and extreme bigint parameters, text and binary",
		sql:    "INSERT INTO follows (user_id, followee_id) VALUES ($1, 1), ($2, 2), ($3, 3), ($4, 4), ($5, 5), ($6, 6)",
		params: []string{"-1", "9223372036854775807", "binary:8000000000000000", "binary:ffffffd6", "binary:fff9", " -9 "},
		keys:   []string{"-1", "9223372036854775807", "-9223372036854775808", "-42", "-7", "-9"},
	}, {
		name:   "text keys",
		sql:    "INSERT INTO docs (slug, body) VALUES ('alice', 'x'), ($1, 'y'), ('日本', $2), ($3, 'w'), ('it''s', 'v')",
		params: []string{"bob", "z", "binary:" + hex.EncodeToString([]byte("carol"))},
		keys:   []string{"alice", "bob", "日本", "carol", "it's"},
	}, {
		name:   "uuid keys",
		sql:    "INSERT INTO devices (id, name) VALUES ($1, 'a'), ('" + uuidB + "'::uuid, 'b'), ($2, 'c'), ('{" + strings.ToUpper(uuidC) + "}', 'd')",
		params: []string{uuidA, "binary:" + strings.ReplaceAll(uuidB, "-", "")},
		keys:   []string{uuidA, uuidB, uuidB, uuidC},
	}}
	r := splitRouter(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			params, formats := bind(t, c.params)
			parts, rows := checkSplit(t, r, c.sql, params, formats)
			if len(parts) < 2 {
				t.Fatalf("the rows do not span shards: %+v", parts)
			}
			a, _ := r.Analyze([]byte(c.sql))
			kt := a.Stmts[0].KeyType
			for _, part := range parts {
				var want []string
				for i, key := range c.keys {
					if contractShard(t, r.Topology(), kt, key) == part.Shard {
						want = append(want, rows[i])
					}
				}
				if got := rowStatements(t, part.SQL, part.Params); !slices.Equal(got, want) {
					t.Errorf("shard %d by the hashing contract:\n got %q\nwant %q", part.Shard, got, want)
				}
			}
			if c.want != nil && !slices.EqualFunc(parts, c.want, func(a, b InsertPart) bool {
				return a.Shard == b.Shard && a.SQL == b.SQL && slices.Equal(a.Params, b.Params)
			}) {
				t.Errorf("parts\n%+v\nwant\n%+v", parts, c.want)
			}
		})
	}
}

func TestSplitInsertRefusals(t *testing.T) {
	cases := []struct {
		sql    string
		params []string
		code   string
	}{
		{"INSERT INTO users (id, name) VALUES ($1, 'a'), ($2, 'b')", []string{"3", "abc"}, pgerr.CodeInvalidText},
		{"INSERT INTO users (id, name) VALUES ($1, 'a'), ($3, 'b')", []string{"3", "42"}, pgerr.CodeUndefinedParameter},
		{"INSERT INTO users (id, name) VALUES (1, $2), (3, 'b')", []string{"x"}, pgerr.CodeUndefinedParameter},
		{"INSERT INTO users (id, name) VALUES (1, 'a'), (3, $1)", nil, pgerr.CodeUndefinedParameter},
		{"INSERT INTO users (id, name) VALUES (1, 'a'), (DEFAULT, 'b')", nil, pgerr.CodeFeatureNotSupported},
		{"INSERT INTO users (id, name) VALUES (1, 'a'), (3 + 1, 'b')", nil, pgerr.CodeFeatureNotSupported},
		{"INSERT INTO users (id, name) SELECT id, name FROM users WHERE id IN (1, 3)", nil, pgerr.CodeFeatureNotSupported},
		{"WITH c AS (SELECT 1) INSERT INTO users (id, name) VALUES (1, 'a'), (3, 'b')", nil, pgerr.CodeFeatureNotSupported},
		{"INSERT INTO users (id, name) VALUES (1, 'a'), (3, 'b') LIMIT 1", nil, pgerr.CodeFeatureNotSupported},
		{"INSERT INTO users (id, name) VALUES (1, 'a'); INSERT INTO users (id, name) VALUES (3, 'b')", nil, pgerr.CodeFeatureNotSupported},
		{"INSERT INTO countries (code, name) VALUES ('de', 'a'), ('fr', 'b')", nil, pgerr.CodeFeatureNotSupported},
		{"SELECT * FROM users", nil, pgerr.CodeFeatureNotSupported},
		{"INSERT INTO users (id, name) VALUES (1, 'a'),", nil, pgerr.CodeSyntaxError},
	}
	r := testRouter(t)
	for _, c := range cases {
		params, formats := bind(t, c.params)
		parts, err := r.SplitInsert(c.sql, params, formats)
		if err == nil || err.Code != c.code || err.Message == "" {
			t.Errorf("%s: parts %+v, error %v, want %s", c.sql, parts, err, c.code)
		}
	}
	a, _ := r.Analyze([]byte("INSERT INTO users (id, name) VALUES ($1, 'a'), ($2, 'b')"))
	if p := r.Route(a, [][]byte{[]byte("3"), nil}, nil); p.Split || p.Err == nil || p.Err.Code != "22004" {
		t.Errorf("a NULL key must stay refused: %+v", p)
	}
}

// TestSplitInsertRoundTrip: for random multi-row INSERTs, with keys as
// literals and as text or binary parameters, the parts' rows are exactly
// the statement's rows, each on the shard Route gives it.
func TestSplitInsertRoundTrip(t *testing.T) {
	r := splitRouter(t)
	rng := rand.New(rand.NewPCG(1, 2))
	split := 0
	for i := 0; i < 300; i++ {
		sql, params, formats := randomInsert(rng)
		if parts, _ := checkSplit(t, r, sql, params, formats); len(parts) > 1 {
			split++
		}
	}
	if split < 200 {
		t.Fatalf("only %d of 300 statements span shards", split)
	}
}

// randomInsert writes a multi-row INSERT into users, docs or devices with
// parameters shared between rows and clauses, and some left unused.
func randomInsert(rng *rand.Rand) (string, [][]byte, []int16) {
	var params [][]byte
	var formats []int16
	param := func(v []byte, format int16) string {
		params, formats = append(params, v), append(formats, format)
		return "$" + strconv.Itoa(len(params))
	}
	value := func() string { // a new text parameter or any earlier one
		if len(params) == 0 || rng.IntN(3) > 0 {
			return param([]byte(fmt.Sprint("v", rng.IntN(100))), 0)
		}
		return "$" + strconv.Itoa(1+rng.IntN(len(params)))
	}
	tables := []struct {
		name, key, value string
		quote            bool // literal keys are strings
		gen              func() (text string, binary []byte)
	}{
		{"users", "id", "name", false, func() (string, []byte) {
			k := rng.Int64N(2000) - 1000
			if rng.IntN(2) == 0 {
				k = int64(rng.Uint64())
			}
			width := 8 // int8, or a narrower integer when it fits
			if k == int64(int16(k)) {
				width = []int{2, 4, 8}[rng.IntN(3)]
			}
			return strconv.FormatInt(k, 10), be(k, width)
		}},
		{"docs", "slug", "body", true, func() (string, []byte) {
			s := fmt.Sprint("doc-", rng.IntN(1000))
			return s, []byte(s)
		}},
		{"devices", "id", "name", true, func() (string, []byte) {
			var b [16]byte
			for j := range b {
				b[j] = byte(rng.UintN(256))
			}
			h := hex.EncodeToString(b[:])
			return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], b[:]
		}},
	}
	tb := tables[rng.IntN(len(tables))]
	var keyParams []string
	var sb strings.Builder
	fmt.Fprintf(&sb, "INSERT INTO %s (%s, %s) VALUES ", tb.name, tb.key, tb.value)
	for row := range 2 + rng.IntN(20) {
		text, binary := tb.gen()
		key := text
		if tb.quote {
			key = "'" + text + "'"
		}
		switch rng.IntN(4) {
		case 1:
			key = param([]byte(text), 0)
			keyParams = append(keyParams, key)
		case 2:
			key = param(binary, 1)
			keyParams = append(keyParams, key)
		case 3:
			if len(keyParams) > 0 { // an earlier row's key again
				key = keyParams[rng.IntN(len(keyParams))]
			}
		}
		var val string
		switch rng.IntN(4) {
		case 0:
			val = "'lit'"
		case 1:
			val = "DEFAULT"
		case 2:
			val = value()
		default:
			val = "lower(" + value() + ")"
		}
		if rng.IntN(5) == 0 {
			param([]byte("unused"), 0)
		}
		if row > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "(%s, %s)", key, val)
	}
	switch rng.IntN(3) {
	case 1:
		fmt.Fprintf(&sb, " ON CONFLICT (%s) DO NOTHING", tb.key)
	case 2:
		fmt.Fprintf(&sb, " ON CONFLICT (%s) DO UPDATE SET %s = %s", tb.key, tb.value, value())
	}
	if rng.IntN(2) == 0 {
		fmt.Fprintf(&sb, " RETURNING %s, %s::text", tb.key, value())
	}
	return sb.String(), params, compressFormats(rng, formats)
}

// compressFormats sends format codes as a client may: none when all are
// text, one when all agree, or one per parameter.
func compressFormats(rng *rand.Rand, formats []int16) []int16 {
	if rng.IntN(2) == 0 || len(formats) == 0 {
		return formats
	}
	for _, f := range formats {
		if f != formats[0] {
			return formats
		}
	}
	if formats[0] == 0 {
		return nil
	}
	return formats[:1]
}

func BenchmarkSplitInsert(b *testing.B) {
	r := testRouter(b)
	var sb strings.Builder
	var params [][]byte
	sb.WriteString("INSERT INTO users (id, name) VALUES ")
	for i := range 100 {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "($%d, $%d)", 2*i+1, 2*i+2)
		params = append(params, []byte(strconv.Itoa(i)), []byte("user "+strconv.Itoa(i)))
	}
	sb.WriteString(" ON CONFLICT (id) DO NOTHING")
	sql := sb.String()
	b.ReportAllocs()
	for b.Loop() {
		parts, err := r.SplitInsert(sql, params, nil)
		if err != nil || len(parts) != 2 {
			b.Fatal(parts, err)
		}
	}
}
