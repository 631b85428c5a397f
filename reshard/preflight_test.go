package reshard

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

// cluster has three primaries: s0 and s1 are the configured shards, the
// third is the empty server a reshard moves keys onto.
var cluster *sandbox.Cluster

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, remove, err := sandbox.StartTemp(ctx, "shardgate-reshard-test-", sandbox.Options{Shards: 3, Schema: sandbox.Schema, Fast: true})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start sandbox:", err)
		return 1
	}
	defer remove()
	cluster = c
	return m.Run()
}

// liveConfig is the two configured shards and the new one, with tables.
func liveConfig(t *testing.T, tables map[string]string) (*topology.Config, topology.ShardConfig) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "database: %s\nshards:\n", cluster.Database)
	for i := range 2 {
		fmt.Fprintf(&b, "  - {name: s%d, primary: %q}\n", i, cluster.Shards[i].Primary.DSN(cluster.Database))
	}
	b.WriteString("keyspace:\n  - {range: \"-80\", shard: s0}\n  - {range: \"80-\", shard: s1}\ntables:\n")
	for name, key := range tables {
		fmt.Fprintf(&b, "  %s: {shard_key: %s}\n", name, key)
	}
	b.WriteString("reference_tables: [countries]\n")
	cfg, err := topology.ParseConfig("live.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, topology.ShardConfig{Name: "s2", Primary: cluster.Shards[2].Primary.DSN(cluster.Database)}
}

// exec runs sqls on one connection. Not under t.Context(): cleanups use
// it too, after that context ends.
func exec(t testing.TB, dsn string, sqls ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, sql := range sqls {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

func preflight(t *testing.T, cfg *topology.Config, to topology.ShardConfig) []string {
	t.Helper()
	p, err := Move(cfg, "80-", to)
	if err != nil {
		t.Fatal(err)
	}
	problems, err := Preflight(t.Context(), cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	return problems
}

func wantProblems(t *testing.T, problems []string, want ...string) {
	t.Helper()
	if len(problems) != len(want) {
		t.Fatalf("problems %q, want %d saying %q", problems, len(want), want)
	}
	for i, w := range want {
		if !strings.Contains(problems[i], w) {
			t.Errorf("problem %q, want one saying %q", problems[i], w)
		}
	}
}

func TestPreflightPassesTheSandboxSchema(t *testing.T) {
	cfg, to := liveConfig(t, map[string]string{"users": "id", "posts": "user_id", "follows": "user_id"})
	wantProblems(t, preflight(t, cfg, to))
}

func TestPreflightRefusesTablesItCannotReplicate(t *testing.T) {
	src := cluster.Shards[1].Primary.DSN(cluster.Database)
	exec(t, src,
		"CREATE TABLE pf_nopk (user_id bigint)",
		"CREATE TABLE pf_keyless (id bigint PRIMARY KEY, user_id bigint)")
	cfg, to := liveConfig(t, map[string]string{"pf_nopk": "user_id", "pf_keyless": "user_id", "pf_ghost": "user_id"})
	wantProblems(t, preflight(t, cfg, to),
		"table pf_ghost is in the config but does not exist",
		"primary key of table pf_keyless does not contain its shard key user_id",
		"table pf_nopk has no primary key")

	exec(t, src, "ALTER TABLE pf_keyless REPLICA IDENTITY FULL")
	delete(cfg.Tables, "pf_ghost")
	wantProblems(t, preflight(t, cfg, to), "table pf_nopk has no primary key")
}

func TestPreflightRefusesANonEmptyTarget(t *testing.T) {
	dst := cluster.Shards[2].Primary.DSN(cluster.Database)
	exec(t, dst, "INSERT INTO countries (code, name) VALUES ('zz', 'Nowhere')")
	t.Cleanup(func() { exec(t, dst, "DELETE FROM countries WHERE code = 'zz'") })
	cfg, to := liveConfig(t, map[string]string{"users": "id"})
	wantProblems(t, preflight(t, cfg, to), "target shard s2 is not empty: table countries has rows")
}

func TestPreflightRefusesInDoubtTransactions(t *testing.T) {
	src := cluster.Shards[1].Primary.DSN(cluster.Database)
	exec(t, src, "BEGIN", "CREATE TABLE pf_indoubt (id bigint)", "PREPARE TRANSACTION 'shardgate_preflighttest'")
	t.Cleanup(func() { exec(t, src, "ROLLBACK PREPARED 'shardgate_preflighttest'") })
	cfg, to := liveConfig(t, map[string]string{"users": "id"})
	wantProblems(t, preflight(t, cfg, to), "source shard s1: 1 in-doubt prepared transaction")
}

// A reference table is streamed in full: it needs a row identity too.
func TestPreflightRefusesAReferenceTableWithoutIdentity(t *testing.T) {
	src := cluster.Shards[1].Primary.DSN(cluster.Database)
	exec(t, src, "CREATE TABLE pf_refnopk (code text)")
	cfg, to := liveConfig(t, map[string]string{"users": "id"})
	cfg.ReferenceTables = append(cfg.ReferenceTables, "pf_refnopk")
	wantProblems(t, preflight(t, cfg, to), "table pf_refnopk has no primary key")
	exec(t, src, "ALTER TABLE pf_refnopk REPLICA IDENTITY FULL")
	wantProblems(t, preflight(t, cfg, to))
}
