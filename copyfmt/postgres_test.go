package copyfmt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/sandbox"
)

// pgCase is COPY data with the options it is read with.
type pgCase struct {
	with  string // options after COPY t (a, b, c) FROM STDIN
	input string
}

// TestAgainstPostgres feeds the same COPY data to PostgreSQL 15 and to a
// Splitter and checks that they agree: on the rows and their keys, on the
// error (SQLSTATE, message, hint and the "COPY t, line N" context), on the
// line number PostgreSQL gives a row, and that the rows forwarded raw in
// two groups, as to two shards, load the same data.
func TestAgainstPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	if _, err := os.Stat("/usr/lib/postgresql/15/bin/pg_ctl"); err != nil {
		if _, err := exec.LookPath("pg_ctl"); err != nil {
			t.Fatal("PostgreSQL binaries not found: run .ci/run or install postgresql-15")
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	c, err := sandbox.Start(ctx, sandbox.Options{Dir: t.TempDir(), Shards: 1, Replicas: sandbox.NoReplicas, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	conn, err := pgconn.Connect(ctx, c.Shards[0].Primary.DSN(c.Database)+"&client_encoding=UTF8")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	t.Logf("PostgreSQL up in %v", time.Since(began).Round(time.Millisecond))
	if _, err := conn.Exec(ctx, `
		CREATE TABLE t (id bigserial, a text, b text, c text);
		CREATE DOMAIN keyd AS text CHECK (VALUE IS DISTINCT FROM current_setting('copyfmt.bad', true));
		CREATE TABLE tl (id bigserial, a text, b keyd, c text);
	`).ReadAll(); err != nil {
		t.Fatal(err)
	}

	// COPYFMT_PG_CASES=n runs n random cases of each kind with a new seed.
	seed, n := uint64(1), 700
	if v, err := strconv.Atoi(os.Getenv("COPYFMT_PG_CASES")); err == nil {
		seed, n = uint64(time.Now().UnixNano()), v
	}
	t.Logf("seed %d", seed)
	cases := append(handCases(), randomCases(rand.New(rand.NewPCG(seed, 2)), n)...)
	cases = append(cases, chaosCases(rand.New(rand.NewPCG(seed, 3)), n)...)
	began = time.Now()
	var refused, rows, fails int
	for i, pc := range cases {
		n, bad := compareWithPostgres(ctx, t, conn, pc, &fails)
		if fails >= 10 {
			t.Fatalf("stopping after case %d of %d", i+1, len(cases))
		}
		if bad {
			refused++
		}
		rows += n
	}
	t.Logf("%d cases (%d refused, %d rows loaded) in %v", len(cases), refused, rows, time.Since(began).Round(time.Millisecond))
}

var columns = []string{"a", "b", "c"}

const keyCol = 1

// compareWithPostgres runs one case; it reports whether PostgreSQL refused
// the data.
func compareWithPostgres(ctx context.Context, t *testing.T, conn *pgconn.PgConn, pc pgCase, fails *int) (rows int, refused bool) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		*fails++
		t.Errorf("COPY t FROM STDIN %s with %q:\n%s", pc.with, pc.input, fmt.Sprintf(format, args...))
	}
	exec := func(sql string) {
		if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec("DELETE FROM t")

	opt, optErr := parseOptions(pc.with)
	_, pgErr := conn.CopyFrom(ctx, strings.NewReader(pc.input), "COPY t (a, b, c) FROM STDIN "+pc.with)
	var pe *pgconn.PgError
	if pgErr != nil && !errors.As(pgErr, &pe) {
		t.Fatalf("COPY: %v", pgErr)
	}
	if optErr != nil {
		var e *Error
		switch {
		case !errors.As(optErr, &e):
			fail("FromStmt: %v", optErr)
		case pe == nil:
			fail("FromStmt: %v; PostgreSQL took the options", optErr)
		case e.Code != pe.Code || e.Message != pe.Message:
			fail("FromStmt: %s %q\nPostgreSQL: %s %q", e.Code, e.Message, pe.Code, pe.Message)
		}
		return 0, true
	}

	rows1, err := split(t, opt, columns, keyCol, pc.input, nil)
	ones := make([]int, len(pc.input))
	for i := range ones {
		ones[i] = 1
	}
	rows2, err2 := split(t, opt, columns, keyCol, pc.input, ones)
	if !slices.Equal(rows1, rows2) || fmt.Sprint(err) != fmt.Sprint(err2) {
		fail("whole: %v\n%s\nbyte by byte: %v\n%s", err, rowsString(rows1), err2, rowsString(rows2))
	}

	if pe != nil {
		var e *Error
		switch {
		case err == nil:
			fail("no error; PostgreSQL: %s %q (%s)\nrows:\n%s", pe.Code, pe.Message, pe.Where, rowsString(rows1))
		case !errors.As(err, &e):
			fail("error %v is not an *Error", err)
		case e.Code != pe.Code || e.Message != pe.Message || e.Hint != pe.Hint || e.Context("t") != pe.Where:
			fail("got  %s %q hint %q context %q\nwant %s %q hint %q context %q",
				e.Code, e.Message, e.Hint, e.Context("t"), pe.Code, pe.Message, pe.Hint, pe.Where)
		}
		return 0, true
	}
	if err != nil {
		fail("error %v; PostgreSQL loaded the data", err)
		return 0, false
	}

	// The keys PostgreSQL stored, in order.
	want := selectAll(ctx, t, conn, "t")
	var data []got
	var header *got
	for i, r := range rows1 {
		if r.Header {
			if i != 0 {
				fail("header at row %d", i)
			}
			header = &rows1[i]
			continue
		}
		data = append(data, r)
	}
	if len(data) != len(want) {
		fail("%d rows, PostgreSQL loaded %d:\n%s", len(data), len(want), rowsString(rows1))
		return
	}
	if opt.Encoding != "" && opt.Encoding != "UTF8" {
		return len(data), false // PostgreSQL converted the keys to UTF8; the Splitter does not
	}
	for i, r := range data {
		if w := want[i][1]; r.Null != (w == nil) || w != nil && r.Key != *w {
			fail("row %d %v: PostgreSQL's key is %s", i, r, show(w))
		}
	}

	// The line PostgreSQL gives a row: make one key value fail the domain
	// check and read the line from the error context.
	var keyed []int
	for i, r := range data {
		if !r.Null {
			keyed = append(keyed, i)
		}
	}
	if len(keyed) > 0 {
		bad := data[keyed[len(keyed)/2]]
		if strings.IndexByte(bad.Key, 0) < 0 {
			if _, err := conn.ExecParams(ctx, "SELECT set_config('copyfmt.bad', $1, false)", [][]byte{[]byte(bad.Key)}, nil, nil, nil).Close(); err != nil {
				t.Fatal(err)
			}
			first := bad
			for _, r := range data {
				if !r.Null && r.Key == bad.Key {
					first = r
					break
				}
			}
			_, err := conn.CopyFrom(ctx, strings.NewReader(pc.input), "COPY tl (a, b, c) FROM STDIN "+pc.with)
			m := regexp.MustCompile(`COPY tl, line (\d+), column b`).FindStringSubmatch(fmt.Sprint(errWhere(err)))
			if m == nil {
				fail("the domain check did not fail for key %q: %v", bad.Key, err)
			} else if n, _ := strconv.ParseInt(m[1], 10, 64); n != first.Line {
				fail("row %v: PostgreSQL says line %d", first, n)
			}
		}
	}

	// Forwarded raw, as to two shards, the rows load the same data.
	exec("DELETE FROM t")
	for part := range 2 {
		var in bytes.Buffer
		if header != nil {
			in.WriteString(header.Raw)
		}
		for i, r := range data {
			if i%2 == part {
				in.WriteString(r.Raw)
			}
		}
		if _, err := conn.CopyFrom(ctx, &in, "COPY t (a, b, c) FROM STDIN "+pc.with); err != nil {
			fail("part %d of the rows: %v\n%s", part, err, rowsString(data))
			return
		}
	}
	loaded := selectAll(ctx, t, conn, "t")
	if a, b := sortedRows(want), sortedRows(loaded); a != b {
		fail("the rows split in two load\n%s\nnot\n%s", b, a)
	}
	return len(data), false
}

func errWhere(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Where
	}
	return fmt.Sprint(err)
}

func show(s *string) string {
	if s == nil {
		return "NULL"
	}
	return strconv.Quote(*s)
}

// selectAll returns table's a, b, c in insertion order.
func selectAll(ctx context.Context, t *testing.T, conn *pgconn.PgConn, table string) [][3]*string {
	res := conn.ExecParams(ctx, "SELECT a, b, c FROM "+table+" ORDER BY id", nil, nil, nil, nil).Read()
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	out := make([][3]*string, len(res.Rows))
	for i, row := range res.Rows {
		for j, v := range row {
			if v != nil {
				s := string(v)
				out[i][j] = &s
			}
		}
	}
	return out
}

func sortedRows(rows [][3]*string) string {
	var lines []string
	for _, r := range rows {
		lines = append(lines, show(r[0])+" "+show(r[1])+" "+show(r[2]))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// handCases are the subtleties of copyfromparse.c, one by one.
func handCases() []pgCase {
	var cs []pgCase
	add := func(with string, inputs ...string) {
		for _, in := range inputs {
			cs = append(cs, pgCase{with, in})
		}
	}
	text := []string{
		"", "1\t2\t3\n", "1\t2\t3", "1\t2\t3\n4\t5\t6\n", "\n",
		"1\t\\N\t3\n", "1\t\\\\N\t3\n", "1\tN\t3\n", "1\t\t3\n",
		"a\\tb\tc\\\td\te\n", "1\t\\x41\\x4g\\101\\8\\\\\\.\t3\n",
		"1\t\\b\\f\\n\\r\\t\\v\\q\t3\n",
		"1\t2\\\n2\t3\n", "1\t2\\\r\n2\t3\n", "1\t2\\\r2\t3\r", "1\t2\t3\\", "1\t2\t\\",
		"1\t\\303\\251\t3\n", "1\t\\xc3\\xa9\t3\n", "1\t\\xff\t3\n", "1\t\\0\t3\n", "1\t\\xff\\N\t3\n", "1\t\\0\t\\0\n",
		"1\t2\t3\r\n4\t5\t6\r\n", "1\t2\t3\r4\t5\t6\r", "1\t2\t3\r\n4\t5\t6\n", "1\t2\t3\n4\t5\t6\r\n",
		"1\t2\t3\r4\t5\t6\n", "1\t2\t3\r\n4\t5\r6\r\n", "1\t2\t3\n4\r5\t6\n", "1\t2\t3\r",
		"\\.\n", "\\.", "\\.\r\n", "1\t2\t3\n\\.\n4\t5\t6\n", "1\t2\t3\n\\.\nnot\x00even\xffdata",
		"1\t2\t3\\.\n4\n", "1\t2\t3\n\\.x\n", "1\t2\t3\n\\.", "1\t2\t3\r\n\\.\n", "1\t2\t3\r\n\\.\r",
		"1\t2\t3\r\n\\.\r\n", "1\t2\t3\r\n\\.\rx", "1\t2\t3\r\\.\r", "1\t2\t3\r\\.\n", "1\t2\t3\n\\.\r",
		"1\t2\\.\n", "\\.\r", "\\.\rfoo",
		"1\t2\n", "1\n", "1\t2\t3\t4\n", "1\t2\t3\t\n", "1\t\\N\n",
		"1\t\xc3\xa9\t3\n", "1\t\xff\t3\n", "1\t2\t3\n\xc3", "1\t\xc3\x28\t3\n", "1\t\xed\xa0\x80\t3\n",
		"1\t\xf4\x90\x80\x80\t3\n", "1\t\xc0\xaf\t3\n", "1\t2\t3\x00\n", "1\t2\t3\n4\t5\t6\r\xff",
		"1\t2\t3\\\xff\n", "1\t2\t3\r\xff\n", "1\t2\t3\n\\\xff\n", "1\t2\t3\n\\.\xff\n",
		"1\t" + strings.Repeat("é", 60) + "\t3\t4\n", "1\t2\t" + strings.Repeat("x", 150) + "\t4\n",
	}
	for _, st := range splitTests {
		add(st.with, st.input)
	}
	add("", text...)
	add("(FORMAT text, HEADER)", "a\tb\tc\n1\t2\t3\n", "a\tb\tc", "", "\\.\n", "a\tb\\.\n1\t2\t3\n", "h\r\n1\t2\t3\r\n", "h\r1\t2\t3\n")
	add("(FORMAT text, HEADER MATCH)", "a\tb\tc\n1\t2\t3\n", "a\tb\n1\t2\t3\n", "a\t\\N\tc\n", "a\tB\tc\n", "a\t\\x62\tc\n1\t2\t3\n", "",
		"a\t\\xff\tc\n", "a\tb\tc\\.\n")
	add("(DELIMITER '|', NULL 'NULL')", "1|NULL|3\n", "1|\\N|3\n", "1|NU\\LL|3\n", "1|2|3|\n", "1\t2|3|4\n", "1|\\||3\n")
	add("(DELIMITER 'A')", "1A\\xAA2A3\n", "1A\\xA2A3\n", "1A\\A2A3\n")
	add("(NULL '')", "1\t\t3\n", "1\t\\N\t3\n")

	csv := []string{
		"1,2,3\n", "1,2,3", "1,,3\n", `1,"",3` + "\n", `1,"2,2",3` + "\n", `1,"2""2",3` + "\n",
		"1,\"2\n2\",3\n", "1,\"2\r\n2\",3\r\n", "1,\"2\r2\",3\n", "1,\"2\n2\",3\r\n", "1,\"a\nb\nc\",3\n4,5,6\n7,8\n",
		"1,\"a\r\nb\",3\r\n4,5,6\r\n7,8\r\n", "1,\"a\nb\",3\r\n4,5,6\r\n7,8\r\n", "1,\"a\rb\",3\r4,5,6\r7,8\r",
		"1,\"2,3\n", "1,\"2,3", "1,2,\"3\n4,5,6\n", "1,a\"b\"c,3\n", "1,\"a\"b,3\n", "1,\"\"\"\",3\n",
		"\\.\n", "\\.", "1,2,3\n\\.\n4,5\n", "1,2,3\n\\.x\n", "1,2,3\n\\.", "1,\\.,3\n", "\\.,2,3\n",
		"1,2,3\r\n\\.\n", "1,2,3\r\n\\.\r\n", "1,2,3\r\n\\.\r", "1,2,3\r\n\\.\rx\r\n", "1,2,3\r\\.\n", "1,2,3\n\\.\r",
		"1,\"x\n\\.\n\",3\n", "\\.\"\n\",3\n", "\\\"\n\",2,3\n", "1,2,3\n\\\n",
		"1,2,3\r\n4,5,6\n", "1,2,3\n4,5,6\r\n", "1,2,3\n4,5\r,6\n", "1,2\n", "1,2,3,4\n", "1,2,3,\n", "1,\"\",\n",
		"1,\xff,3\n", "1,\"\xff\",3\n", "1,\"a\n\xff\",3\n", "1,2,3\n\\\xff\n", "1,2,3\r\xff", "1,\"2\r\xff\",3\n",
		"1,\"2\",\"3\" \n", " 1 , \"2\" ,3\n", "1,\\N,3\n",
	}
	add("(FORMAT csv)", csv...)
	add("(FORMAT csv, HEADER)", "a,b,c\n1,2,3\n", "\"a\nb\",c\n1,2,3\n", "\"a\n1,2,3\n", "", "\\.\n1,2,3\n", "a,b,c")
	add("(FORMAT csv, HEADER MATCH)", "a,b,c\n1,2,3\n", "a,\"b\",c\n1,2,3\n", "a,,c\n", "a,b\n", "a,b,c,d\n", "", "\"a\n", "a,\"b,c\n")
	add("(FORMAT csv, ESCAPE '\\')", `1,"a\"b",3`+"\n", `1,"a\\",3`+"\n", `1,"a\\\"",3`+"\n", `1,a\"b,3`+"\n",
		`1,"a\b",3`+"\n", `1,"a""b",3`+"\n", "1,\"a\\\nb\",3\n", "1,\"a\\\"\n\",3\n", "\\.\n", "\\\"\n", `1,"\\",\"`+"\n")
	add("(FORMAT csv, QUOTE '''', DELIMITER '|')", "1|'2|2'|3\n", "1|'a''b'|3\n", "1|\"2\"|3\n")
	add("(FORMAT csv, QUOTE '\\')", "1,\\2,2\\,3\n", "\\.\n", "\\x\n,2\\,3\n")
	add("(FORMAT csv, NULL 'N', FORCE_NULL (b))", "1,N,3\n", "1,\"N\",3\n", "1,,3\n", "1,\"\",3\n")
	add("(FORMAT csv, FORCE_NOT_NULL (b))", "1,,3\n", "1,\"\",3\n", "1,x,3\n")
	add("(FORMAT csv, FORCE_NOT_NULL (b), FORCE_NULL (b))", "1,,3\n", "1,\"\",3\n")
	add("(FORMAT csv, FORCE_NULL (a, c))", "1,,3\n", "\"\",\"\",\"\"\n")
	add("(FORMAT csv, DELIMITER ';', ESCAPE ';')", "1;\"a;\"\"b\";3\n", "1;\"a;;b\";3\n")

	// PostgreSQL reads 64 kB at a time: put what needs a look ahead on the
	// boundary.
	for _, n := range []int{65530, 65531, 65532, 65533, 65534, 65535, 65536} {
		pad := strings.Repeat("x", n-4)
		add("", "1\t"+pad+"\t3\r\n4\t5\t6\r\n", "1\t2\t3\n"+pad[:n-6]+"\\.\n", "1\t2\t3\r\n"+pad[:n-7]+"\t\\.\r\n")
		add("(FORMAT csv)", "1,\""+pad+"\n\",3\r\n\\.\r\n", "1,\""+pad+"\r\n\\.\r\n\",3\r\n", "1,"+pad[:n-6]+",3\n\\.\n")
	}

	// Options PostgreSQL refuses, with FromStmt's words.
	for _, with := range []string{
		"(FORMAT xml)", "(FORMAT)", "(FORMAT csv, FORMAT csv)", "(DELIMITER ',,')", "(DELIMITER '')", "(DELIMITER E'\\n')",
		"(NULL E'\\r')", "(DELIMITER 'a')", "(DELIMITER '.')", "(DELIMITER '\\')", "(QUOTE '\"')", "(ESCAPE '\"')",
		"(FORMAT csv, QUOTE 'ab')", "(FORMAT csv, QUOTE ',')", "(FORMAT csv, ESCAPE '')", "(FORCE_NOT_NULL (a))",
		"(FORCE_NULL (a))", "(FORMAT csv, FORCE_QUOTE (a))", "(FORMAT csv, FORCE_QUOTE *)", "(FORCE_QUOTE *)",
		"(NULL 'a\tb')", "(FORMAT csv, NULL '\"')", "(FORMAT csv, NULL 'a,b')", "(HEADER 2)", "(HEADER maybe)",
		"(FREEZE maybe)", "(ENCODING 'nope')", "(ENCODING 'utf8', ENCODING 'utf8')", "(BOGUS)", "(DEFAULT 'x')",
		"(FORMAT binary, DELIMITER ',')", "(FORMAT binary, NULL 'x')", "(FORMAT csv, FORCE_NOT_NULL *)",
		"(HEADER, HEADER)", "(FORMAT csv, FORCE_NULL (a), FORCE_NULL (b))",
	} {
		add(with, "1,2,3\n")
	}
	// Options written the old way, and other spellings.
	add("WITH CSV HEADER", "a,b,c\n1,2,3\n")
	add("CSV QUOTE AS '''' FORCE NOT NULL b", "1,,3\n")
	add("WITH DELIMITER '|' NULL AS 'x'", "1|x|3\n")
	add("(FORMAT 'csv', HEADER 'on', ENCODING 'UTF-8', FREEZE false)", "a,b,c\n1,2,3\n")
	add("(FORMAT csv, HEADER 1)", "a,b,c\n1,2,3\n")
	add("(FORMAT csv, HEADER 0)", "a,b,c\n1,2,3\n")
	add("(FORMAT csv, HEADER off)", "a,b,c\n1,2,3\n")
	return cs
}

// randomCases builds COPY data from pieces likely to matter.
func randomCases(rng *rand.Rand, n int) []pgCase {
	withs := []string{
		"", "(FORMAT csv)", "(FORMAT csv, HEADER)", "(FORMAT text, HEADER)", "(FORMAT csv, ESCAPE '\\')",
		"(FORMAT csv, QUOTE '''', DELIMITER '|')", "(FORMAT csv, NULL 'N', FORCE_NULL (b))",
		"(FORMAT csv, FORCE_NOT_NULL (b))", "(DELIMITER '|', NULL 'NULL')", "(FORMAT csv, HEADER MATCH)",
		"(FORMAT text, HEADER MATCH)",
	}
	plain := []string{"x", "yz", "1", "42", "é", "N", "NULL", " "}
	odd := []string{
		"\\", "\\\\", "\\N", ".", "\\.", "\"", "\"\"", "'", "''", "|", ",", "\t", "\\t", "\\x41", "\\101",
		"\\xff", "\\303\\251", "\\0", "\r", "\n", "\r\n", "\xff", "\xc3", "\"\n\"", "\",\"", "\\\n", "\\\r",
	}
	var cs []pgCase
	for range n {
		with := withs[rng.IntN(len(withs))]
		sep := "\t"
		switch {
		case strings.Contains(with, "'|'"):
			sep = "|"
		case strings.Contains(with, "csv"):
			sep = ","
		}
		eol := []string{"\n", "\n", "\r\n", "\r"}[rng.IntN(4)]
		var b strings.Builder
		lines := rng.IntN(5)
		if strings.Contains(with, "HEADER") {
			if rng.IntN(4) > 0 {
				b.WriteString("a" + sep + "b" + sep + "c" + eol)
			} else {
				b.WriteString("a" + sep + "x" + eol)
			}
		}
		for l := range lines {
			nf := 3
			if rng.IntN(8) == 0 {
				nf = 1 + rng.IntN(5)
			}
			for f := range nf {
				if f > 0 {
					b.WriteString(sep)
				}
				for range rng.IntN(3) {
					if rng.IntN(6) == 0 {
						b.WriteString(odd[rng.IntN(len(odd))])
					} else {
						b.WriteString(plain[rng.IntN(len(plain))])
					}
				}
			}
			switch r := rng.IntN(20); {
			case r == 0 && l == lines-1: // no final newline
			case r == 1:
				b.WriteString([]string{"\n", "\r\n", "\r"}[rng.IntN(3)])
			case r == 2:
				b.WriteString(eol + "\\." + eol)
			default:
				b.WriteString(eol)
			}
		}
		if rng.IntN(6) == 0 {
			b.WriteString([]string{"\\.", "\\." + eol, "\\.\n", "\\.x"}[rng.IntN(4)])
			if rng.IntN(2) == 0 {
				b.WriteString("after" + eol)
			}
		}
		cs = append(cs, pgCase{with, b.String()})
	}
	return cs
}

// chaosCases are sequences of the bytes that matter, with no structure.
func chaosCases(rng *rand.Rand, n int) []pgCase {
	withs := []string{
		"", "(FORMAT csv)", "(FORMAT csv, HEADER)", "(FORMAT text, HEADER)", "(FORMAT csv, ESCAPE '\\')",
		"(FORMAT csv, QUOTE '''', DELIMITER '|')", "(FORMAT csv, NULL 'N', FORCE_NULL (b))",
		"(FORMAT csv, FORCE_NOT_NULL (b))", "(DELIMITER '|', NULL 'NULL')", "(FORMAT csv, HEADER MATCH)",
		"(FORMAT text, HEADER MATCH)", "(FORMAT csv, QUOTE '\\')", "(FORMAT csv, ESCAPE '''')",
		"(DELIMITER 'A')", "(NULL '')", "(FORMAT csv, DELIMITER '.', NULL '\\N')", "(FORMAT csv, QUOTE '.')",
		"(FORMAT csv, ESCAPE '.')", "(FORMAT csv, DELIMITER '\\')", "(FORMAT csv, ESCAPE ',')",
	}
	alpha := []string{"a", "b", "c", "N", "\\", ".", "\"", "'", ",", "|", "\t", "\n", "\r", "x", "A", "0", "7", "\xc3", "\xa9", "\xff", "é"}
	var cs []pgCase
	for range n {
		with := withs[rng.IntN(len(withs))]
		var b strings.Builder
		for range rng.IntN(24) {
			b.WriteString(alpha[rng.IntN(len(alpha))])
		}
		cs = append(cs, pgCase{with, b.String()})
	}
	return cs
}
