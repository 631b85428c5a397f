package merge

import (
	"errors"
	"slices"
	"testing"
)

// Build's pipelines run here against in-memory shards, as the proxy runs
// them against shard connections: each test asserts the rows, columns or
// error the client would get.

// shard is a fake shard's answer: its rows, then err (io.EOF when nil).
type shard struct {
	rows  []Row
	err   error
	reads int
}

func (s *shard) Next() (Row, error) {
	s.reads++
	if len(s.rows) == 0 {
		if s.err != nil {
			return nil, s.err
		}
		return (&SliceSource{}).Next()
	}
	row := s.rows[0]
	s.rows = s.rows[1:]
	return row, nil
}

func shards(answers ...[]Row) []Source {
	src := make([]Source, len(answers))
	for i, a := range answers {
		src[i] = &shard{rows: a}
	}
	return src
}

// build runs spec over sources and returns the result's rows as strings.
func build(t *testing.T, spec Spec, cols []Column, sources []Source) (Result, []string) {
	t.Helper()
	res, err := Build(&spec, cols, sources)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := Drain(res.Rows)
	if err != nil {
		t.Fatal(err)
	}
	return res, rowStrings(rows)
}

func rowStrings(rows []Row) []string {
	var s []string
	for _, row := range rows {
		s = append(s, showRow(row))
	}
	return s
}

var idName = []Column{{Name: "id", TypeOID: OIDInt8}, {Name: "name", TypeOID: OIDText}}

func TestBuildConcat(t *testing.T) {
	res, got := build(t, Spec{Limit: -1}, idName, shards(
		[]Row{r("3", "c"), r("1", "a")},
		nil,
		[]Row{r("2", "b")},
	))
	want := []string{"[3 | c]", "[1 | a]", "[2 | b]"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want the shards' rows one shard after another: %v", got, want)
	}
	if res.Origin != nil || !slices.Equal(res.Cols, idName) {
		t.Errorf("columns %v (origin %v), want the shards' own", res.Cols, res.Origin)
	}
}

