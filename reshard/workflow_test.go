package reshard

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shardgate/shardgate/topology"
)

// TestWorkflowWithoutProxies runs a split's steps, copy to complete, on
// real servers: the targets end up with exactly the rows of their parts,
// changes made during the copy included, and verify sees it.
func TestWorkflowWithoutProxies(t *testing.T) {
	src := cluster.Shards[1].Primary.DSN(cluster.Database)
	exec(t, cluster.Shards[2].Primary.DSN(cluster.Database), "CREATE DATABASE wf_second")
	exec(t, src,
		"CREATE TABLE wf_users (id bigint PRIMARY KEY, name text, serial bigserial)",
		"CREATE TABLE wf_codes (code text PRIMARY KEY, n int)",
		"INSERT INTO wf_users (id, name) SELECT i, 'u' || i FROM generate_series(1, 2000) i",
		"INSERT INTO wf_codes VALUES ('a', 1), ('b', 2)")
	dir := t.TempDir()
	path := filepath.Join(dir, "shardgate.yaml")
	yaml := fmt.Sprintf(`database: app
shards:
  - {name: s0, primary: %q}
  - {name: s1, primary: %q}
keyspace:
  - {range: "-80", shard: s0}
  - {range: "80-", shard: s1}
tables:
  wf_users: {shard_key: id}
reference_tables: [wf_codes]
`, cluster.Shards[0].Primary.DSN(cluster.Database), src)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := topology.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	lower := topology.ShardConfig{Name: "s2", Primary: cluster.Shards[2].Primary.DSN(cluster.Database)}
	upper := topology.ShardConfig{Name: "s3", Primary: cluster.Shards[2].Primary.DSN("wf_second")}
	p, err := Split(cfg, "80-", "c0", lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Begin(path, cfg, p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r := &Runner{State: st, Config: cfg, Log: slog.New(slog.DiscardHandler), CutoverTimeout: 10 * time.Second}
	t.Cleanup(func() { r.dropReplication(t.Context()) })
	if err := r.Copy(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The test put keys of the whole keyspace on the source: 80-c0 gets a
	// quarter; status estimates half, the part's share of the source's range.
	if tc := st.Parts[0].Tables["wf_users"]; !tc.Done || tc.Rows < 400 || tc.Rows > 600 || tc.Estimate < 900 || tc.Estimate > 1100 {
		t.Errorf("copy of wf_users onto s2: %+v, want about 500 rows, 1000 estimated", tc)
	}
	exec(t, src, "INSERT INTO wf_users (id, name) SELECT i, 'late' FROM generate_series(2001, 2100) i",
		"UPDATE wf_users SET name = 'changed' WHERE id % 10 = 0", "DELETE FROM wf_users WHERE id % 7 = 0",
		"INSERT INTO wf_codes VALUES ('c', 3)")
	parts, err := r.Verify(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, pv := range parts {
		for _, d := range pv.Tables {
			if !d.OK() || d.Source == 0 {
				t.Errorf("verify %s %s: %+v", pv.Target, d.Table, d)
			}
		}
	}
	// A row changed on the target behind the stream's back is named.
	exec(t, upper.Primary, "UPDATE wf_users SET name = 'tampered' WHERE id = (SELECT min(id) FROM wf_users)")
	parts, err = r.Verify(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d := parts[1].Tables[0]; d.Table != "wf_users" || d.OK() || len(d.Mismatched) != 2 || !strings.HasPrefix(d.Mismatched[0], "source only:") {
		t.Errorf("verify after tampering: %+v", d)
	}

	// A cutover that cannot finish in time leaves the old layout serving.
	r.CutoverTimeout = time.Nanosecond
	if _, err := r.Cutover(t.Context()); err == nil || !strings.Contains(err.Error(), "the old layout serves") {
		t.Fatalf("cutover past its timeout: %v", err)
	}
	if unchanged, _ := topology.LoadConfig(path); st.Phase != PhaseCopied || keyspace(unchanged) != "-80=s0 80-=s1" {
		t.Fatalf("after a cutover that timed out: phase %s, keyspace %s", st.Phase, keyspace(unchanged))
	}
	r.CutoverTimeout = 10 * time.Second
	rep, err := r.Cutover(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != PhaseSwitched || rep.SwitchPoint["s2"] == "" {
		t.Fatalf("after cutover: phase %s, switch points %v", st.Phase, rep.SwitchPoint)
	}
	after, err := topology.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := keyspace(after); got != "-80=s0 80-c0=s2 c0-=s3" {
		t.Errorf("config after cutover: %s", got)
	}
	for _, to := range []topology.ShardConfig{lower, upper} {
		if got := scalar(t, to.Primary, "SELECT last_value FROM wf_users_serial_seq"); got != "2100" {
			t.Errorf("sequence on %s: %s, want the source's 2100", to.Name, got)
		}
	}
	// Writes on a target after cutover go back to the source on abort.
	id := keyIn(t, p.Parts[0].Range)
	exec(t, lower.Primary, fmt.Sprintf("INSERT INTO wf_users (id, name) VALUES (%d, 'written after cutover')", id))
	if err := r.Abort(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := scalar(t, src, fmt.Sprintf("SELECT name FROM wf_users WHERE id = %d", id)); got != "written after cutover" {
		t.Errorf("the target's write after cutover is not on the source after abort: %q", got)
	}
	back, err := topology.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := keyspace(back); got != "-80=s0 80-=s1" {
		t.Errorf("config after abort: %s", got)
	}
	if got := scalar(t, lower.Primary, "SELECT count(*) FROM wf_users"); got != "0" {
		t.Errorf("abort left %s rows on the target", got)
	}
	if _, ok, _ := LoadState(path); ok {
		t.Error("abort left the state file")
	}
}

// keyIn returns a bigint key above any the test inserts whose keyspace id
// is in r.
func keyIn(t *testing.T, r topology.KeyRange) int64 {
	for k := int64(1_000_000); ; k++ {
		id, err := topology.KeyspaceID(topology.KeyBigint, strconv.FormatInt(k, 10))
		if err != nil {
			t.Fatal(err)
		}
		if r.Contains(id) {
			return k
		}
	}
}

func scalar(t *testing.T, dsn, sql string) string {
	t.Helper()
	var v any
	query(t, dsn, sql, &v)
	return fmt.Sprint(v)
}

// TestAbortBeforeCutover: abort after the copy drops the slot and the
// publication and empties the target, so the same reshard may start over.
func TestAbortBeforeCutover(t *testing.T) {
	src := cluster.Shards[1].Primary.DSN(cluster.Database)
	exec(t, src, "CREATE TABLE ab_users (id bigint PRIMARY KEY, name text)",
		"INSERT INTO ab_users SELECT i, 'u' || i FROM generate_series(1, 500) i")
	exec(t, cluster.Shards[2].Primary.DSN(cluster.Database), "CREATE DATABASE ab_target")
	cfg, _ := liveConfig(t, map[string]string{"ab_users": "id"})
	cfg.ReferenceTables = nil
	path := filepath.Join(t.TempDir(), "shardgate.yaml")
	if err := os.WriteFile(path, []byte("database: app\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	to := topology.ShardConfig{Name: "s2", Primary: cluster.Shards[2].Primary.DSN("ab_target")}
	p, err := Move(cfg, "80-", to)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Begin(path, cfg, p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r := &Runner{State: st, Config: cfg, Log: slog.New(slog.DiscardHandler), CutoverTimeout: 10 * time.Second}
	if err := r.Copy(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := scalar(t, to.Primary, "SELECT count(*) FROM ab_users"); got == "0" {
		t.Fatal("the copy moved no row")
	}
	if err := r.Abort(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := scalar(t, src, "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'shardgate_"+st.ID+"%'"); got != "0" {
		t.Errorf("%s slots left after abort", got)
	}
	if got := scalar(t, src, "SELECT count(*) FROM pg_publication WHERE pubname = '"+st.Publication+"'"); got != "0" {
		t.Errorf("the publication is left after abort")
	}
	if got := scalar(t, to.Primary, "SELECT count(*) FROM ab_users"); got != "0" {
		t.Errorf("abort left %s rows on the target", got)
	}
	if _, ok, _ := LoadState(path); ok {
		t.Error("abort left the state file")
	}
	problems, err := Preflight(t.Context(), cfg, p)
	if err != nil || len(problems) != 0 {
		t.Errorf("preflight after abort: %v %v", problems, err)
	}
}
