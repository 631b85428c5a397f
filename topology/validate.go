package topology

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// checkServer validates the settings of the proxy process itself, which the
// Topology does not carry.
func (c *Config) checkServer(p *problems) {
	if c.Database == "" {
		p.add("database", "required: the database name clients connect to")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		p.add("listen", "want host:port, got %q", c.Listen)
	}
	c.checkPool(p)
	switch c.Auth.Type {
	case "trust", "md5", "scram-sha-256":
	default:
		p.add("auth.type", "unknown type %q, want trust, md5 or scram-sha-256", c.Auth.Type)
	}
	users := map[string]bool{}
	for i, u := range c.Auth.Users {
		path := fmt.Sprintf("auth.users[%d]", i)
		switch {
		case u.Name == "":
			p.add(path+".name", "required")
		case users[u.Name]:
			p.add(path+".name", "duplicate user %q", u.Name)
		case u.Password == "" && c.Auth.Type != "trust":
			p.add(path+".password", "required with auth type %s", c.Auth.Type)
		}
		users[u.Name] = true
	}
	if c.Auth.Type != "trust" && len(c.Auth.Users) == 0 && c.Auth.File == "" && c.Auth.Query == "" {
		p.add("auth", "auth type %s needs users or a file, or auth.query", c.Auth.Type)
	}
	c.checkAuthQuery(p)
	switch c.TLS.Mode {
	case "disable":
	case "allow", "require":
		if c.TLS.Cert == "" || c.TLS.Key == "" {
			p.add("tls", "mode %s needs cert and key", c.TLS.Mode)
		}
	default:
		p.add("tls.mode", "unknown mode %q, want disable, allow or require", c.TLS.Mode)
	}
	switch c.ServerTLS.Mode {
	case "", "disable", "allow", "prefer", "require":
	case "verify-ca", "verify-full":
		if c.ServerTLS.CA == "" {
			p.add("server_tls.ca", "mode %s needs a CA certificate file", c.ServerTLS.Mode)
		}
	default:
		p.add("server_tls.mode", "unknown mode %q, want disable, prefer, require, verify-ca or verify-full", c.ServerTLS.Mode)
	}
	for i, u := range c.AdminUsers {
		if u == "" {
			p.add(fmt.Sprintf("admin_users[%d]", i), "empty user name")
		}
	}
	if c.ShutdownTimeout < 0 {
		p.add("shutdown_timeout", "must not be negative")
	}
	c.checkReplicas(p)
	c.checkObservability(p)
	c.checkShardPools(p)
	c.checkUsers(p)
	c.checkProcess(p)
}

// checkAuthQuery checks what can be known of auth.query without a server:
// that it can serve (a password method) and takes the user name.
func (c *Config) checkAuthQuery(p *problems) {
	a := c.Auth
	switch {
	case a.Query == "" && a.QueryShard != "":
		p.add("auth.query_shard", "needs auth.query")
	case a.Query == "":
	case a.Type == "trust":
		p.add("auth.query", "has no use with auth type trust, which checks no password")
	case !strings.Contains(a.Query, "$1"):
		p.add("auth.query", "must take the user name as $1, e.g. SELECT usename, passwd FROM pg_shadow WHERE usename = $1")
	}
}

func (c *Config) checkObservability(p *problems) {
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			p.add("metrics_listen", "want host:port, got %q", c.MetricsListen)
		}
	} else if c.PProf {
		p.add("pprof", "needs metrics_listen: pprof is served on the metrics listener")
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		p.add("log_format", "unknown format %q, want text or json", c.LogFormat)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		p.add("log_level", "unknown level %q, want debug, info, warn or error", c.LogLevel)
	}
	if c.LogMinDuration < 0 {
		p.add("log_min_duration", "must not be negative")
	}
}

func (c *Config) checkReplicas(p *problems) {
	switch c.Consistency {
	case "read_your_writes", "eventual", "primary":
	default:
		p.add("consistency", "unknown consistency %q, want read_your_writes, eventual or primary", c.Consistency)
	}
	switch c.PrimaryReads {
	case "never", "fallback", "always":
	default:
		p.add("primary_reads", "unknown value %q, want never, fallback or always", c.PrimaryReads)
	}
	if c.RYWWait < 0 {
		p.add("ryw_wait", "must not be negative")
	}
	if c.MaxReplicaLag < 0 {
		p.add("max_replica_lag", "must not be negative")
	}
	if c.MaxReplicaLagBytes < 0 {
		p.add("max_replica_lag_bytes", "must not be negative")
	}
	if c.HealthCheckInterval <= 0 {
		p.add("health_check_interval", "must be positive")
	}
	if c.HealthCheckTimeout <= 0 {
		p.add("health_check_timeout", "must be positive")
	}
	if c.BanTime < 0 {
		p.add("ban_time", "must not be negative")
	}
}

