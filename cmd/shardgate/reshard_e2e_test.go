package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/reshard"
	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

// End-to-end reshards: a 2-shard sandbox with replicas behind a proxy, two
// empty shards added for the split, 8 writers through the proxy keeping a
// ledger of every acknowledged write, and the reshard driven through the
// CLI as a DBA would.

type reshardEnv struct {
	cluster *sandbox.Cluster
	config  string
	app     string // DSN of the proxy
	admin   string // DSN of its admin console
}

func newReshardEnv(t *testing.T) *reshardEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, remove, err := sandbox.StartTemp(ctx, "shardgate-reshard-e2e-", sandbox.Options{Shards: 2, Schema: sandbox.Schema, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remove() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &reshardEnv{
		cluster: c,
		config:  filepath.Join(c.Dir, "shardgate.yaml"),
		app:     "postgres://postgres@" + ln.Addr().String() + "/app?sslmode=disable",
		admin:   "postgres://postgres@" + ln.Addr().String() + "/shardgate?sslmode=disable",
	}
	// The layout is the two shards; those added next are the split's targets.
	yaml := append(c.ConfigYAML(ln.Addr().String()), "admin_users: [postgres]\n"...)
	if err := os.WriteFile(e.config, yaml, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"s2", "s3"} {
		if _, err := c.AddShard(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := topology.LoadConfig(e.config)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { srv.Serve(sctx, ln); close(served) }()
	t.Cleanup(func() { stop(); <-served })
	return e
}

// reshard runs one `shardgate reshard` command in this process.
func (e *reshardEnv) reshard(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runCLI(t, context.Background(), append([]string{"reshard", "-c", e.config, "--proxy", e.admin, "--log-level", "warn"}, args...)...)
	if err != nil {
		t.Fatalf("reshard %v: %v\n%s", args, err, out)
	}
	return out
}

// rowKey is a row of posts; ledger ids start at ledgerBase so they never
// meet other rows.
type rowKey struct{ user, id int64 }

const ledgerBase = 1_000_000_000

// ledger is every write the writers had acknowledged: a row's likes, or
// deleted (-1).
type ledger struct {
	mu    sync.Mutex
	rows  map[rowKey]int
	errs  []error
	lat   []timedOp
	stop  chan struct{}
	wg    sync.WaitGroup
	began time.Time
}

type timedOp struct {
	at     time.Duration // since the writers began
	dur    time.Duration
	moving bool // on a key of the source shard (80-)
	read   bool // the read of an insert, on the same connection
}

// startWriters runs n writers through the proxy: inserts on keys across
// the whole keyspace, updates and deletes of their own rows, and a read
// of each insert on the same connection (read-your-writes).
func startWriters(t *testing.T, dsn string, n int) *ledger {
	l := &ledger{rows: map[rowKey]int{}, stop: make(chan struct{}), began: time.Now()}
	for w := range n {
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer conn.Close(context.Background())
			l.write(conn, int64(w))
		}()
	}
	return l
}

func (l *ledger) write(conn *pgx.Conn, w int64) {
	rng := rand.New(rand.NewPCG(uint64(w), 42))
	var live []rowKey
	likes := map[rowKey]int{}
	for seq := int64(0); ; seq++ {
		select {
		case <-l.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		began := time.Now()
		var (
			k        rowKey
			val      int
			err      error
			readTook time.Duration
		)
		switch op := rng.IntN(100); {
		case op < 60 || len(live) == 0:
			k = rowKey{rng.Int64N(1<<40) + 1, ledgerBase + w*100_000_000 + seq}
			_, err = conn.Exec(ctx, "INSERT INTO posts (user_id, id, body, likes) VALUES ($1, $2, 'ledger', 0)", k.user, k.id)
			if err == nil {
				var got int
				readBegan := time.Now()
				err = conn.QueryRow(ctx, "SELECT likes FROM posts WHERE user_id = $1 AND id = $2", k.user, k.id).Scan(&got)
				readTook = time.Since(readBegan)
				if err != nil {
					err = fmt.Errorf("read back own insert %v: %w", k, err)
				}
				live = append(live, k)
			}
		case op < 85:
			k = live[rng.IntN(len(live))]
			val = likes[k] + 1
			var tag int64
			ct, e := conn.Exec(ctx, "UPDATE posts SET likes = $3 WHERE user_id = $1 AND id = $2", k.user, k.id, val)
			err, tag = e, ct.RowsAffected()
			if err == nil && tag != 1 {
				err = fmt.Errorf("update %v touched %d rows", k, tag)
			}
		default:
			i := rng.IntN(len(live))
			k, val = live[i], -1
			live = slices.Delete(live, i, i+1)
			ct, e := conn.Exec(ctx, "DELETE FROM posts WHERE user_id = $1 AND id = $2", k.user, k.id)
			err = e
			if err == nil && ct.RowsAffected() != 1 {
				err = fmt.Errorf("delete %v touched %d rows", k, ct.RowsAffected())
			}
		}
		cancel()
		l.mu.Lock()
		if err != nil {
			l.errs = append(l.errs, err)
		} else {
			l.rows[k] = val
			likes[k] = val
			moving := onSource(k.user)
			l.lat = append(l.lat, timedOp{at: began.Sub(l.began), dur: time.Since(began) - readTook, moving: moving})
			if readTook > 0 {
				l.lat = append(l.lat, timedOp{at: began.Sub(l.began), dur: readTook, moving: moving, read: true})
			}
		}
		l.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// finish stops the writers and fails the test on any error they saw.
func (l *ledger) finish(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	for _, err := range l.errs {
		t.Errorf("a writer saw an error: %v", err)
	}
	if len(l.rows) < 100 {
		t.Fatalf("the writers acknowledged only %d writes", len(l.rows))
	}
}

// onSource is whether user's key is in the source shard's range, 80-.
func onSource(user int64) bool {
	id, _ := topology.KeyspaceID(topology.KeyBigint, strconv.FormatInt(user, 10))
	return id >= 1<<63
}

// pauses reports the latencies of the moving keys' writes (or reads) that
// began in [from, to).
func (l *ledger) pauses(from, to time.Time, reads bool) (p50, p99, maxi time.Duration, n int) {
	var d []time.Duration
	for _, op := range l.lat {
		at := l.began.Add(op.at)
		if op.moving && op.read == reads && !at.Before(from) && at.Before(to) {
			d = append(d, op.dur)
		}
	}
	if len(d) == 0 {
		return 0, 0, 0, 0
	}
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*99/100], d[len(d)-1], len(d)
}

// checkPlacement asserts that every acknowledged write is present exactly
// once, on the shard the config now names, and that no shard of that
// layout holds a ledger row it should not.
func (e *reshardEnv) checkPlacement(t *testing.T, l *ledger) {
	t.Helper()
	cfg, err := topology.LoadConfig(e.config)
	if err != nil {
		t.Fatal(err)
	}
	topo, err := topology.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	found := map[rowKey]int{}
	for _, sh := range topo.Shards {
		rows := queryRows(t, sh.Primary, "SELECT user_id, id, likes FROM posts WHERE id >= $1", ledgerBase)
		for _, r := range rows {
			k := rowKey{r[0], r[1]}
			p, err := topo.Place(topology.KeyBigint, strconv.FormatInt(k.user, 10))
			if err != nil {
				t.Fatal(err)
			}
			if p.Shard != sh.Index {
				t.Errorf("row %v is on shard %s; the layout puts it on %s", k, sh.Name, topo.Shards[p.Shard].Name)
			}
			if _, dup := found[k]; dup {
				t.Errorf("row %v is present twice", k)
			}
			found[k] = int(r[2])
		}
	}
	present := 0
	for k, want := range l.rows {
		got, ok := found[k]
		switch {
		case want < 0 && ok:
			t.Errorf("row %v was deleted and is back", k)
		case want >= 0 && !ok:
			t.Errorf("row %v (likes %d) was acknowledged and is lost", k, want)
		case want >= 0 && got != want:
			t.Errorf("row %v has likes %d, the last acknowledged write set %d", k, got, want)
		}
		if want >= 0 {
			present++
		}
	}
	if len(found) != present {
		t.Errorf("the layout holds %d ledger rows, the ledger %d", len(found), present)
	}
	// A scatter count through the proxy sees each row once.
	if got := queryRows(t, e.app, "SELECT count(*) FROM posts WHERE id >= $1", ledgerBase); got[0][0] != int64(present) {
		t.Errorf("count(*) through the proxy: %d, want %d", got[0][0], present)
	}
	t.Logf("%d acknowledged writes, %d rows present, all where the layout puts them", len(l.lat), present)
}

func queryRows(t *testing.T, dsn, sql string, args ...any) [][]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]int64, error) {
		vals := make([]int64, len(r.FieldDescriptions()))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		return vals, r.Scan(ptrs...)
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReshardSplitUnderLoad is the acceptance test: a split with
// --cutover-when-ready while 8 writers run, then complete.
func TestReshardSplitUnderLoad(t *testing.T) {
	e := newReshardEnv(t)
	l := startWriters(t, e.app, 8)
	time.Sleep(time.Second)
	began := time.Now()
	out := e.reshard(t, "split", "--range", "80-", "--at", "c0", "--to", "s2", "--to", "s3", "--cutover-when-ready")
	switched := time.Now()
	time.Sleep(time.Second)
	l.finish(t)
	t.Log(out)
	for _, reads := range []bool{false, true} {
		p50, p99, maxi, n := l.pauses(began, switched, reads)
		t.Logf("moving keys during the reshard, reads %v (%d): p50 %s p99 %s max %s", reads, n, p50, p99, maxi)
		if maxi > 2*time.Second || n == 0 {
			t.Errorf("a pause of %s (reads %v, %d ops)", maxi, reads, n)
		}
	}
	e.checkPlacement(t, l)
	// After cutover, status follows the reverse streams, which the
	// writes on the targets since the switch are waiting in.
	var status reshard.Status
	if err := json.Unmarshal([]byte(e.reshard(t, "status", "--json")), &status); err != nil {
		t.Fatal(err)
	}
	if status.Phase != reshard.PhaseSwitched || !strings.Contains(status.Parts[0].Slot, "_rev_") || status.Parts[0].LagBytes == 0 {
		t.Errorf("status after cutover: %+v", status)
	}

	e.reshard(t, "complete")
	if got := queryRows(t, e.cluster.Shard("s1").Primary.DSN("app"), "SELECT count(*) FROM posts"); got[0][0] != 0 {
		t.Errorf("the retired source still holds %d posts after complete", got[0][0])
	}
	if _, ok, err := reshard.LoadState(e.config); ok || err != nil {
		t.Errorf("the state file outlived complete (%v)", err)
	}
}

// TestReshardAbortAfterCutover: the writes the targets took after cutover
// are back on the source after abort, and the old layout serves.
func TestReshardAbortAfterCutover(t *testing.T) {
	e := newReshardEnv(t)
	l := startWriters(t, e.app, 8)
	time.Sleep(500 * time.Millisecond)
	e.reshard(t, "split", "--range", "80-", "--at", "c0", "--to", "s2", "--to", "s3", "--cutover-when-ready")
	time.Sleep(time.Second) // the targets take writes
	// A cutover cut short while the proxy switched: abort refuses, and
	// cutover again finishes it although the proxy no longer has s1.
	st := e.state(t)
	st.Phase = reshard.PhaseSwitching
	if err := st.Save(); err != nil {
		t.Fatal(err)
	}
	if out, err := runCLI(t, context.Background(), "reshard", "-c", e.config, "--proxy", e.admin, "abort"); err == nil || !strings.Contains(err.Error(), "cutover again") {
		t.Fatalf("abort while switching: %v\n%s", err, out)
	}
	e.reshard(t, "cutover")
	e.reshard(t, "abort")
	time.Sleep(500 * time.Millisecond)
	l.finish(t)
	cfg, err := topology.LoadConfig(e.config)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Shards) != 2 || cfg.Shards[1].Name != "s1" {
		t.Fatalf("after abort the config names shards %v, want s0 and s1", cfg.Shards)
	}
	e.checkPlacement(t, l)
}

// TestMain lets a test run the CLI as a child process (to SIGKILL it).
func TestMain(m *testing.M) {
	if os.Getenv("SHARDGATE_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child starts `shardgate reshard args...` as a process of its own.
func (e *reshardEnv) child(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"reshard", "-c", e.config, "--proxy", e.admin, "--log-level", "warn"}, args...)...)
	cmd.Env = append(os.Environ(), "SHARDGATE_TEST_MAIN=1")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// killWhen SIGKILLs cmd as soon as cond holds; it fails the test if cmd
// ends first, as then nothing was killed mid-step.
func killWhen(t *testing.T, cmd *exec.Cmd, what string, cond func() bool) {
	t.Helper()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for {
		select {
		case err := <-exited:
			t.Fatalf("the reshard command ended (%v) before it could be killed %s", err, what)
		case <-time.After(5 * time.Millisecond):
		}
		if cond() {
			cmd.Process.Kill()
			<-exited
			t.Logf("killed the reshard command %s", what)
			return
		}
	}
}

// preloadFollows puts n rows of keys in 80- straight onto s1, so that the
// copy and the catch-up take long enough to be killed in.
func (e *reshardEnv) preloadFollows(t *testing.T, n int) {
	t.Helper()
	var rows [][]any
	for user := int64(1); len(rows) < n; user++ {
		id, err := topology.KeyspaceID(topology.KeyBigint, strconv.FormatInt(user, 10))
		if err != nil {
			t.Fatal(err)
		}
		if id >= 1<<63 {
			rows = append(rows, []any{user, user * 7})
		}
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.cluster.Shard("s1").Primary.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"follows"}, []string{"user_id", "followee_id"}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
}

func (e *reshardEnv) state(t *testing.T) *reshard.State {
	st, ok, err := reshard.LoadState(e.config)
	if err != nil || !ok {
		return nil
	}
	return st
}

// TestReshardSurvivesSIGKILL kills the command during the copy and during
// the catch-up, runs it again each time, and the ledger still holds.
func TestReshardSurvivesSIGKILL(t *testing.T) {
	e := newReshardEnv(t)
	e.preloadFollows(t, 300_000)
	l := startWriters(t, e.app, 8)
	split := []string{"split", "--range", "80-", "--at", "c0", "--to", "s2", "--to", "s3"}

	killWhen(t, e.child(t, split...), "during the copy", func() bool {
		st := e.state(t)
		if st == nil || st.Phase != reshard.PhaseCopying {
			return false
		}
		for _, p := range st.Parts {
			for _, tc := range p.Tables {
				if tc.Done {
					return true
				}
			}
		}
		return false
	})
	e.reshard(t, split...)
	if out := e.reshard(t, "verify"); !strings.Contains(out, "follows") {
		t.Fatalf("verify printed no table:\n%s", out)
	}
	e.measureLag(t)
	var status reshard.Status
	if err := json.Unmarshal([]byte(e.reshard(t, "status", "--json")), &status); err != nil {
		t.Fatal(err)
	}
	if status.Phase != reshard.PhaseCopied || len(status.Parts) != 2 || status.Parts[1].Tables[0].Table != "follows" || status.Parts[1].Tables[0].Rows == 0 {
		t.Fatalf("status --json: %+v", status)
	}

	// Changes in many transactions, for a catch-up of many batches.
	s1 := e.cluster.Shard("s1").Primary.DSN("app")
	for i := range 100 {
		queryRows(t, s1, "WITH u AS (UPDATE follows SET followee_id = followee_id + 1 WHERE user_id % 100 = $1 RETURNING 1) SELECT count(*) FROM u", i)
	}
	st := e.state(t)
	slot := st.Parts[1].Slot
	start := appliedLSN(t, st.Parts[1].Target.Primary, slot)
	killWhen(t, e.child(t, "cutover"), "during the catch-up", func() bool {
		return appliedLSN(t, st.Parts[1].Target.Primary, slot) != start
	})
	if st := e.state(t); st.Phase != reshard.PhaseCopied {
		t.Fatalf("killed during the catch-up, the reshard is %s", st.Phase)
	}
	e.reshard(t, "cutover")
	time.Sleep(500 * time.Millisecond)
	l.finish(t)
	e.checkPlacement(t, l)
	// The follows rows on the targets are the source's, updates and all.
	src := queryRows(t, s1, "SELECT count(*), sum(followee_id) FROM follows")
	var n, sum int64
	for _, name := range []string{"s2", "s3"} {
		got := queryRows(t, e.cluster.Shard(name).Primary.DSN("app"), "SELECT count(*), coalesce(sum(followee_id), 0) FROM follows")
		n, sum = n+got[0][0], sum+got[0][1]
	}
	if n != src[0][0] || sum != src[0][1] {
		t.Errorf("follows on the targets: %d rows, sum %d; on the source %d rows, sum %d", n, sum, src[0][0], src[0][1])
	}
}

// measureLag streams for a few seconds under the writers' load and
// reports the largest delay a change was applied with.
func (e *reshardEnv) measureLag(t *testing.T) {
	t.Helper()
	cfg, err := topology.LoadConfig(e.config)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		worst time.Duration
		bytes uint64
	)
	r := &reshard.Runner{State: e.state(t), Config: cfg, Log: slog.New(slog.DiscardHandler), CutoverTimeout: 10 * time.Second,
		OnCatchUp: func(_ int, p reshard.Progress) {
			mu.Lock()
			worst, bytes = max(worst, p.Lag), max(bytes, p.LagBytes)
			mu.Unlock()
		}}
	// The first pass applies what built up while nothing streamed; the
	// lag that counts is the steady one after it.
	if _, err := r.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	worst, bytes = 0, 0
	mu.Unlock()
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		if _, err := r.CatchUp(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("catch-up under 8 writers for 3s: worst lag %s, %d bytes", worst, bytes)
	if worst > 5*time.Second {
		t.Errorf("catch-up lag %s under 8 writers", worst)
	}
}

func appliedLSN(t *testing.T, dsn, slot string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var lsn string
	if err := conn.QueryRow(ctx, "SELECT coalesce((SELECT lsn::text FROM shardgate_reshard.applied WHERE slot = $1), '')", slot).Scan(&lsn); err != nil {
		return "" // the table is made by the first stream
	}
	return lsn
}
