package topology

import (
	"strings"
	"testing"
)

func TestAuthQueryConfig(t *testing.T) {
	const twoShards = `database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
  - name: s1
    primary: postgres://u@h:5433/app
keyspace:
  - {range: "-80", shard: s0}
  - {range: "80-", shard: s1}
`
	cfg, err := ParseConfig("c.yaml", []byte(twoShards+"auth:\n  type: scram-sha-256\n  query: SELECT usename, passwd FROM pg_shadow WHERE usename = $1\n  query_shard: s1\n"))
	if err != nil {
		t.Fatalf("a query alone should be enough users: %v", err)
	}
	if cfg.Auth.QueryShard != "s1" || !strings.Contains(cfg.Auth.Query, "pg_shadow") {
		t.Fatalf("auth decoded as %+v", cfg.Auth)
	}
	// PgBouncer's name works too.
	cfg, err = ParseConfig("c.yaml", []byte(twoShards+"auth:\n  auth_type: md5\n  auth_query: SELECT usename, passwd FROM pg_shadow WHERE usename = $1\n"))
	if err != nil || cfg.Auth.Query == "" || cfg.Auth.QueryShard != "" {
		t.Fatalf("auth_query alias: %v, auth %+v", err, cfg.Auth)
	}
	bad := []struct{ name, auth, want string }{
		{"trust", "  type: trust\n  query: SELECT u, p FROM t WHERE u = $1\n",
			"c.yaml:12: auth.query: has no use with auth type trust"},
		{"no parameter", "  type: md5\n  auth_query: SELECT usename, passwd FROM pg_shadow\n",
			"c.yaml:12: auth.query: must take the user name as $1"},
		{"shard without query", "  type: md5\n  users: [{name: a, password: b}]\n  query_shard: s1\n",
			"c.yaml:13: auth.query_shard: needs auth.query"},
		{"unknown shard", "  type: md5\n  query: SELECT u, p FROM t WHERE u = $1\n  query_shard: s7\n",
			`c.yaml:13: auth.query_shard: unknown shard "s7"`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("c.yaml", []byte(twoShards+"auth:\n"+tt.auth))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
