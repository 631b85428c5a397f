package topology

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the shardgate.yaml file.
type Config struct {
	Listen   string        `yaml:"listen"`   // default "127.0.0.1:6432"
	Database string        `yaml:"database"` // required: the db name clients connect to
	Pool     PoolConfig    `yaml:"pool"`
	Shards   []ShardConfig `yaml:"shards"`
	Keyspace []RangeConfig `yaml:"keyspace"`
	// Tables maps sharded table names to their shard key. Table names, here
	// and in ReferenceTables, are lower-case identifiers stored as given:
	// they match the unqualified, unquoted table name in SQL, which
	// PostgreSQL folds to lower case.
	Tables          map[string]TableConfig `yaml:"tables"`
	ReferenceTables []string               `yaml:"reference_tables"`
	// DefaultShard names the shard where tables the config does not name
	// live (Vitess's unsharded keyspace): statements on them, temporary
	// tables included, route there. Empty (default): such statements are
	// refused.
	DefaultShard string `yaml:"default_shard"`

	Auth      AuthConfig      `yaml:"auth"`
	TLS       TLSConfig       `yaml:"tls"`        // client side
	ServerTLS ServerTLSConfig `yaml:"server_tls"` // to the shards' servers
	// AdminUsers may open the admin console (database "shardgate").
	AdminUsers []string `yaml:"admin_users"`
	// ShutdownTimeout bounds how long SIGTERM waits for transactions to end.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"` // default 30s

	// AllowBroadcastWrites lets UPDATE and DELETE without a shard key run
	// on every shard (default false: refused with 0A000).
	AllowBroadcastWrites bool `yaml:"allow_broadcast_writes"`
	// MaxIntermediateResultSize bounds the memory a cross-shard query that
	// must be gathered before merging (aggregates, DISTINCT) may hold in
	// the proxy, over all its shards, rows counted at what merging them
	// costs; and the bytes a gathered query copies between shards
	// (Citus's name). Past it the query fails with 54000. Default 1 GiB.
	MaxIntermediateResultSize int64 `yaml:"max_intermediate_result_size"`
	// TwoPhaseCommit makes writes that span shards atomic with PREPARE
	// TRANSACTION / COMMIT PREPARED; the decision is logged durably to
	// DecisionLog before the second phase, and in-doubt transactions are
	// resolved from it at start-up. The servers need max_prepared_transactions.
	TwoPhaseCommit bool   `yaml:"two_phase_commit"`
	DecisionLog    string `yaml:"decision_log"` // default shardgate-2pc.log beside the config

	// Replica reads. Consistency is "read_your_writes" (default: a client's
	// reads go to replicas that have replayed its own committed writes),
	// "eventual" (any usable replica) or "primary" (every statement to the
	// primaries). PrimaryReads is "fallback" (default: the primary serves a
	// read when no replica is usable), "always" (the primary is one of the
	// read targets) or "never" (a read with no usable replica fails with
	// 08006, except that read-your-writes may still fall back to it).
	Consistency  string `yaml:"consistency"`
	PrimaryReads string `yaml:"primary_reads"`
	// RYWWait is how long a read may wait for a replica to replay the
	// client's last write before it goes to the primary; default 0.
	RYWWait Duration `yaml:"ryw_wait"`
	// MaxReplicaLag keeps reads off replicas whose replay is this far behind
	// (seconds since the last replayed transaction while behind the
	// primary); default 0: off.
	MaxReplicaLag Duration `yaml:"max_replica_lag"`
	// MaxReplicaLagBytes keeps reads off replicas with more than this many
	// bytes of WAL still to replay, as of the last health check (like
	// pgpool's delay_threshold); default 0: off. Unlike max_replica_lag it
	// sees a replica falling behind while its replay keeps moving.
	MaxReplicaLagBytes int64 `yaml:"max_replica_lag_bytes"`
	// HealthCheckInterval is how often every server is probed (WAL
	// positions, replica lag); a replica whose probe fails gets no reads
	// until one succeeds. Default 1s.
	HealthCheckInterval Duration `yaml:"health_check_interval"`
	// HealthCheckTimeout bounds one probe, connecting included: a server
	// slower than this counts as failed. Default 5s.
	HealthCheckTimeout Duration `yaml:"health_check_timeout"`
	// BanTime is how long a server is banned after a failed probe or a
	// connection error (an I/O error on a server connection in use, or a
	// failed connect when a read acquires a replica connection): a banned
	// replica gets no new reads. The ban lifts at the first successful probe
	// once BanTime has passed (0: at the next successful probe). Default 15s.
	BanTime Duration `yaml:"ban_time"`

	// Observability. MetricsListen is the host:port of the HTTP listener
	// for Prometheus (/metrics) and, with PProf, Go's profiler
	// (/debug/pprof/); empty (default) opens none. Neither changes on RELOAD.
	MetricsListen string `yaml:"metrics_listen"`
	PProf         bool   `yaml:"pprof"`
	// LogFormat is "text" (default) or "json"; LogLevel is debug, info
	// (default), warn or error. The command line's flags override both.
	LogFormat string `yaml:"log_format"`
	LogLevel  string `yaml:"log_level"`
	// LogMinDuration logs every client request that takes at least this
	// long, with the shards and roles it ran on and why it was routed
	// there; 0 (default) logs none.
	LogMinDuration Duration `yaml:"log_min_duration"`

	// Users holds per-user pool settings by client user name, as
	// PgBouncer's [users] section; users not named have none.
	Users map[string]UserPoolConfig `yaml:"users"`

	// Process settings, with PgBouncer's names and meanings.
	//
	// UnixSocketDir, when set, adds a Unix socket listener,
	// DIR/.s.PGSQL.<port> with the port of listen, so that
	// `psql -h DIR -p PORT` reaches it. Default "" (off), unlike
	// PgBouncer's /tmp: tests and the sandbox run many proxies at once,
	// and each would race the others for the same socket names.
	// UnixSocketMode is the socket file's permissions (default 0777,
	// written in octal, as PgBouncer's); UnixSocketGroup, if set, its group.
	// PidFile, if set, gets the process id while shardgate runs; a file
	// naming a live process stops a second start. None of these four
	// changes on RELOAD. Relative paths are relative to the config file.
	UnixSocketDir   string   `yaml:"unix_socket_dir"`
	UnixSocketMode  FileMode `yaml:"unix_socket_mode"`
	UnixSocketGroup string   `yaml:"unix_socket_group"`
	PidFile         string   `yaml:"pidfile"`
	// LogConnections and LogDisconnections log each client's login and
	// its end (default both on); StatsPeriod is how often a line of pool
	// statistics is logged (default 60s; 0: never). All three change on
	// RELOAD.
	LogConnections    bool     `yaml:"log_connections"`
	LogDisconnections bool     `yaml:"log_disconnections"`
	StatsPeriod       Duration `yaml:"stats_period"`
	// Workers is how many OS threads run the proxy's Go code at once
	// (GOMAXPROCS), as Odyssey's workers and PgCat's worker_threads. 0
	// (default): the Go runtime's choice, the CPUs the process may use
	// (its CPU affinity and cgroup CPU limit), or the GOMAXPROCS
	// environment variable when that is set; a value here wins over both.
	// `shardgate serve` applies it at start and on SIGHUP.
	Workers int `yaml:"workers"`
}

