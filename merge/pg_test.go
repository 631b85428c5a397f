package merge

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/shardgate/shardgate/sandbox"
)

// TestAgainstPostgres checks Combine's output text and Compare's order
// against a real PostgreSQL (C locale).
func TestAgainstPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := sandbox.Start(ctx, sandbox.Options{Dir: t.TempDir(), Shards: 1, Replicas: sandbox.NoReplicas, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	conn, err := pgconn.Connect(ctx, c.Shards[0].Primary.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	query := func(t *testing.T, sql string, formats ...int16) ([]Column, []Row) {
		t.Helper()
		res := conn.ExecParams(ctx, sql, nil, nil, nil, formats).Read()
		if res.Err != nil {
			t.Fatalf("%s: %v", sql, res.Err)
		}
		cols := make([]Column, len(res.FieldDescriptions))
		for i, f := range res.FieldDescriptions {
			cols[i] = Column{Name: f.Name, TypeOID: f.DataTypeOID, Format: f.Format}
		}
		rows := make([]Row, len(res.Rows))
		for i, r := range res.Rows {
			rows[i] = make(Row, len(r))
			for j, v := range r {
				if v != nil {
					rows[i][j] = slices.Clone(v)
				}
			}
		}
		return cols, rows
	}
	for _, s := range []string{"SET TimeZone = 'Asia/Kolkata'", "SET DateStyle = 'ISO, MDY'"} {
		if err := conn.Exec(ctx, s).Close(); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("aggregates", func(t *testing.T) { testAggregatesAgainstPG(t, query) })
	t.Run("groupby", func(t *testing.T) { testGroupByAgainstPG(t, query) })
	t.Run("order", func(t *testing.T) { testOrderAgainstPG(t, query) })
	t.Run("across", func(t *testing.T) { testCompareAcrossAgainstPG(t, query) })
}

type queryFunc func(t *testing.T, sql string, formats ...int16) ([]Column, []Row)

func valuesSQL(vals []string, typ string) string {
	if len(vals) == 0 {
		return fmt.Sprintf("(SELECT NULL::%s AS x WHERE false) v", typ)
	}
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = fmt.Sprintf("(%s::%s)", v, typ)
	}
	return "(VALUES " + strings.Join(parts, ", ") + ") v(x)"
}

func showRow(r Row) string {
	s := make([]string, len(r))
	for i, v := range r {
		if v == nil {
			s[i] = "NULL"
		} else {
			s[i] = string(v)
		}
	}
	return "[" + strings.Join(s, " | ") + "]"
}

func testAggregatesAgainstPG(t *testing.T, query queryFunc) {
	sets := []struct {
		typ  string
		vals []string
	}{
		{"int4", []string{"1", "2"}},
		{"int4", []string{"10", "20", "30"}},
		{"int4", []string{"-7", "3", "5", "11", "NULL"}},
		{"int4", []string{"2147483647", "2147483647", "2147483647", "1"}},
		{"int4", []string{"NULL", "NULL"}},
		{"int4", []string{"1", "1", "1"}},
		{"int4", []string{"2", "1", "1", "1", "1", "1", "1"}},
		{"int4", []string{"12345", "1", "2"}},
		{"int4", []string{"-1", "-2"}},
		{"int4", []string{"0", "0"}},
		{"int4", nil},
		{"int2", []string{"1", "2", "4"}},
		{"int8", []string{"9223372036854775807", "9223372036854775807", "5"}},
		{"int8", []string{"-3", "1"}},
		{"int8", []string{"100000000", "300000000", "1"}},
		{"int8", []string{"99999999", "1"}},
		{"int8", []string{"10000", "1", "1"}},
		{"numeric", []string{"1.5", "2.25", "3.125"}},
		{"numeric", []string{"0.001", "0.002", "0.0004"}},
		{"numeric", []string{"123456789012345678901234567890.5", "1"}},
		{"numeric", []string{"-0.5", "0.5"}},
		{"numeric", []string{"1e-20", "3e-20"}},
		{"numeric", []string{"'NaN'", "1"}},
		{"numeric", []string{"'Infinity'", "1"}},
		{"numeric", []string{"'-Infinity'", "1", "'Infinity'"}},
		{"numeric", []string{"99999999.99999", "0.00001", "7"}},
		{"numeric", []string{"1.00", "2.0", "3"}},
		{"numeric", []string{"-9999.9999", "1", "0.00000001"}},
		{"numeric", []string{"5000", "5000", "1"}},
		{"numeric", []string{"1e-30", "0", "0"}},
		{"numeric", []string{"0.5", "0"}},
		{"numeric", []string{"-2", "0", "0"}},
		{"numeric", []string{"1.123456789012345678901"}},
		{"int8", []string{"123456789"}},
		{"int8", []string{"100000", "0", "0"}},
		{"int4", []string{"5", "0", "0"}},
		{"float8", []string{"1.5", "2.5", "3"}},
		{"float8", []string{"0.1", "0.2"}},
		{"float8", []string{"1e20", "1"}},
		{"float8", []string{"1e-5", "2e-5"}},
		{"float8", []string{"123456789012345678"}},
		{"float8", []string{"'NaN'", "1"}},
		{"float8", []string{"'Infinity'", "1"}},
		{"float8", []string{"100000000000000", "900000000000000"}},
		{"float8", []string{"0.0001", "0.0002"}},
		{"float8", []string{"-0.0"}},
		{"float8", []string{"-0.0", "-0.0", "-0.0"}},
		{"float8", []string{"-0.0", "0", "-0.0"}},
		{"float4", []string{"1.5", "2.5"}},
		{"float4", []string{"1e6"}},
		{"float4", []string{"100000", "0.5"}},
		{"float4", []string{"0.0001"}},
		{"float4", []string{"0.00001"}},
	}
	const shards = 3
	for _, set := range sets {
		name := set.typ + "(" + strings.Join(set.vals, ",") + ")"
		t.Run(name, func(t *testing.T) {
			var partialCols []Column
			var partials []Row
			for s := range shards {
				var vals []string
				for i, v := range set.vals {
					if i%shards == s {
						vals = append(vals, v)
					}
				}
				cols, rows := query(t, "SELECT sum(x), count(x), min(x), max(x), count(*) FROM "+valuesSQL(vals, set.typ))
				partialCols = cols
				partials = append(partials, rows...)
			}
			out := []OutCol{
				{Group: -1, Agg: &Agg{Kind: AggAvg, Col: 0, CountCol: 1}},
				{Group: -1, Agg: &Agg{Kind: AggSum, Col: 0}},
				{Group: -1, Agg: &Agg{Kind: AggCount, Col: 1}},
				{Group: -1, Agg: &Agg{Kind: AggMin, Col: 2}},
				{Group: -1, Agg: &Agg{Kind: AggMax, Col: 3}},
				{Group: -1, Agg: &Agg{Kind: AggCount, Col: 4}},
			}
			got, err := Combine(partialCols, out, partials)
			if err != nil {
				t.Fatal(err)
			}
			wantCols, want := query(t, "SELECT avg(x), sum(x), count(x), min(x), max(x), count(*) FROM "+valuesSQL(set.vals, set.typ))
			if len(got) != 1 || showRow(got[0]) != showRow(want[0]) {
				t.Errorf("Combine = %v, Postgres = %v", showRows(got), showRows(want))
			}
			types, err := CombineColumns(partialCols, out)
			if err != nil {
				t.Fatal(err)
			}
			for i := range types {
				if types[i].TypeOID != wantCols[i].TypeOID {
					t.Errorf("column %d: CombineColumns type %d, Postgres %d", i, types[i].TypeOID, wantCols[i].TypeOID)
				}
			}
		})
	}
}

func showRows(rows []Row) string {
	s := make([]string, len(rows))
	for i, r := range rows {
		s[i] = showRow(r)
	}
	return strings.Join(s, " ")
}

func testGroupByAgainstPG(t *testing.T, query queryFunc) {
	data := []string{
		"('a', 1, 1.5, true)", "('b', 2, 2.25, false)", "(NULL, 3, NULL, true)", "('a', NULL, 0.5, NULL)",
		"('b', 5, 1, true)", "(NULL, 6, 7.125, false)", "('c', NULL, NULL, NULL)", "('a', 8, 3, true)",
		"('A', 9, -1, false)", "('b', 10, 2, false)",
	}
	from := func(rows []string) string {
		if len(rows) == 0 {
			return "(SELECT NULL::text, NULL::int4, NULL::numeric, NULL::bool WHERE false) v(g, x, y, b)"
		}
		return "(VALUES " + strings.Join(rows, ", ") + ") v(g, x, y, b)"
	}
	var partialCols []Column
	var partials []Row
	for s := range 3 {
		var rows []string
		for i, r := range data {
			if i%3 == s {
				rows = append(rows, r)
			}
		}
		cols, got := query(t, "SELECT g, count(*), sum(x), count(x), sum(y), count(y), min(y), max(x), bool_and(b), bool_or(b) FROM "+from(rows)+" GROUP BY g")
		partialCols = cols
		partials = append(partials, got...)
	}
	agg := func(a Agg) OutCol { return OutCol{Group: -1, Agg: &a} }
	out := []OutCol{
		{Group: 0},
		agg(Agg{Kind: AggCount, Col: 1}),
		agg(Agg{Kind: AggSum, Col: 2}),
		agg(Agg{Kind: AggAvg, Col: 2, CountCol: 3}),
		agg(Agg{Kind: AggAvg, Col: 4, CountCol: 5}),
		agg(Agg{Kind: AggMin, Col: 6}),
		agg(Agg{Kind: AggMax, Col: 7}),
		agg(Agg{Kind: AggBoolAnd, Col: 8}),
		agg(Agg{Kind: AggBoolOr, Col: 9}),
	}
	got, err := Combine(partialCols, out, partials)
	if err != nil {
		t.Fatal(err)
	}
	_, want := query(t, "SELECT g, count(*), sum(x), avg(x), avg(y), min(y), max(x), bool_and(b), bool_or(b) FROM "+from(data)+" GROUP BY g")
	gs, ws := make([]string, len(got)), make([]string, len(want))
	for i := range got {
		gs[i] = showRow(got[i])
	}
	for i := range want {
		ws[i] = showRow(want[i])
	}
	slices.Sort(gs)
	slices.Sort(ws)
	if !slices.Equal(gs, ws) {
		t.Errorf("Combine:\n%s\nPostgres:\n%s", strings.Join(gs, "\n"), strings.Join(ws, "\n"))
	}
}

func testOrderAgainstPG(t *testing.T, query queryFunc) {
	sets := []struct {
		typ  string
		vals []string
	}{
		{"text", []string{"'a'", "'B'", "'b'", "''", "' '", "'ab'", "'a b'", "'é'", "'z'", "'Z'", "'日本'", "'a'", "'aa'", "'~'"}},
		{"varchar", []string{"'x'", "'X'", "'xy'", "''", "'x'"}},
		{"name", []string{"'x'", "'X'", "'xy'", "'abc'"}},
		{"char(3)", []string{"'a'", "'a '", "'ab'", "' a'", "''", "'b'", "'A'"}},
		{"bpchar", []string{"'a'", "'a  '", "'ab'", "' a'", "''", "'a b'"}},
		{"numeric", []string{"'-Infinity'", "'Infinity'", "'NaN'", "0", "-0.0", "1.0", "1.00", "0.1", "-1", "123456789012345678901234567890", "1e-30", "-1e30", "3.14159", "'NaN'", "0.00010000", "-0.0001", "99999.99999"}},
		{"float8", []string{"'NaN'", "'Infinity'", "'-Infinity'", "0", "-0", "1.5", "-2.25", "1e300", "1e-300", "0.1", "'NaN'", "1"}},
		{"float4", []string{"'NaN'", "'Infinity'", "'-Infinity'", "0", "-0", "1.5", "-2.25", "1e30", "1e-30", "0.1"}},
		{"int2", []string{"0", "'-32768'", "32767", "5", "-5"}},
		{"int4", []string{"0", "'-2147483648'", "2147483647", "5", "-5", "5"}},
		{"int8", []string{"0", "'-9223372036854775808'", "9223372036854775807", "5", "-5"}},
		{"bool", []string{"true", "false", "true"}},
		{"date", []string{"'2024-01-02'", "'0044-03-15 BC'", "'0001-01-01'", "'0001-12-31 BC'", "'1999-12-31'", "'2000-01-01'", "'infinity'", "'-infinity'", "'20000-01-01'", "'4713-01-01 BC'", "'2000-02-29'", "'1900-03-01'"}},
		{"timestamp", []string{"'2024-01-02 03:04:05'", "'2024-01-02 03:04:05.5'", "'2024-01-02 03:04:05.000001'", "'0044-03-15 12:00:00 BC'", "'0001-01-01 00:00:00'", "'1999-12-31 23:59:59.999999'", "'2000-01-01'", "'infinity'", "'-infinity'", "'20000-01-01 00:00:00'", "'1969-07-20 20:17:40'", "'2024-01-02 03:04:05.12'"}},
		{"timestamptz", []string{"'2024-01-02 03:04:05+00'", "'2024-01-02 03:04:05.5-08'", "'2024-01-02 08:34:05+05:30'", "'1800-01-01 00:00:00+00'", "'1800-01-01 05:53:00+00'", "'1800-01-01 05:54:00+00'", "'0044-03-15 12:00:00+00 BC'", "'infinity'", "'-infinity'", "'2000-01-01 00:00:00+00'", "'1999-12-31 18:30:00-05'"}},
		{"uuid", []string{"'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12'", "'00000000-0000-0000-0000-000000000000'", "'ffffffff-ffff-ffff-ffff-ffffffffffff'", "'10000000-0000-0000-0000-000000000000'"}},
		{"bytea", []string{`'\x00'`, `'\x'`, `'\xff'`, `'\x0001'`, `'abc'`, `'\x7f80'`, `'ab'`}},
	}
	for _, set := range sets {
		t.Run(set.typ, func(t *testing.T) {
			cols, rows := query(t, "SELECT x, x, dense_rank() OVER (ORDER BY x) FROM "+valuesSQL(set.vals, set.typ)+" ORDER BY x", 0, 1, 0)
			if cols[0].Format != 0 || cols[1].Format != 1 {
				t.Fatalf("got formats %d, %d", cols[0].Format, cols[1].Format)
			}
			ranks := make([]int, len(rows))
			for i, r := range rows {
				ranks[i], _ = strconv.Atoi(string(r[2]))
			}
			for _, x := range []int{0, 1} {
				for i := range rows {
					for j := range rows {
						c, err := Compare(cols[x], rows[i][x], rows[j][x])
						if err != nil {
							t.Fatal(err)
						}
						if want := cmpInt(ranks[i], ranks[j]); c != want {
							t.Errorf("format %d: Compare(%q, %q) = %d, Postgres order says %d", cols[x].Format, rows[i][x], rows[j][x], c, want)
						}
					}
				}
				// DISTINCT agrees with Postgres's equality too.
				xs := make([]Row, len(rows))
				for i, r := range rows {
					xs[i] = r[x : x+1]
				}
				distinct, err := Distinct(cols[x:x+1], xs)
				if err != nil {
					t.Fatal(err)
				}
				if want := ranks[len(ranks)-1]; len(distinct) != want {
					t.Errorf("format %d: Distinct kept %d rows, Postgres has %d distinct values", cols[x].Format, len(distinct), want)
				}
			}
			// The text and the binary form of each value decode to the same value.
			for _, r := range rows {
				kt, err := appendKey(nil, cols[0], r[0])
				if err != nil {
					t.Fatal(err)
				}
				kb, err := appendKey(nil, cols[1], r[1])
				if err != nil {
					t.Fatal(err)
				}
				if string(kt) != string(kb) {
					t.Errorf("%q decodes to %x as text but %x from binary %x", r[0], kt, kb, r[1])
				}
			}
		})
	}
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// testCompareAcrossAgainstPG checks CompareAcross against Postgres's own
// comparison operators between the types it mixes.
func testCompareAcrossAgainstPG(t *testing.T, query queryFunc) {
	ints := []string{"0", "-1", "5", "100", "32767"}
	decimals := append([]string{"2.5", "-0.1", "0.1", "100.5", "9007199254740993", "'NaN'", "'Infinity'", "'-Infinity'"}, ints...)
	texts := []string{"'a'", "'B'", "''", "'a '", "'é'"}
	sets := []struct {
		typ  string
		vals []string
	}{
		{"int2", ints},
		{"int4", append([]string{"2147483647"}, ints...)},
		{"int8", append([]string{"9007199254740993", "'-9223372036854775808'"}, ints...)},
		{"numeric", append([]string{"100.50", "1e-30", "9007199254740992"}, decimals...)},
		{"float4", decimals},
		{"float8", append([]string{"1e300"}, decimals...)},
		{"text", texts},
		{"varchar", texts},
		{"name", texts},
	}
	values := func(vals []string, typ string) string {
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = fmt.Sprintf("(%s::%s)", v, typ)
		}
		return "(VALUES " + strings.Join(parts, ", ") + ")"
	}
	isText := func(typ string) bool { return typ == "text" || typ == "varchar" || typ == "name" }
	for _, a := range sets {
		for _, b := range sets {
			if isText(a.typ) != isText(b.typ) {
				continue
			}
			t.Run(a.typ+"_"+b.typ, func(t *testing.T) {
				sql := "SELECT a.x, b.x, a.x < b.x, a.x = b.x FROM " + values(a.vals, a.typ) + " a(x), " + values(b.vals, b.typ) + " b(x)"
				cols, rows := query(t, sql)
				for _, r := range rows {
					want := 1
					switch {
					case string(r[2]) == "t":
						want = -1
					case string(r[3]) == "t":
						want = 0
					}
					got, err := CompareAcross(cols[0], r[0], cols[1], r[1])
					if err != nil {
						t.Fatal(err)
					}
					if got != want {
						t.Errorf("CompareAcross(%s %q, %s %q) = %d, Postgres says %d", a.typ, r[0], b.typ, r[1], got, want)
					}
				}
			})
		}
	}
}
