package copyfmt

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v5"
)

// splitTest is COPY data for columns a, b, c with the key b, and what the
// Splitter must make of it. TestAgainstPostgres runs every one through
// PostgreSQL too.
type splitTest struct {
	name  string
	with  string   // options after COPY t FROM STDIN
	input string   // the data
	rows  []string // each row as line:key, line:NULL or line:HEADER
	err   string   // "SQLSTATE line N: message", or "" for none
	raws  []string // if set, each row's Raw
}

var splitTests = []splitTest{
	// Text format.
	{name: "text", input: "1\tx\t3\n4\ty\t6\n", rows: []string{`1:"x"`, `2:"y"`}, raws: []string{"1\tx\t3\n", "4\ty\t6\n"}},
	{name: "empty", input: ""},
	{name: "no final newline", input: "1\tx\t3\n4\ty\t6", rows: []string{`1:"x"`, `2:"y"`}, raws: []string{"1\tx\t3\n", "4\ty\t6"}},
	{name: "null", input: "1\t\\N\t3\n1\t\\\\N\t3\n1\tN\t3\n1\t\t3\n",
		rows: []string{"1:NULL", `2:"\\N"`, `3:"N"`, `4:""`}},
	{name: "null is compared raw", input: "1\t\\\\N\t3\n", rows: []string{`1:"\\N"`}},
	{name: "escapes", input: "1\t\\b\\f\\n\\r\\t\\v\\q\\\\\\\t\t3\n", rows: []string{`1:"\b\f\n\r\t\vq\\\t"`}},
	{name: "octal and hex", input: "1\t\\101\\1012\\7\\x41\\x4g\\xg\\303\\251\t3\n", rows: []string{`1:"AA2\aA\x04gxgé"`}},
	{name: "octal wraps", input: "1\t\\501\t3\n", rows: []string{`1:"A"`}},
	{name: "escaped delimiter", input: "a\\\tb\tc\\\td\te\n", rows: []string{`1:"c\td"`}},
	{name: "hex eats a delimiter that is a hex digit", with: "(DELIMITER 'A')", input: "1A\\x4A2A3\n", rows: []string{`1:"J2"`}},
	{name: "hex eats a delimiter that is a hex digit 2", with: "(DELIMITER 'A')", input: "1A\\x4A2\n",
		err: `22P04 line 1: missing data for column "c"`},
	{name: "backslash newline is data", input: "1\tx\\\ny\t3\n", rows: []string{`1:"x\ny"`}, raws: []string{"1\tx\\\ny\t3\n"}},
	{name: "backslash CR is data", input: "1\tx\\\ry\t3\r", rows: []string{`1:"x\ry"`}},
	{name: "backslash CR before LF", input: "1\tx\\\r\n4\t5\t6\n", err: `22P04 line 1: missing data for column "c"`},
	{name: "backslash at the end of the data", input: "1\t2\tx\\", rows: []string{`1:"2"`}, raws: []string{"1\t2\tx\\"}},
	{name: "escaped final newline", input: "1\t\\N\\\n", err: `22P04 line 1: missing data for column "c"`},
	{name: "de-escaped bytes must be UTF-8", input: "1\t\\xc3\\xa9\t3\n1\t\\xff\t3\n",
		rows: []string{`1:"é"`}, err: `22021 line 2: invalid byte sequence for encoding "UTF8": 0xff`},
	{name: "de-escaped NUL", input: "1\t\\0\t3\n", err: `22021 line 1: invalid byte sequence for encoding "UTF8": 0x00`},
	{name: "a NULL is not de-escaped", with: "(NULL '\\xff')", input: "1\t\\xff\t3\n", rows: []string{"1:NULL"}},
	{name: "bad escape in another field", input: "1\t2\t\\xff\n", err: `22021 line 1: invalid byte sequence for encoding "UTF8": 0xff`},
	{name: "other delimiter and null", with: "(DELIMITER '|', NULL 'NULL')", input: "1|NULL|3\n1|\\||3\n1|\\N|3\n",
		rows: []string{"1:NULL", `2:"|"`, `3:"N"`}},
	{name: "empty null string", with: "(NULL '')", input: "1\t\t3\n1\t\\N\t3\n", rows: []string{"1:NULL", `2:"N"`}},

	// Newline styles.
	{name: "CRLF", input: "1\tx\t3\r\n4\ty\t6\r\n", rows: []string{`1:"x"`, `2:"y"`}, raws: []string{"1\tx\t3\r\n", "4\ty\t6\r\n"}},
	{name: "CR", input: "1\tx\t3\r4\ty\t6\r", rows: []string{`1:"x"`, `2:"y"`}, raws: []string{"1\tx\t3\r", "4\ty\t6\r"}},
	{name: "CR at the end", input: "1\tx\t3\r", rows: []string{`1:"x"`}},
	{name: "LF after CRLF", input: "1\tx\t3\r\n4\ty\t6\n",
		rows: []string{`1:"x"`}, err: `22P04 line 2: literal newline found in data`},
	{name: "CRLF after LF", input: "1\tx\t3\n4\ty\t6\r\n",
		rows: []string{`1:"x"`}, err: `22P04 line 2: literal carriage return found in data`},
	{name: "LF after CR", input: "1\tx\t3\r4\ty\t6\n", rows: []string{`1:"x"`}, err: `22P04 line 2: literal newline found in data`},
	{name: "CR in CRLF data", input: "1\tx\t3\r\n4\ty\r6\r\n", rows: []string{`1:"x"`}, err: `22P04 line 2: literal carriage return found in data`},

	// The end marker.
	{name: "end marker", input: "1\tx\t3\n\\.\nignored\x00\xff", rows: []string{`1:"x"`}},
	{name: "end marker alone", input: "\\.\n"},
	{name: "end marker at the end", input: "1\tx\t3\n\\.", rows: []string{`1:"x"`}, err: `22P04 line 2: end-of-copy marker corrupt`},
	{name: "end marker after data", input: "1\tx\t3\\.\nignored", rows: []string{`1:"x"`}, raws: []string{"1\tx\t3"}},
	{name: "end marker then more", input: "1\tx\t3\n\\.x\n", rows: []string{`1:"x"`}, err: `22P04 line 2: end-of-copy marker corrupt`},
	{name: "escaped backslash then dot", input: "1\tx\\\\.\t3\n", rows: []string{`1:"x\\."`}},
	{name: "end marker CRLF", input: "1\tx\t3\r\n\\.\r\n", rows: []string{`1:"x"`}},
	{name: "end marker LF in CRLF data", input: "1\tx\t3\r\n\\.\n", rows: []string{`1:"x"`}, err: `22P04 line 2: end-of-copy marker does not match previous newline style`},
	{name: "end marker CR in LF data", input: "1\tx\t3\n\\.\r", rows: []string{`1:"x"`}, err: `22P04 line 2: end-of-copy marker does not match previous newline style`},
	{name: "end marker CR in CRLF data", input: "1\tx\t3\r\n\\.\r", rows: []string{`1:"x"`}, err: `22P04 line 2: end-of-copy marker corrupt`},
	{name: "end marker first sets no style", input: "\\.\r\n", rows: nil},

	// Field counts.
	{name: "missing data", input: "1\tx\t3\n4\ty\n", rows: []string{`1:"x"`}, err: `22P04 line 2: missing data for column "c"`},
	{name: "missing key", input: "1\n", err: `22P04 line 1: missing data for column "b"`},
	{name: "empty line", input: "1\tx\t3\n\n", rows: []string{`1:"x"`}, err: `22P04 line 2: missing data for column "b"`},
	{name: "extra data", input: "1\tx\t3\t4\n", err: `22P04 line 1: extra data after last expected column`},

	// Encoding.
	{name: "utf-8", input: "1\té\t3\n", rows: []string{`1:"é"`}},
	{name: "invalid utf-8", input: "1\tx\t3\n4\t\xff\t6\n", rows: []string{`1:"x"`}, err: `22021 line 2: invalid byte sequence for encoding "UTF8": 0xff`},
	{name: "invalid utf-8 shows the character", input: "1\t\xe2\x28\xa1\t3\n", err: `22021 line 1: invalid byte sequence for encoding "UTF8": 0xe2 0x28 0xa1`},
	{name: "truncated utf-8 at the end", input: "1\tx\t3\n\xe2\x82", rows: []string{`1:"x"`}, err: `22021 line 2: invalid byte sequence for encoding "UTF8": 0xe2 0x82`},
	{name: "surrogate", input: "1\t\xed\xa0\x80\t3\n", err: `22021 line 1: invalid byte sequence for encoding "UTF8": 0xed 0xa0 0x80`},
	{name: "NUL", input: "1\tx\x00\t3\n", err: `22021 line 1: invalid byte sequence for encoding "UTF8": 0x00`},
	{name: "invalid bytes after the marker", input: "1\tx\t3\n\\.\n\xff", rows: []string{`1:"x"`}},
	{name: "latin1 is not checked", with: "(ENCODING 'latin1')", input: "1\t\xff\t3\n", rows: []string{`1:"\xff"`}},
	{name: "latin1 NUL", with: "(ENCODING 'latin1')", input: "1\t\x00\t3\n", err: `22021 line 1: invalid byte sequence for encoding "LATIN1": 0x00`},

	// Header.
	{name: "header", with: "(HEADER)", input: "a\tb\tc\n1\tx\t3\n", rows: []string{"1:HEADER", `2:"x"`}, raws: []string{"a\tb\tc\n", "1\tx\t3\n"}},
	{name: "header only", with: "(HEADER)", input: "a\tb\tc", rows: []string{"1:HEADER"}},
	{name: "header ended by the marker", with: "(HEADER)", input: "a\tb\\.\n1\tx\t3\n", rows: []string{"1:HEADER"}, raws: []string{"a\tb"}},
	{name: "header is not parsed", with: "(HEADER)", input: "\\xff\n1\tx\t3\n", rows: []string{"1:HEADER", `2:"x"`}},
	{name: "header match", with: "(HEADER MATCH)", input: "a\tb\tc\n1\tx\t3\n", rows: []string{"1:HEADER", `2:"x"`}},
	{name: "header match de-escapes", with: "(HEADER MATCH)", input: "a\t\\x62\tc\n", rows: []string{"1:HEADER"}},
	{name: "header mismatch", with: "(HEADER MATCH)", input: "a\tB\tc\n1\tx\t3\n",
		err: `22P04 line 1: column name mismatch in header line field 2: got "B", expected "b"`},
	{name: "header null", with: "(HEADER MATCH)", input: "a\t\\N\tc\n",
		err: `22P04 line 1: column name mismatch in header line field 2: got null value ("\N"), expected "b"`},
	{name: "header count", with: "(HEADER MATCH)", input: "a\tb\n",
		err: `22P04 line 1: wrong number of fields in header line: got 2, expected 3`},
	{name: "header match on no data", with: "(HEADER MATCH)", input: "",
		err: `22P04 line 1: wrong number of fields in header line: got 1, expected 3`},
	{name: "csv header", with: "(FORMAT csv, HEADER)", input: "\"a\nb\",c\n1,x,3\n", rows: []string{"1:HEADER", `2:"x"`}},

	// CSV.
	{name: "csv", with: "(FORMAT csv)", input: "1,x,3\n1,,3\n1,\"\",3\n", rows: []string{`1:"x"`, "2:NULL", `3:""`}},
	{name: "csv quoted delimiter", with: "(FORMAT csv)", input: "1,\"x,y\",3\n", rows: []string{`1:"x,y"`}},
	{name: "csv doubled quote", with: "(FORMAT csv)", input: "1,\"x\"\"y\",3\n1,\"\"\"\",3\n", rows: []string{`1:"x\"y"`, `2:"\""`}},
	{name: "csv partly quoted", with: "(FORMAT csv)", input: "1,a\"b,c\"d,3\n", rows: []string{`1:"ab,cd"`}},
	{name: "csv backslash is data", with: "(FORMAT csv)", input: "1,\\N,3\n1,a\\,3\n", rows: []string{`1:"\\N"`, `2:"a\\"`}},
	{name: "csv spaces are data", with: "(FORMAT csv)", input: "1, x ,3\n", rows: []string{`1:" x "`}},
	{name: "csv quoted newline", with: "(FORMAT csv)", input: "1,\"x\ny\",3\n4,z,6\n", rows: []string{`1:"x\ny"`, `2:"z"`},
		raws: []string{"1,\"x\ny\",3\n", "4,z,6\n"}},
	{name: "csv quoted newlines count from line 2", with: "(FORMAT csv)", input: "1,a,3\n1,\"x\ny\nz\",3\n4,z,6\n",
		rows: []string{`1:"a"`, `4:"x\ny\nz"`, `5:"z"`}},
	{name: "csv quoted CR counts in CRLF data", with: "(FORMAT csv)", input: "1,a,3\r\n1,\"x\r\ny\",3\r\n4,z,6\r\n",
		rows: []string{`1:"a"`, `3:"x\r\ny"`, `4:"z"`}},
	{name: "csv quoted CR counts on line 1", with: "(FORMAT csv)", input: "1,\"x\ry\",3\n1,\"x\ny\",3\n", rows: []string{`2:"x\ry"`, `4:"x\ny"`}},
	{name: "csv quoted CRLF", with: "(FORMAT csv)", input: "1,\"x\r\ny\",3\r\n", rows: []string{`2:"x\r\ny"`}},
	{name: "csv unterminated", with: "(FORMAT csv)", input: "1,x,3\n4,\"y,6\n7,8,9\n",
		rows: []string{`1:"x"`}, err: `22P04 line 4: unterminated CSV quoted field`},
	{name: "csv unterminated on line 1", with: "(FORMAT csv)", input: "1,\"x\n2,3\n", err: `22P04 line 1: unterminated CSV quoted field`},
	{name: "csv unterminated in the last field", with: "(FORMAT csv)", input: "1,x,\"3", err: `22P04 line 1: unterminated CSV quoted field`},
	{name: "csv unquoted CR", with: "(FORMAT csv)", input: "1,x,3\n4,y\r,6\n", rows: []string{`1:"x"`}, err: `22P04 line 2: unquoted carriage return found in data`},
	{name: "csv unquoted LF", with: "(FORMAT csv)", input: "1,x,3\r\n4,y\n", rows: []string{`1:"x"`}, err: `22P04 line 2: unquoted newline found in data`},
	{name: "csv end marker", with: "(FORMAT csv)", input: "1,x,3\n\\.\n4,y,6\n", rows: []string{`1:"x"`}},
	{name: "csv end marker only alone", with: "(FORMAT csv)", input: "1,\\.,3\n\\.,x,3\n\\.x\n",
		rows: []string{`1:"\\."`, `2:"x"`}, err: `22P04 line 3: missing data for column "b"`},
	{name: "csv dot data", with: "(FORMAT csv)", input: "1,\\.,3\n\\.,x,3\n", rows: []string{`1:"\\."`, `2:"x"`}},
	{name: "csv end marker at the end is data", with: "(FORMAT csv)", input: "1,x,3\n\\.", rows: []string{`1:"x"`},
		err: `22P04 line 2: missing data for column "b"`},
	{name: "csv end marker inside quotes is data", with: "(FORMAT csv)", input: "1,\"x\n\\.\n\",3\n", rows: []string{`1:"x\n\\.\n"`}},
	{name: "csv end marker LF in CRLF data is data", with: "(FORMAT csv)", input: "1,x,3\r\n\\.\n", rows: []string{`1:"x"`},
		err: `22P04 line 2: unquoted newline found in data`},
	{name: "csv end marker CR in LF data", with: "(FORMAT csv)", input: "1,x,3\n\\.\r", rows: []string{`1:"x"`},
		err: `22P04 line 2: end-of-copy marker does not match previous newline style`},
	{name: "csv escape", with: "(FORMAT csv, ESCAPE '\\')", input: "1,\"x\\\"y\",3\n1,\"x\\\\\",3\n1,\"x\\y\",3\n1,x\\\"y\",3\n",
		rows: []string{`1:"x\"y"`, `2:"x\\"`, `3:"x\\y"`, `4:"x\\y"`}},
	{name: "csv escaped quote before newline", with: "(FORMAT csv, ESCAPE '\\')", input: "1,\"x\\\"\ny\",3\n", rows: []string{`1:"x\"\ny"`}},
	{name: "csv doubled quote with escape", with: "(FORMAT csv, ESCAPE '\\')", input: "1,\"x\"\"y\",3\n", rows: []string{`1:"xy"`}},
	{name: "csv quote and delimiter", with: "(FORMAT csv, QUOTE '''', DELIMITER '|')", input: "1|'x|y'|3\n1|\"z\"|3\n",
		rows: []string{`1:"x|y"`, `2:"\"z\""`}},
	{name: "csv null quoted is not null", with: "(FORMAT csv, NULL 'N')", input: "1,N,3\n1,\"N\",3\n1,,3\n", rows: []string{"1:NULL", `2:"N"`, `3:""`}},
	{name: "csv force null", with: "(FORMAT csv, NULL 'N', FORCE_NULL (b))", input: "1,N,3\n1,\"N\",3\n1,\"\",3\n",
		rows: []string{"1:NULL", "2:NULL", `3:""`}},
	{name: "csv force not null", with: "(FORMAT csv, FORCE_NOT_NULL (b))", input: "1,,3\n1,\"\",3\n", rows: []string{`1:""`, `2:""`}},
	{name: "csv force null elsewhere", with: "(FORMAT csv, FORCE_NULL (a, c))", input: "1,\"\",3\n", rows: []string{`1:""`}},
	{name: "csv missing data", with: "(FORMAT csv)", input: "1,x\n", err: `22P04 line 1: missing data for column "c"`},
	{name: "csv extra data", with: "(FORMAT csv)", input: "1,x,3,\n", err: `22P04 line 1: extra data after last expected column`},
	{name: "csv header match", with: "(FORMAT csv, HEADER MATCH)", input: "a,\"b\",c\n1,x,3\n", rows: []string{"1:HEADER", `2:"x"`}},
	{name: "csv header match null", with: "(FORMAT csv, HEADER MATCH)", input: "a,,c\n",
		err: `22P04 line 1: column name mismatch in header line field 2: got null value (""), expected "b"`},
	{name: "csv invalid utf-8 in quotes", with: "(FORMAT csv)", input: "1,\"x\ny\xff\",3\n", err: `22021 line 1: invalid byte sequence for encoding "UTF8": 0xff`},
	{name: "csv invalid utf-8 after quoted CR is found before the CR counts", with: "(FORMAT csv)", input: "1,\"x\r\xff\",3\n",
		err: `22021 line 1: invalid byte sequence for encoding "UTF8": 0xff`},
	{name: "csv invalid utf-8 after quoted LF", with: "(FORMAT csv)", input: "1,x,3\n1,\"x\n\xff\",3\n",
		rows: []string{`1:"x"`}, err: `22021 line 3: invalid byte sequence for encoding "UTF8": 0xff`},
}

