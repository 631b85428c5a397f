package main

import (
	"os"
	"slices"
	"testing"

	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

// TestDevKeepsLayout: a shardgate.yaml that a reshard rewrote keeps its
// shards and keyspace when dev writes the config again; the rest follows
// the command line. No server is needed to write a config.
func TestDevKeepsLayout(t *testing.T) {
	server := func(name string, port int) *sandbox.Server { return &sandbox.Server{Name: name, Port: port} }
	cluster := &sandbox.Cluster{Dir: t.TempDir(), Database: "app", Shards: []*sandbox.Shard{
		{Name: "s0", Primary: server("s0-primary", 5400), Replicas: []*sandbox.Server{server("s0-replica1", 5401)}},
		{Name: "s1", Primary: server("s1-primary", 5402), Replicas: []*sandbox.Server{server("s1-replica1", 5403)}},
	}}
	path, err := devConfig(cluster, "127.0.0.1:7001", "")
	if err != nil {
		t.Fatal(err)
	}
	fresh := load(t, path)
	want := []topology.RangeConfig{{Range: "-80", Shard: "s0"}, {Range: "80-", Shard: "s1"}}
	if !slices.Equal(fresh.Keyspace, want) || !slices.Equal(fresh.AdminUsers, []string{"postgres"}) {
		t.Fatalf("fresh sandbox: keyspace %v, admin_users %v; want an even split and postgres", fresh.Keyspace, fresh.AdminUsers)
	}

	// What a split of 80- at c0 onto s2 and s3 leaves: s2 in s1's place.
	resharded := `listen: 127.0.0.1:7001
database: app
shards:
  - {name: s0, primary: "postgres://postgres@127.0.0.1:5400/app", replicas: ["postgres://postgres@127.0.0.1:5401/app"]}
  - {name: s2, primary: "postgres://postgres@127.0.0.1:5404/app", replicas: []}
  - {name: s3, primary: "postgres://postgres@127.0.0.1:5405/app"}
keyspace:
  - {range: "-80", shard: s0}
  - {range: "80-c0", shard: s2}
  - {range: "c0-", shard: s3}
tables:
  users: {shard_key: id}
`
	if err := os.WriteFile(path, []byte(resharded), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := devConfig(cluster, "127.0.0.1:7002", "127.0.0.1:9999"); err != nil {
		t.Fatal(err)
	}
	old, err := topology.ParseConfig("resharded.yaml", []byte(resharded))
	if err != nil {
		t.Fatal(err)
	}
	got := load(t, path)
	if !slices.Equal(got.Keyspace, old.Keyspace) || !slices.EqualFunc(got.Shards, old.Shards, shardEqual) {
		t.Errorf("layout not kept:\nshards %v\nkeyspace %v", got.Shards, got.Keyspace)
	}
	if got.Listen != "127.0.0.1:7002" || got.MetricsListen != "127.0.0.1:9999" || len(got.Tables) != 3 || !slices.Equal(got.AdminUsers, []string{"postgres"}) {
		t.Errorf("the rest not regenerated: listen %s, metrics %s, %d tables, admin_users %v",
			got.Listen, got.MetricsListen, len(got.Tables), got.AdminUsers)
	}
}

func load(t *testing.T, path string) *topology.Config {
	t.Helper()
	cfg, err := topology.LoadConfig(path)
	if err != nil {
		data, _ := os.ReadFile(path)
		t.Fatalf("%v\n%s", err, data)
	}
	return cfg
}

func shardEqual(a, b topology.ShardConfig) bool {
	return a.Name == b.Name && a.Primary == b.Primary && slices.Equal(a.Replicas, b.Replicas)
}
