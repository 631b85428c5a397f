package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardgate/shardgate/backend"
	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/topology"
)

// The admin console: database "shardgate", users in admin_users, simple
// query protocol only. Commands and column names follow PgBouncer's console
// where the concept is the same, so dashboards and habits carry over;
// shardgate adds a shard column where PgBouncer has one database per pool.

// clientInfo is what SHOW CLIENTS shows, fixed at startup.
type clientInfo struct {
	user, database, application string
	connected                   time.Time
}

func (c *client) adminLoop() error {
	for {
		if c.srv.draining.Load() {
			return c.fatal(pgerr.CodeAdminShutdown, "terminating connection: shardgate is shutting down")
		}
		c.idleRead.Store(true) // a drain may wake it
		typ, body, err := c.readMessage()
		c.idleRead.Store(false)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && c.srv.draining.Load() {
				continue
			}
			return err
		}
		switch typ {
		case 'Q':
			c.adminCommand(strings.TrimRight(string(body), "\x00"))
		case 'X':
			return nil
		case 'S':
			c.out = appendReadyForQuery(c.out, 'I')
		case 'P', 'B', 'D', 'E', 'C', 'H':
			// Answered once, at the Sync that ends the batch.
			if typ == 'P' {
				c.out = appendError(c.out, &pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "the admin console supports only the simple query protocol"})
			}
			continue
		default:
			return fmt.Errorf("invalid frontend message type %q", typ)
		}
		if err := c.flush(); err != nil {
			return err
		}
	}
}

func (c *client) adminCommand(sql string) {
	words := strings.Fields(strings.ToUpper(strings.TrimRight(strings.TrimSpace(sql), "; \n\t")))
	var err error
	switch {
	case len(words) == 0:
		c.out = appendEmpty(c.out, 'I')
	case len(words) == 1 && words[0] == "SHUTDOWN":
		// The whole answer goes out before the shutdown closes this
		// connection with the others.
		c.out = appendReadyForQuery(appendCommandComplete(c.out, "SHUTDOWN"), 'I')
		c.flush()
		c.srv.Shutdown()
		return
	case words[0] == "RESHARD":
		err = c.adminReshard(sql)
	case len(words) == 2 && words[0] == "SHOW":
		err = c.adminShow(words[1])
	case len(words) == 1:
		err = c.adminAction(words[0])
	default:
		err = fmt.Errorf("unknown command %q: try SHOW HELP", sql)
	}
	var pe *pgerr.Error
	switch {
	case errors.As(err, &pe):
		c.out = appendError(c.out, pe)
	case err != nil:
		c.out = appendError(c.out, &pgerr.Error{Code: pgerr.CodeSyntaxError, Message: err.Error()})
	}
	c.out = appendReadyForQuery(c.out, 'I')
}

func (c *client) adminAction(word string) error {
	s := c.srv
	switch word {
	case "RELOAD":
		if err := s.Reload(); err != nil {
			return fmt.Errorf("reload failed, old configuration kept: %w", err)
		}
	case "PAUSE":
		ctx, cancel := context.WithTimeout(c.ctx, 60*time.Second)
		defer cancel()
		for _, n := range s.rt.Load().backends.Nodes() {
			if err := n.Pool().Pause(ctx); err != nil {
				return err
			}
		}
	case "RESUME":
		for _, n := range s.rt.Load().backends.Nodes() {
			n.Pool().Resume()
		}
	case "RECONNECT":
		for _, n := range s.rt.Load().backends.Nodes() {
			n.Pool().Reconnect()
		}
	default:
		return fmt.Errorf("unknown command %q: try SHOW HELP", word)
	}
	c.out = appendCommandComplete(c.out, word)
	return nil
}