func (st splitTest) opts(t testing.TB) Options { return optionsFor(t, st.with) }

// describe renders rows and the error the way splitTest writes them.
func describe(rows []got, err error) ([]string, string) {
	var out []string
	for _, r := range rows {
		switch {
		case r.Header:
			out = append(out, fmt.Sprintf("%d:HEADER", r.Line))
		case r.Null:
			out = append(out, fmt.Sprintf("%d:NULL", r.Line))
		default:
			out = append(out, fmt.Sprintf("%d:%s", r.Line, strconv.Quote(r.Key)))
		}
	}
	msg := ""
	if e, ok := err.(*Error); ok {
		msg = fmt.Sprintf("%s line %d: %s", e.Code, e.Line, e.Message)
	} else if err != nil {
		msg = err.Error()
	}
	return out, msg
}

func TestSplit(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for _, st := range splitTests {
		t.Run(st.name, func(t *testing.T) {
			opt := st.opts(t)
			for _, chunks := range chunkings(st.input, rng) {
				rows, err := split(t, opt, columns, keyCol, st.input, chunks)
				gotRows, gotErr := describe(rows, err)
				if !slices.Equal(gotRows, st.rows) || gotErr != st.err {
					t.Fatalf("input %q in pieces %v:\ngot  %q %s\nwant %q %s\n%s", st.input, chunks, gotRows, gotErr, st.rows, st.err, rowsString(rows))
				}
				if st.raws != nil {
					var raws []string
					for _, r := range rows {
						raws = append(raws, r.Raw)
					}
					if !slices.Equal(raws, st.raws) {
						t.Fatalf("raw rows %q, want %q", raws, st.raws)
					}
				}
				checkRaw(t, st.input, rows, err)
			}
		})
	}
}

