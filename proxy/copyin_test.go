package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/topology"
)

// TestCopyIn: COPY ... FROM STDIN is split row by row; every row lands on
// the shard its key names, in text and CSV; a bad row anywhere is reported
// with the client's line number and nothing is committed on any shard.
func TestCopyIn(t *testing.T) {
	ctx := t.Context()
	conn := connect(t, pgx.QueryExecModeSimpleProtocol)
	pg := conn.PgConn()
	copyIn := func(sql, data string) (pgconn.CommandTag, error) {
		return pg.CopyFrom(ctx, strings.NewReader(data), sql)
	}

	// Text, with escapes and NULLs, the key first.
	var text strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&text, "%d\t%d\tpost\\t%d\\nline two \\\\ end\t%s\n", 13_000_000+i%97, i, i, map[bool]string{true: `\N`, false: "7"}[i%5 == 0])
	}
	tag, err := copyIn("COPY posts (user_id, id, body, likes) FROM STDIN", text.String())
	if err != nil || tag.String() != "COPY 2000" {
		t.Fatalf("text COPY: %v %q", err, tag)
	}
	assertPostsPlaced(t, 13_000_000, 13_000_097, 2000)
	var body string
	if err := conn.QueryRow(ctx, "SELECT body FROM posts WHERE user_id = 13000003 AND id = 3").Scan(&body); err != nil || body != "post\t3\nline two \\ end" {
		t.Fatalf("escaped text: %v %q", err, body)
	}

	// CSV with a header, the key last, quoted delimiters, quotes, newlines.
	csv := "id,body,user_id\n"
	for i := range 300 {
		csv += fmt.Sprintf("%d,\"a, \"\"quoted\"\"\nbody %d\",%d\n", i, i, 13_100_000+i%31)
	}
	if tag, err := copyIn("COPY posts (id, body, user_id) FROM STDIN (FORMAT csv, HEADER)", csv); err != nil || tag.String() != "COPY 300" {
		t.Fatalf("CSV COPY: %v %q", err, tag)
	}
	assertPostsPlaced(t, 13_100_000, 13_100_031, 300)
	if err := conn.QueryRow(ctx, "SELECT body FROM posts WHERE user_id = 13100005 AND id = 5").Scan(&body); err != nil || body != "a, \"quoted\"\nbody 5" {
		t.Fatalf("CSV body: %v %q", err, body)
	}

	// No column list: the key's position comes from the catalog.
	if tag, err := copyIn("COPY users FROM STDIN", "13200000\tann\ta@x\tNO\t2024-01-01 00:00:00+00\n13200001\tbob\t\\N\t\\N\t\\N"); err != nil || tag.String() != "COPY 2" {
		t.Fatalf("COPY without a column list: %v %q", err, tag)
	}
	assertCount(t, conn, "SELECT count(*) FROM users WHERE id >= $1 AND id < 13200002", 13_200_000, 2)

	// Bad rows: found by a shard (likes is an int), found by the proxy
	// (the key), a duplicate key, and the client giving up. The error names
	// the client's line; nothing of the COPY stays on any shard.
	bad := func(line int, row string) string {
		var b strings.Builder
		b.WriteString("user_id,id,likes\n")
		for i := 2; i < 200; i++ {
			if i == line {
				b.WriteString(row + "\n")
				continue
			}
			fmt.Fprintf(&b, "%d,%d,1\n", 13_300_000+i%17, i)
		}
		return b.String()
	}
	for _, c := range []struct {
		name, data, code, where string
	}{
		{"bad int on a shard", bad(57, "13300005,57,x"), "22P02", "line 57"},
		{"bad key", bad(10, "abc,10,1"), "22P02", "line 10"},
		{"null key", bad(12, ",12,1"), "23502", "line 12"},
		{"duplicate on a shard", bad(150, "13300003,3,1"), "23505", ""},
		{"missing column", bad(199, "13300003"), "22P04", "line 199"},
	} {
		_, err := copyIn("COPY posts (user_id, id, likes) FROM STDIN (FORMAT csv, HEADER true)", c.data)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != c.code || !strings.Contains(pgErr.Where, c.where) {
			t.Fatalf("%s: %v (where %q), want %s at %q", c.name, err, whereOf(err), c.code, c.where)
		}
		assertPostsPlaced(t, 13_300_000, 13_300_017, 0)
	}
	_, err = pg.CopyFrom(ctx, io.MultiReader(strings.NewReader(bad(500, "")), failingReader{}), "COPY posts (user_id, id, likes) FROM STDIN (FORMAT csv, HEADER)")
	if sqlState(err) != "57014" {
		t.Fatalf("client CopyFail: %v", err)
	}
	assertPostsPlaced(t, 13_300_000, 13_300_017, 0)
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("connection after failed COPYs: %v", err)
	}

	// Options the splitter cannot honour, or Postgres would refuse.
	for sql, code := range map[string]string{
		"COPY posts (user_id, id) FROM STDIN (FORMAT binary)":              "0A000",
		"COPY posts (user_id, id) FROM STDIN (FORMAT csv, FORMAT text)":    "42601",
		"COPY posts (user_id, id) FROM STDIN (FORMAT csv, DELIMITER '\n')": "22023",
	} {
		if _, err := copyIn(sql, "1\t1\n"); sqlState(err) != code {
			t.Fatalf("%s: %v, want %s", sql, err, code)
		}
	}

	// A reference table gets every row on every shard.
	if tag, err := copyIn("COPY countries (code, name) FROM STDIN", "QA\tQatar\nQB\tQbland\n"); err != nil || tag.String() != "COPY 2" {
		t.Fatalf("reference COPY: %v %q", err, tag)
	}
	for shard := range cluster.Shards {
		assertCount(t, connectShard(t, shard), "SELECT count(*) FROM countries WHERE code LIKE $1", "Q%", 2)
	}

	// psql's \copy, a real client.
	psql := exec.CommandContext(ctx, "psql", proxyDSN, "-v", "ON_ERROR_STOP=1", "-c", `\copy posts (user_id, id) from stdin`)
	psql.Stdin = strings.NewReader("13400000\t1\n13400001\t2\n13400002\t3\n")
	out, err := psql.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "COPY 3") {
		t.Fatalf("psql \\copy: %v %s", err, out)
	}
	assertPostsPlaced(t, 13_400_000, 13_400_003, 3)
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("the client gave up") }