// AuthConfig says how clients prove who they are. Servers are reached with
// the credentials in each shard's DSN, never the client's.
type AuthConfig struct {
	// Type is "trust" (default: any user, no password), "md5" or
	// "scram-sha-256". md5 accepts users whose secret is a password or an md5
	// hash; scram-sha-256 accepts a password or a SCRAM secret.
	Type  string       `yaml:"type" alias:"auth_type"`
	Users []UserConfig `yaml:"users"`
	// File is a PgBouncer-style auth file: one `"user" "secret"` per line.
	// Relative paths are relative to the config file.
	File string `yaml:"file" alias:"auth_file"`
	// Query looks up users that neither Users nor File names on a shard's
	// primary, as PgBouncer's auth_query does: it gets the user name as $1
	// and returns one row of two columns, user name and secret (an md5
	// hash or a SCRAM secret, as pg_authid stores them). No row, or a NULL
	// secret, fails the login as a wrong password would. It runs over a
	// connection of its own with the shard's DSN credentials, in the DSN's
	// database, so that role must be able to read the secrets (a superuser,
	// or a SECURITY DEFINER function that reads pg_shadow). Empty (default):
	// only Users and File log in. PgBouncer's usual query is
	// "SELECT usename, passwd FROM pg_shadow WHERE usename = $1".
	Query string `yaml:"query" alias:"auth_query"`
	// QueryShard names the shard whose primary Query runs on; default: the
	// default shard if set, else the first shard.
	QueryShard string `yaml:"query_shard"`
}

// UserConfig is one client login. Password is a plain password, an md5 hash
// ("md5" + md5(password + user) in hex) or a SCRAM secret
// ("SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>", as in pg_authid).
type UserConfig struct {
	Name     string `yaml:"name"`
	Password string `yaml:"password"`
}