// checkRaw checks that the raw rows put together are the input, up to
// where an error stopped or the end marker ended it.
func checkRaw(t testing.TB, input string, rows []got, err error) {
	t.Helper()
	var all strings.Builder
	for _, r := range rows {
		all.WriteString(r.Raw)
	}
	rest, ok := strings.CutPrefix(input, all.String())
	switch {
	case !ok:
		t.Fatalf("raw rows %q are not the start of %q", all.String(), input)
	case err == nil && rest != "" && !strings.HasPrefix(rest, `\.`):
		t.Fatalf("the rows leave %q of the data, which does not start with the end marker", rest)
	}
}

func TestErrorContext(t *testing.T) {
	for _, c := range []struct{ with, input, context, hint string }{
		{"", "1\tx\n", `COPY t, line 1: "1	x"`, ""},
		{"", "1\tx\t3\n4\r\n", `COPY t, line 2`, `Use "\r" to represent carriage return.`},
		{"(FORMAT csv)", "1,\"x\ny\n", "COPY t, line 1: \"1,\"x\ny\n\"", ""},
		{"(FORMAT csv)", "1,x,3\r\n4\n", `COPY t, line 2`, "Use quoted CSV field to represent newline."},
		{"", "1\t\xff\n", `COPY t, line 1`, ""},
		{"", strings.Repeat("é", 60) + "\n", `COPY t, line 1: "` + strings.Repeat("é", 50) + `..."`, ""},
		{"", strings.Repeat("x", 99) + "é\n", `COPY t, line 1: "` + strings.Repeat("x", 99) + `..."`, ""},
		{"", strings.Repeat("x", 100) + "\n", `COPY t, line 1: "` + strings.Repeat("x", 100) + `"`, ""},
	} {
		_, err := split(t, optionsFor(t, c.with), columns, keyCol, c.input, nil)
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("%q: %v, want an *Error", c.input, err)
		}
		if got := e.Context("t"); got != c.context || e.Hint != c.hint {
			t.Errorf("%q: context %q hint %q, want %q %q", c.input, got, e.Hint, c.context, c.hint)
		}
	}
	if (&Error{Code: "42601", Message: "x"}).Context("t") != "" {
		t.Error("an error about options has a context")
	}
}