func (c *client) adminShow(what string) error {
	s := c.srv
	rt := s.rt.Load()
	topo := s.topo()
	var cols []string
	var rows [][]string
	switch what {
	case "HELP":
		cols = []string{"command"}
		for _, cmd := range []string{"SHOW POOLS|STATS|CLIENTS|SERVERS|SHARDS|CONFIG|ROUTER|VERSION|FENCES", "RELOAD", "PAUSE", "RESUME", "RECONNECT", "SHUTDOWN",
			"RESHARD FENCE 'shard' [TIMEOUT ms] [LEASE ms]", "RESHARD SWITCH 'json'", "RESHARD UNFENCE", "RESHARD DDL LOCK|UNLOCK"} {
			rows = append(rows, []string{cmd})
		}
	case "VERSION":
		cols, rows = []string{"version"}, [][]string{{"shardgate " + BuildVersion()}}
	case "POOLS":
		cols = []string{"database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode", "shard", "role", "sv_open", "paused"}
		for _, n := range rt.backends.Nodes() {
			st := n.Pool().Stats()
			rows = append(rows, []string{rt.cfg.Database, "", itoa(st.Active), itoa(st.Waiting), itoa(st.Active), itoa(st.Idle), "0", "0", itoa(st.Open - st.Active - st.Idle),
				itoa(int(st.MaxWait / time.Second)), itoa(int(st.MaxWait % time.Second / time.Microsecond)), rt.cfg.Pool.Mode, topo.Shards[n.Shard()].Name, healthColumns(rt.backends, n)[0], itoa(st.Open), strconv.FormatBool(st.Paused)})
		}
	case "STATS":
		cols = []string{"database", "total_xact_count", "total_query_count", "total_received", "total_sent", "total_xact_time", "total_query_time", "total_wait_time", "avg_xact_time", "avg_query_time", "shard", "role"}
		for _, n := range rt.backends.Nodes() {
			st := n.Pool().Stats()
			rows = append(rows, []string{rt.cfg.Database, i64(st.Xacts), i64(st.Queries), i64(st.Received), i64(st.Sent),
				us(st.XactTime), us(st.QueryTime), us(st.WaitTime), us(avg(st.XactTime, st.Xacts)), us(avg(st.QueryTime, st.Queries)), topo.Shards[n.Shard()].Name, healthColumns(rt.backends, n)[0]})
		}
	case "CLIENTS":
		cols = []string{"type", "user", "database", "state", "addr", "port", "connect_time", "request_time", "tls", "application_name", "shard"}
		s.clientsMu.Lock()
		for cl := range s.clients {
			info := cl.shown.info.Load()
			if info == nil {
				continue // still starting up
			}
			host, port := splitAddr(cl.conn.RemoteAddr().String())
			state, shard := "idle", ""
			if i := cl.shown.activeShard.Load(); i >= 0 && int(i) < len(topo.Shards) {
				state, shard = "active", topo.Shards[i].Name
			}
			rows = append(rows, []string{"C", info.user, info.database, state, host, port, stamp(info.connected), stamp(time.Unix(0, cl.shown.lastRequest.Load())),
				strconv.FormatBool(cl.tls), info.application, shard})
		}
		s.clientsMu.Unlock()
	case "SERVERS":
		cols = []string{"type", "user", "database", "state", "addr", "port", "connect_time", "request_time", "remote_pid", "shard", "role", "healthy", "lag_bytes", "lag_seconds", "banned_until"}
		for _, n := range rt.backends.Nodes() {
			servers := n.Pool().Servers()
			for _, sv := range servers {
				host, port := splitAddr(sv.Addr)
				rows = append(rows, append([]string{"S", "", rt.cfg.Database, sv.State, host, port, stamp(sv.ConnectTime), stamp(sv.RequestTime), strconv.FormatUint(uint64(sv.PID), 10), topo.Shards[n.Shard()].Name},
					healthColumns(rt.backends, n)...))
			}
			if len(servers) == 0 && n.Banned() {
				// A banned server's connections are closed: one row says so.
				host, port := "", ""
				if u, err := url.Parse(n.DSN()); err == nil {
					host, port = u.Hostname(), u.Port()
				}
				rows = append(rows, append([]string{"S", "", rt.cfg.Database, "banned", host, port, "", "", "0", topo.Shards[n.Shard()].Name},
					healthColumns(rt.backends, n)...))
			}
		}
	case "SHARDS":
		// One row per server: the primary, then its replicas.
		cols = []string{"shard", "primary", "replicas", "ranges", "pool_size", "sv_active", "sv_idle", "cl_waiting", "server", "role", "healthy", "lag_bytes", "lag_seconds", "banned_until", "lsn"}
		for _, n := range rt.backends.Nodes() {
			sh := topo.Shards[n.Shard()]
			var ranges []string
			for _, r := range topo.Ranges {
				if r.Shard == n.Shard() {
					ranges = append(ranges, r.Range.String())
				}
			}
			st := n.Pool().Stats()
			rows = append(rows, append([]string{sh.Name, topology.RedactDSN(sh.Primary), strconv.Itoa(len(sh.Replicas)), strings.Join(ranges, " "), itoa(rt.cfg.Pool.Size), itoa(st.Active), itoa(st.Idle), itoa(st.Waiting), topology.RedactDSN(n.DSN())},
				append(healthColumns(rt.backends, n), backend.FormatLSN(n.LSN()))...))
		}
	case "CONFIG":
		cols, rows = []string{"key", "value", "changeable"}, configRows(rt)
	case "FENCES":
		cols, rows = c.showFences()
	case "ROUTER":
		st := s.router.CacheStats()
		cols = []string{"cache_size", "cache_capacity", "cache_hits", "cache_misses", "cache_hit_ratio"}
		rows = [][]string{{itoa(st.Size), itoa(st.Capacity), i64(st.Hits), i64(st.Misses), strconv.FormatFloat(st.HitRatio(), 'f', 4, 64)}}
	default:
		return fmt.Errorf("unknown SHOW %s: try SHOW HELP", strings.ToLower(what))
	}
	c.appendTable(cols, rows)
	c.out = appendCommandComplete(c.out, "SHOW")
	return nil
}

