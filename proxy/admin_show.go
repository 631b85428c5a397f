package proxy

import (
	"crypto/tls"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/backend"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/topology"
)

// The SHOW commands PgBouncer has print PgBouncer's columns first, in its
// order (doc/usage.md, "Show commands", and src/admin.c and src/stats.c
// where the order differs from the prose), then shardgate's own. A pool
// is one (shard, role) server; shardgate serves one database, so the rows
// PgBouncer has per database are per pool here.

// serverTarget is where a pool connects, from its DSN.
type serverTarget struct{ user, host, port, database string }

func targetOf(n *backend.Node) serverTarget {
	cfg, err := pgconn.ParseConfig(n.DSN())
	if err != nil {
		// Validated at load; an unparsable DSN would have no pool.
		return serverTarget{}
	}
	return serverTarget{cfg.User, cfg.Host, strconv.Itoa(int(cfg.Port)), cfg.Database}
}

func (c *client) poolLabels(n *backend.Node) (shard, role string) {
	rt := c.srv.rt.Load()
	return c.srv.topo().Shards[n.Shard()].Name, healthColumns(rt.backends, n)[0]
}

// showPools: doc/usage.md "SHOW POOLS".
func (c *client) showPools() ([]string, [][]string) {
	rt := c.srv.rt.Load()
	cols := []string{"database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
		"sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
		"maxwait", "maxwait_us", "pool_mode", "load_balance_hosts",
		"shard", "role", "sv_open", "paused"}
	var rows [][]string
	for _, n := range rt.backends.Nodes() {
		st := n.Pool().Stats()
		shard, role := c.poolLabels(n)
		// Cancel requests are forwarded as they arrive, never queued:
		// the cancel columns are 0. A client holding a connection is
		// linked to it, so cl_active is sv_active.
		rows = append(rows, []string{rt.cfg.Database, targetOf(n).user, itoa(st.Active), itoa(st.Waiting), "0", "0",
			itoa(st.Active), "0", "0", itoa(st.Idle - st.Used), itoa(st.Used), "0", itoa(st.Open - st.Active - st.Idle),
			itoa(int(st.MaxWait / time.Second)), itoa(int(st.MaxWait % time.Second / time.Microsecond)), rt.cfg.Pool.Mode, sqlNull,
			shard, role, itoa(st.Open), strconv.FormatBool(st.Paused)})
	}
	return cols, rows
}

// statsNames are SHOW STATS's counters after "database", in PgBouncer's
// order (src/stats.c; doc/usage.md "SHOW STATS" describes the same names).
var statsNames = []string{
	"total_server_assignment_count", "total_xact_count", "total_query_count", "total_received", "total_sent",
	"total_xact_time", "total_query_time", "total_wait_time", "total_client_parse_count", "total_server_parse_count",
	"total_bind_count", "total_client_login_count",
	"avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_recv", "avg_sent",
	"avg_xact_time", "avg_query_time", "avg_wait_time", "avg_client_parse_count", "avg_server_parse_count",
	"avg_bind_count", "avg_client_login_count",
}

// totalsNames are SHOW TOTALS's row names (src/stats.c show_stat_totals).
var totalsNames = []string{
	"total_server_assignment_count", "total_xact_count", "total_query_count", "total_client_bytes", "total_server_bytes",
	"total_xact_time", "total_query_time", "total_wait_time", "total_ps_client_parse_count", "total_ps_server_parse_count",
	"total_ps_bind_count", "total_client_login_count",
	"avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_client_bytes", "avg_server_bytes",
	"avg_xact_time", "avg_query_time", "avg_wait_time", "avg_ps_client_parse_count", "avg_ps_server_parse_count",
	"avg_ps_bind_count", "avg_client_login_count",
}

// statsValues are the 24 values of statsNames. Prepared-statement counts
// are not kept (0). Client logins are counted for the proxy, not per
// pool: logins is 0 in pool rows and the proxy's count in SHOW TOTALS.
func statsValues(cur, delta pool.Stats, period time.Duration, logins, loginsDelta int64) []string {
	perSec := func(n int64) string {
		if period <= 0 {
			return "0"
		}
		return i64(int64(float64(n) / period.Seconds()))
	}
	return []string{
		i64(cur.Assignments), i64(cur.Xacts), i64(cur.Queries), i64(cur.Received), i64(cur.Sent),
		us(cur.XactTime), us(cur.QueryTime), us(cur.WaitTime), "0", "0", "0", i64(logins),
		perSec(delta.Assignments), perSec(delta.Xacts), perSec(delta.Queries), perSec(delta.Received), perSec(delta.Sent),
		us(avg(delta.XactTime, delta.Xacts)), us(avg(delta.QueryTime, delta.Queries)), us(avg(delta.WaitTime, delta.Assignments)),
		"0", "0", "0", perSec(loginsDelta),
	}
}