func TestFromStmt(t *testing.T) {
	for _, c := range []struct {
		with string
		want Options
		err  string
	}{
		{"", Options{Delimiter: '\t', Null: `\N`}, ""},
		{"(FORMAT csv)", Options{CSV: true, Delimiter: ',', Quote: '"', Escape: '"'}, ""},
		{"WITH CSV HEADER QUOTE AS '''' ESCAPE '\\' NULL 'x' FORCE NOT NULL a, b",
			Options{CSV: true, Delimiter: ',', Quote: '\'', Escape: '\\', Null: "x", Header: true, ForceNotNull: []string{"a", "b"}}, ""},
		{"(FORMAT csv, HEADER match, FORCE_NULL (c), ENCODING 'Latin-1', FREEZE)",
			Options{CSV: true, Delimiter: ',', Quote: '"', Escape: '"', Header: true, HeaderMatch: true, ForceNull: []string{"c"}, Encoding: "LATIN1"}, ""},
		{"(DELIMITER '|', HEADER false)", Options{Delimiter: '|', Null: `\N`}, ""},
		{"(FORMAT binary)", Options{}, "0A000: COPY FROM in binary format cannot be split across shards"},
		{"BINARY", Options{}, "0A000: COPY FROM in binary format cannot be split across shards"},
		{"(FORMAT binary, HEADER)", Options{}, "0A000: cannot specify HEADER in BINARY mode"},
		{"(ENCODING 'sjis')", Options{}, `0A000: COPY FROM data in encoding "SJIS" cannot be split across shards`},
		{"(ENCODING 'WIN950')", Options{}, `0A000: COPY FROM data in encoding "BIG5" cannot be split across shards`},
		{"(FORMAT csv, QUOTE ',')", Options{}, "22023: COPY delimiter and quote must be different"},
		{"(DELIMITER 'ab')", Options{}, "0A000: COPY delimiter must be a single one-byte character"},
		{"(DELIMITER 'é')", Options{}, "0A000: COPY delimiter must be a single one-byte character"},
		{"(FORMAT csv, FORCE_QUOTE *)", Options{}, "0A000: COPY force quote only available using COPY TO"},
		{"(FORCE_QUOTE (a))", Options{}, "0A000: COPY force quote available only in CSV mode"},
		{"(ON_ERROR stop)", Options{}, `42601: option "on_error" not recognized`},
		{"(NULL 'x', NULL 'y')", Options{}, "42601: conflicting or redundant options"},
	} {
		got, err := parseOptions(c.with)
		if fmt.Sprint(err) != c.err && !(err == nil && c.err == "") {
			t.Errorf("%s: error %v, want %s", c.with, err, c.err)
			continue
		}
		if err == nil && fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", c.want) {
			t.Errorf("%s:\ngot  %+v\nwant %+v", c.with, got, c.want)
		}
	}
	tree, _ := pg.Parse("COPY t TO STDOUT")
	if _, err := FromStmt(tree.Stmts[0].Stmt.GetCopyStmt()); err == nil {
		t.Error("FromStmt took COPY TO")
	}
}

