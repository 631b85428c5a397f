package proxy

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/topology"
)

// SHOW CONFIG and SET speak PgBouncer's setting names (pgbouncer.ini) where
// shardgate has the same setting, and print values as PgBouncer does:
// durations in seconds ("%g": 600, 0.5), flags as 0 and 1. Settings only
// shardgate has keep their names and follow PgBouncer's.

// setting is one row of SHOW CONFIG. set is nil for a setting SET cannot
// change (changeable "no"); it validates as loading the config would.
type setting struct {
	name string
	get  func(*topology.Config) string
	set  func(*topology.Config, string) error
}

// seconds prints a duration as PgBouncer prints its time settings.
func seconds(d topology.Duration) string {
	return strconv.FormatFloat(time.Duration(d).Seconds(), 'g', 6, 64)
}

// parseSeconds reads a duration as PgBouncer's SET does (seconds, maybe
// fractional) or as shardgate's config does ("250ms").
func parseSeconds(v string) (topology.Duration, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return topology.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: want seconds (600, 0.5) or a duration (250ms)", v)
	}
	return topology.Duration(d), nil
}

func durationSetting(name string, field func(*topology.Config) *topology.Duration, positive bool) setting {
	return setting{name: name,
		get: func(c *topology.Config) string { return seconds(*field(c)) },
		set: func(c *topology.Config, v string) error {
			d, err := parseSeconds(v)
			switch {
			case err != nil:
				return err
			case positive && d <= 0:
				return errors.New("must be positive")
			case d < 0:
				return errors.New("must not be negative (0 disables)")
			}
			*field(c) = d
			return nil
		}}
}

func intSetting(name string, field func(*topology.Config) *int, lo, hi func(*topology.Config) int) setting {
	return setting{name: name,
		get: func(c *topology.Config) string { return itoa(*field(c)) },
		set: func(c *topology.Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("invalid integer %q", v)
			}
			if n < lo(c) || n > hi(c) {
				return fmt.Errorf("must be between %d and %d, got %d", lo(c), hi(c), n)
			}
			*field(c) = n
			return nil
		}}
}

func int64Setting(name string, field func(*topology.Config) *int64, lo int64) setting {
	return setting{name: name,
		get: func(c *topology.Config) string { return i64(*field(c)) },
		set: func(c *topology.Config, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < lo {
				return fmt.Errorf("want an integer of at least %d, got %q", lo, v)
			}
			*field(c) = n
			return nil
		}}
}

// flagSetting is a boolean; PgBouncer prints and takes 0 and 1.
func flagSetting(name string, field func(*topology.Config) *bool) setting {
	return setting{name: name,
		get: func(c *topology.Config) string { return boolInt(*field(c)) },
		set: func(c *topology.Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("invalid boolean %q: want 0 or 1", v)
			}
			*field(c) = b
			return nil
		}}
}

func choiceSetting(name string, field func(*topology.Config) *string, choices ...string) setting {
	return setting{name: name,
		get: func(c *topology.Config) string { return *field(c) },
		set: func(c *topology.Config, v string) error {
			for _, ch := range choices {
				if strings.EqualFold(v, ch) {
					*field(c) = ch
					return nil
				}
			}
			return fmt.Errorf("invalid value %q: want %s", v, strings.Join(choices, ", "))
		}}
}

func fixed(name string, get func(*topology.Config) string) setting {
	return setting{name: name, get: get}
}

func constant(n int) func(*topology.Config) int { return func(*topology.Config) int { return n } }