func whereOf(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Where
	}
	return ""
}

// assertPostsPlaced checks, shard by shard, that the posts of users
// [from, to) number want in all and each is on its key's shard.
func assertPostsPlaced(t *testing.T, from, to int64, want int) {
	t.Helper()
	total := 0
	for shard := range cluster.Shards {
		rows, err := connectShard(t, shard).Query(t.Context(), "SELECT user_id FROM posts WHERE user_id >= $1 AND user_id < $2", from, to)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if s := shardOf(t, id); s != shard {
				t.Fatalf("post of user %d is on shard %d, its key says %d", id, shard, s)
			}
		}
		total += len(ids)
	}
	if total != want {
		t.Fatalf("posts of users %d..%d: %d on the shards, want %d", from, to, total, want)
	}
}

// TestCopyInTransaction: with two_phase_commit, COPY FROM inside a
// transaction block writes through the transaction's connection to each
// shard: the transaction sees the rows, COMMIT keeps them on their shards,
// ROLLBACK or a bad row leaves nothing, the rows written before it
// included. Without two_phase_commit it is refused with 0A000.
func TestCopyInTransaction(t *testing.T) {
	ctx := t.Context()
	rows := func(from, n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "%d\t%d\tin a transaction\n", from+i%50, i)
		}
		return b.String()
	}
	plain := connect(t, pgx.QueryExecModeSimpleProtocol)
	if _, err := plain.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := plain.PgConn().CopyFrom(ctx, strings.NewReader(rows(16_000_000, 10)), "COPY posts (user_id, id, body) FROM STDIN"); sqlState(err) != "0A000" {
		t.Fatalf("COPY in a transaction without two_phase_commit: %v", err)
	}
	plain.Exec(ctx, "ROLLBACK")

	conn := dial(t, proxyWith(t, func(c *topology.Config) {
		c.TwoPhaseCommit, c.DecisionLog = true, filepath.Join(t.TempDir(), "decisions.log")
	}), pgx.QueryExecModeSimpleProtocol, nil)
	copyIn := func(data string) (pgconn.CommandTag, error) {
		return conn.PgConn().CopyFrom(ctx, strings.NewReader(data), "COPY posts (user_id, id, body) FROM STDIN")
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	const base = 16_100_000
	for _, end := range []string{"ROLLBACK", "bad row", "COMMIT"} {
		exec("BEGIN")
		exec("INSERT INTO posts (user_id, id, body) VALUES ($1, 100000, 'before the COPY')", int64(base))
		if end == "bad row" {
			if _, err := copyIn(rows(base, 300) + "16100001\tnot a number\tx\n"); sqlState(err) != "22P02" {
				t.Fatalf("bad row in a COPY in a transaction: %v", err)
			}
			if _, err := conn.Exec(ctx, "SELECT 1"); sqlState(err) != "25P02" {
				t.Fatalf("statement after the failed COPY: %v", err)
			}
			exec("ROLLBACK")
			assertPostsPlaced(t, base, base+50, 0)
			continue
		}
		if tag, err := copyIn(rows(base, 300)); err != nil || tag.String() != "COPY 300" {
			t.Fatalf("COPY in a transaction: %v %q", err, tag)
		}
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM posts WHERE user_id >= $1 AND user_id < $2", int64(base), int64(base+50)).Scan(&n); err != nil || n != 301 {
			t.Fatalf("the transaction sees %d of its 301 rows: %v", n, err)
		}
		exec(end)
		want := 0
		if end == "COMMIT" {
			want = 301
		}
		assertPostsPlaced(t, base, base+50, want)
	}
}

