package merge

import (
	"errors"
	"slices"
	"testing"
)

func aggCol(kind AggKind, col int) OutCol { return OutCol{Group: -1, Agg: &Agg{Kind: kind, Col: col}} }
func avgCol(sum, count int) OutCol {
	return OutCol{Group: -1, Agg: &Agg{Kind: AggAvg, Col: sum, CountCol: count}}
}

func TestCombine(t *testing.T) {
	// Partials of SELECT g, count(*), sum(i4), count(i4), sum(n), count(n), min(t), max(t), bool_and(b), bool_or(b), sum(f), count(f), sum(i8)
	cols := []Column{
		{Name: "g", TypeOID: OIDText},
		{Name: "count", TypeOID: OIDInt8},
		{Name: "sum_i4", TypeOID: OIDInt8},
		{Name: "count_i4", TypeOID: OIDInt8},
		{Name: "sum_n", TypeOID: OIDNumeric},
		{Name: "count_n", TypeOID: OIDInt8},
		{Name: "min_t", TypeOID: OIDText},
		{Name: "max_t", TypeOID: OIDText},
		{Name: "band", TypeOID: OIDBool},
		{Name: "bor", TypeOID: OIDBool},
		{Name: "sum_f", TypeOID: OIDFloat8},
		{Name: "count_f", TypeOID: OIDInt8},
		{Name: "sum_i8", TypeOID: OIDNumeric},
	}
	out := []OutCol{
		{Group: 0},
		aggCol(AggCount, 1),
		aggCol(AggSum, 2),
		avgCol(2, 3),
		aggCol(AggSum, 4),
		avgCol(4, 5),
		aggCol(AggMin, 6),
		aggCol(AggMax, 7),
		aggCol(AggBoolAnd, 8),
		aggCol(AggBoolOr, 9),
		aggCol(AggSum, 10),
		avgCol(10, 11),
		aggCol(AggSum, 12),
	}
	noGroup := slices.Clone(out[1:])
	tests := []struct {
		name string
		out  []OutCol
		rows []Row
		want []string
	}{
		{
			name: "groups with NULL group",
			out:  out,
			rows: []Row{
				r("a", "2", "3", "2", "1.5", "2", "b", "x", "t", "f", "1.5", "2", "9223372036854775807"),
				r("NULL", "1", "NULL", "0", "NULL", "0", "NULL", "NULL", "NULL", "NULL", "NULL", "0", "NULL"),
				r("a", "1", "NULL", "0", "0.25", "1", "a", "y", "f", "f", "NULL", "0", "9223372036854775807"),
				r("b", "3", "60", "3", "1", "1", "B", "B", "t", "t", "0.5", "1", "-1"),
				r("NULL", "4", "7", "1", "NULL", "0", "m", "m", "t", "NULL", "2", "1", "5"),
			},
			want: []string{
				"[a | 3 | 3 | 1.5000000000000000 | 1.75 | 0.58333333333333333333 | a | y | f | f | 1.5 | 0.75 | 18446744073709551614]",
				"[NULL | 5 | 7 | 7.0000000000000000 | NULL | NULL | m | m | t | NULL | 2 | 2 | 5]",
				"[b | 3 | 60 | 20.0000000000000000 | 1 | 1.00000000000000000000 | B | B | t | t | 0.5 | 0.5 | -1]",
			},
		},
		{
			name: "no group by",
			out:  noGroup,
			rows: []Row{
				r("x", "2", "3", "2", "1.5", "2", "b", "x", "t", "f", "1.5", "2", "1"),
				r("y", "0", "NULL", "0", "NULL", "0", "NULL", "NULL", "NULL", "NULL", "NULL", "0", "NULL"),
			},
			want: []string{"[2 | 3 | 1.5000000000000000 | 1.5 | 0.75000000000000000000 | b | x | t | f | 1.5 | 0.75 | 1]"},
		},
		{
			name: "no group by, no rows",
			out:  noGroup,
			want: []string{"[0 | NULL | NULL | NULL | NULL | NULL | NULL | NULL | NULL | NULL | NULL | NULL]"},
		},
		{
			name: "group by, no rows",
			out:  out,
			want: nil,
		},
		{
			name: "no group by, all partials NULL",
			out:  noGroup,
			rows: []Row{r("x", "0", "NULL", "0", "NULL", "0", "NULL", "NULL", "NULL", "NULL", "NULL", "0", "NULL")},
			want: []string{"[0 | NULL | NULL | NULL | NULL | NULL | NULL | NULL | NULL | NULL | NULL | NULL]"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Combine(cols, tt.out, tt.rows)
			if err != nil {
				t.Fatal(err)
			}
			var gs []string
			for _, row := range got {
				gs = append(gs, showRow(row))
			}
			if !slices.Equal(gs, tt.want) {
				t.Errorf("got\n%v\nwant\n%v", gs, tt.want)
			}
		})
	}
}