func (c *Config) checkPool(p *problems) {
	pc := c.Pool
	switch pc.Mode {
	case "transaction", "session", "statement":
	default:
		p.add("pool.mode", "unknown mode %q, want transaction, session or statement", pc.Mode)
	}
	if pc.Size < 1 {
		p.add("pool.size", "must be at least 1, got %d", pc.Size)
	}
	if pc.MinSize < 0 || pc.MinSize > pc.Size {
		p.add("pool.min_size", "must be between 0 and pool.size (%d), got %d", pc.Size, pc.MinSize)
	}
	if pc.ReserveSize < 0 {
		p.add("pool.reserve_size", "must not be negative, got %d", pc.ReserveSize)
	}
	if pc.MaxClientConn < 1 {
		p.add("pool.max_client_conn", "must be at least 1, got %d", pc.MaxClientConn)
	}
	if pc.PreparedStatements < 1 {
		p.add("pool.prepared_statements", "must be at least 1, got %d", pc.PreparedStatements)
	}
	if c.MaxIntermediateResultSize < 1 {
		p.add("max_intermediate_result_size", "must be positive, got %d", c.MaxIntermediateResultSize)
	}
	if pc.MaxPacketSize < minPacketSize || pc.MaxPacketSize > MaxPacketSizeLimit {
		p.add("pool.max_packet_size", "must be between %d and %d bytes, got %d", minPacketSize, MaxPacketSizeLimit, pc.MaxPacketSize)
	}
	if pc.TCPKeepCount < 0 {
		p.add("pool.tcp_keepcnt", "must not be negative (0: the OS default), got %d", pc.TCPKeepCount)
	}
	positive := map[string]Duration{
		"pool.query_wait_timeout": pc.QueryWaitTimeout, "pool.server_connect_timeout": pc.ServerConnectTimeout,
	}
	for path, d := range positive {
		if d <= 0 {
			p.add(path, "must be positive, got %s", time.Duration(d))
		}
	}
	optional := map[string]Duration{
		"pool.reserve_timeout": pc.ReserveTimeout, "pool.server_idle_timeout": pc.ServerIdleTimeout,
		"pool.server_lifetime": pc.ServerLifetime, "pool.server_check_delay": pc.ServerCheckDelay,
		"pool.idle_transaction_timeout": pc.IdleTransactionTimeout, "pool.client_idle_timeout": pc.ClientIdleTimeout,
		"pool.client_login_timeout": pc.ClientLoginTimeout, "pool.query_timeout": pc.QueryTimeout,
		"pool.tcp_keepidle": pc.TCPKeepIdle, "pool.tcp_keepintvl": pc.TCPKeepInterval,
	}
	for path, d := range optional {
		if d < 0 {
			p.add(path, "must not be negative (0 disables), got %s", time.Duration(d))
		}
	}
}

// MaxShards bounds a topology so the router can keep shard sets in one
// machine word.
const MaxShards = 64

// checkLayout validates shards, keyspace and tables: everything New needs.
// It returns the keyspace sorted by start, with shard names resolved to
// indexes; the result is meaningful only if no problem was added.
func (c *Config) checkLayout(p *problems) []OwnedRange {
	if len(c.Shards) == 0 {
		p.add("shards", "at least one shard is required")
	}
	if len(c.Shards) > MaxShards {
		p.add("shards", "at most %d shards are supported, got %d", MaxShards, len(c.Shards))
	}
	shards := make(map[string]int, len(c.Shards))
	for i, s := range c.Shards {
		path := fmt.Sprintf("shards[%d]", i)
		if s.Name == "" {
			p.add(path+".name", "required")
		} else if j, dup := shards[s.Name]; dup {
			p.add(path+".name", "duplicate shard name %q (also shards[%d])", s.Name, j)
		} else {
			shards[s.Name] = i
		}
		if err := checkDSN(s.Primary); err != nil {
			p.add(path+".primary", "shard %q: %v", s.Name, err)
		}
		for j, r := range s.Replicas {
			if err := checkDSN(r); err != nil {
				p.add(fmt.Sprintf("%s.replicas[%d]", path, j), "shard %q: %v", s.Name, err)
			}
		}
	}
	ranges := c.checkKeyspace(p, shards)
	c.checkTables(p)
	if _, known := shards[c.DefaultShard]; c.DefaultShard != "" && !known {
		p.add("default_shard", "unknown shard %q", c.DefaultShard)
	}
	if _, known := shards[c.Auth.QueryShard]; c.Auth.QueryShard != "" && !known {
		p.add("auth.query_shard", "unknown shard %q", c.Auth.QueryShard)
	}
	return ranges
}