func TestBuildSortedMerge(t *testing.T) {
	// ORDER BY name DESC (NULLS FIRST by default), id; each shard sorted so.
	spec := Spec{Limit: -1, Sort: []OrderBy{{Col: -1, Name: "name", Desc: true, NullsFirst: true}, {Col: 0}}}
	_, got := build(t, spec, idName, shards(
		[]Row{r("4", "NULL"), r("1", "c"), r("6", "a")},
		[]Row{r("2", "NULL"), r("3", "c"), r("5", "b")},
		[]Row{r("7", "d")},
	))
	want := []string{"[2 | NULL]", "[4 | NULL]", "[7 | d]", "[1 | c]", "[3 | c]", "[5 | b]", "[6 | a]"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestBuildUnsortedShard(t *testing.T) {
	spec := Spec{Limit: -1, Sort: []OrderBy{{Col: 0}}}
	res, err := Build(&spec, idName, shards([]Row{r("1", "a"), r("3", "c")}, []Row{r("5", "e"), r("2", "b")}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Drain(res.Rows); err == nil {
		t.Error("a shard whose rows are out of the merge's order merged without an error")
	}
}

func TestBuildLimitOffset(t *testing.T) {
	rows := []Row{r("1", "a"), r("2", "b"), r("3", "c"), r("4", "d"), r("5", "e")}
	for _, tt := range []struct {
		offset, limit int64
		want          []string
	}{
		{0, 2, []string{"[1 | a]", "[2 | b]"}},
		{2, 2, []string{"[3 | c]", "[4 | d]"}},
		{4, -1, []string{"[5 | e]"}},
		{6, 3, nil},
		{1, 0, nil},
	} {
		spec := Spec{Sort: []OrderBy{{Col: 0}}, Offset: tt.offset, Limit: tt.limit}
		_, got := build(t, spec, idName, shards(
			[]Row{rows[0], rows[2], rows[4]},
			[]Row{rows[1], rows[3]},
		))
		if !slices.Equal(got, tt.want) {
			t.Errorf("OFFSET %d LIMIT %d: got %v, want %v", tt.offset, tt.limit, got, tt.want)
		}
	}
}

// TestBuildLimitStopsReading: a streamed LIMIT stops reading its shards
// once it has its rows, so what comes after them (here a failure) is never
// read.
func TestBuildLimitStopsReading(t *testing.T) {
	failing := &shard{rows: []Row{r("1", "a"), r("2", "b")}, err: errors.New("shard lost")}
	spec := Spec{Limit: 2}
	_, got := build(t, spec, idName, []Source{failing, &shard{rows: []Row{r("3", "c")}}})
	if want := []string{"[1 | a]", "[2 | b]"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if failing.reads != 2 {
		t.Errorf("the shard was read %d times, want 2", failing.reads)
	}
}

func TestBuildDistinct(t *testing.T) {
	spec := Spec{Distinct: true, Sort: []OrderBy{{Col: 1}}, Offset: 1, Limit: -1}
	_, got := build(t, spec, idName, shards(
		[]Row{r("1", "a"), r("NULL", "b"), r("2", "c")},
		[]Row{r("1", "a"), r("NULL", "b"), r("3", "c")},
	))
	want := []string{"[NULL | b]", "[2 | c]", "[3 | c]"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// partials of SELECT country, count(*), avg(n) ... HAVING count(*) > 1:
// avg(n) split into sum(n) and count(n), and the constant 1 appended.
var partialCols = []Column{
	{Name: "country", TypeOID: OIDText},
	{Name: "count", TypeOID: OIDInt8},
	{Name: "sum", TypeOID: OIDInt8},
	{Name: "count", TypeOID: OIDInt8},
	{Name: "?column?", TypeOID: OIDInt4},
}

var partialOut = []OutCol{
	{Group: 0},
	{Group: -1, Agg: &Agg{Kind: AggCount, Col: 1}},
	{Group: -1, Agg: &Agg{Kind: AggAvg, Col: 2, CountCol: 3}},
	{Group: 4, Const: true},
}

func TestBuildAggregate(t *testing.T) {
	spec := Spec{
		Limit:     -1,
		Aggregate: true,
		Output:    partialOut,
		Having:    &Cond{Op: CondCompare, Cmp: ">", L: 1, R: 3},
		Hidden:    1,
		Sort:      []OrderBy{{Col: 1, Desc: true}, {Col: 0}},
	}
	res, got := build(t, spec, partialCols, shards(
		[]Row{r("de", "2", "10", "2", "1"), r("fr", "1", "5", "1", "1"), r("jp", "1", "NULL", "0", "1")},
		[]Row{r("de", "1", "20", "1", "1"), r("us", "3", "9", "3", "1"), r("fr", "1", "7", "1", "1"), r("NULL", "2", "4", "2", "1")},
	))
	want := []string{
		"[de | 3 | 10.0000000000000000]",
		"[us | 3 | 3.0000000000000000]",
		"[fr | 2 | 6.0000000000000000]",
		"[NULL | 2 | 2.0000000000000000]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%v\nwant\n%v", got, want)
	}
	wantCols := []Column{{Name: "country", TypeOID: OIDText}, {Name: "count", TypeOID: OIDInt8}, {Name: "avg", TypeOID: OIDNumeric}}
	if !slices.Equal(res.Cols, wantCols) || !slices.Equal(res.Origin, []int{0, 1, 2}) {
		t.Errorf("columns %v from %v, want %v from [0 1 2]", res.Cols, res.Origin, wantCols)
	}
}

// TestBuildAggregateNoGroups: an aggregate without GROUP BY is one row,
// even of no partials (a constant is no group), with the shards' binary
// formats read as text.
func TestBuildAggregateNoGroups(t *testing.T) {
	cols := []Column{{Name: "count", TypeOID: OIDInt8, Format: 1}, {Name: "max", TypeOID: OIDText}, {Name: "?column?", TypeOID: OIDInt4}}
	out := []OutCol{{Group: -1, Agg: &Agg{Kind: AggCount, Col: 0}}, {Group: -1, Agg: &Agg{Kind: AggMax, Col: 1}}, {Group: 2, Const: true}}
	res, got := build(t, Spec{Limit: -1, Aggregate: true, Output: out}, cols, shards(nil, nil))
	if want := []string{"[0 | NULL | NULL]"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if res.Cols[0].Format != 0 {
		t.Errorf("combined count in format %d, want text", res.Cols[0].Format)
	}
}

// TestBuildHaving checks HAVING's three-valued logic: a comparison with
// NULL is unknown, NOT unknown is unknown, AND is false and OR true as
// soon as one argument is, and only true keeps a group.
func TestBuildHaving(t *testing.T) {
	cols := []Column{{Name: "a", TypeOID: OIDInt8}, {Name: "b", TypeOID: OIDInt4}, {Name: "flag", TypeOID: OIDBool}}
	out := []OutCol{{Group: 0}, {Group: 1}, {Group: 2}}
	rows := []Row{
		r("1", "2", "t"),    // a > b false, flag true
		r("3", "2", "NULL"), // a > b true, flag unknown
		r("NULL", "2", "f"), // a > b unknown, flag false
		r("5", "2", "f"),    // a > b true, flag false
	}
	gt := Cond{Op: CondCompare, Cmp: ">", L: 0, R: 1}
	flag := Cond{Op: CondValue, L: 2}
	not := func(c Cond) Cond { return Cond{Op: CondNot, Args: []Cond{c}} }
	and := func(c ...Cond) Cond { return Cond{Op: CondAnd, Args: c} }
	or := func(c ...Cond) Cond { return Cond{Op: CondOr, Args: c} }
	cmp := func(op string) Cond { return Cond{Op: CondCompare, Cmp: op, L: 0, R: 1} }
	for _, tt := range []struct {
		name string
		cond Cond
		want []int // the rows kept
	}{
		{"a > b", gt, []int{1, 3}},
		{"NOT a > b", not(gt), []int{0}},
		{"a > b OR a IS NULL", or(gt, Cond{Op: CondIsNull, L: 0}), []int{1, 2, 3}},
		{"a > b AND flag", and(gt, flag), nil},
		{"NOT (a > b AND flag)", not(and(gt, flag)), []int{0, 2, 3}},
		{"flag OR a = b", or(flag, cmp("=")), []int{0}},
		{"NOT flag", not(flag), []int{2, 3}},
		{"a < b", cmp("<"), []int{0}},
		{"a <= b", cmp("<="), []int{0}},
		{"a >= b", cmp(">="), []int{1, 3}},
		{"a <> b", cmp("<>"), []int{0, 1, 3}},
	} {
		spec := Spec{Limit: -1, Aggregate: true, Output: out, Having: &tt.cond}
		_, got := build(t, spec, cols, shards(rows[:2], rows[2:]))
		var want []string
		for _, i := range tt.want {
			want = append(want, showRow(rows[i]))
		}
		if !slices.Equal(got, want) {
			t.Errorf("HAVING %s: got %v, want %v", tt.name, got, want)
		}
	}
}

func TestBuildHavingErrors(t *testing.T) {
	cols := []Column{{Name: "a", TypeOID: OIDInt8}, {Name: "b", TypeOID: OIDText}}
	out := []OutCol{{Group: 0}, {Group: 1}}
	for _, cond := range []Cond{
		{Op: CondValue, L: 0},                         // an int8 read as a boolean
		{Op: CondCompare, Cmp: "~~", L: 0, R: 0},      // no such comparison
		{Op: CondCompare, Cmp: "=", L: 0, R: 1},       // int8 with text
		{Op: CondOp(99)},                              // no such condition
		{Op: CondAnd, Args: []Cond{{Op: CondOp(99)}}}, // nor inside AND
	} {
		spec := Spec{Limit: -1, Aggregate: true, Output: out, Having: &cond}
		res, err := Build(&spec, cols, shards([]Row{r("1", "x")}))
		if err != nil {
			t.Fatal(err)
		}
		if rows, err := Drain(res.Rows); err == nil {
			t.Errorf("HAVING %+v: rows %v, want an error", cond, rowStrings(rows))
		}
	}
}

// TestBuildShardError: a shard failing midway fails the merged result,
// with its own error, whichever steps the rows go through.
func TestBuildShardError(t *testing.T) {
	lost := errors.New("shard connection lost")
	for _, tt := range []struct {
		name string
		spec Spec
		cols []Column
		rows []Row
	}{
		{"concat", Spec{Limit: -1}, idName, []Row{r("1", "a")}},
		{"sorted merge", Spec{Limit: -1, Sort: []OrderBy{{Col: 0}}}, idName, []Row{r("1", "a")}},
		{"distinct", Spec{Limit: 5, Distinct: true}, idName, []Row{r("1", "a")}},
		{"aggregate", Spec{Limit: -1, Aggregate: true, Output: partialOut}, partialCols, []Row{r("de", "1", "1", "1", "1")}},
	} {
		sources := []Source{&shard{rows: tt.rows}, &shard{rows: tt.rows, err: lost}}
		res, err := Build(&tt.spec, tt.cols, sources)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if _, err := Drain(res.Rows); !errors.Is(err, lost) {
			t.Errorf("%s: error %v, want the shard's %v", tt.name, err, lost)
		}
	}
}

// TestBuildRefuses: what Build can tell from the spec and the columns
// fails before any shard is read.
func TestBuildRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		spec Spec
		cols []Column
	}{
		{"ORDER BY a column not in the result", Spec{Sort: []OrderBy{{Col: -1, Name: "email"}}}, idName},
		{"ORDER BY a column out of range", Spec{Sort: []OrderBy{{Col: 2}}}, idName},
		{"ORDER BY a type it cannot compare", Spec{Sort: []OrderBy{{Col: 0}}}, []Column{{Name: "j", TypeOID: 114}}},
		{"an aggregate over a column out of range", Spec{Aggregate: true, Output: []OutCol{{Group: -1, Agg: &Agg{Kind: AggCount, Col: 5}}}}, idName},
		{"more hidden columns than columns", Spec{Aggregate: true, Output: []OutCol{{Group: 0}}, Hidden: 2}, idName},
	} {
		s := &shard{rows: []Row{r("1", "a")}}
		if _, err := Build(&tt.spec, tt.cols, []Source{s}); err == nil {
			t.Errorf("%s: built", tt.name)
		}
		if s.reads != 0 {
			t.Errorf("%s: a shard was read %d times", tt.name, s.reads)
		}
	}
}