func TestCombineGroupEquality(t *testing.T) {
	tests := []struct {
		name   string
		col    Column
		values []string
		groups int
	}{
		{"text is bytewise", Column{TypeOID: OIDText}, []string{"a", "A", "a ", "a", "NULL", "NULL"}, 4},
		{"bpchar ignores trailing spaces", Column{TypeOID: OIDBpchar}, []string{"a", "a  ", " a", "NULL"}, 3},
		{"numeric by value", Column{TypeOID: OIDNumeric}, []string{"1", "1.0", "1.00", "-0.0", "0", "NaN", "NaN", "Infinity"}, 4},
		{"float -0 and 0, NaNs", Column{TypeOID: OIDFloat8}, []string{"0", "-0", "NaN", "NaN", "1"}, 3},
		{"int", Column{TypeOID: OIDInt4}, []string{"1", "01", "+1", "2"}, 2},
		{"timestamptz instants", Column{TypeOID: OIDTimestamptz}, []string{"2024-01-02 08:34:05+05:30", "2024-01-02 03:04:05+00", "2024-01-02 03:04:05+01"}, 2},
		{"uuid case", Column{TypeOID: OIDUUID}, []string{"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cols := []Column{tt.col, {TypeOID: OIDInt8}}
			var rows []Row
			for _, v := range tt.values {
				rows = append(rows, r(v, "1"))
			}
			got, err := Combine(cols, []OutCol{{Group: 0}, aggCol(AggCount, 1)}, rows)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.groups {
				t.Errorf("got %d groups (%s), want %d", len(got), showRows(got), tt.groups)
			}
			total := 0
			for _, row := range got {
				total += int(row[1][0] - '0')
			}
			if total != len(tt.values) {
				t.Errorf("counts add up to %d, want %d", total, len(tt.values))
			}
			d, err := Distinct(cols[:1], rowsCol0(rows))
			if err != nil {
				t.Fatal(err)
			}
			if len(d) != tt.groups {
				t.Errorf("Distinct kept %d rows, want %d", len(d), tt.groups)
			}
		})
	}
}

func rowsCol0(rows []Row) []Row {
	out := make([]Row, len(rows))
	for i, row := range rows {
		out[i] = row[:1]
	}
	return out
}

func TestAvgDisplayScale(t *testing.T) {
	tests := []struct {
		sumType uint32
		sum     string
		count   string
		want    string
	}{
		{OIDInt8, "3", "2", "1.5000000000000000"},                               // avg(1, 2)
		{OIDInt8, "60", "3", "20.0000000000000000"},                             // avg(10, 20, 30)
		{OIDInt8, "2", "3", "0.66666666666666666667"},                           // first digits 2 <= 3: one more base-10000 digit
		{OIDInt8, "-2", "3", "-0.66666666666666666667"},                         // rounds half away from zero
		{OIDInt8, "100000", "3", "33333.333333333333"},                          // weight 1: 12 fraction digits
		{OIDInt8, "123456789", "1", "123456789.000000000000"},                   // weight 2, first digits 1 <= 1
		{OIDInt8, "0", "5", "0.00000000000000000000"},                           // zero dividend: weight 0, first digit 0
		{OIDInt8, "5", "10000", "0.00050000000000000000"},                       // divisor weight 1
		{OIDNumeric, "0.5", "2", "0.25000000000000000000"},                      // 0.5 has weight -1
		{OIDNumeric, "1.123456789012345678901", "1", "1.123456789012345678901"}, // dividend dscale wins
		{OIDNumeric, "NaN", "2", "NaN"},
		{OIDNumeric, "-Infinity", "2", "-Infinity"},
		{OIDNumeric, "1", "0", "NULL"},
		{OIDNumeric, "1e-30", "3", "0.000000000000000000000000000000333333333333333333"}, // weight -8
		{OIDFloat8, "1", "3", "0.3333333333333333"},
		{OIDFloat8, "NaN", "3", "NaN"},
	}
	for _, tt := range tests {
		cols := []Column{{Name: "s", TypeOID: tt.sumType}, {Name: "c", TypeOID: OIDInt8}}
		got, err := Combine(cols, []OutCol{avgCol(0, 1)}, []Row{r(tt.sum, tt.count)})
		if err != nil {
			t.Fatal(err)
		}
		if s := showRow(got[0]); s != "["+tt.want+"]" {
			t.Errorf("avg(sum %s, count %s) = %s, want %s", tt.sum, tt.count, s, tt.want)
		}
	}
}