// checkDSN accepts postgres:// and postgresql:// URLs with a host and port.
// Its errors never quote the DSN, which may hold a password.
func checkDSN(dsn string) error {
	const want = "want postgres://user:password@host:port/dbname"
	if dsn == "" {
		return fmt.Errorf("DSN is required, %s", want)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		// url.Error repeats the whole URL, and its cause may quote a piece
		// of it ("invalid port \":pw\" after host" for a password with a
		// '/'): keep only the cause, unquoted.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return fmt.Errorf("invalid DSN: %s; %s", unquoted(err.Error()), want)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("invalid DSN: scheme must be postgres or postgresql; %s", want)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("invalid DSN: no host; %s", want)
	}
	if port, err := strconv.Atoi(u.Port()); err != nil || port < 1 || port > 65535 {
		return fmt.Errorf("invalid DSN: missing or bad port; %s", want)
	}
	return nil
}

type rangeEntry struct {
	r     KeyRange
	text  string // as written, for messages
	i     int    // index in Config.Keyspace
	shard int
}

// checkKeyspace checks that the ranges name known shards, tile [0, 2^64)
// exactly, and leave no shard without a range.
func (c *Config) checkKeyspace(p *problems, shards map[string]int) []OwnedRange {
	if len(c.Keyspace) == 0 {
		p.add("keyspace", "at least one range is required (\"-\" is the whole keyspace)")
		return nil
	}
	entries := make([]rangeEntry, 0, len(c.Keyspace))
	owns := make([]bool, len(c.Shards))
	parsed := true // a range that is missing or malformed leaves a hole that is no real gap
	for i, rc := range c.Keyspace {
		path := fmt.Sprintf("keyspace[%d]", i)
		shard, known := shards[rc.Shard]
		switch {
		case rc.Shard == "":
			p.add(path+".shard", "required")
		case !known:
			p.add(path+".shard", "unknown shard %q", rc.Shard)
		default:
			owns[shard] = true
		}
		if rc.Range == "" {
			p.add(path+".range", "required")
			parsed = false
			continue
		}
		r, err := ParseKeyRange(rc.Range)
		if err != nil {
			p.add(path+".range", "%v", err)
			parsed = false
			continue
		}
		entries = append(entries, rangeEntry{r, rc.Range, i, shard})
	}
	for i, s := range c.Shards {
		if j, ok := shards[s.Name]; ok && j == i && !owns[i] {
			p.add(fmt.Sprintf("shards[%d]", i), "shard %s owns no keyspace range", s.Name)
		}
	}
	slices.SortStableFunc(entries, func(a, b rangeEntry) int { return cmp.Compare(a.r.Start, b.r.Start) })
	// covered is [0, covered.End) of the keyspace, grown by each range in
	// order of start; last is the range that reached furthest.
	var covered KeyRange
	var last *rangeEntry
	for k := range entries {
		e := &entries[k]
		path := fmt.Sprintf("keyspace[%d].range", e.i)
		switch {
		case last != nil && (covered.EndMax || e.r.Start < covered.End):
			p.add(path, "%q overlaps %q", e.text, last.text)
		case e.r.Start > covered.End && parsed:
			gap := KeyRange{Start: covered.End, End: e.r.Start}
			p.add(path, "gap before %q: no range covers %s", e.text, gap)
		}
		if !covered.EndMax && (e.r.EndMax || e.r.End > covered.End) {
			covered.End, covered.EndMax = e.r.End, e.r.EndMax
			last = e
		}
	}
	if !covered.EndMax && parsed {
		gap := KeyRange{Start: covered.End, EndMax: true}
		p.add(fmt.Sprintf("keyspace[%d].range", last.i), "gap after %q: no range covers %s", last.text, gap)
	}
	owned := make([]OwnedRange, len(entries))
	for k, e := range entries {
		owned[k] = OwnedRange{Range: e.r, Shard: e.shard}
	}
	return owned
}