// TestCopyInOneShardRelayed: a COPY FROM that one shard takes whole (a
// table of the default shard) is relayed as sent: binary format (which
// the proxy cannot split) works, inside a transaction block too, without
// two_phase_commit, and a bad row rolls the block back.
func TestCopyInOneShardRelayed(t *testing.T) {
	_, addr := sessionStateProxy(t, true)
	ctx := t.Context()
	conn := connectTo(t, addr, pgx.QueryExecModeCacheStatement)
	if _, err := conn.Exec(ctx, "CREATE TABLE copy_local (id int PRIMARY KEY, note text)"); err != nil {
		t.Fatal(err)
	}
	dropOn(t, 1, "DROP TABLE IF EXISTS copy_local")
	// pgx's CopyFrom sends FORMAT binary.
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"copy_local"}, []string{"id", "note"},
		pgx.CopyFromSlice(1000, func(i int) ([]any, error) { return []any{i, "row " + strconv.Itoa(i)}, nil }))
	if err != nil || n != 1000 {
		t.Fatalf("binary COPY: %d rows, %v", n, err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, tx, "TRUNCATE copy_local")
	if _, err := tx.Conn().PgConn().CopyFrom(ctx, strings.NewReader("1\tone\n2\ttwo\n"), "COPY copy_local FROM STDIN"); err != nil {
		t.Fatalf("text COPY in a transaction block: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	assertCount(t, conn, "SELECT count(*) FROM copy_local WHERE id > $1", 0, 2)

	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, tx, "DELETE FROM copy_local")
	_, err = tx.Conn().PgConn().CopyFrom(ctx, strings.NewReader("3\tthree\n3\tagain\n"), "COPY copy_local FROM STDIN")
	if sqlState(err) != "23505" {
		t.Fatalf("duplicate row: %v, want 23505", err)
	}
	tx.Rollback(ctx)
	assertCount(t, conn, "SELECT count(*) FROM copy_local WHERE id > $1", 0, 2)
}

// TestCopyInOneShardServerFailsMidway: the server fails a relayed COPY at
// a bad row while the client is still sending; its error reaches the
// client at once (pgx then stops sending), and a notice raised mid-stream
// reaches the client before it.
func TestCopyInOneShardServerFailsMidway(t *testing.T) {
	_, addr := sessionStateProxy(t, true)
	ctx := t.Context()
	cfg, err := pgconn.ParseConfig("postgres://postgres@" + addr + "/app?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	noticed := make(chan string, 10)
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { noticed <- n.Message }
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	dropOn(t, 0, "DROP FUNCTION IF EXISTS copy_note()")
	dropOn(t, 1, "DROP FUNCTION IF EXISTS copy_note()")
	dropOn(t, 1, "DROP TABLE IF EXISTS copy_midway") // first: cleanups run last-in first-out
	for _, sql := range []string{
		"CREATE TABLE copy_midway (n int)",
		`CREATE FUNCTION copy_note() RETURNS trigger LANGUAGE plpgsql AS
		  $$BEGIN IF NEW.n = 2 THEN RAISE NOTICE 'saw two'; END IF; RETURN NEW; END$$`,
		"CREATE TRIGGER copy_note BEFORE INSERT ON copy_midway FOR EACH ROW EXECUTE FUNCTION copy_note()",
	} {
		if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	r, w := io.Pipe()
	defer r.Close()
	go func() {
		defer w.Close()
		if _, err := io.WriteString(w, "1\n2\n"); err != nil {
			return
		}
		time.Sleep(300 * time.Millisecond)
		if _, err := io.WriteString(w, "oops\n"); err != nil {
			return
		}
		for range 200 { // then keep the COPY open for 20 s
			time.Sleep(100 * time.Millisecond)
			if _, err := io.WriteString(w, "3\n"); err != nil {
				return
			}
		}
	}()
	began := time.Now()
	_, err = conn.CopyFrom(ctx, r, "COPY copy_midway FROM STDIN")
	r.Close()
	if sqlState(err) != "22P02" {
		t.Fatalf("bad row: %v, want 22P02", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("the error took %s to arrive: the proxy waited for the client's CopyDone", d)
	}
	select {
	case msg := <-noticed:
		if msg != "saw two" {
			t.Fatalf("notice %q", msg)
		}
	default:
		t.Fatal("the notice raised mid-stream never reached the client")
	}
	res, err := conn.Exec(ctx, "SELECT count(*) FROM copy_midway").ReadAll()
	if err != nil || string(res[0].Rows[0][0]) != "0" {
		t.Fatalf("after the failed COPY: %v %v", res, err)
	}
}