func TestNewSplitter(t *testing.T) {
	if _, err := NewSplitter(Options{}, columns, 3); err == nil {
		t.Error("key column out of range")
	}
	if _, err := NewSplitter(Options{Encoding: "gb18030"}, columns, 0); err == nil {
		t.Error("took GB18030")
	}
	if _, err := NewSplitter(Options{Delimiter: 'x'}, columns, 0); err == nil || err.Error() != `22023: COPY delimiter cannot be "x"` {
		t.Errorf("delimiter x: %v", err)
	}
	// Zero bytes are the defaults.
	rows, err := split(t, Options{CSV: true}, columns, 0, "\"1,2\",3,4\n", nil)
	if err != nil || len(rows) != 1 || rows[0].Key != "1,2" {
		t.Errorf("CSV defaults: %v %v", rows, err)
	}
}

// TestMemory checks that a Splitter keeps only the incomplete line.
func TestMemory(t *testing.T) {
	s, err := NewSplitter(optionsFor(t, ""), columns, keyCol)
	if err != nil {
		t.Fatal(err)
	}
	row := []byte("1\tkey\t" + strings.Repeat("v", 100) + "\n")
	chunk := slices.Repeat(row, 100)
	for i := range 1000 {
		s.Write(chunk[:len(chunk)-7]) // leave a partial row behind
		for {
			_, ok, err := s.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
		}
		s.Write(chunk[len(chunk)-7:])
		if i > 3 && cap(s.buf) > 4*len(chunk) {
			t.Fatalf("buffer holds %d bytes after %d chunks of %d", cap(s.buf), i+1, len(chunk))
		}
	}

	// A long line's room is given back once it is done with.
	s, _ = NewSplitter(optionsFor(t, ""), columns, keyCol)
	long := []byte("1\t" + strings.Repeat("x", 8<<20) + "\t3\n")
	s.Write(long)
	if _, ok, err := s.Next(); !ok || err != nil {
		t.Fatal(ok, err)
	}
	for range 3 {
		s.Write(row)
		if _, ok, _ := s.Next(); !ok {
			t.Fatal("no row")
		}
	}
	if cap(s.buf) > 1<<20 {
		t.Errorf("buffer still holds %d bytes", cap(s.buf))
	}

	// Too long a line is an error rather than more memory.
	opt := optionsFor(t, "")
	opt.MaxRow = 1000
	s, _ = NewSplitter(opt, columns, keyCol)
	for range 10 {
		s.Write([]byte(strings.Repeat("x", 300)))
	}
	_, _, err = s.Next()
	if err == nil || !strings.HasPrefix(err.Error(), "54000") {
		t.Errorf("long line: %v", err)
	}
	if _, _, err2 := s.Next(); err2 != err {
		t.Error("the error does not stick")
	}

	// Data after the end marker is dropped.
	s, _ = NewSplitter(optionsFor(t, ""), columns, keyCol)
	s.Write([]byte("1\t2\t3\n\\.\n"))
	if _, ok, err := s.Next(); !ok || err != nil {
		t.Fatal(ok, err)
	}
	for range 100 {
		s.Write(chunk)
		if _, ok, err := s.Next(); ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if !s.Done() || len(s.buf) > 100 {
		t.Errorf("after the end marker: done %v, %d bytes held", s.Done(), len(s.buf))
	}
}

// TestNoAllocs checks that Next allocates nothing per row.
func TestNoAllocs(t *testing.T) {
	for _, c := range []struct{ with, row string }{
		{"", "12345\tsome key\\twith escape\t2024-01-01\n"},
		{"(FORMAT csv)", "12345,\"some, quoted key\",2024-01-01\r\n"},
	} {
		s, err := NewSplitter(optionsFor(t, c.with), columns, keyCol)
		if err != nil {
			t.Fatal(err)
		}
		chunk := []byte(strings.Repeat(c.row, 50))
		allocs := testing.AllocsPerRun(100, func() {
			s.Write(chunk)
			for {
				_, ok, err := s.Next()
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
			}
		})
		if allocs > 0 {
			t.Errorf("%s: %.1f allocations per chunk of 50 rows", c.with, allocs)
		}
	}
}