func (c *Config) checkTables(p *problems) {
	// Sorted so that problems on one line come out in a stable order.
	names := make([]string, 0, len(c.Tables))
	for name := range c.Tables {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		t := c.Tables[name]
		path := "tables." + name
		if name == "" {
			p.add(path, "table name is empty")
		}
		if t.ShardKey == "" {
			p.add(path+".shard_key", "required")
		}
		if t.KeyType != "" && !t.KeyType.valid() {
			p.add(path+".key_type", "unknown key type %q, want bigint, int, smallint, text or uuid", t.KeyType)
		}
	}
	seen := make(map[string]int, len(c.ReferenceTables))
	for i, name := range c.ReferenceTables {
		path := fmt.Sprintf("reference_tables[%d]", i)
		if name == "" {
			p.add(path, "table name is empty")
			continue
		}
		if j, dup := seen[name]; dup {
			p.add(path, "duplicate reference table %q (also reference_tables[%d])", name, j)
			continue
		}
		seen[name] = i
		if _, sharded := c.Tables[name]; sharded {
			p.add(path, "table %q is both sharded (tables.%s) and a reference table", name, name)
		}
	}
}

// checkShardPools validates the shards' own pool sizes (PoolSizes).
func (c *Config) checkShardPools(p *problems) {
	for i, s := range c.Shards {
		path := fmt.Sprintf("shards[%d].", i)
		size := c.Pool.Size
		if s.PoolSize != nil {
			size = *s.PoolSize
			if size < 1 {
				p.add(path+"pool_size", "must be at least 1, got %d", size)
			}
		}
		if s.MinPoolSize != nil && (*s.MinPoolSize < 0 || *s.MinPoolSize > size) {
			p.add(path+"min_pool_size", "must be between 0 and the shard's pool size (%d), got %d", size, *s.MinPoolSize)
		}
		if s.ReservePoolSize != nil && *s.ReservePoolSize < 0 {
			p.add(path+"reserve_pool_size", "must not be negative, got %d", *s.ReservePoolSize)
		}
		if s.MaxDBConnections < 0 {
			p.add(path+"max_db_connections", "must not be negative (0: no cap), got %d", s.MaxDBConnections)
		}
	}
}

// checkUsers validates the per-user pool settings.
func (c *Config) checkUsers(p *problems) {
	names := slices.Sorted(maps.Keys(c.Users))
	for _, name := range names {
		u := c.Users[name]
		path := "users." + name
		if name == "" {
			p.add(path, "user name is empty")
		}
		switch u.PoolMode {
		case "", "transaction", "session", "statement":
		default:
			p.add(path+".pool_mode", "unknown mode %q, want transaction, session or statement", u.PoolMode)
		}
		if u.PoolSize < 0 {
			p.add(path+".pool_size", "must not be negative (0: no cap), got %d", u.PoolSize)
		}
		if u.MaxUserClientConnections < 0 {
			p.add(path+".max_user_client_connections", "must not be negative (0: no cap), got %d", u.MaxUserClientConnections)
		}
	}
}

// maxSocketPath is the longest Unix socket path Linux takes (sun_path is
// 108 bytes, NUL included).
const maxSocketPath = 107

// checkProcess validates the process settings: Unix socket, pidfile,
// connection logging, stats_period and workers.
func (c *Config) checkProcess(p *problems) {
	if c.UnixSocketDir == "" {
		if c.UnixSocketGroup != "" {
			p.add("unix_socket_group", "needs unix_socket_dir")
		}
	} else if n := len(filepath.Join(c.UnixSocketDir, ".s.PGSQL.65535")); n > maxSocketPath {
		p.add("unix_socket_dir", "too long for a socket path: %d bytes with the socket name, at most %d", n, maxSocketPath)
	}
	if c.StatsPeriod < 0 {
		p.add("stats_period", "must not be negative (0 disables)")
	}
	if c.Workers < 0 || c.Workers > MaxWorkers {
		p.add("workers", "must be between 0 (the runtime default: the CPUs the process may use) and %d, got %d", MaxWorkers, c.Workers)
	}
}
