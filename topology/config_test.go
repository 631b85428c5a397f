package topology

import (
	"errors"
	"io/fs"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigValid(t *testing.T) {
	cfg, err := LoadConfig("../testdata/config/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := defaultConfig()
	want.Database = "app"
	want.Shards = []ShardConfig{
		{Name: "s0", Primary: "postgres://shardgate@127.0.0.1:7000/app", Replicas: []string{"postgres://shardgate@127.0.0.1:7001/app"}},
		{Name: "s1", Primary: "postgres://shardgate@127.0.0.1:7002/app", Replicas: []string{"postgres://shardgate@127.0.0.1:7003/app"}},
	}
	want.Keyspace = []RangeConfig{{Range: "-80", Shard: "s0"}, {Range: "80-", Shard: "s1"}}
	want.Tables = map[string]TableConfig{
		"users":   {ShardKey: "id", KeyType: KeyBigint},
		"posts":   {ShardKey: "user_id", KeyType: KeyBigint},
		"follows": {ShardKey: "user_id", KeyType: KeyBigint},
	}
	want.ReferenceTables = []string{"countries"}
	want.DecisionLog = filepath.Join("..", "testdata", "config", "shardgate-2pc.log") // beside the config
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v, want a not-exist error", err)
	}
}

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig("min.yaml", []byte(`
database: app
shards:
  - name: s0
    primary: postgresql://h:5432/app
keyspace:
  - range: "-"
    shard: s0
tables:
  users:
    shard_key: id
  accounts:
    shard_key: email
    key_type: text
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:6432" {
		t.Errorf("listen %q", cfg.Listen)
	}
	if want := (PoolConfig{Mode: "transaction", Size: 20, QueryWaitTimeout: Duration(30 * time.Second), ReserveTimeout: Duration(5 * time.Second),
		MaxClientConn: 10000, ServerConnectTimeout: Duration(5 * time.Second), ServerIdleTimeout: Duration(600 * time.Second),
		ServerLifetime: Duration(time.Hour), ServerCheckDelay: Duration(30 * time.Second), PreparedStatements: 200,
		ClientLoginTimeout: Duration(time.Minute), MaxPacketSize: 1 << 30, TCPKeepalive: true, PinSessionState: true,
		TCPKeepIdle: Duration(30 * time.Second), TCPKeepInterval: Duration(10 * time.Second), TCPKeepCount: 3}); cfg.Pool != want {
		t.Errorf("pool %+v, want %+v", cfg.Pool, want)
	}
	if cfg.Consistency != "read_your_writes" || cfg.PrimaryReads != "fallback" || cfg.RYWWait != 0 || cfg.MaxReplicaLag != 0 || cfg.HealthCheckInterval != Duration(time.Second) || cfg.HealthCheckTimeout != Duration(5*time.Second) || cfg.BanTime != Duration(15*time.Second) {
		t.Errorf("replica defaults: %q %q %v %v %v %v", cfg.Consistency, cfg.PrimaryReads, cfg.RYWWait, cfg.MaxReplicaLag, cfg.HealthCheckInterval, cfg.BanTime)
	}
	if kt := cfg.Tables["users"].KeyType; kt != KeyBigint {
		t.Errorf("users key_type %q, want bigint", kt)
	}
	if kt := cfg.Tables["accounts"].KeyType; kt != KeyText {
		t.Errorf("accounts key_type %q, want text", kt)
	}
}

func TestParseConfigAdjacentRanges(t *testing.T) {
	_, err := ParseConfig("a.yaml", []byte(`
database: app
shards:
  - name: s0
    primary: postgres://h:5432/app
  - name: s1
    primary: postgres://h:5433/app
keyspace:
  - range: "8000000000000001-"
    shard: s1
  - range: "-8000000000000001"
    shard: s0
`))
	if err != nil {
		t.Fatal(err)
	}
}

func TestParseConfigOverrides(t *testing.T) {
	cfg, err := ParseConfig("o.yaml", []byte(`
listen: 0.0.0.0:7432
database: app
pool:
  size: 5
  query_wait_timeout: 250ms
shards:
  - name: s0
    primary: postgres://h:5432/app
keyspace:
  - range: "-"
    shard: s0
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "0.0.0.0:7432" || cfg.Pool.Size != 5 || cfg.Pool.QueryWaitTimeout != Duration(250*time.Millisecond) {
		t.Errorf("got %+v", cfg)
	}
}

// TestParseConfigPgBouncerNames: a pool section written with PgBouncer's
// names and its habit of seconds without a unit means the same as
// shardgate's own names.
func TestParseConfigPgBouncerNames(t *testing.T) {
	own, err := ParseConfig("own.yaml", []byte(base+`pool:
  mode: session
  size: 7
  min_size: 2
  reserve_size: 3
  reserve_timeout: 1.5s
  prepared_statements: 50
  server_idle_timeout: 10m
auth:
  type: md5
  users: [{name: a, password: x}]
`))
	if err != nil {
		t.Fatal(err)
	}
	pgb, err := ParseConfig("pgbouncer.yaml", []byte(base+`pool:
  pool_mode: session
  default_pool_size: 7
  min_pool_size: 2
  reserve_pool_size: 3
  reserve_pool_timeout: 1.5
  max_prepared_statements: 50
  server_idle_timeout: 600
auth:
  auth_type: md5
  users: [{name: a, password: x}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(own, pgb) {
		t.Errorf("PgBouncer names\n%+v\nown names\n%+v", pgb, own)
	}
	for in, want := range map[string]string{"600": "600", "0.25": "0.25", "1m30s": "90", "0": "0"} {
		d, err := ParseDuration(in)
		if err != nil || Duration(d).Seconds() != want {
			t.Errorf("ParseDuration(%q) = %v, %v; printed %q, want %q", in, d, err, Duration(d).Seconds(), want)
		}
	}
}

// base is a valid config; error cases below are complete documents so that
// the line numbers they assert are visible.
const base = `database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
keyspace:
  - range: "-"
    shard: s0
`

func TestParseConfigErrors(t *testing.T) {
	if _, err := ParseConfig("c.yaml", []byte(base)); err != nil {
		t.Fatalf("base config: %v", err)
	}
	tests := []struct {
		name string
		yaml string
		want []string // each must appear in the error
	}{
		{"unknown top-level key", base + "databse: x\n",
			[]string{"c.yaml:8: databse: unknown field"}},
		{"unknown nested key", "database: app\npool:\n  sizee: 3\n" + base[len("database: app\n"):],
			[]string{"c.yaml:3: pool.sizee: unknown field"}},
		{"unknown key in list item", `database: app
shards:
  - name: s0
    primray: postgres://u@h:5432/app
keyspace:
  - range: "-"
    shard: s0
`, []string{"c.yaml:4: shards[0].primray: unknown field"}},
		{"unknown key in table", base + "tables:\n  users:\n    shard_key: id\n    keytype: text\n",
			[]string{"c.yaml:11: tables.users.keytype: unknown field"}},
		{"duplicate key", base + "database: other\n",
			[]string{"c.yaml:8: database: duplicate key (database first at line 1)"}},
		{"wrong type", base + "pool:\n  size: lots\n",
			[]string{`c.yaml:9: pool.size: want an integer, got "lots"`}},
		{"packet size too small", base + "pool:\n  max_packet_size: 100\n",
			[]string{`c.yaml:9: pool.max_packet_size: must be between 16384 and 1073741824 bytes, got 100`}},
		{"negative login timeout", base + "pool:\n  client_login_timeout: -1s\n",
			[]string{`c.yaml:9: pool.client_login_timeout: must not be negative (0 disables), got -1s`}},
		{"bad duration", base + "pool:\n  query_wait_timeout: 5 minutes\n",
			[]string{`c.yaml:9: pool.query_wait_timeout: invalid duration "5 minutes"`}},
		{"name and alias both given", base + "pool:\n  size: 5\n  default_pool_size: 6\n",
			[]string{"c.yaml:10: pool.default_pool_size: duplicate key (size first at line 9)"}},
		{"alias of the wrong type", base + "pool:\n  default_pool_size: lots\n",
			[]string{`c.yaml:9: pool.default_pool_size: want an integer, got "lots"`}},
		{"alias validated", base + "pool:\n  pool_mode: sometimes\n",
			[]string{`c.yaml:9: pool.mode: `}},
		{"bad consistency", base + "consistency: strong\n",
			[]string{`c.yaml:8: consistency: unknown consistency "strong"`}},
		{"bad primary_reads", base + "primary_reads: sometimes\n",
			[]string{`c.yaml:8: primary_reads: unknown value "sometimes"`}},
		{"zero health interval", base + "health_check_interval: 0s\n",
			[]string{"c.yaml:8: health_check_interval: must be positive"}},
		{"zero health timeout", base + "health_check_timeout: 0s\n",
			[]string{"c.yaml:8: health_check_timeout: must be positive"}},
		{"negative ban_time", base + "ban_time: -2s\n",
			[]string{"c.yaml:8: ban_time: must not be negative"}},
		{"negative lag", base + "max_replica_lag: -1s\n",
			[]string{"c.yaml:8: max_replica_lag: must not be negative"}},
		{"negative lag bytes", base + "max_replica_lag_bytes: -1\n",
			[]string{"c.yaml:8: max_replica_lag_bytes: must not be negative"}},
		{"bad metrics_listen", base + "metrics_listen: 9187\n",
			[]string{`c.yaml:8: metrics_listen: want host:port, got "9187"`}},
		{"pprof without listener", base + "pprof: true\n",
			[]string{"c.yaml:8: pprof: needs metrics_listen"}},
		{"bad log_format", base + "log_format: xml\n",
			[]string{`c.yaml:8: log_format: unknown format "xml", want text or json`}},
		{"bad log_level", base + "log_level: loud\n",
			[]string{`c.yaml:8: log_level: unknown level "loud"`}},
		{"negative log_min_duration", base + "log_min_duration: -1s\n",
			[]string{"c.yaml:8: log_min_duration: must not be negative"}},
		{"mapping for list", base + "reference_tables:\n  a: b\n",
			[]string{"c.yaml:9: reference_tables: want a list, got a mapping"}},
		{"yaml syntax", "database: app\nshards: [\n",
			[]string{"c.yaml:2: did not find expected node content"}},
		{"missing database", base[len("database: app\n"):],
			[]string{"c.yaml:1: database: required"}},
		{"no shards", "database: app\n",
			[]string{"shards: at least one shard is required", "keyspace: at least one range is required"}},
		{"gap", `database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
keyspace:
  - range: "-40"
    shard: s0
  - range: "80-"
    shard: s0
`, []string{`c.yaml:8: keyspace[1].range: gap before "80-": no range covers 40-80`}},
		{"gap at end", `database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
keyspace:
  - range: "-c0"
    shard: s0
`, []string{`c.yaml:6: keyspace[0].range: gap after "-c0": no range covers c0-`}},
		{"gap at start", `database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
keyspace:
  - range: "10-"
    shard: s0
`, []string{`c.yaml:6: keyspace[0].range: gap before "10-": no range covers -10`}},
		{"overlap", `database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
keyspace:
  - range: "-c0"
    shard: s0
  - range: "80-c0"
    shard: s0
  - range: "c0-"
    shard: s0
`, []string{`c.yaml:8: keyspace[1].range: "80-c0" overlaps "-c0"`}},
		{"overlap by one key", `database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
keyspace:
  - range: "-8000000000000001"
    shard: s0
  - range: "80-"
    shard: s0
`, []string{`c.yaml:8: keyspace[1].range: "80-" overlaps "-8000000000000001"`}},
		{"gap of one key", `database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
keyspace:
  - range: "-80"
    shard: s0
  - range: "8000000000000001-"
    shard: s0
`, []string{`c.yaml:8: keyspace[1].range: gap before "8000000000000001-": no range covers 80-8000000000000001`}},
		{"overlap out of order", `database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
keyspace:
  - range: "80-"
    shard: s0
  - range: "-"
    shard: s0
`, []string{`c.yaml:6: keyspace[0].range: "80-" overlaps "-"`}},
		{"bad range", `database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
keyspace:
  - range: "c0-80"
    shard: s0
`, []string{`c.yaml:6: keyspace[0].range: key range "c0-80": start must be below end`}},
		{"unknown shard in keyspace", `database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
keyspace:
  - range: "-80"
    shard: s0
  - range: "80-"
    shard: s9
`, []string{`c.yaml:9: keyspace[1].shard: unknown shard "s9"`}},
		{"duplicate shard name", `database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
  - name: s0
    primary: postgres://u@h:5433/app
keyspace:
  - range: "-"
    shard: s0
`, []string{`c.yaml:5: shards[1].name: duplicate shard name "s0" (also shards[0])`}},
		{"empty shard name", `database: app
shards:
  - primary: postgres://u@h:5432/app
keyspace:
  - range: "-"
    shard: s0
`, []string{"c.yaml:3: shards[0].name: required"}},
		{"bad primary DSN", `database: app
shards:
  - name: s0
    primary: mysql://u:secret@h:5432/app
keyspace:
  - range: "-"
    shard: s0
`, []string{`c.yaml:4: shards[0].primary: shard "s0": invalid DSN: scheme must be postgres or postgresql`}},
		{"DSN without port", `database: app
shards:
  - name: s0
    primary: postgres://u@h/app
keyspace:
  - range: "-"
    shard: s0
`, []string{`c.yaml:4: shards[0].primary: shard "s0": invalid DSN: missing or bad port`}},
		{"unparsable replica DSN", `database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
    replicas:
      - postgres://u:secret@h:54x2/app
keyspace:
  - range: "-"
    shard: s0
`, []string{`c.yaml:6: shards[0].replicas[0]: shard "s0": invalid DSN: invalid port`}},
		{"missing primary", `database: app
shards:
  - name: s0
keyspace:
  - range: "-"
    shard: s0
`, []string{`c.yaml:3: shards[0].primary: shard "s0": DSN is required`}},
		{"bad key_type", base + "tables:\n  users:\n    shard_key: id\n    key_type: float\n",
			[]string{`c.yaml:11: tables.users.key_type: unknown key type "float"`}},
		{"missing shard_key", base + "tables:\n  users:\n    key_type: int\n",
			[]string{"c.yaml:9: tables.users.shard_key: required"}},
		{"shard without range", `database: app
shards:
  - name: s0
    primary: postgres://u@h:5432/app
  - name: s2
    primary: postgres://u@h:5433/app
keyspace:
  - range: "-"
    shard: s0
`, []string{"c.yaml:5: shards[1]: shard s2 owns no keyspace range"}},
		{"min_size above size", base + "pool:\n  size: 2\n  min_size: 3\n",
			[]string{"c.yaml:10: pool.min_size: must be between 0 and pool.size (2), got 3"}},
		{"negative timeout", base + "pool:\n  server_lifetime: -1s\n",
			[]string{"c.yaml:9: pool.server_lifetime: must not be negative (0 disables), got -1s"}},
		{"auth without users", base + "auth:\n  type: md5\n",
			[]string{"c.yaml:8: auth: auth type md5 needs users or a file"}},
		{"unknown auth type", base + "auth:\n  type: ldap\n  users: [{name: a, password: b}]\n",
			[]string{`c.yaml:9: auth.type: unknown type "ldap"`}},
		{"tls without cert", base + "tls:\n  mode: require\n",
			[]string{"c.yaml:8: tls: mode require needs cert and key"}},
		{"server tls verify without ca", base + "server_tls:\n  mode: verify-full\n",
			[]string{"c.yaml:8: server_tls.ca: mode verify-full needs a CA certificate file"}},
		{"unknown pool mode", base + "pool:\n  mode: bogus\n",
			[]string{`c.yaml:9: pool.mode: unknown mode "bogus"`}},
		{"zero pool size", base + "pool:\n  size: 0\n",
			[]string{"c.yaml:9: pool.size: must be at least 1, got 0"}},
		{"bad listen", base + "listen: 6432\n",
			[]string{`c.yaml:8: listen: want host:port, got "6432"`}},
		{"sharded and reference", base + "tables:\n  users:\n    shard_key: id\nreference_tables:\n  - countries\n  - users\n",
			[]string{`c.yaml:13: reference_tables[1]: table "users" is both sharded (tables.users) and a reference table`}},
		{"duplicate reference table", base + "reference_tables:\n  - countries\n  - countries\n",
			[]string{`c.yaml:10: reference_tables[1]: duplicate reference table "countries"`}},
		{"empty reference table", base + "reference_tables:\n  - \"\"\n",
			[]string{"c.yaml:9: reference_tables[0]: table name is empty"}},
		{"unknown default shard", base + "default_shard: s9\n",
			[]string{`c.yaml:8: default_shard: unknown shard "s9"`}},
		{"several problems, in file order", `shards:
  - name: s0
    primary: postgres://u@h:5432/app
keyspace:
  - range: "-80"
    shard: s0
pool:
  size: -1
`, []string{"c.yaml:1: database: required", `c.yaml:5: keyspace[0].range: gap after "-80"`, "c.yaml:8: pool.size: must be at least 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig("c.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("no error; config %+v", cfg)
			}
			msg := err.Error()
			last := -1
			for _, w := range tt.want {
				i := strings.Index(msg, w)
				if i < 0 {
					t.Fatalf("error:\n%s\nwant it to contain %q", msg, w)
				}
				if i < last {
					t.Errorf("error:\n%s\n%q is out of order", msg, w)
				}
				last = i
			}
			if strings.Contains(msg, "secret") {
				t.Errorf("error leaks a password:\n%s", msg)
			}
		})
	}
}
