package topology

import (
	"strings"
	"testing"
)

// TestShardPoolSizes: a shard's own sizes override pool's, an explicit 0
// included, min stays within size, and max_db_connections caps size plus
// reserve.
func TestShardPoolSizes(t *testing.T) {
	cfg, err := ParseConfig("c.yaml", []byte(`database: app
pool:
  size: 10
  min_size: 4
  reserve_size: 3
shards:
  - name: s0
    primary: postgres://u@h:5432/app
  - name: s1
    primary: postgres://u@h:5433/app
    pool_size: 2
    reserve_pool_size: 0
  - name: s2
    primary: postgres://u@h:5434/app
    pool_size: 6
    min_pool_size: 0
    max_db_connections: 8
keyspace:
  - range: "-40"
    shard: s0
  - range: "40-80"
    shard: s1
  - range: "80-"
    shard: s2
users:
  alice:
    pool_mode: session
    pool_size: 1
    max_user_client_connections: 10
`))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][3]int{{10, 4, 3}, {2, 2, 0}, {6, 0, 2}} {
		size, minSize, reserve := cfg.PoolSizes(i)
		if got := [3]int{size, minSize, reserve}; got != want {
			t.Errorf("shard %d: size, min, reserve %v, want %v", i, got, want)
		}
	}
	if got, want := cfg.Users["alice"], (UserPoolConfig{PoolMode: "session", PoolSize: 1, MaxUserClientConnections: 10}); got != want {
		t.Errorf("users.alice %+v, want %+v", got, want)
	}
}

func TestShardPoolSizeErrors(t *testing.T) {
	_, err := ParseConfig("c.yaml", []byte(`database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
    pool_size: 0
    min_pool_size: 3
    reserve_pool_size: -1
    max_db_connections: -2
keyspace:
  - range: "-"
    shard: s0
users:
  bob:
    pool_mode: sometimes
    pool_size: -1
    max_user_client_connections: -1
`))
	for _, want := range []string{
		"c.yaml:5: shards[0].pool_size: must be at least 1, got 0",
		"c.yaml:6: shards[0].min_pool_size: must be between 0 and the shard's pool size (0), got 3",
		"c.yaml:7: shards[0].reserve_pool_size: must not be negative, got -1",
		"c.yaml:8: shards[0].max_db_connections: must not be negative (0: no cap), got -2",
		`c.yaml:14: users.bob.pool_mode: unknown mode "sometimes"`,
		"c.yaml:15: users.bob.pool_size: must not be negative",
		"c.yaml:16: users.bob.max_user_client_connections: must not be negative",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v\nwant it to contain %q", err, want)
		}
	}
}