// showStats: doc/usage.md "SHOW STATS".
func (c *client) showStats() ([]string, [][]string) {
	rt := c.srv.rt.Load()
	cols := append(append([]string{"database"}, statsNames...), "shard", "role")
	var rows [][]string
	now := time.Now()
	for _, n := range rt.backends.Nodes() {
		cur, delta, period := c.srv.admin.averages(n.Pool(), now)
		shard, role := c.poolLabels(n)
		rows = append(rows, append(append([]string{rt.cfg.Database}, statsValues(cur, delta, period, 0, 0)...), shard, role))
	}
	return cols, rows
}

// showTotals: doc/usage.md "SHOW TOTALS", one (name, value) row per
// counter, summed over the pools.
func (c *client) showTotals() ([]string, [][]string) {
	rt := c.srv.rt.Load()
	var cur, delta pool.Stats
	var period time.Duration
	now := time.Now()
	for _, n := range rt.backends.Nodes() {
		pc, pd, pp := c.srv.admin.averages(n.Pool(), now)
		cur, delta, period = addStats(cur, pc), addStats(delta, pd), max(period, pp)
	}
	values := statsValues(cur, delta, period, c.srv.admin.logins.Load(), 0)
	rows := make([][]string, len(totalsNames))
	for i, name := range totalsNames {
		rows[i] = []string{name, values[i]}
	}
	return []string{"name", "value"}, rows
}

func addStats(a, b pool.Stats) pool.Stats {
	a.Assignments += b.Assignments
	a.Xacts += b.Xacts
	a.Queries += b.Queries
	a.Received += b.Received
	a.Sent += b.Sent
	a.XactTime += b.XactTime
	a.QueryTime += b.QueryTime
	a.WaitTime += b.WaitTime
	return a
}

// socketColumns are SHOW CLIENTS's and SHOW SERVERS's (src/admin.c
// socket_header; doc/usage.md "SHOW SERVERS", "SHOW CLIENTS").
var socketColumns = []string{"type", "user", "database", "replication", "state", "addr", "port", "local_addr", "local_port",
	"connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls",
	"application_name", "prepared_statements", "id"}

// showClients: doc/usage.md "SHOW CLIENTS".
func (c *client) showClients() ([]string, [][]string) {
	s := c.srv
	topo := s.topo()
	cols := append(append([]string{}, socketColumns...), "shard")
	var rows [][]string
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	for cl := range s.clients {
		info := cl.shown.info.Load()
		if info == nil {
			continue // still starting up
		}
		host, port := splitAddr(cl.conn.RemoteAddr().String())
		lhost, lport := splitAddr(cl.raw.LocalAddr().String())
		state, shard := "idle", ""
		if i := cl.shown.activeShard.Load(); i >= 0 && int(i) < len(topo.Shards) {
			state, shard = "active", topo.Shards[i].Name
		}
		// remote_pid is known only for Unix sockets; prepared statements
		// belong to the client's goroutine and are not counted here.
		rows = append(rows, []string{"C", info.user, info.database, "none", state, host, port, lhost, lport,
			stamp(info.connected), stamp(time.Unix(0, cl.shown.lastRequest.Load())), "0", "0", "0",
			fmt.Sprintf("%p", cl), "", "0", tlsInfo(cl), info.application, "0", strconv.FormatUint(cl.id, 10), shard})
	}
	return cols, rows
}

func tlsInfo(cl *client) string {
	tc, ok := cl.conn.(*tls.Conn)
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	return tls.VersionName(st.Version) + "/" + tls.CipherSuiteName(st.CipherSuite)
}

