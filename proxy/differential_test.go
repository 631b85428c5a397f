package proxy_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gopkg.in/yaml.v3"

	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

// diffQuery is one entry of testdata/differential/*.yaml.
type diffQuery struct {
	SQL string `yaml:"sql"`
	// Ordered: the query has a total ORDER BY, so row order is compared;
	// otherwise rows are compared as sorted multisets.
	Ordered bool `yaml:"ordered"`
	// Error is the SQLSTATE shardgate must refuse the query with.
	Error string `yaml:"error"`
	// KnownWrong marks a query shardgate currently answers differently from
	// one Postgres: the difference is logged, not failed, until it is fixed.
	KnownWrong bool `yaml:"known_wrong"`
	// KnownWrongModes limits KnownWrong to these pgx exec modes (as
	// QueryExecMode.String spells them); empty means every mode.
	KnownWrongModes []string `yaml:"known_wrong_modes"`

	file string
	line int
}

// TestDifferential loads the same generated data (see
// testdata/differential/README.md) through shardgate over 3 shards and into
// one unsharded Postgres, then runs every query of testdata/differential
// both ways and requires identical results, or the listed refusal.
func TestDifferential(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own 3-shard sandbox")
	}
	began := time.Now()
	queries := loadDiffQueries(t)
	dsn, flatDSN := startDiff(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	modes := []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement}
	// The unsharded side runs each query in the same mode, so that values
	// come back in the same format (text or binary) on both sides.
	conns := make([]*pgx.Conn, len(modes))
	flats := make([]*pgx.Conn, len(modes))
	for i, mode := range modes {
		conns[i] = dial(t, dsn, mode, nil)
		flats[i] = dial(t, flatDSN, mode, nil)
	}
	var supported, refused, wrong, stillWrong int
	for _, q := range queries {
		where := fmt.Sprintf("%s:%d: %s", q.file, q.line, q.SQL)
		if q.Error != "" {
			refused++
			for i, conn := range conns {
				_, _, err := diffRows(ctx, conn, q.SQL)
				if got := sqlState(err); got != q.Error {
					t.Errorf("%s (%s): got %v, want SQLSTATE %s", where, modes[i], err, q.Error)
				}
				var one int
				if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
					t.Errorf("%s (%s): connection unusable after the refusal: %v", where, modes[i], err)
					conns[i] = dial(t, dsn, modes[i], nil)
				}
			}
			continue
		}
		if q.KnownWrong {
			wrong++
		} else {
			supported++
		}
		differs := false
		for i, conn := range conns {
			known := q.KnownWrong && (len(q.KnownWrongModes) == 0 || slices.Contains(q.KnownWrongModes, modes[i].String()))
			wantCols, want, err := diffRows(ctx, flats[i], q.SQL)
			if err != nil {
				t.Errorf("%s (%s): on unsharded Postgres: %v", where, modes[i], err)
				continue
			}
			if !q.Ordered {
				sortRows(want)
			}
			gotCols, got, err := diffRows(ctx, conn, q.SQL)
			if err != nil {
				msg := fmt.Sprintf("%s (%s): through shardgate: %v", where, modes[i], err)
				if known {
					differs = true
					t.Log("known wrong: " + msg)
				} else {
					t.Error(msg)
				}
				// A decoding error can leave the connection busy.
				if conn.IsClosed() || conn.Ping(ctx) != nil {
					conns[i] = dial(t, dsn, modes[i], nil)
				}
				continue
			}
			if !q.Ordered {
				sortRows(got)
			}
			if reflect.DeepEqual(got, want) && gotCols == wantCols {
				continue
			}
			msg := fmt.Sprintf("%s (%s): %s", where, modes[i], describeDiff(got, want))
			if gotCols != wantCols {
				msg = fmt.Sprintf("%s (%s): columns %s, want %s", where, modes[i], gotCols, wantCols)
			}
			if known {
				differs = true
				t.Log("known wrong: " + msg)
			} else {
				t.Error(msg)
			}
		}
		if q.KnownWrong && differs {
			stillWrong++
		}
		if q.KnownWrong && !differs {
			t.Logf("%s: marked known_wrong but now matches: remove the mark", where)
		}
	}
	t.Logf("%d queries: %d supported, %d refused, %d known wrong (%d still differing); took %v",
		len(queries), supported, refused, wrong, stillWrong, time.Since(began).Round(time.Millisecond))
}