func TestCombineErrors(t *testing.T) {
	i8 := Column{Name: "n", TypeOID: OIDInt8}
	tests := []struct {
		name        string
		cols        []Column
		out         []OutCol
		rows        []Row
		unsupported bool
	}{
		{"sum of json", []Column{{TypeOID: 114}}, []OutCol{aggCol(AggSum, 0)}, nil, true},
		{"min of interval", []Column{{TypeOID: 1186}}, []OutCol{aggCol(AggMin, 0)}, nil, true},
		{"group by json", []Column{{TypeOID: 114}, i8}, []OutCol{{Group: 0}, aggCol(AggCount, 1)}, nil, true},
		{"bool_and of int", []Column{i8}, []OutCol{aggCol(AggBoolAnd, 0)}, nil, true},
		{"binary partial", []Column{{TypeOID: OIDInt8, Format: 1}}, []OutCol{aggCol(AggSum, 0)}, nil, false},
		{"column out of range", []Column{i8}, []OutCol{aggCol(AggSum, 3)}, nil, false},
		{"int8 sum overflow", []Column{i8}, []OutCol{aggCol(AggSum, 0)}, []Row{r("9223372036854775807"), r("1")}, false},
		{"bad partial", []Column{i8}, []OutCol{aggCol(AggCount, 0)}, []Row{r("x")}, false},
		{"short row", []Column{i8, i8}, []OutCol{aggCol(AggCount, 0)}, []Row{r("1")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Combine(tt.cols, tt.out, tt.rows)
			if err == nil {
				t.Fatal("no error")
			}
			if got := errors.Is(err, ErrUnsupportedType); got != tt.unsupported {
				t.Errorf("errors.Is(%v, ErrUnsupportedType) = %v", err, got)
			}
		})
	}
}

func TestCombineGroupsHiddenColumn(t *testing.T) {
	// SELECT count(*) FROM t GROUP BY g: g is not in the output.
	cols := []Column{{Name: "g", TypeOID: OIDInt4}, {Name: "count", TypeOID: OIDInt8}}
	rows := []Row{r("1", "2"), r("2", "5"), r("1", "3")}
	got, err := CombineGroups(cols, []int{0}, []OutCol{aggCol(AggCount, 1)}, rows)
	if err != nil {
		t.Fatal(err)
	}
	if s := showRows(got); s != "[5] [5]" {
		t.Errorf("got %s", s)
	}
}

func TestCombineGroupsUngroupedColumn(t *testing.T) {
	// SELECT count(*), 2 FROM t: the constant is copied, not grouped by;
	// of no rows at all, the one row has it NULL.
	cols := []Column{{Name: "count", TypeOID: OIDInt8}, {Name: "?column?", TypeOID: OIDInt4}}
	out := []OutCol{aggCol(AggCount, 0), {Group: 1}}
	for _, c := range []struct {
		rows []Row
		want string
	}{{[]Row{r("2", "2"), r("3", "2")}, "[5 | 2]"}, {nil, "[0 | NULL]"}} {
		got, err := CombineGroups(cols, nil, out, c.rows)
		if err != nil {
			t.Fatal(err)
		}
		if s := showRows(got); s != c.want {
			t.Errorf("got %s, want %s", s, c.want)
		}
	}
}

func TestCombineColumns(t *testing.T) {
	cols := []Column{
		{Name: "g", TypeOID: OIDVarchar}, {Name: "c", TypeOID: OIDInt8}, {Name: "s4", TypeOID: OIDInt8},
		{Name: "sn", TypeOID: OIDNumeric}, {Name: "sf", TypeOID: OIDFloat4}, {Name: "b", TypeOID: OIDBool}, {Name: "d", TypeOID: OIDDate},
	}
	out := []OutCol{{Group: 0}, aggCol(AggCount, 1), aggCol(AggSum, 2), avgCol(2, 1), aggCol(AggSum, 3), avgCol(3, 1),
		aggCol(AggSum, 4), avgCol(4, 1), aggCol(AggBoolOr, 5), aggCol(AggMax, 6)}
	got, err := CombineColumns(cols, out)
	if err != nil {
		t.Fatal(err)
	}
	want := []uint32{OIDVarchar, OIDInt8, OIDInt8, OIDNumeric, OIDNumeric, OIDNumeric, OIDFloat4, OIDFloat8, OIDBool, OIDDate}
	for i := range want {
		if got[i].TypeOID != want[i] || got[i].Format != 0 {
			t.Errorf("column %d: %+v, want type %d", i, got[i], want[i])
		}
	}
}

func TestDistinct(t *testing.T) {
	cols := []Column{{Name: "a", TypeOID: OIDInt4}, {Name: "b", TypeOID: OIDText}}
	rows := []Row{r("1", "x"), r("NULL", "x"), r("1", "x"), r("NULL", "x"), r("1", "NULL"), r("01", "x"), r("1", "NULL"), r("2", "x")}
	got, err := Distinct(cols, rows)
	if err != nil {
		t.Fatal(err)
	}
	if s := showRows(got); s != "[1 | x] [NULL | x] [1 | NULL] [2 | x]" {
		t.Errorf("got %s", s)
	}
	if _, err := Distinct([]Column{{TypeOID: 114}}, nil); !errors.Is(err, ErrUnsupportedType) {
		t.Errorf("json: %v", err)
	}
}