// showServers: doc/usage.md "SHOW SERVERS".
func (c *client) showServers() ([]string, [][]string) {
	rt := c.srv.rt.Load()
	cols := append(append([]string{}, socketColumns...), "shard", "role", "healthy", "lag_bytes", "lag_seconds", "banned_until")
	var rows [][]string
	for _, n := range rt.backends.Nodes() {
		servers := n.Pool().Servers()
		shard, _ := c.poolLabels(n)
		target := targetOf(n)
		for _, sv := range servers {
			host, port := splitAddr(sv.Addr)
			lhost, lport := splitAddr(sv.Local)
			rows = append(rows, append([]string{"S", target.user, rt.cfg.Database, "none", sv.State, host, port, lhost, lport,
				stamp(sv.ConnectTime), stamp(sv.RequestTime), "0", "0", boolInt(sv.CloseNeeded), sv.Ptr, "",
				strconv.FormatUint(uint64(sv.PID), 10), sv.TLS, "", itoa(sv.Prepared), strconv.FormatUint(sv.ID, 10), shard},
				healthColumns(rt.backends, n)...))
		}
		if len(servers) == 0 && n.Banned() {
			// A banned server's connections are closed: one row says so.
			rows = append(rows, append([]string{"S", target.user, rt.cfg.Database, "none", "banned", target.host, target.port, "", "",
				"", "", "0", "0", "0", "", "", "0", "", "", "0", "0", shard},
				healthColumns(rt.backends, n)...))
		}
	}
	return cols, rows
}