// startDiff starts a 3-shard sandbox with shardgate over it and a database
// "flat" with the same schema on the first shard's server, loads the same
// rows into both, and returns their DSNs.
func startDiff(t *testing.T) (dsn, flatDSN string) {
	t.Helper()
	began := time.Now()
	ctx := t.Context()
	c3, err := sandbox.Start(ctx, sandbox.Options{Dir: t.TempDir(), Shards: 3, Replicas: sandbox.NoReplicas, Fast: true, Schema: sandbox.Schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c3.Stop() })
	dsn, topo := diffProxy(t, c3)

	// The unsharded reference: one database on the first shard's server.
	admin, err := pgx.Connect(ctx, c3.Shards[0].Primary.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	if _, err := admin.Exec(ctx, "CREATE DATABASE flat"); err != nil {
		t.Fatal(err)
	}
	flat, err := pgx.Connect(ctx, c3.Shards[0].Primary.DSN("flat"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { flat.Close(context.Background()) })
	if _, err := flat.Exec(ctx, sandbox.Schema, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}

	data := generateDiffData()
	loadDiffData(t, ctx, dsn, topo, flat, data)
	t.Logf("sandbox and %d users, %d posts, %d follows, %d countries loaded in %v",
		len(data.users), len(data.posts), len(data.follows), len(data.countries), time.Since(began).Round(time.Millisecond))

	return dsn, c3.Shards[0].Primary.DSN("flat")
}

func loadDiffQueries(t *testing.T) []diffQuery {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "testdata", "differential", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(files)
	var all []diffQuery
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(doc.Content) == 0 {
			continue
		}
		list := doc.Content[0]
		if list.Kind != yaml.SequenceNode {
			t.Fatalf("%s: want a list of queries", f)
		}
		for _, n := range list.Content {
			var q diffQuery
			if err := n.Decode(&q); err != nil {
				t.Fatalf("%s:%d: %v", f, n.Line, err)
			}
			q.file, q.line = filepath.Base(f), n.Line
			q.SQL = strings.TrimSpace(q.SQL)
			if q.SQL == "" || (q.Error != "" && (q.Ordered || q.KnownWrong)) || (len(q.KnownWrongModes) > 0 && !q.KnownWrong) {
				t.Fatalf("%s:%d: want sql; error without ordered/known_wrong; known_wrong_modes with known_wrong", f, n.Line)
			}
			all = append(all, q)
		}
	}
	if len(all) < 200 {
		t.Fatalf("%d differential queries, want at least 200", len(all))
	}
	return all
}

// diffProxy runs a proxy over the 3-shard sandbox c3 and returns its DSN and
// topology.
func diffProxy(t *testing.T, c3 *sandbox.Cluster) (string, *topology.Topology) {
	t.Helper()
	var topo *topology.Topology
	addr := serveOver(t, c3, func(cfg *topology.Config) {
		var err error
		if topo, err = topology.New(cfg); err != nil {
			t.Fatal(err)
		}
	})
	return "postgres://postgres@" + addr + "/app?sslmode=disable", topo
}

type diffData struct {
	countries [][]any // code, name
	users     [][]any // id, name, email, country, created_at
	posts     [][]any // user_id, id, body, likes, created_at
	follows   [][]any // user_id, followee_id, created_at
}

// generateDiffData builds the data set described in
// testdata/differential/README.md; it depends only on the fixed seed.
func generateDiffData() diffData {
	rng := rand.New(rand.NewPCG(20240601, 7))
	var d diffData
	codes := []string{"ax", "au", "br", "ca", "cn", "de", "es", "fi", "fr", "gb", "in", "it", "jp", "kr", "mx", "ng", "no", "ru", "se", "us"}
	countryNames := map[string]any{"ax": "Åland", "cn": "中国", "de": "Deutschland", "jp": "日本", "kr": "대한민국", "ru": "Россия", "no": nil, "fr": "France", "us": "United States", "gb": "United Kingdom"}
	for _, c := range codes {
		name, ok := countryNames[c]
		if !ok {
			name = strings.ToUpper(c) + " land"
		}
		d.countries = append(d.countries, []any{c, name})
	}
	// Users' countries: mostly known codes, some unknown to countries, some
	// empty, some NULL.
	userCountries := append(slices.Clone(codes), "xx", "zz", "", "DE")

	names := []string{"alice", "bob", "carol", "Zoë", "zoe", "Zoe", "日本", "山田 太郎", "🙂", "🚀 rocket", "", " ", "a'b", "O'Brien",
		"émile", "Émile", "Ωmega", "ß", "naïve", "user_1", "user-1", "USER", "z", "Ø", "back\\slash", "tab\there", "Ålesund"}
	for i := range 120 {
		names = append(names, fmt.Sprintf("user-%03d", i))
	}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	stamp := func(spread int) any {
		if rng.IntN(20) == 0 {
			return nil
		}
		return base.Add(time.Duration(rng.IntN(spread)) * time.Hour)
	}

	// User ids: every id in -20..60 (so the queries' pinned keys exist),
	// the extremes and values near ±2^62, and random ids in -5000..5000.
	idSet := map[int64]bool{}
	var ids []int64
	add := func(id int64) {
		if !idSet[id] {
			idSet[id] = true
			ids = append(ids, id)
		}
	}
	for id := int64(-20); id <= 60; id++ {
		add(id)
	}
	for k := int64(0); k < 8; k++ {
		add(1<<62 + k)
		add(-(1 << 62) - k)
		add(1<<62 - k - 1)
	}
	add(math.MaxInt64)
	add(math.MinInt64)
	add(math.MaxInt64 - 1)
	add(math.MinInt64 + 1)
	for len(ids) < 2000 {
		add(rng.Int64N(10001) - 5000)
	}
	for _, id := range ids {
		name := names[rng.IntN(len(names))]
		var email, country any
		if rng.IntN(5) > 0 {
			email = fmt.Sprintf("%s@example.%s", strings.ToLower(strings.ReplaceAll(name, " ", ".")), []string{"com", "org", "jp"}[rng.IntN(3)])
		}
		if rng.IntN(7) > 0 {
			country = userCountries[rng.IntN(len(userCountries))]
		}
		d.users = append(d.users, []any{id, name, email, country, stamp(400)})
	}

	bodies := []string{"hello", "hello", "Hello", "こんにちは世界", "🎉🎉", "", "a\nb", "lorem ipsum", "x", "ünïcödé", "NULL", "it's"}
	type pk struct{ a, b int64 }
	seen := map[pk]bool{}
	for len(d.posts) < 5000 {
		uid := ids[rng.IntN(len(ids))]
		if rng.IntN(10) == 0 {
			uid = rng.Int64N(200) + 9000 // posts of users that do not exist
		}
		if rng.IntN(4) == 0 {
			uid = ids[rng.IntN(81)] // the small ids get more posts
		}
		id := rng.Int64N(3000) + 1
		if rng.IntN(50) == 0 {
			id = -id
		}
		if seen[pk{uid, id}] {
			continue
		}
		seen[pk{uid, id}] = true
		var body, likes any
		if rng.IntN(20) > 0 {
			body = bodies[rng.IntN(len(bodies))]
			if rng.IntN(3) == 0 {
				body = fmt.Sprintf("%s #%d", body, rng.IntN(100))
			}
		}
		switch r := rng.IntN(40); {
		case r == 0:
		case r == 1:
			likes = int32(math.MaxInt32 - rng.IntN(3))
		case r == 2:
			likes = int32(-rng.IntN(10) - 1)
		default:
			likes = int32(rng.IntN(60))
		}
		d.posts = append(d.posts, []any{uid, id, body, likes, stamp(200)})
	}

	clear(seen)
	for len(d.follows) < 3000 {
		uid := ids[rng.IntN(len(ids))]
		if rng.IntN(4) == 0 {
			uid = ids[rng.IntN(81)]
		}
		fid := ids[rng.IntN(len(ids))]
		if rng.IntN(3) == 0 {
			fid = ids[rng.IntN(81)]
		}
		if seen[pk{uid, fid}] {
			continue
		}
		seen[pk{uid, fid}] = true
		d.follows = append(d.follows, []any{uid, fid, stamp(100)})
	}
	return d
}

// loadDiffData inserts d through the proxy at dsn (multi-row INSERTs whose
// rows are all on one shard, computed with the hashing contract) and with
// COPY into the unsharded database flat.
func loadDiffData(t *testing.T, ctx context.Context, dsn string, topo *topology.Topology, flat *pgx.Conn, d diffData) {
	t.Helper()
	tables := []struct {
		name string
		cols []string
		rows [][]any
	}{
		{"users", []string{"id", "name", "email", "country", "created_at"}, d.users},
		{"posts", []string{"user_id", "id", "body", "likes", "created_at"}, d.posts},
		{"follows", []string{"user_id", "followee_id", "created_at"}, d.follows},
	}
	for _, tb := range tables {
		if _, err := flat.CopyFrom(ctx, pgx.Identifier{tb.name}, tb.cols, pgx.CopyFromRows(tb.rows)); err != nil {
			t.Fatalf("copy %s into the unsharded database: %v", tb.name, err)
		}
	}
	if _, err := flat.CopyFrom(ctx, pgx.Identifier{"countries"}, []string{"code", "name"}, pgx.CopyFromRows(d.countries)); err != nil {
		t.Fatal(err)
	}

	conn := dial(t, dsn, pgx.QueryExecModeExec, nil)
	// Reference table: one statement, written to every shard.
	var sql strings.Builder
	var args []any
	sql.WriteString("INSERT INTO countries (code, name) VALUES ")
	for i, r := range d.countries {
		if i > 0 {
			sql.WriteString(", ")
		}
		fmt.Fprintf(&sql, "($%d, $%d)", 2*i+1, 2*i+2)
		args = append(args, r...)
	}
	if _, err := conn.Exec(ctx, sql.String(), args...); err != nil {
		t.Fatalf("insert countries through shardgate: %v", err)
	}

	for _, tb := range tables {
		byShard := make([][][]any, len(topo.Shards))
		for _, r := range tb.rows {
			at, err := topo.Place(topology.KeyBigint, fmt.Sprint(r[0]))
			if err != nil {
				t.Fatal(err)
			}
			s := at.Shard
			byShard[s] = append(byShard[s], r)
		}
		for _, rows := range byShard {
			for batch := range slices.Chunk(rows, 250) {
				sql.Reset()
				args = args[:0]
				fmt.Fprintf(&sql, "INSERT INTO %s (%s) VALUES ", tb.name, strings.Join(tb.cols, ", "))
				for i, r := range batch {
					if i > 0 {
						sql.WriteString(", ")
					}
					sql.WriteString("(")
					for j := range r {
						if j > 0 {
							sql.WriteString(", ")
						}
						fmt.Fprintf(&sql, "$%d", len(args)+j+1)
					}
					sql.WriteString(")")
					args = append(args, r...)
				}
				if _, err := conn.Exec(ctx, sql.String(), args...); err != nil {
					t.Fatalf("insert %d %s rows through shardgate: %v", len(batch), tb.name, err)
				}
			}
		}
	}
	// Both sides hold the same rows.
	for _, tb := range []string{"users", "posts", "follows", "countries"} {
		q := "SELECT count(*) FROM " + tb
		var n, m int64
		if err := flat.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, q).Scan(&m); err != nil {
			t.Fatalf("%s through shardgate: %v", q, err)
		}
		if n != m {
			t.Fatalf("%s: %d unsharded, %d through shardgate", tb, n, m)
		}
	}
}

