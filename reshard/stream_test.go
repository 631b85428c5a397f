package reshard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/topology"
)

// The streams read shard 1 and apply to shard 2, for the keys of 80-.
func streamServers() (src, dst string) {
	return cluster.Shards[1].Primary.DSN(cluster.Database), cluster.Shards[2].Primary.DSN(cluster.Database)
}

var streamRange = topology.KeyRange{Start: 0x8000000000000000, EndMax: true}

func inStreamRange(t testing.TB, key int64) bool {
	t.Helper()
	id, err := topology.KeyspaceID(topology.KeyBigint, strconv.FormatInt(key, 10))
	if err != nil {
		t.Fatal(err)
	}
	return streamRange.Contains(id)
}

// newStream creates tables (ddl runs on both servers), the publication
// and the slot of a stream named name, and removes them after the test.
func newStream(t testing.TB, name string, ddl []string, drop []string, tables map[string]topology.TableConfig, reference []string) *Stream {
	t.Helper()
	src, dst := streamServers()
	exec(t, src, ddl...)
	exec(t, dst, ddl...)
	s := &Stream{Slot: name, Publication: name, SourceDSN: src, TargetDSN: dst, Tables: tables, Range: streamRange, Reference: reference}
	published := append(slices.Sorted(maps.Keys(tables)), reference...)
	for _, d := range drop { // tables a test keeps out of the stream are published too, to show they are ignored
		if !slices.Contains(published, d) && !strings.HasSuffix(d, "_log") {
			published = append(published, d)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Cleanup(func() {
		dropSlot(t, src, name)
		exec(t, src, "DROP PUBLICATION IF EXISTS "+name)
		for _, d := range drop {
			exec(t, src, "DROP TABLE IF EXISTS "+d)
			exec(t, dst, "DROP TABLE IF EXISTS "+d)
		}
		exec(t, dst, "DELETE FROM shardgate_reshard.applied WHERE slot = '"+name+"'")
	})
	if err := EnsurePublication(ctx, src, name, published); err != nil {
		t.Fatal(err)
	}
	if err := EnsurePublication(ctx, src, name, published); err != nil { // again: idempotent
		t.Fatal(err)
	}
	first, err := EnsureSlot(ctx, src, name)
	if err != nil {
		t.Fatal(err)
	}
	again, err := EnsureSlot(ctx, src, name)
	if err != nil || again != first || first == 0 {
		t.Fatalf("EnsureSlot twice: %s then %s, %v", first, again, err)
	}
	return s
}

// dropSlot drops slot, waiting for the walsender of a finished Run to let go.
func dropSlot(t testing.TB, dsn, slot string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", slot)
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("drop slot %s: %v", slot, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func walPosition(t testing.TB, dsn string) pglogrepl.LSN {
	t.Helper()
	var s string
	query(t, dsn, "SELECT pg_current_wal_lsn()::text", &s)
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

func query(t testing.TB, dsn, sql string, dest ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, sql).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// catchUp runs s until the source's current position and returns the
// last progress it reported and the largest lag of any report.
func catchUp(t testing.TB, s *Stream) (last, peak Progress) {
	t.Helper()
	until := walPosition(t, s.SourceDSN)
	s.OnProgress = func(p Progress) {
		last = p
		peak.LagBytes, peak.Lag = max(peak.LagBytes, p.LagBytes), max(peak.Lag, p.Lag)
	}
	defer func() { s.OnProgress = nil }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Run(ctx, until); err != nil {
		t.Fatalf("run until %s: %v", until, err)
	}
	applied, err := Applied(ctx, s.TargetDSN, s.Slot)
	if err != nil || applied < until {
		t.Fatalf("applied position %s after running until %s (%v)", applied, until, err)
	}
	return last, peak
}

// rowsOf returns the rows of a query's first column (key) and row text.
func rowsOf(t testing.TB, dsn, sql string) map[int64]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, _ := conn.Query(ctx, sql)
	out := map[int64]string{}
	for rows.Next() {
		var (
			k int64
			v string
		)
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		if _, dup := out[k]; dup {
			t.Fatalf("%s: key %d twice", sql, k)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

// wantRange checks the target holds exactly the source's rows whose
// shard key is in the range; sql selects (key, row text) from both, and
// shardKey returns a row's shard key from its key.
func wantRange(t testing.TB, s *Stream, sql string, shardKey func(int64) int64) map[int64]string {
	t.Helper()
	want := rowsOf(t, s.SourceDSN, sql)
	maps.DeleteFunc(want, func(k int64, _ string) bool { return !inStreamRange(t, shardKey(k)) })
	got := rowsOf(t, s.TargetDSN, sql)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("key %d: target has %.80q, source %.80q", k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("key %d: target has %.80q, which is not a source row in the range", k, v)
		}
	}
	return want
}

func itself(k int64) int64 { return k }

// moves classifies keys moved by old -> old+delta.
func moves(t testing.TB, keys []int64, delta int64) (kinds map[string]int) {
	kinds = map[string]int{}
	for _, k := range keys {
		kinds[fmt.Sprintf("%v->%v", inStreamRange(t, k), inStreamRange(t, k+delta))]++
	}
	return kinds
}

func TestStreamAppliesTheRangeOfShardedTables(t *testing.T) {
	s := newStream(t, "st_sharded",
		[]string{"CREATE TABLE st_rows (k bigint, id int, v text, PRIMARY KEY (k, id))", "CREATE TABLE st_other (id bigint PRIMARY KEY)"},
		[]string{"st_rows", "st_other"},
		map[string]topology.TableConfig{"st_rows": {ShardKey: "k"}}, nil)
	src := s.SourceDSN
	exec(t, src,
		"INSERT INTO st_rows SELECT k, 4, 'bulk' FROM generate_series(1, 9000) k", // one transaction, in chunks
		"INSERT INTO st_rows SELECT k, 1, 'a' || k FROM generate_series(1, 300) k",
		"INSERT INTO st_rows SELECT k, 2, NULL FROM generate_series(1, 50) k",
		"INSERT INTO st_other SELECT generate_series(1, 100)",
		"UPDATE st_rows SET v = 'b' || k WHERE k % 3 = 0",
		"DELETE FROM st_rows WHERE k % 5 = 0",
		"BEGIN", "UPDATE st_rows SET v = 'c' WHERE k % 7 = 0", "DELETE FROM st_rows WHERE k % 11 = 0", "COMMIT",
	)
	last, peak := catchUp(t, s)
	if want := wantRange(t, s, "SELECT k * 10 + id, st_rows::text FROM st_rows", func(k int64) int64 { return k / 10 }); len(want) < 3000 || len(want) > 6500 {
		t.Fatalf("%d of the rows are in the range: the test needs both kinds", len(want))
	}
	if last.Changes < 4500 || last.Txns != 6 || last.LagBytes > 1<<20 {
		t.Errorf("progress after catching up: %+v", last)
	}
	if peak.LagBytes == 0 || peak.Lag == 0 {
		t.Errorf("largest lag while catching up: %d bytes, %s; want the backlog seen", peak.LagBytes, peak.Lag)
	}
	if n := len(rowsOf(t, s.TargetDSN, "SELECT id, ''::text FROM st_other")); n != 0 {
		t.Errorf("target has %d rows of st_other, a table the stream does not take", n)
	}

	// Keys 201..260 move to 1201..1260: into, out of, within and outside the range.
	var keys []int64
	for k := int64(201); k <= 260; k++ {
		if k%5 != 0 && k%11 != 0 {
			keys = append(keys, k)
		}
	}
	kinds := moves(t, keys, 1000)
	for _, kind := range []string{"true->true", "true->false", "false->true", "false->false"} {
		if kinds[kind] == 0 {
			t.Fatalf("no key moves %s: %v", kind, kinds)
		}
	}
	exec(t, src, "DELETE FROM st_rows WHERE id = 4 AND k > 300",
		"UPDATE st_rows SET k = k + 1000, v = 'moved' WHERE k BETWEEN 201 AND 260",
		"UPDATE st_rows SET id = 3 WHERE k BETWEEN 100 AND 120 AND id = 1") // the key stays, the primary key changes
	catchUp(t, s)
	wantRange(t, s, "SELECT k * 10 + id, st_rows::text FROM st_rows", func(k int64) int64 { return k / 10 })
}

// TestStreamKeepsUnchangedToastColumns: an update that leaves a TOASTed
// column alone does not send it; the target keeps its value, and a row
// whose key moves into the range gets it from the source.
func TestStreamKeepsUnchangedToastColumns(t *testing.T) {
	s := newStream(t, "st_toast",
		[]string{"CREATE TABLE st_toast (id bigint PRIMARY KEY, big text, n int)", "ALTER TABLE st_toast ALTER big SET STORAGE EXTERNAL"},
		[]string{"st_toast"},
		map[string]topology.TableConfig{"st_toast": {ShardKey: "id", KeyType: topology.KeyBigint}}, nil)
	src := s.SourceDSN
	exec(t, src, "INSERT INTO st_toast SELECT i, (SELECT string_agg(md5(random()::text || i || j), '') FROM generate_series(1, 100) j), 0 FROM generate_series(1, 60) i")
	catchUp(t, s)
	const rows = "SELECT id, id || ' ' || n || ' ' || md5(big) || ' ' || length(big) FROM st_toast"
	if want := wantRange(t, s, rows, itself); len(want) == 0 {
		t.Fatal("no row in the range")
	}

	var keys []int64
	for k := int64(1); k <= 30; k++ {
		keys = append(keys, k)
	}
	kinds := moves(t, keys, 100)
	if kinds["false->true"] == 0 || kinds["true->false"] == 0 || kinds["true->true"] == 0 {
		t.Fatalf("moves %v: the test needs keys entering, leaving and staying in the range", kinds)
	}
	exec(t, src,
		"UPDATE st_toast SET n = n + 1",
		"UPDATE st_toast SET id = id + 100, n = n + 1 WHERE id <= 30",
		"UPDATE st_toast SET n = n + 1 WHERE id > 100",
	)
	catchUp(t, s)
	got := wantRange(t, s, rows, itself)
	for k, v := range got {
		if !strings.HasSuffix(v, " 3200") {
			t.Errorf("row %d: %s, want a 3200-byte big", k, v)
		}
	}
}

func TestStreamAppliesReferenceTablesInFull(t *testing.T) {
	s := newStream(t, "st_ref",
		[]string{"CREATE TABLE st_ref (code bigint PRIMARY KEY, name text)", "CREATE TABLE st_refsharded (id bigint PRIMARY KEY)",
			"CREATE TABLE st_refnokey (code bigint, name text)", "ALTER TABLE st_refnokey REPLICA IDENTITY FULL"},
		[]string{"st_ref", "st_refsharded", "st_refnokey"},
		map[string]topology.TableConfig{"st_refsharded": {ShardKey: "id"}}, []string{"st_ref", "st_refnokey"})
	src := s.SourceDSN
	exec(t, src,
		"INSERT INTO st_ref SELECT i, 'name ' || i FROM generate_series(1, 100) i",
		"UPDATE st_ref SET name = 'renamed' WHERE code % 4 = 0",
		"UPDATE st_ref SET code = code + 1000 WHERE code % 10 = 1",
		"DELETE FROM st_ref WHERE code % 9 = 0",
		// Without a key, rows are found by all their columns, and one of
		// two equal rows is deleted or updated as on the source.
		"INSERT INTO st_refnokey VALUES (1, 'twin'), (1, 'twin'), (2, NULL), (3, 'x'), (3, 'x')",
		"DELETE FROM st_refnokey WHERE ctid = (SELECT min(ctid) FROM st_refnokey WHERE code = 1)",
		"UPDATE st_refnokey SET name = 'named' WHERE code = 2",
		"UPDATE st_refnokey SET name = 'y' WHERE ctid = (SELECT min(ctid) FROM st_refnokey WHERE code = 3)",
	)
	catchUp(t, s)
	const rows = "SELECT code, st_ref::text FROM st_ref"
	want, got := rowsOf(t, src, rows), rowsOf(t, s.TargetDSN, rows)
	if !maps.Equal(want, got) || len(want) < 80 {
		t.Fatalf("target has %d rows of st_ref, source %d, or they differ", len(got), len(want))
	}
	const nokey = "SELECT 0, string_agg(st_refnokey::text, ' ' ORDER BY st_refnokey::text) FROM st_refnokey"
	if got := rowsOf(t, s.TargetDSN, nokey)[0]; got != "(1,twin) (2,named) (3,x) (3,y)" {
		t.Errorf("target st_refnokey: %s", got)
	}

	exec(t, src, "TRUNCATE st_ref", "INSERT INTO st_ref VALUES (7, 'after the truncate')")
	catchUp(t, s)
	if got := rowsOf(t, s.TargetDSN, rows); len(got) != 1 || got[7] != "(7,\"after the truncate\")" {
		t.Fatalf("after TRUNCATE the target has %v", got)
	}

	exec(t, src, "TRUNCATE st_refsharded")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.Run(ctx, walPosition(t, src))
	if err == nil || !strings.Contains(err.Error(), "TRUNCATE") || !strings.Contains(err.Error(), "st_refsharded") {
		t.Fatalf("TRUNCATE of a sharded table: %v, want an error naming it", err)
	}
}

// logTrigger makes the target record every row version applied to table
// (id, n), whatever session_replication_role the stream runs with.
func logTrigger(table string) []string {
	return []string{
		"CREATE TABLE " + table + "_log (id bigint, n int)",
		"CREATE FUNCTION " + table + "_log() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO " + table + "_log VALUES (NEW.id, NEW.n); RETURN NULL; END $$",
		"CREATE TRIGGER log AFTER INSERT OR UPDATE ON " + table + " FOR EACH ROW EXECUTE FUNCTION " + table + "_log()",
		"ALTER TABLE " + table + " ENABLE ALWAYS TRIGGER log",
	}
}

func logCount(t testing.TB, dsn, table string) int {
	var n int
	query(t, dsn, "SELECT count(*) FROM "+table+"_log", &n)
	return n
}

// TestStreamStopsExactlyAtUntil: Run(until) applies the transactions that
// commit before until and none after, returns even when nothing commits
// after until, and a second Run applies nothing twice.
func TestStreamStopsExactlyAtUntil(t *testing.T) {
	s := newStream(t, "st_until", []string{"CREATE TABLE st_until (id bigint PRIMARY KEY, n int)"},
		[]string{"st_until", "st_until_log"}, map[string]topology.TableConfig{"st_until": {ShardKey: "id"}}, nil)
	src, dst := s.SourceDSN, s.TargetDSN
	exec(t, dst, logTrigger("st_until")...)
	t.Cleanup(func() { exec(t, dst, "DROP FUNCTION IF EXISTS st_until_log() CASCADE") })
	var in []int64
	for k := int64(1); len(in) < 3; k++ {
		if inStreamRange(t, k) {
			in = append(in, k)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	exec(t, src, fmt.Sprintf("INSERT INTO st_until VALUES (%d, 1)", in[0]))
	until := walPosition(t, src)
	exec(t, src, fmt.Sprintf("INSERT INTO st_until VALUES (%d, 1)", in[1]))
	if err := s.Run(ctx, until); err != nil {
		t.Fatal(err)
	}
	if got := rowsOf(t, dst, "SELECT id, n::text FROM st_until"); len(got) != 1 || got[in[0]] != "1" {
		t.Fatalf("after Run(until) the target has %v, want only the row committed before until", got)
	}
	applied, err := Applied(ctx, dst, s.Slot)
	if err != nil || applied < until {
		t.Fatalf("applied %s, until %s: %v", applied, until, err)
	}

	// Nothing commits after until: the keepalives tell Run it is there.
	until = walPosition(t, src)
	began := time.Now()
	if err := s.Run(ctx, until); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("Run to a position no transaction follows took %s", took)
	}
	if got := rowsOf(t, dst, "SELECT id, n::text FROM st_until"); len(got) != 2 {
		t.Fatalf("target has %v, want both rows", got)
	}

	logged := logCount(t, dst, "st_until")
	if err := s.Run(ctx, until); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	began = time.Now()
	if err := s.Run(short, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run until ctx ends: %v", err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("Run took %s to end after its 300 ms context", took)
	}
	if n := logCount(t, dst, "st_until"); n != logged || n != 2 {
		t.Fatalf("target applied %d row versions, then %d after running again; want 2", logged, n)
	}
}

// TestStreamAppliesEachTransactionOnceAcrossKills: Runs cut off at random
// moments while a writer commits 500 increments leave the target with
// every increment of the range applied exactly once.
func TestStreamAppliesEachTransactionOnceAcrossKills(t *testing.T) {
	const rows, txns = 40, 500
	s := newStream(t, "st_once", []string{"CREATE TABLE st_once (id bigint PRIMARY KEY, n int)"},
		[]string{"st_once", "st_once_log"}, map[string]topology.TableConfig{"st_once": {ShardKey: "id"}}, nil)
	src, dst := s.SourceDSN, s.TargetDSN
	exec(t, dst, logTrigger("st_once")...)
	t.Cleanup(func() { exec(t, dst, "DROP FUNCTION IF EXISTS st_once_log() CASCADE") })
	exec(t, src, fmt.Sprintf("INSERT INTO st_once SELECT i, 0 FROM generate_series(1, %d) i", rows))

	var wg sync.WaitGroup
	wg.Add(1)
	writerErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		writerErr <- increments(src, rows, txns)
	}()
	runs, rng := 0, rand.New(rand.NewPCG(1, 2))
	for done := false; !done; runs++ {
		select {
		case err := <-writerErr:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(20+rng.IntN(130))*time.Millisecond)
		s.OnProgress = nil
		if runs%2 == 1 { // die right after a batch commits on the target, too
			s.OnProgress = func(p Progress) {
				if p.Changes > 0 {
					cancel()
				}
			}
		}
		began := time.Now()
		err := s.Run(ctx, 0)
		ended := time.Since(began)
		cancel()
		if errors.Is(err, context.Canceled) {
			err = context.DeadlineExceeded
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("run %d: %v, want the deadline", runs, err)
		}
		if ended > 1200*time.Millisecond {
			t.Errorf("run %d ended %s after it began, its context lasted at most 200 ms", runs, ended)
		}
	}
	wg.Wait()
	catchUp(t, s)

	want := wantRange(t, s, "SELECT id, n::text FROM st_once", itself)
	if len(want) == 0 || len(want) == rows {
		t.Fatalf("%d of %d rows in the range: the test needs both kinds", len(want), rows)
	}
	// Each applied row version is logged once: 0, 1, ..., n for every row.
	log := rowsOf(t, dst, "SELECT id, string_agg(n::text, ',' ORDER BY n) FROM st_once_log GROUP BY id")
	total := 0
	for id, v := range want {
		n, _ := strconv.Atoi(v)
		var seq []string
		for i := 0; i <= n; i++ {
			seq = append(seq, strconv.Itoa(i))
		}
		if log[id] != strings.Join(seq, ",") {
			t.Errorf("row %d: target applied versions %s, want 0..%d once each", id, log[id], n)
		}
		total += n
	}
	if len(log) != len(want) || total < txns/4 {
		t.Errorf("log covers %d rows, %d increments in the range", len(log), total)
	}
	if runs < 10 {
		t.Errorf("only %d runs were cut off", runs)
	}
	t.Logf("%d runs cut off by their deadline; %d increments in the range", runs, total)
}

// TestStreamWaitsForAKilledRunsBatch: a Run killed while its batch is on
// its way to the target returns before the target commits the batch; the
// next Run must not read the applied position until then, or it applies
// the batch's transactions again (and the late commit moves the position
// back).
func TestStreamWaitsForAKilledRunsBatch(t *testing.T) {
	s := newStream(t, "st_inflight", []string{"CREATE TABLE st_inflight (id bigint PRIMARY KEY, n int)"},
		[]string{"st_inflight", "st_inflight_log"}, map[string]topology.TableConfig{"st_inflight": {ShardKey: "id"}}, nil)
	src, dst := s.SourceDSN, s.TargetDSN
	exec(t, dst, logTrigger("st_inflight")...)
	t.Cleanup(func() { exec(t, dst, "DROP FUNCTION IF EXISTS st_inflight_log() CASCADE") })
	exec(t, src, "INSERT INTO st_inflight SELECT i, 0 FROM generate_series(1, 40) i", "UPDATE st_inflight SET n = 1")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := pgconn.ParseConfig(dst)
	if err != nil {
		t.Fatal(err)
	}
	const hold = 2 * time.Second
	killCtx, kill := context.WithCancel(ctx)
	defer kill()
	heldAt := make(chan time.Time, 1)
	// The batch's last statements store the position and commit.
	addr, delivered := holdingProxy(t, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), "INSERT INTO shardgate_reshard.applied", hold, func() {
		heldAt <- time.Now()
		kill()
	})
	killed := *s
	killed.TargetDSN = strings.Replace(dst, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), addr, 1)
	if killed.TargetDSN == dst {
		t.Fatalf("target DSN %s does not name %s:%d", dst, cfg.Host, cfg.Port)
	}
	if err := killed.Run(killCtx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run killed while its batch is held: %v", err)
	}
	if took := time.Since(<-heldAt); took >= hold {
		t.Fatalf("killed Run returned %s after its batch was held for %s: the batch was not in flight when it returned", took, hold)
	}

	catchUp(t, s)
	caught := appliedPosition(t, s)
	select {
	case <-delivered:
	case <-ctx.Done():
		t.Fatal("the held batch never reached the target")
	}
	wantRange(t, s, "SELECT id, n::text FROM st_inflight", itself)
	log := rowsOf(t, dst, "SELECT id, string_agg(n::text, ',' ORDER BY n) FROM st_inflight_log GROUP BY id")
	in := 0
	for id := int64(1); id <= 40; id++ {
		if !inStreamRange(t, id) {
			continue
		}
		in++
		if log[id] != "0,1" {
			t.Errorf("row %d: target applied versions %q, want 0,1 once each", id, log[id])
		}
	}
	if in == 0 || len(log) != in {
		t.Errorf("log covers %d rows, %d of 40 are in the range", len(log), in)
	}
	if applied := appliedPosition(t, s); applied != caught {
		t.Errorf("applied position %s after the held batch landed, %s before", applied, caught)
	}
}

func appliedPosition(t testing.TB, s *Stream) pglogrepl.LSN {
	t.Helper()
	lsn, err := Applied(t.Context(), s.TargetDSN, s.Slot)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// holdingProxy forwards the first connection to it to target. When the
// client sends bytes containing marker, it calls onHold and passes those
// bytes and all later ones on only after hold: a batch still on its way
// when the client gives up on it, as on a slow network or a loaded server.
// It refuses later connections, so the client's cancel request cannot
// overtake the batch. delivered is closed when both sides have closed.
func holdingProxy(t testing.TB, target, marker string, hold time.Duration, onHold func()) (addr string, delivered <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	done := make(chan struct{})
	go func() {
		defer close(done)
		client, err := ln.Accept()
		if err != nil {
			return
		}
		defer client.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		server, err := net.Dial("tcp", target)
		if err != nil { // the client's connect fails, and the test with it
			return
		}
		defer server.Close()
		back := make(chan struct{})
		go func() {
			defer close(back)
			_, _ = io.Copy(client, server)
			client.Close()
		}()
		var seen []byte // the tail of what came before, for a marker split across reads
		held := false
		buf := make([]byte, 64<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 && !held {
				seen = append(seen, buf[:n]...)
				if held = bytes.Contains(seen, []byte(marker)); held {
					onHold()
					time.Sleep(hold)
				}
				seen = seen[max(0, len(seen)-len(marker)):]
			}
			if n > 0 {
				if _, err := server.Write(buf[:n]); err != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		_ = server.(*net.TCPConn).CloseWrite()
		<-back
	}()
	return ln.Addr().String(), done
}

// increments commits txns transactions on the source: most add one to a
// row, every tenth to every row.
func increments(dsn string, rows, txns int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for i := range txns {
		sql := fmt.Sprintf("UPDATE st_once SET n = n + 1 WHERE id = %d", i%rows+1)
		if i%10 == 9 {
			sql = "UPDATE st_once SET n = n + 1"
		}
		if _, err := conn.Exec(ctx, sql); err != nil {
			return err
		}
		time.Sleep(4 * time.Millisecond) // a pace that many Runs see part of

	}
	return nil
}

// TestStreamErrorNamesTableAndTransaction: a change the target refuses
// stops the stream with the table and the source transaction, and the
// target keeps none of that transaction.
func TestStreamErrorNamesTableAndTransaction(t *testing.T) {
	s := newStream(t, "st_refused", []string{"CREATE TABLE st_refused (id bigint PRIMARY KEY, n int)"},
		[]string{"st_refused"}, map[string]topology.TableConfig{"st_refused": {ShardKey: "id"}}, nil)
	exec(t, s.TargetDSN, "ALTER TABLE st_refused ADD CHECK (n < 100)")
	exec(t, s.SourceDSN, "INSERT INTO st_refused SELECT i, i FROM generate_series(1, 200) i")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := s.Run(ctx, walPosition(t, s.SourceDSN))
	if err == nil || !strings.Contains(err.Error(), "table st_refused") || !strings.Contains(err.Error(), "source transaction committed at ") ||
		!strings.Contains(err.Error(), "23514") {
		t.Fatalf("Run: %v, want the check violation with its table and transaction", err)
	}
	if got := rowsOf(t, s.TargetDSN, "SELECT id, n::text FROM st_refused"); len(got) != 0 {
		t.Fatalf("target kept %d rows of a transaction it refused", len(got))
	}
	if applied, err := Applied(ctx, s.TargetDSN, s.Slot); err != nil || applied != 0 {
		t.Fatalf("applied position %s (%v), want none", applied, err)
	}
}

func TestStreamRefusesBadNames(t *testing.T) {
	s := &Stream{Slot: "Bad Name", Publication: "ok", SourceDSN: "postgres://x@127.0.0.1:1/app", TargetDSN: "postgres://x@127.0.0.1:1/app"}
	if err := s.Run(t.Context(), 0); err == nil || !strings.Contains(err.Error(), "Bad Name") {
		t.Errorf("Run with slot %q: %v", s.Slot, err)
	}
	if err := EnsurePublication(t.Context(), s.SourceDSN, "x'y", nil); err == nil || !strings.Contains(err.Error(), "publication name") {
		t.Errorf("EnsurePublication with a quote: %v", err)
	}
}

// BenchmarkStreamInserts measures applied changes per second for 10,000
// rows inserted in transactions of 1, 10 or 1,000 rows, all in the range:
// the time of a Run that catches up with them, from its start.
func BenchmarkStreamInserts(b *testing.B) {
	for _, perTxn := range []int{1, 10, 1000} {
		b.Run(fmt.Sprintf("rows=%d", perTxn), func(b *testing.B) { benchmarkInserts(b, perTxn) })
	}
}

func benchmarkInserts(b *testing.B, perTxn int) {
	name := fmt.Sprintf("st_bench%d", perTxn)
	s := newStream(b, name, []string{"CREATE TABLE " + name + " (id bigint PRIMARY KEY, v text, n int)"},
		[]string{name}, map[string]topology.TableConfig{name: {ShardKey: "id"}}, nil)
	s.Range = topology.KeyRange{EndMax: true}
	rows := 0
	var took time.Duration
	var changes int64
	for range b.N {
		b.StopTimer()
		conn, err := pgconn.Connect(context.Background(), s.SourceDSN)
		if err != nil {
			b.Fatal(err)
		}
		var sb strings.Builder
		for range 10000 / perTxn {
			fmt.Fprintf(&sb, "BEGIN; INSERT INTO %s SELECT g, 'value ' || g, 0 FROM generate_series(%d, %d) g; COMMIT;", name, rows+1, rows+perTxn)
			rows += perTxn
		}
		if _, err := conn.Exec(context.Background(), sb.String()).ReadAll(); err != nil {
			b.Fatal(err)
		}
		conn.Close(context.Background())
		b.StartTimer()
		began := time.Now()
		p, _ := catchUp(b, s)
		took += time.Since(began)
		changes += p.Changes
	}
	b.ReportMetric(float64(changes)/took.Seconds(), "changes/s")
}