// TLSConfig is client-side TLS. Mode "disable" (default) refuses SSLRequest,
// "allow" accepts TLS and plain connections, "require" refuses plain ones.
type TLSConfig struct {
	Mode string `yaml:"mode" alias:"client_tls_sslmode"`
	Cert string `yaml:"cert" alias:"client_tls_cert_file"`
	Key  string `yaml:"key" alias:"client_tls_key_file"`
}

// ServerTLSConfig is TLS to the servers, with libpq's sslmode semantics:
// "" (use each DSN's sslmode), disable, prefer, require, verify-ca,
// verify-full. CA is the root certificate file for the verify modes.
type ServerTLSConfig struct {
	Mode string `yaml:"mode" alias:"server_tls_sslmode"`
	CA   string `yaml:"ca" alias:"server_tls_ca_file"`
}

// PoolConfig configures server connection pooling.
//
// Timeouts follow PgBouncer's names and meaning; 0 disables the optional ones.
type PoolConfig struct {
	// Mode is "transaction" (default: a server connection per transaction),
	// "session" (per client connection, reset with DISCARD ALL after) or
	// "statement" (per statement; multi-statement transactions are refused).
	Mode             string   `yaml:"mode" alias:"pool_mode"`
	Size             int      `yaml:"size" alias:"default_pool_size"`               // server connections per shard; default 20, at least 1
	MinSize          int      `yaml:"min_size" alias:"min_pool_size"`               // kept open even when idle; default 0
	ReserveSize      int      `yaml:"reserve_size" alias:"reserve_pool_size"`       // extra connections for clients that waited ReserveTimeout; default 0
	ReserveTimeout   Duration `yaml:"reserve_timeout" alias:"reserve_pool_timeout"` // default 5s
	MaxClientConn    int      `yaml:"max_client_conn"`                              // client connections accepted at once; default 10000
	QueryWaitTimeout Duration `yaml:"query_wait_timeout"`                           // how long a client waits for a server connection; default 30s

	ServerConnectTimeout   Duration `yaml:"server_connect_timeout"`   // default 5s
	ServerIdleTimeout      Duration `yaml:"server_idle_timeout"`      // close server connections idle this long; default 600s
	ServerLifetime         Duration `yaml:"server_lifetime"`          // close server connections this old once released; default 3600s
	ServerCheckDelay       Duration `yaml:"server_check_delay"`       // check a connection idle this long before lending it; default 30s
	IdleTransactionTimeout Duration `yaml:"idle_transaction_timeout"` // disconnect clients idle in a transaction this long; default 0
	ClientIdleTimeout      Duration `yaml:"client_idle_timeout"`      // disconnect clients idle this long; default 0
	// PreparedStatements bounds the prepared statements kept per server
	// connection; the least recently used is closed beyond it. Default 200.
	PreparedStatements int `yaml:"prepared_statements" alias:"max_prepared_statements"`

	// ClientLoginTimeout bounds a client's login: startup packet, TLS
	// handshake and authentication. Default 60s (Postgres's
	// authentication_timeout); 0 disables it.
	ClientLoginTimeout Duration `yaml:"client_login_timeout"`
	// MaxPacketSize bounds one message from a logged-in client; larger
	// ones are refused (08P01) and the client disconnected. Default 1 GiB,
	// the most Postgres itself accepts. Before login the bound is fixed and
	// small (startup 10,000 bytes, authentication 64 KiB), as in Postgres.
	MaxPacketSize int `yaml:"max_packet_size"`
	// QueryTimeout bounds the wait for a server's answer after the proxy
	// last wrote to it; past it the server connection is closed and the
	// client gets 57014. Default 0: off (the server's statement_timeout
	// applies).
	QueryTimeout Duration `yaml:"query_timeout"`
	// TCP keepalives on client and server sockets find peers that vanished
	// without closing. Defaults: on, 30s idle, then 3 probes 10s apart.
	TCPKeepalive    bool     `yaml:"tcp_keepalive"`
	TCPKeepIdle     Duration `yaml:"tcp_keepidle"`
	TCPKeepInterval Duration `yaml:"tcp_keepintvl"`
	TCPKeepCount    int      `yaml:"tcp_keepcnt"`
	// PinSessionState: in transaction mode, a client whose statement
	// leaves state on its server past the transaction (LISTEN, a
	// temporary table, a cursor WITH HOLD) keeps that server connection
	// from then on, as in session mode, rather than leak the state to
	// other clients. Off: such statements are refused (0A000). Default on.
	PinSessionState bool `yaml:"pin_session_state"`
}

