package merge

import (
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func r(vals ...string) Row {
	row := make(Row, len(vals))
	for i, v := range vals {
		if v != "NULL" {
			row[i] = []byte(v)
		}
	}
	return row
}

func drain(t *testing.T, s Source) []Row {
	t.Helper()
	var out []Row
	for {
		row, err := s.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, row)
	}
}

func sortedCopy(t *testing.T, cols []Column, keys []SortKey, rows []Row) []Row {
	t.Helper()
	s := slices.Clone(rows)
	var err error
	slices.SortStableFunc(s, func(a, b Row) int {
		c, e := CompareRows(cols, keys, a, b)
		if e != nil {
			err = e
		}
		return c
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// assertOrdered checks got is a permutation of all that is ordered by keys.
func assertOrdered(t *testing.T, cols []Column, keys []SortKey, got, all []Row) {
	t.Helper()
	if len(got) != len(all) {
		t.Fatalf("got %d rows, want %d", len(got), len(all))
	}
	for i := 1; i < len(got); i++ {
		c, err := CompareRows(cols, keys, got[i-1], got[i])
		if err != nil {
			t.Fatal(err)
		}
		if c > 0 {
			t.Fatalf("rows %d and %d out of order: %s then %s", i-1, i, showRow(got[i-1]), showRow(got[i]))
		}
	}
	a, b := make([]string, len(got)), make([]string, len(all))
	for i := range got {
		a[i], b[i] = showRow(got[i]), showRow(all[i])
	}
	slices.Sort(a)
	slices.Sort(b)
	if !slices.Equal(a, b) {
		t.Fatalf("rows differ:\n%s\nwant\n%s", strings.Join(a, "\n"), strings.Join(b, "\n"))
	}
}

func TestMerger(t *testing.T) {
	cols := []Column{{Name: "n", TypeOID: OIDInt4}, {Name: "s", TypeOID: OIDText}, {Name: "id", TypeOID: OIDInt4}}
	all := []Row{
		r("1", "b", "1"), r("1", "a", "2"), r("NULL", "c", "3"), r("10", "a", "4"), r("2", "NULL", "5"),
		r("2", "b", "6"), r("10", "a", "7"), r("NULL", "NULL", "8"), r("9", "z", "9"), r("1", "a", "10"),
		r("3", "c", "11"), r("-4", "x", "12"), r("NULL", "a", "13"), r("2", "b", "14"),
	}
	keySets := map[string][]SortKey{
		"n":                       {DefaultSortKey(0, false)},
		"n desc":                  {DefaultSortKey(0, true)},
		"n, s desc":               {DefaultSortKey(0, false), DefaultSortKey(1, true)},
		"n desc nulls last, s":    {{Col: 0, Desc: true}, DefaultSortKey(1, false)},
		"s nulls first, n desc":   {{Col: 1, NullsFirst: true}, DefaultSortKey(0, true)},
		"s, n, id (total order)":  {DefaultSortKey(1, false), DefaultSortKey(0, false), DefaultSortKey(2, false)},
		"n numeric not lexically": {DefaultSortKey(0, false), DefaultSortKey(2, false)},
	}
	for name, keys := range keySets {
		t.Run(name, func(t *testing.T) {
			// Three shards, each sorted: distribute rows round-robin.
			shards := make([][]Row, 3)
			for i, row := range all {
				shards[i%3] = append(shards[i%3], row)
			}
			sources := make([]Source, 3)
			for i := range shards {
				sources[i] = &SliceSource{Rows: sortedCopy(t, cols, keys, shards[i])}
			}
			m, err := NewMerger(cols, keys, sources)
			if err != nil {
				t.Fatal(err)
			}
			got := drain(t, m)
			assertOrdered(t, cols, keys, got, all)
			// With a total order, the merge equals a full sort.
			if len(keys) == 3 {
				want := sortedCopy(t, cols, keys, all)
				for i := range want {
					if showRow(got[i]) != showRow(want[i]) {
						t.Fatalf("row %d: %s, want %s", i, showRow(got[i]), showRow(want[i]))
					}
				}
			}
			if _, err := m.Next(); !errors.Is(err, io.EOF) {
				t.Errorf("Next after the end: %v", err)
			}
		})
	}
}

func TestMergerRandom(t *testing.T) {
	cols := []Column{{Name: "x", TypeOID: OIDNumeric}, {Name: "src", TypeOID: OIDInt4}}
	keys := []SortKey{DefaultSortKey(0, true)}
	rng := rand.New(rand.NewPCG(1, 2))
	vals := []string{"NULL", "1", "1.0", "2.5", "-3", "10", "NaN", "Infinity", "0.001"}
	for iter := range 50 {
		n := 1 + rng.IntN(5)
		var all []Row
		sources := make([]Source, n)
		for s := range n {
			var rows []Row
			for range rng.IntN(8) {
				rows = append(rows, r(vals[rng.IntN(len(vals))], "0"))
			}
			all = append(all, rows...)
			sources[s] = &SliceSource{Rows: sortedCopy(t, cols, keys, rows)}
		}
		m, err := NewMerger(cols, keys, sources)
		if err != nil {
			t.Fatal(err)
		}
		got := drain(t, m)
		if t.Failed() {
			t.Fatalf("iteration %d", iter)
		}
		assertOrdered(t, cols, keys, got, all)
	}
}

// stepSource counts the rows read and fails if read past its end.
type stepSource struct {
	rows []Row
	read int
	err  error // returned at the end instead of io.EOF when set
}

func (s *stepSource) Next() (Row, error) {
	if s.read >= len(s.rows) {
		if s.err != nil {
			return nil, s.err
		}
		return nil, io.EOF
	}
	s.read++
	return s.rows[s.read-1], nil
}

func TestMergerErrors(t *testing.T) {
	cols := []Column{{Name: "n", TypeOID: OIDInt4}}
	keys := []SortKey{DefaultSortKey(0, false)}
	if _, err := NewMerger(cols, []SortKey{{Col: 1}}, nil); err == nil {
		t.Error("out-of-range key: no error")
	}
	if _, err := NewMerger([]Column{{TypeOID: 114}}, keys, nil); !errors.Is(err, ErrUnsupportedType) {
		t.Errorf("json key: %v", err)
	}
	m, _ := NewMerger(cols, keys, []Source{&SliceSource{Rows: []Row{r("2"), r("1")}}})
	if _, err := m.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Next(); err == nil || !strings.Contains(err.Error(), "not sorted") {
		t.Errorf("unsorted source: %v", err)
	}
	boom := errors.New("boom")
	m, _ = NewMerger(cols, keys, []Source{&SliceSource{Rows: []Row{r("1")}}, &stepSource{err: boom}})
	if _, err := m.Next(); !errors.Is(err, boom) {
		t.Errorf("source error: %v", err)
	}
	if _, err := m.Next(); !errors.Is(err, boom) {
		t.Errorf("source error is sticky: %v", err)
	}
	m, _ = NewMerger(cols, keys, []Source{&SliceSource{Rows: []Row{r("x")}}, &SliceSource{Rows: []Row{r("1")}}})
	if _, err := m.Next(); err == nil {
		t.Error("bad value: no error")
	}
	m, _ = NewMerger(cols, keys, nil)
	if _, err := m.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("no sources: %v", err)
	}
}

func TestMergerReadsLazily(t *testing.T) {
	cols := []Column{{Name: "n", TypeOID: OIDInt4}}
	a := &stepSource{rows: []Row{r("1"), r("3"), r("5")}}
	b := &stepSource{rows: []Row{r("2"), r("4")}}
	m, err := NewMerger(cols, []SortKey{DefaultSortKey(0, false)}, []Source{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if a.read+b.read != 0 {
		t.Fatal("NewMerger read rows")
	}
	lim := Limit(m, 1, 2) // rows 2 and 3
	got := drain(t, lim)
	if showRows(got) != "[2] [3]" {
		t.Fatalf("got %s", showRows(got))
	}
	// 1,2,3 delivered; 3 came from a, whose next row is not needed.
	if a.read != 2 || b.read != 2 {
		t.Errorf("read a=%d b=%d rows, want 2 and 2", a.read, b.read)
	}
}

func TestLimit(t *testing.T) {
	rows := []Row{r("1"), r("2"), r("3"), r("4"), r("5")}
	tests := []struct {
		offset, count int64
		want          string
	}{
		{0, -1, "[1] [2] [3] [4] [5]"},
		{0, 2, "[1] [2]"},
		{2, 2, "[3] [4]"},
		{3, -1, "[4] [5]"},
		{4, 10, "[5]"},
		{5, 1, ""},
		{10, -1, ""},
		{0, 0, ""},
		{2, 0, ""},
		{-1, 1, "[1]"},
	}
	for _, tt := range tests {
		src := &stepSource{rows: rows}
		got := showRows(drain(t, Limit(src, tt.offset, tt.count)))
		if got != tt.want {
			t.Errorf("OFFSET %d LIMIT %d: got %q, want %q", tt.offset, tt.count, got, tt.want)
		}
		if tt.count >= 0 && src.read > int(max(tt.offset, 0)+tt.count) {
			t.Errorf("OFFSET %d LIMIT %d read %d rows", tt.offset, tt.count, src.read)
		}
	}
}