// diffRows runs q and returns its columns' names and type OIDs, and its
// rows with every value as fmt.Sprint prints it (numeric and friends
// compare by their text).
func diffRows(ctx context.Context, conn *pgx.Conn, q string) (string, [][]string, error) {
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return "", nil, err
	}
	defer rows.Close()
	var cols []string
	for _, f := range rows.FieldDescriptions() {
		cols = append(cols, fmt.Sprintf("%s:%d", f.Name, f.DataTypeOID))
	}
	out := [][]string{}
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			return "", nil, err
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			if v == nil {
				row[i] = "<NULL>"
			} else {
				row[i] = fmt.Sprint(v)
			}
		}
		out = append(out, row)
	}
	return strings.Join(cols, " "), out, rows.Err()
}

func sortRows(rows [][]string) {
	slices.SortFunc(rows, func(a, b []string) int {
		return slices.Compare(a, b)
	})
}

// describeDiff names the row counts and the first rows that differ.
func describeDiff(got, want [][]string) string {
	i := 0
	for i < len(got) && i < len(want) && slices.Equal(got[i], want[i]) {
		i++
	}
	at := func(rows [][]string) string {
		if i >= len(rows) {
			return "(none)"
		}
		return fmt.Sprintf("%q", rows[i:min(i+3, len(rows))])
	}
	return fmt.Sprintf("got %d rows, want %d; first difference at row %d:\n got %s\nwant %s",
		len(got), len(want), i, at(got), at(want))
}