// ShardConfig is one shard: a primary and its read replicas, each a
// postgres:// or postgresql:// URL.
type ShardConfig struct {
	Name     string   `yaml:"name" json:"name"`
	Primary  string   `yaml:"primary" json:"primary"`
	Replicas []string `yaml:"replicas" json:"replicas,omitempty"`

	// Pool sizes for this shard's servers, as PgBouncer's per-database
	// pool_size, min_pool_size and reserve_pool: absent, pool.size,
	// pool.min_size and pool.reserve_size apply. Pointers, so that an
	// explicit 0 overrides a non-zero global value.
	PoolSize        *int `yaml:"pool_size" json:"pool_size,omitempty"`
	MinPoolSize     *int `yaml:"min_pool_size" json:"min_pool_size,omitempty"`
	ReservePoolSize *int `yaml:"reserve_pool_size" json:"reserve_pool_size,omitempty"`
	// MaxDBConnections caps the connections the proxy opens to each server
	// of the shard (its primary, and each replica on its own), reserve
	// included, as PgBouncer's max_db_connections caps a database's; 0
	// (default): no cap beyond the pool sizes.
	MaxDBConnections int `yaml:"max_db_connections" json:"max_db_connections,omitempty"`
}

// RangeConfig assigns a key range, in Vitess notation (see ParseKeyRange),
// to a shard.
type RangeConfig struct {
	Range string `yaml:"range" json:"range"`
	Shard string `yaml:"shard" json:"shard"`
}

// TableConfig is a sharded table.
type TableConfig struct {
	ShardKey string  `yaml:"shard_key"`
	KeyType  KeyType `yaml:"key_type"` // default bigint
}

// Duration is a time.Duration that YAML reads as "5s", "250ms", or, as
// PgBouncer's settings are written, a plain number of seconds ("600",
// "0.5").
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want a duration such as \"5s\", \"250ms\" or 600 (seconds)")
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDuration reads a duration as Go writes it ("1m30s") or as
// PgBouncer does, a number of seconds.
func ParseDuration(s string) (time.Duration, error) {
	if secs, err := strconv.ParseFloat(s, 64); err == nil && secs >= 0 && secs <= maxSeconds {
		return time.Duration(secs * float64(time.Second)), nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q, want e.g. \"5s\", \"250ms\" or 600 (seconds)", s)
	}
	return v, nil
}

// maxSeconds keeps a number of seconds inside time.Duration's range.
const maxSeconds = float64(math.MaxInt64 / int64(time.Second))

// Seconds prints d as PgBouncer prints a time setting: whole seconds as
// an integer ("600"), anything finer as a decimal ("0.25").
func (d Duration) Seconds() string {
	return strconv.FormatFloat(time.Duration(d).Seconds(), 'f', -1, 64)
}

const (
	defaultListen           = "127.0.0.1:6432"
	defaultPoolMode         = "transaction"
	defaultPoolSize         = 20
	defaultQueryWaitTimeout = Duration(30 * time.Second)
	// MaxPacketSizeLimit is the largest max_packet_size: Postgres refuses
	// messages over 1 GiB, so larger ones could never reach a server.
	MaxPacketSizeLimit = 1 << 30
	// minPacketSize keeps max_packet_size above what ordinary statements
	// and every startup-time message need.
	minPacketSize = 16 << 10
	// MaxWorkers bounds workers: the Go runtime allocates per-worker
	// state for every one, and a typo such as 10000 would only cost memory
	// and scheduling, never add parallelism beyond the machine's CPUs.
	MaxWorkers = 1024
)