// pgbouncerSettings have PgBouncer's names; SHOW CONFIG lists them sorted,
// as PgBouncer does.
func pgbouncerSettings() []setting {
	pool := func(c *topology.Config) *topology.PoolConfig { return &c.Pool }
	listenPart := func(port bool) func(*topology.Config) string {
		return func(c *topology.Config) string {
			host, p, err := net.SplitHostPort(c.Listen)
			if err != nil {
				return c.Listen
			}
			if port {
				return p
			}
			return host
		}
	}
	out := []setting{
		fixed("listen_addr", listenPart(false)),
		fixed("listen_port", listenPart(true)),
		choiceSetting("pool_mode", func(c *topology.Config) *string { return &pool(c).Mode }, "session", "transaction", "statement"),
		intSetting("default_pool_size", func(c *topology.Config) *int { return &pool(c).Size }, constant(1), constant(1<<20)),
		intSetting("min_pool_size", func(c *topology.Config) *int { return &pool(c).MinSize }, constant(0), func(c *topology.Config) int { return c.Pool.Size }),
		intSetting("reserve_pool_size", func(c *topology.Config) *int { return &pool(c).ReserveSize }, constant(0), constant(1<<20)),
		durationSetting("reserve_pool_timeout", func(c *topology.Config) *topology.Duration { return &pool(c).ReserveTimeout }, false),
		intSetting("max_client_conn", func(c *topology.Config) *int { return &pool(c).MaxClientConn }, constant(1), constant(1<<30)),
		durationSetting("query_wait_timeout", func(c *topology.Config) *topology.Duration { return &pool(c).QueryWaitTimeout }, true),
		durationSetting("server_connect_timeout", func(c *topology.Config) *topology.Duration { return &pool(c).ServerConnectTimeout }, true),
		durationSetting("server_idle_timeout", func(c *topology.Config) *topology.Duration { return &pool(c).ServerIdleTimeout }, false),
		durationSetting("server_lifetime", func(c *topology.Config) *topology.Duration { return &pool(c).ServerLifetime }, false),
		durationSetting("server_check_delay", func(c *topology.Config) *topology.Duration { return &pool(c).ServerCheckDelay }, false),
		durationSetting("idle_transaction_timeout", func(c *topology.Config) *topology.Duration { return &pool(c).IdleTransactionTimeout }, false),
		durationSetting("client_idle_timeout", func(c *topology.Config) *topology.Duration { return &pool(c).ClientIdleTimeout }, false),
		durationSetting("client_login_timeout", func(c *topology.Config) *topology.Duration { return &pool(c).ClientLoginTimeout }, false),
		durationSetting("query_timeout", func(c *topology.Config) *topology.Duration { return &pool(c).QueryTimeout }, false),
		intSetting("max_prepared_statements", func(c *topology.Config) *int { return &pool(c).PreparedStatements }, constant(1), constant(1<<20)),
		intSetting("max_packet_size", func(c *topology.Config) *int { return &pool(c).MaxPacketSize }, constant(16<<10), constant(topology.MaxPacketSizeLimit)),
		// Keepalives are set on each socket as it opens: a restart applies them.
		fixed("tcp_keepalive", func(c *topology.Config) string { return boolInt(c.Pool.TCPKeepalive) }),
		fixed("tcp_keepidle", func(c *topology.Config) string { return seconds(c.Pool.TCPKeepIdle) }),
		fixed("tcp_keepintvl", func(c *topology.Config) string { return seconds(c.Pool.TCPKeepInterval) }),
		fixed("tcp_keepcnt", func(c *topology.Config) string { return itoa(c.Pool.TCPKeepCount) }),
		// Auth and TLS change with their files, on RELOAD.
		fixed("auth_type", func(c *topology.Config) string { return c.Auth.Type }),
		fixed("auth_file", func(c *topology.Config) string { return c.Auth.File }),
		fixed("auth_query", func(c *topology.Config) string { return c.Auth.Query }),
		// The process's own settings: sockets and pidfile change on restart.
		fixed("unix_socket_dir", func(c *topology.Config) string { return c.UnixSocketDir }),
		fixed("unix_socket_mode", func(c *topology.Config) string { return fmt.Sprintf("%04o", c.UnixSocketMode) }),
		fixed("unix_socket_group", func(c *topology.Config) string { return c.UnixSocketGroup }),
		fixed("pidfile", func(c *topology.Config) string { return c.PidFile }),
		flagSetting("log_connections", func(c *topology.Config) *bool { return &c.LogConnections }),
		flagSetting("log_disconnections", func(c *topology.Config) *bool { return &c.LogDisconnections }),
		durationSetting("stats_period", func(c *topology.Config) *topology.Duration { return &c.StatsPeriod }, false),
		fixed("client_tls_sslmode", func(c *topology.Config) string { return c.TLS.Mode }),
		fixed("client_tls_cert_file", func(c *topology.Config) string { return c.TLS.Cert }),
		fixed("client_tls_key_file", func(c *topology.Config) string { return c.TLS.Key }),
		fixed("server_tls_sslmode", func(c *topology.Config) string { return c.ServerTLS.Mode }),
		fixed("server_tls_ca_file", func(c *topology.Config) string { return c.ServerTLS.CA }),
		{name: "admin_users",
			get: func(c *topology.Config) string { return strings.Join(c.AdminUsers, ",") },
			set: func(c *topology.Config, v string) error {
				c.AdminUsers = nil
				for _, u := range strings.Split(v, ",") {
					if u = strings.TrimSpace(u); u != "" {
						c.AdminUsers = append(c.AdminUsers, u)
					}
				}
				return nil
			}},
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// shardgateSettings are shardgate's own, listed after PgBouncer's.
func shardgateSettings() []setting {
	return []setting{
		fixed("database", func(c *topology.Config) string { return c.Database }),
		fixed("auth_query_shard", func(c *topology.Config) string { return c.Auth.QueryShard }),
		int64Setting("max_intermediate_result_size", func(c *topology.Config) *int64 { return &c.MaxIntermediateResultSize }, 1),
		flagSetting("pin_session_state", func(c *topology.Config) *bool { return &c.Pool.PinSessionState }),
		flagSetting("allow_broadcast_writes", func(c *topology.Config) *bool { return &c.AllowBroadcastWrites }),
		fixed("two_phase_commit", func(c *topology.Config) string { return boolInt(c.TwoPhaseCommit) }),
		durationSetting("shutdown_timeout", func(c *topology.Config) *topology.Duration { return &c.ShutdownTimeout }, false),
		choiceSetting("consistency", func(c *topology.Config) *string { return &c.Consistency }, "read_your_writes", "eventual", "primary"),
		choiceSetting("primary_reads", func(c *topology.Config) *string { return &c.PrimaryReads }, "fallback", "always", "never"),
		durationSetting("ryw_wait", func(c *topology.Config) *topology.Duration { return &c.RYWWait }, false),
		durationSetting("max_replica_lag", func(c *topology.Config) *topology.Duration { return &c.MaxReplicaLag }, false),
		int64Setting("max_replica_lag_bytes", func(c *topology.Config) *int64 { return &c.MaxReplicaLagBytes }, 0),
		durationSetting("health_check_interval", func(c *topology.Config) *topology.Duration { return &c.HealthCheckInterval }, true),
		durationSetting("health_check_timeout", func(c *topology.Config) *topology.Duration { return &c.HealthCheckTimeout }, true),
		durationSetting("ban_time", func(c *topology.Config) *topology.Duration { return &c.BanTime }, false),
		durationSetting("log_min_duration", func(c *topology.Config) *topology.Duration { return &c.LogMinDuration }, false),
		fixed("default_shard", func(c *topology.Config) string { return c.DefaultShard }),
		// The process's GOMAXPROCS, 0 for the runtime's default: `shardgate
		// serve` applies it (Server.OnApply); a proxy embedded elsewhere
		// (tests, dev) only shows it.
		intSetting("workers", func(c *topology.Config) *int { return &c.Workers }, constant(0), constant(topology.MaxWorkers)),
	}
}

func allSettings() []setting { return append(pgbouncerSettings(), shardgateSettings()...) }

// defaultsYAML is the smallest config that loads: its values are the
// defaults SHOW CONFIG prints.
const defaultsYAML = "database: db\nshards: [{name: s0, primary: 'postgres://u@localhost:5432/db'}]\nkeyspace: [{range: '-', shard: s0}]\n"

// showConfig: doc/usage.md "SHOW CONFIG".
func (c *client) showConfig() ([]string, [][]string) {
	cfg := c.srv.rt.Load().cfg
	defaults, err := topology.ParseConfig("defaults", []byte(defaultsYAML))
	if err != nil {
		defaults = nil // a change to the config's rules; defaults show as NULL
	}
	var rows [][]string
	for _, st := range allSettings() {
		def := sqlNull
		if defaults != nil {
			def = st.get(defaults)
		}
		changeable := "no"
		if st.set != nil {
			changeable = "yes"
		}
		rows = append(rows, []string{st.name, st.get(cfg), def, changeable})
	}
	return []string{"key", "value", "default", "changeable"}, rows
}

// setSyntax is PgBouncer's SET key = arg; TO is accepted too, as in SQL.
var setSyntax = regexp.MustCompile(`(?is)^SET\s+([a-z_][a-z0-9_]*)\s*(?:=|\s+TO\s+)\s*(.+)$`)

// adminSet changes one setting on a copy of the running config and
// applies it as RELOAD would.
func (c *client) adminSet(sql string) error {
	m := setSyntax.FindStringSubmatch(sql)
	if m == nil {
		return errors.New("syntax: SET key = value")
	}
	key, value := strings.ToLower(m[1]), unquoteSetValue(strings.TrimSpace(m[2]))
	var st *setting
	for _, s := range allSettings() {
		if s.name == key {
			st = &s
			break
		}
	}
	switch {
	case st == nil:
		return &pgerr.Error{Code: pgerr.CodeInvalidParameterValue, Message: fmt.Sprintf("unrecognized configuration parameter %q: see SHOW CONFIG", key)}
	case st.set == nil:
		return &pgerr.Error{Code: pgerr.CodeInvalidParameterValue, Message: fmt.Sprintf("parameter %q cannot be changed without restarting shardgate (changeable: no)", key)}
	}
	next := *c.srv.rt.Load().cfg
	if err := st.set(&next, value); err != nil {
		return &pgerr.Error{Code: pgerr.CodeInvalidParameterValue, Message: fmt.Sprintf("SET %s: %v", key, err)}
	}
	if err := c.srv.Apply(&next); err != nil {
		return &pgerr.Error{Code: pgerr.CodeInvalidParameterValue, Message: fmt.Sprintf("SET %s: %v", key, err)}
	}
	// PgBouncer's command tag.
	c.out = appendCommandComplete(c.out, "SET "+key+"="+value)
	return nil
}

func unquoteSetValue(v string) string {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		return strings.ReplaceAll(v[1:len(v)-1], "''", "'")
	}
	return v
}