func configRows(rt *config) [][]string {
	cfg, pc := rt.cfg, rt.cfg.Pool
	return [][]string{
		{"listen", cfg.Listen, "no"},
		{"database", cfg.Database, "yes"},
		{"pool_mode", pc.Mode, "yes"},
		{"pool_size", itoa(pc.Size), "yes"},
		{"min_pool_size", itoa(pc.MinSize), "yes"},
		{"reserve_pool_size", itoa(pc.ReserveSize), "yes"},
		{"reserve_pool_timeout", time.Duration(pc.ReserveTimeout).String(), "yes"},
		{"max_client_conn", itoa(pc.MaxClientConn), "yes"},
		{"query_wait_timeout", time.Duration(pc.QueryWaitTimeout).String(), "yes"},
		{"server_connect_timeout", time.Duration(pc.ServerConnectTimeout).String(), "yes"},
		{"server_idle_timeout", time.Duration(pc.ServerIdleTimeout).String(), "yes"},
		{"server_lifetime", time.Duration(pc.ServerLifetime).String(), "yes"},
		{"server_check_delay", time.Duration(pc.ServerCheckDelay).String(), "yes"},
		{"idle_transaction_timeout", time.Duration(pc.IdleTransactionTimeout).String(), "yes"},
		{"client_idle_timeout", time.Duration(pc.ClientIdleTimeout).String(), "yes"},
		{"prepared_statements", itoa(pc.PreparedStatements), "yes"},
		{"client_login_timeout", time.Duration(pc.ClientLoginTimeout).String(), "yes"},
		{"max_packet_size", itoa(pc.MaxPacketSize), "yes"},
		{"max_intermediate_result_size", strconv.FormatInt(cfg.MaxIntermediateResultSize, 10), "yes"},
		{"query_timeout", time.Duration(pc.QueryTimeout).String(), "yes"},
		{"tcp_keepalive", strconv.FormatBool(pc.TCPKeepalive), "no"},
		{"pin_session_state", strconv.FormatBool(pc.PinSessionState), "yes"},
		{"tcp_keepidle", time.Duration(pc.TCPKeepIdle).String(), "no"},
		{"tcp_keepintvl", time.Duration(pc.TCPKeepInterval).String(), "no"},
		{"tcp_keepcnt", itoa(pc.TCPKeepCount), "no"},
		{"auth_type", cfg.Auth.Type, "yes"},
		{"auth_file", cfg.Auth.File, "yes"},
		{"client_tls_sslmode", cfg.TLS.Mode, "yes"},
		{"server_tls_sslmode", cfg.ServerTLS.Mode, "yes"},
		{"admin_users", strings.Join(cfg.AdminUsers, ","), "yes"},
		{"shutdown_timeout", time.Duration(cfg.ShutdownTimeout).String(), "yes"},
		{"consistency", cfg.Consistency, "yes"},
		{"primary_reads", cfg.PrimaryReads, "yes"},
		{"ryw_wait", time.Duration(cfg.RYWWait).String(), "yes"},
		{"max_replica_lag", time.Duration(cfg.MaxReplicaLag).String(), "yes"},
		{"max_replica_lag_bytes", strconv.FormatInt(cfg.MaxReplicaLagBytes, 10), "yes"},
		{"health_check_interval", time.Duration(cfg.HealthCheckInterval).String(), "yes"},
		{"health_check_timeout", time.Duration(cfg.HealthCheckTimeout).String(), "yes"},
		{"ban_time", time.Duration(cfg.BanTime).String(), "yes"},
		{"default_shard", cfg.DefaultShard, "yes"},
	}
}

// appendTable writes a text-typed result set.
func (c *client) appendTable(cols []string, rows [][]string) {
	desc := pgproto3.RowDescription{}
	for _, name := range cols {
		desc.Fields = append(desc.Fields, pgproto3.FieldDescription{Name: []byte(name), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1})
	}
	c.out, _ = desc.Encode(c.out)
	for _, row := range rows {
		dr := pgproto3.DataRow{Values: make([][]byte, len(row))}
		for i, v := range row {
			dr.Values[i] = []byte(v)
		}
		c.out, _ = dr.Encode(c.out)
	}
}

func itoa(n int) string         { return strconv.Itoa(n) }
func i64(n int64) string        { return strconv.FormatInt(n, 10) }
func us(d time.Duration) string { return strconv.FormatInt(d.Microseconds(), 10) }

func avg(total time.Duration, n int64) time.Duration {
	if n == 0 {
		return 0
	}
	return total / time.Duration(n)
}

func stamp(t time.Time) string {
	if t.IsZero() || t.Unix() == 0 {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func splitAddr(addr string) (host, port string) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return addr, ""
	}
	return addr[:i], addr[i+1:]
}