func defaultConfig() *Config {
	return &Config{
		Listen:          defaultListen,
		ShutdownTimeout: Duration(30 * time.Second),

		MaxIntermediateResultSize: 1 << 30,

		Consistency:         "read_your_writes",
		PrimaryReads:        "fallback",
		HealthCheckInterval: Duration(time.Second),
		HealthCheckTimeout:  Duration(5 * time.Second),
		BanTime:             Duration(15 * time.Second),
		LogFormat:           "text",
		LogLevel:            "info",
		Auth:                AuthConfig{Type: "trust"},
		TLS:                 TLSConfig{Mode: "disable"},
		Pool: PoolConfig{
			Mode:                 defaultPoolMode,
			Size:                 defaultPoolSize,
			ReserveTimeout:       Duration(5 * time.Second),
			MaxClientConn:        10000,
			QueryWaitTimeout:     defaultQueryWaitTimeout,
			ServerConnectTimeout: Duration(5 * time.Second),
			ServerIdleTimeout:    Duration(600 * time.Second),
			ServerLifetime:       Duration(3600 * time.Second),
			ServerCheckDelay:     Duration(30 * time.Second),
			PreparedStatements:   200,
			ClientLoginTimeout:   Duration(60 * time.Second),
			MaxPacketSize:        MaxPacketSizeLimit,
			TCPKeepalive:         true,
			PinSessionState:      true,
			TCPKeepIdle:          Duration(30 * time.Second),
			TCPKeepInterval:      Duration(10 * time.Second),
			TCPKeepCount:         3,
		},

		UnixSocketMode:    0o777,
		LogConnections:    true,
		LogDisconnections: true,
		StatsPeriod:       Duration(60 * time.Second),
	}
}

// resolvePaths makes file paths in the config relative to its directory, so
// a config means the same whatever the working directory.
func (c *Config) resolvePaths(dir string) {
	if c.DecisionLog == "" {
		c.DecisionLog = "shardgate-2pc.log"
	}
	for _, path := range []*string{&c.Auth.File, &c.TLS.Cert, &c.TLS.Key, &c.ServerTLS.CA, &c.DecisionLog, &c.UnixSocketDir, &c.PidFile} {
		if *path != "" && !filepath.IsAbs(*path) {
			*path = filepath.Join(dir, *path)
		}
	}
}

// LoadConfig reads and parses the config file at path; see ParseConfig.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig decodes a config file, fills in defaults and validates it.
// filename is used only in error messages, which have the form
// "file:line: field: message", one line per problem.
func ParseConfig(filename string, data []byte) (*Config, error) {
	// Defaults go in before decoding so that a value written explicitly,
	// such as "size: 0", is validated rather than silently replaced.
	cfg := defaultConfig()
	pos, err := decode(filename, data, cfg)
	if err != nil {
		return nil, err
	}
	for name, t := range cfg.Tables {
		if t.KeyType == "" {
			t.KeyType = KeyBigint
			cfg.Tables[name] = t
		}
	}
	cfg.resolvePaths(filepath.Dir(filename))
	p := &problems{file: filename, pos: pos}
	cfg.checkServer(p)
	cfg.checkLayout(p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// UserPoolConfig is one user's pool settings (the top-level users map), as
// a line of PgBouncer's [users] section. Zero values leave the global
// behaviour.
type UserPoolConfig struct {
	// PoolMode overrides pool.mode for the user's clients: transaction,
	// session or statement. Empty: pool.mode.
	PoolMode string `yaml:"pool_mode"`
	// PoolSize caps the server connections the user's clients hold at once
	// in each server's pool; more wait, up to query_wait_timeout. 0: no cap.
	PoolSize int `yaml:"pool_size"`
	// MaxUserClientConnections caps the user's logged-in client connections;
	// further logins are refused (53300). 0: no cap.
	MaxUserClientConnections int `yaml:"max_user_client_connections"`
}

// PoolSizes is what the pools of shard i's servers are sized to: the
// shard's own settings over the pool section's, min within size, and
// max_db_connections capping size plus reserve.
func (c *Config) PoolSizes(i int) (size, minSize, reserve int) {
	sh := c.Shards[i]
	size, minSize, reserve = c.Pool.Size, c.Pool.MinSize, c.Pool.ReserveSize
	if sh.PoolSize != nil {
		size = *sh.PoolSize
	}
	if sh.MinPoolSize != nil {
		minSize = *sh.MinPoolSize
	}
	if sh.ReservePoolSize != nil {
		reserve = *sh.ReservePoolSize
	}
	if m := sh.MaxDBConnections; m > 0 {
		size = min(size, m)
		reserve = min(reserve, m-size)
	}
	return size, min(minSize, size), reserve
}

// FileMode is a file's permission bits, written in octal as chmod takes
// them ("0770", "770" or "0o770"), whatever YAML would make of the digits.
type FileMode uint32

// UnmarshalYAML implements yaml.Unmarshaler.
func (m *FileMode) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("want an octal file mode such as 0770")
	}
	text := strings.TrimPrefix(strings.TrimPrefix(n.Value, "0o"), "0O")
	v, err := strconv.ParseUint(text, 8, 32)
	if err != nil || v > 0o777 {
		return fmt.Errorf("invalid file mode %q, want octal permission bits such as 0770", n.Value)
	}
	*m = FileMode(v)
	return nil
}