func boolInt(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// showDatabases: doc/usage.md "SHOW DATABASES", a row per pool. force_user
// is the DSN's user: shardgate connects as it whatever the client's user.
func (c *client) showDatabases() ([]string, [][]string) {
	rt := c.srv.rt.Load()
	pc := rt.cfg.Pool
	cols := []string{"name", "host", "port", "database", "force_user", "pool_size", "min_pool_size", "reserve_pool_size",
		"server_lifetime", "pool_mode", "load_balance_hosts", "max_connections", "current_connections",
		"max_client_connections", "current_client_connections", "paused", "disabled",
		"shard", "role"}
	clients := c.clientsByUser()
	total := 0
	for _, n := range clients {
		total += n
	}
	var rows [][]string
	for _, n := range rt.backends.Nodes() {
		st := n.Pool().Stats()
		t := targetOf(n)
		shard, role := c.poolLabels(n)
		// pool_mode is NULL: the database has no override of the global
		// pool_mode (SHOW CONFIG). The sizes are the shard's (shards[]
		// overrides pool:); max_connections is the pool's cap.
		size, minSize, reserve := rt.cfg.PoolSizes(n.Shard())
		rows = append(rows, []string{rt.cfg.Database, t.host, t.port, t.database, t.user, itoa(size), itoa(minSize), itoa(reserve),
			i64(int64(time.Duration(pc.ServerLifetime) / time.Second)), sqlNull, sqlNull, itoa(size + reserve), itoa(st.Open),
			itoa(pc.MaxClientConn), itoa(total), boolInt(st.Paused), boolInt(c.srv.admin.disabled.Load()),
			shard, role})
	}
	return cols, rows
}

// clientsByUser counts the logged-in clients of the database by user.
func (c *client) clientsByUser() map[string]int {
	s := c.srv
	out := map[string]int{}
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	for cl := range s.clients {
		if info := cl.shown.info.Load(); info != nil && info.database != adminDatabase {
			out[info.user]++
		}
	}
	return out
}

// showUsers: doc/usage.md "SHOW USERS". The users are those the config
// names (auth.users, admin_users), those the pools log in as, and those
// connected. No user has overrides or limits (PgBouncer's empty, NULL
// and 0).
func (c *client) showUsers() ([]string, [][]string) {
	rt := c.srv.rt.Load()
	cols := []string{"name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections", "current_connections",
		"max_user_client_connections", "current_client_connections"}
	servers := map[string]int{}
	for _, n := range rt.backends.Nodes() {
		servers[targetOf(n).user] += n.Pool().Stats().Open
	}
	clients := c.clientsByUser()
	names := map[string]bool{}
	for _, u := range rt.cfg.Auth.Users {
		names[u.Name] = true
	}
	for _, u := range rt.cfg.AdminUsers {
		names[u] = true
	}
	for u := range servers {
		names[u] = true
	}
	for u := range clients {
		names[u] = true
	}
	for u := range rt.cfg.Users {
		names[u] = true
	}
	sorted := make([]string, 0, len(names))
	for u := range names {
		sorted = append(sorted, u)
	}
	sort.Strings(sorted)
	rows := make([][]string, 0, len(sorted))
	for _, u := range sorted {
		// The users section's limits (PgBouncer's [users]); 0 and NULL:
		// none, as PgBouncer shows them.
		lim := rt.cfg.Users[u]
		mode := sqlNull
		if lim.PoolMode != "" {
			mode = lim.PoolMode
		}
		// max_user_connections (server connections over every pool) has
		// no equivalent: pool_size caps each pool.
		rows = append(rows, []string{u, itoa(lim.PoolSize), "", mode, "0", itoa(servers[u]), itoa(lim.MaxUserClientConnections), itoa(clients[u])})
	}
	return cols, rows
}

// showLists: doc/usage.md "SHOW LISTS"; PgBouncer sends (list, items)
// rows, in src/admin.c's order. There are no peers, no DNS cache and no
// free lists (the Go allocator keeps none a proxy could count).
func (c *client) showLists() ([]string, [][]string) {
	s := c.srv
	rt := s.rt.Load()
	_, users := c.showUsers()
	servers := 0
	for _, n := range rt.backends.Nodes() {
		servers += n.Pool().Stats().Open
	}
	s.clientsMu.Lock()
	clients := len(s.clients)
	s.clientsMu.Unlock()
	logins := s.logins.len()
	items := []struct {
		name string
		n    int
	}{
		{"databases", 1}, {"users", len(users)}, {"peers", 0}, {"pools", len(rt.backends.Nodes())}, {"peer_pools", 0},
		{"free_clients", 0}, {"used_clients", clients - logins}, {"login_clients", logins},
		{"free_servers", 0}, {"used_servers", servers},
		{"dns_names", 0}, {"dns_zones", 0}, {"dns_queries", 0}, {"dns_pending", 0},
	}
	rows := make([][]string, len(items))
	for i, it := range items {
		rows[i] = []string{it.name, itoa(it.n)}
	}
	return []string{"list", "items"}, rows
}

// showState: doc/usage.md "SHOW STATE".
func (c *client) showState() ([]string, [][]string) {
	paused := false
	for _, n := range c.srv.rt.Load().backends.Nodes() {
		paused = paused || n.Pool().Stats().Paused
	}
	suspended := c.srv.admin.isSuspended()
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	return []string{"key", "value"}, [][]string{
		{"active", yes(!paused && !suspended)}, {"paused", yes(paused)}, {"suspended", yes(suspended)},
	}
}

func (c *client) showShards() ([]string, [][]string) {
	rt := c.srv.rt.Load()
	topo := c.srv.topo()
	// One row per server: the primary, then its replicas.
	cols := []string{"shard", "primary", "replicas", "ranges", "pool_size", "sv_active", "sv_idle", "cl_waiting", "server", "role", "healthy", "lag_bytes", "lag_seconds", "banned_until", "lsn"}
	var rows [][]string
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
	return cols, rows
}

func (c *client) showRouter() ([]string, [][]string) {
	st := c.srv.router.CacheStats()
	return []string{"cache_size", "cache_capacity", "cache_hits", "cache_misses", "cache_hit_ratio"},
		[][]string{{itoa(st.Size), itoa(st.Capacity), i64(st.Hits), i64(st.Misses), strconv.FormatFloat(st.HitRatio(), 'f', 4, 64)}}
}

// showHelp lists the console's commands.
func (c *client) showHelp() ([]string, [][]string) {
	var shows []string
	for name := range adminShows() {
		shows = append(shows, name)
	}
	sort.Strings(shows)
	rows := [][]string{{"SHOW " + strings.Join(shows, "|")}}
	for _, cmd := range []string{"SET key = arg", "RELOAD", "PAUSE [db]", "RESUME [db]", "SUSPEND", "DISABLE db", "ENABLE db",
		"RECONNECT [db]", "KILL [db]", "WAIT_CLOSE [db]", "SHUTDOWN",
		"RESHARD FENCE 'shard' [TIMEOUT ms] [LEASE ms]", "RESHARD SWITCH 'json'", "RESHARD UNFENCE", "RESHARD DDL LOCK|UNLOCK"} {
		rows = append(rows, []string{cmd})
	}
	return []string{"command"}, rows
}
