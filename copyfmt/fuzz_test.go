package copyfmt

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// fuzzOptions are the option sets FuzzSplit picks from.
var fuzzOptions = []string{
	"", "(FORMAT csv)", "(FORMAT csv, HEADER)", "(HEADER MATCH)", "(FORMAT csv, ESCAPE '\\')",
	"(FORMAT csv, QUOTE '''', DELIMITER '|', NULL 'N')", "(DELIMITER '|', NULL 'NULL')",
	"(FORMAT csv, FORCE_NOT_NULL (b), FORCE_NULL (b))", "(FORMAT csv, QUOTE '\\')", "(DELIMITER 'A', NULL '')",
	"(ENCODING 'latin1')",
}

// FuzzSplit checks, for any data, that the rows do not depend on how the
// data is cut into Writes; that the raw rows put together give back the
// data up to the end marker; that they split again into the same rows;
// and that every other row alone, as one shard would get them, splits into
// the same keys.
func FuzzSplit(f *testing.F) {
	withs := slices.Clone(fuzzOptions)
	for _, st := range splitTests {
		if !slices.Contains(withs, st.with) {
			withs = append(withs, st.with)
		}
		f.Add([]byte(st.input), uint8(slices.Index(withs, st.with)), uint64(len(st.input)))
	}
	f.Add([]byte("1\t2\t3\r\n4\t5\t6\r\n\\.\r\n"), uint8(0), uint64(1))
	f.Add([]byte("a,b,c\n1,\"x\ny\",3\n\\.\n"), uint8(2), uint64(2))
	opts := make([]Options, len(withs))
	for i, with := range withs {
		opts[i] = optionsFor(f, with)
	}
	f.Fuzz(func(t *testing.T, data []byte, which uint8, seed uint64) {
		checkSplit(t, opts[int(which)%len(opts)], string(data), seed)
	})
}

// checkSplit is FuzzSplit's check of one input; seed picks the pieces.
func checkSplit(t *testing.T, opt Options, input string, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed>>7))
	var chunks []int
	for left := len(input); left > 0; {
		k := 1 + rng.IntN(min(left, 1+rng.IntN(16)))
		chunks = append(chunks, k)
		left -= k
	}
	whole, err := split(t, opt, columns, keyCol, input, nil)
	pieces, err2 := split(t, opt, columns, keyCol, input, chunks)
	if !slices.Equal(whole, pieces) || fmt.Sprint(err) != fmt.Sprint(err2) {
		t.Fatalf("%q whole: %v\n%s\nin pieces %v: %v\n%s", input, err, rowsString(whole), chunks, err2, rowsString(pieces))
	}
	checkRaw(t, input, whole, err)
	for i := 1; i < len(whole); i++ {
		if whole[i].Line <= whole[i-1].Line || whole[i].Header {
			t.Fatalf("%q: rows out of order:\n%s", input, rowsString(whole))
		}
	}
	if err != nil {
		if _, ok := err.(*Error); !ok {
			t.Fatalf("error %v is not an *Error", err)
		}
		return
	}

	var all, header strings.Builder
	var data2 []got
	for _, r := range whole {
		all.WriteString(r.Raw)
		if r.Header {
			header.WriteString(r.Raw)
		} else {
			data2 = append(data2, r)
		}
	}
	again, err := split(t, opt, columns, keyCol, all.String(), nil)
	if err != nil || !slices.Equal(again, whole) {
		t.Fatalf("%q: the raw rows %q split into\n%s%v\nnot\n%s", input, all.String(), rowsString(again), err, rowsString(whole))
	}
	for part := range 2 {
		var b strings.Builder
		b.WriteString(header.String())
		var want []got
		for i, r := range data2 {
			if i%2 == part {
				b.WriteString(r.Raw)
				want = append(want, r)
			}
		}
		in := b.String()
		rows, err := split(t, opt, columns, keyCol, in, nil)
		if err != nil {
			t.Fatalf("%q: every other row %q: %v", input, in, err)
		}
		if len(rows) > 0 && rows[0].Header {
			rows = rows[1:]
		}
		if len(rows) != len(want) {
			t.Fatalf("%q: every other row %q splits into\n%s", input, in, rowsString(rows))
		}
		for i, r := range rows {
			if r.Raw != want[i].Raw || r.Key != want[i].Key || r.Null != want[i].Null {
				t.Fatalf("%q: every other row %q: row %v, want %v", input, in, r, want[i])
			}
		}
	}
}
