package proxy_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/topology"
)

// adminRows runs a console command and returns its rows as column → value.
func adminRows(t *testing.T, admin *pgconn.PgConn, cmd string) []map[string]string {
	t.Helper()
	res, err := admin.Exec(t.Context(), cmd).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	var out []map[string]string
	for _, row := range res[0].Rows {
		m := map[string]string{}
		for i, f := range res[0].FieldDescriptions {
			m[f.Name] = string(row[i])
		}
		out = append(out, m)
	}
	return out
}

func adminConn(t *testing.T, addr string) *pgconn.PgConn {
	t.Helper()
	conn, err := pgconn.Connect(t.Context(), "postgres://admin@"+addr+"/shardgate?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestAdminConsole(t *testing.T) {
	_, addr, stop, err := startServer(func(c *topology.Config) { c.AdminUsers = []string{"admin"} })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx := t.Context()
	if _, err := pgconn.Connect(ctx, "postgres://someone@"+addr+"/shardgate?sslmode=disable"); sqlState(err) != "28000" {
		t.Fatalf("non-admin user: %v, want 28000", err)
	}
	admin := adminConn(t, addr)
	app, err := pgx.Connect(ctx, "postgres://postgres@"+addr+"/app?sslmode=disable&application_name=dashboard-test")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	for i := 0; i < 10; i++ {
		if _, err := app.Exec(ctx, "SELECT * FROM users WHERE id = $1", i); err != nil {
			t.Fatal(err)
		}
	}

	pools := slices.DeleteFunc(adminRows(t, admin, "SHOW POOLS"), func(r map[string]string) bool { return r["role"] != "primary" })
	if len(pools) != len(cluster.Shards) || pools[0]["pool_mode"] != "transaction" || pools[0]["cl_active"] == "" || pools[0]["sv_idle"] == "" {
		t.Fatalf("SHOW POOLS: %v", pools)
	}
	var queries int
	for _, row := range adminRows(t, admin, "SHOW STATS") {
		n, _ := strconv.Atoi(row["total_query_count"])
		queries += n
	}
	if queries < 10 {
		t.Fatalf("SHOW STATS counts %d queries, want at least 10", queries)
	}
	clients := adminRows(t, admin, "show clients;")
	if !slices.ContainsFunc(clients, func(r map[string]string) bool {
		return r["application_name"] == "dashboard-test" && r["state"] == "idle"
	}) {
		t.Fatalf("SHOW CLIENTS lacks the app client: %v", clients)
	}
	servers := adminRows(t, admin, "SHOW SERVERS")
	if len(servers) == 0 || servers[0]["remote_pid"] == "" {
		t.Fatalf("SHOW SERVERS: %v", servers)
	}
	shards := slices.DeleteFunc(adminRows(t, admin, "SHOW SHARDS"), func(r map[string]string) bool { return r["role"] != "primary" })
	if len(shards) != 2 || shards[0]["ranges"] != "-80" || shards[1]["ranges"] != "80-" {
		t.Fatalf("SHOW SHARDS: %v", shards)
	}
	if cfg := adminRows(t, admin, "SHOW CONFIG"); !slices.ContainsFunc(cfg, func(r map[string]string) bool { return r["key"] == "default_pool_size" && r["value"] == "20" }) {
		t.Fatalf("SHOW CONFIG: %v", cfg)
	}
	if v := adminRows(t, admin, "SHOW VERSION"); !strings.HasPrefix(v[0]["version"], "shardgate") {
		t.Fatalf("SHOW VERSION: %v", v)
	}
	if _, err := admin.Exec(ctx, "SHOW NONSENSE").ReadAll(); err == nil {
		t.Fatal("unknown SHOW accepted")
	}

	// RECONNECT: the next query runs on a new server connection.
	pidOf := func() int32 {
		var pid int32
		if err := app.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		return pid
	}
	before := map[int32]bool{}
	for _, row := range adminRows(t, admin, "SHOW SERVERS") {
		pid, _ := strconv.Atoi(row["remote_pid"])
		before[int32(pid)] = true
	}
	adminRows(t, admin, "RECONNECT")
	if pid := pidOf(); before[pid] {
		t.Fatalf("after RECONNECT the query ran on old server connection %d", pid)
	}

	// PAUSE waits for the open transaction; clients queue until RESUME.
	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT * FROM users WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	paused := make(chan error, 1)
	go func() { _, err := admin.Exec(context.Background(), "PAUSE").ReadAll(); paused <- err }()
	select {
	case <-paused:
		t.Fatal("PAUSE returned while a transaction was open")
	case <-time.After(200 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-paused; err != nil {
		t.Fatal(err)
	}
	queued := make(chan error, 1)
	go func() { _, err := app.Exec(context.Background(), "SELECT * FROM users WHERE id = 2"); queued <- err }()
	select {
	case err := <-queued:
		t.Fatalf("a query ran while paused: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	admin2 := adminConn(t, addr)
	adminRows(t, admin2, "RESUME")
	if err := <-queued; err != nil {
		t.Fatalf("queued query after RESUME: %v", err)
	}

	adminRows(t, admin2, "SHUTDOWN")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := pgconn.Connect(ctx, "postgres://postgres@"+addr+"/app?sslmode=disable"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("proxy still accepts clients after SHUTDOWN")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReload changes the config file under a running proxy: the new pool
// size applies, existing clients stay connected, and a broken file is
// rejected with the old config kept.
func TestReload(t *testing.T) {
	srv, addr, stop, err := startServer(func(c *topology.Config) { c.AdminUsers = []string{"admin"} })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	path := filepath.Join(t.TempDir(), "shardgate.yaml")
	yaml := string(cluster.ConfigYAML("127.0.0.1:0")) + "admin_users: [admin]\n"
	writeFile(t, path, strings.Replace(yaml, "size: 20", "size: 7", 1))
	srv.SetConfigFile(path)
	ctx := t.Context()
	app, err := pgx.Connect(ctx, "postgres://postgres@"+addr+"/app?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	admin := adminConn(t, addr)
	adminRows(t, admin, "RELOAD")
	poolSize := func() string {
		for _, r := range adminRows(t, admin, "SHOW CONFIG") {
			if r["key"] == "default_pool_size" {
				return r["value"]
			}
		}
		return ""
	}
	if got := poolSize(); got != "7" {
		t.Fatalf("pool_size after RELOAD: %s", got)
	}
	if _, err := app.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("client connected before RELOAD: %v", err)
	}
	writeFile(t, path, "database: app\nshards: []\nbogus: 1\n")
	if _, err := admin.Exec(ctx, "RELOAD").ReadAll(); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("broken config: %v", err)
	}
	if got := poolSize(); got != "7" {
		t.Fatalf("pool_size after a failed RELOAD: %s", got)
	}
	os.Remove(path)
	if err := srv.Reload(); err == nil {
		t.Fatal("reload of a missing file succeeded")
	}
}

// TestDrain: a drain refuses new clients, disconnects idle ones, lets an
// open transaction commit, then disconnects its client.
func TestDrain(t *testing.T) {
	srv, addr, stop, err := startServer(func(*topology.Config) {})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx := t.Context()
	dsn := "postgres://postgres@" + addr + "/app?sslmode=disable"
	idle := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
	busy := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
	key := int64(9_200_000)
	tx, err := busy.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, 'drained')", key); err != nil {
		t.Fatal(err)
	}
	drained := make(chan error, 1)
	go func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- srv.Drain(dctx)
	}()
	time.Sleep(200 * time.Millisecond)
	if _, err := pgx.Connect(ctx, dsn); err == nil {
		t.Fatal("a new client was accepted while draining")
	}
	if _, err := idle.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("an idle client survived the drain")
	}
	if _, err := tx.Exec(ctx, "UPDATE users SET name = 'drained+' WHERE id = $1", key); err != nil {
		t.Fatalf("transaction during drain: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit during drain: %v", err)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	var name string
	if err := connectShard(t, shardOf(t, key)).QueryRow(ctx, "SELECT name FROM users WHERE id = $1", key).Scan(&name); err != nil || name != "drained+" {
		t.Fatalf("committed row: %q, %v", name, err)
	}
}

// adminColumns runs a SHOW and returns its column names.
func adminColumns(t *testing.T, admin *pgconn.PgConn, cmd string) []string {
	t.Helper()
	res, err := admin.Exec(t.Context(), cmd).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	var cols []string
	for _, f := range res[0].FieldDescriptions {
		cols = append(cols, f.Name)
	}
	return cols
}

// TestAdminPgBouncerColumns checks every SHOW PgBouncer has against the
// columns PgBouncer's documentation gives (doc/usage.md, "Admin console",
// "Show commands"; where the prose and the output differ in order, the
// output's order, src/admin.c and src/stats.c): PgBouncer's columns come
// first, in its order, and the user columns are filled.
func TestAdminPgBouncerColumns(t *testing.T) {
	_, addr, stop, err := startServer(func(c *topology.Config) { c.AdminUsers = []string{"admin"} })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx := t.Context()
	app, err := pgx.Connect(ctx, "postgres://postgres@"+addr+"/app?sslmode=disable&application_name=columns-test")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	if _, err := app.Exec(ctx, "SELECT * FROM users WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	admin := adminConn(t, addr)

	socket := []string{"type", "user", "database", "replication", "state", "addr", "port", "local_addr", "local_port",
		"connect_time", "request_time", "wait", "wait_us", "close_needed", "ptr", "link", "remote_pid", "tls",
		"application_name", "prepared_statements", "id"}
	golden := map[string][]string{
		// "SHOW POOLS"
		"SHOW POOLS": {"database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req",
			"sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
			"maxwait", "maxwait_us", "pool_mode", "load_balance_hosts"},
		// "SHOW STATS" (names as documented; order as src/stats.c sends them)
		"SHOW STATS": {"database", "total_server_assignment_count", "total_xact_count", "total_query_count", "total_received", "total_sent",
			"total_xact_time", "total_query_time", "total_wait_time", "total_client_parse_count", "total_server_parse_count",
			"total_bind_count", "total_client_login_count", "avg_server_assignment_count", "avg_xact_count", "avg_query_count",
			"avg_recv", "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time", "avg_client_parse_count",
			"avg_server_parse_count", "avg_bind_count", "avg_client_login_count"},
		// "SHOW TOTALS": name, value rows (src/stats.c show_stat_totals)
		"SHOW TOTALS": {"name", "value"},
		// "SHOW SERVERS", "SHOW CLIENTS"
		"SHOW SERVERS": socket,
		"SHOW CLIENTS": socket,
		// "SHOW DATABASES"
		"SHOW DATABASES": {"name", "host", "port", "database", "force_user", "pool_size", "min_pool_size", "reserve_pool_size",
			"server_lifetime", "pool_mode", "load_balance_hosts", "max_connections", "current_connections",
			"max_client_connections", "current_client_connections", "paused", "disabled"},
		// "SHOW USERS"
		"SHOW USERS": {"name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections", "current_connections",
			"max_user_client_connections", "current_client_connections"},
		// "SHOW LISTS": (list, items) rows (src/admin.c admin_show_lists)
		"SHOW LISTS": {"list", "items"},
		// "SHOW MEM" (src/admin.c admin_show_mem)
		"SHOW MEM": {"name", "size", "used", "free", "memtotal"},
		// "SHOW CONFIG"
		"SHOW CONFIG": {"key", "value", "default", "changeable"},
		// "SHOW STATE"
		"SHOW STATE": {"key", "value"},
	}
	for cmd, want := range golden {
		if got := adminColumns(t, admin, cmd); len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
			t.Errorf("%s columns:\n got %v\nwant %v first", cmd, got, want)
		}
	}

	dsnUser := func() string {
		cfg, err := pgconn.ParseConfig(cluster.Shards[0].Primary.DSN("app"))
		if err != nil {
			t.Fatal(err)
		}
		return cfg.User
	}()
	for _, cmd := range []string{"SHOW POOLS", "SHOW SERVERS"} {
		for _, r := range adminRows(t, admin, cmd) {
			if r["user"] != dsnUser {
				t.Errorf("%s: user %q, want the DSN's %q: %v", cmd, r["user"], dsnUser, r)
			}
		}
	}
	for _, r := range adminRows(t, admin, "SHOW DATABASES") {
		if r["force_user"] != dsnUser || r["name"] != "app" || r["port"] == "" || r["disabled"] != "0" {
			t.Errorf("SHOW DATABASES row: %v", r)
		}
	}
	if !slices.ContainsFunc(adminRows(t, admin, "SHOW CLIENTS"), func(r map[string]string) bool {
		return r["application_name"] == "columns-test" && r["user"] == "postgres" && r["type"] == "C" && r["id"] != ""
	}) {
		t.Errorf("SHOW CLIENTS lacks the app client with its user: %v", adminRows(t, admin, "SHOW CLIENTS"))
	}
	users := adminRows(t, admin, "SHOW USERS")
	if !slices.ContainsFunc(users, func(r map[string]string) bool {
		return r["name"] == "postgres" && r["current_client_connections"] == "1"
	}) {
		t.Errorf("SHOW USERS: %v", users)
	}
	totals := map[string]string{}
	for _, r := range adminRows(t, admin, "SHOW TOTALS") {
		totals[r["name"]] = r["value"]
	}
	if n, _ := strconv.Atoi(totals["total_query_count"]); n < 1 || totals["total_client_login_count"] == "0" || len(totals) != 24 {
		t.Errorf("SHOW TOTALS: %v", totals)
	}
	var lists []string
	for _, r := range adminRows(t, admin, "SHOW LISTS") {
		lists = append(lists, r["list"])
		if r["list"] == "pools" && r["items"] != strconv.Itoa(2*len(cluster.Shards)) {
			t.Errorf("SHOW LISTS pools: %v", r)
		}
	}
	// The items doc/usage.md "SHOW LISTS" names, with src/admin.c's peers and peer_pools.
	if want := []string{"databases", "users", "peers", "pools", "peer_pools", "free_clients", "used_clients", "login_clients",
		"free_servers", "used_servers", "dns_names", "dns_zones", "dns_queries", "dns_pending"}; !slices.Equal(lists, want) {
		t.Errorf("SHOW LISTS items %v, want %v", lists, want)
	}
	mem := adminRows(t, admin, "SHOW MEM")
	if !slices.ContainsFunc(mem, func(r map[string]string) bool {
		return r["name"] == "client" && r["used"] != "0" && r["memtotal"] != "0"
	}) ||
		!slices.ContainsFunc(mem, func(r map[string]string) bool { return r["name"] == "go_heap" && r["used"] != "0" }) {
		t.Errorf("SHOW MEM: %v", mem)
	}
	config := map[string]map[string]string{}
	for _, r := range adminRows(t, admin, "SHOW CONFIG") {
		config[r["key"]] = r
	}
	for key, want := range map[string][3]string{
		// value, default, changeable, printed as PgBouncer prints them
		"default_pool_size":    {"20", "20", "yes"},
		"server_idle_timeout":  {"600", "600", "yes"},
		"reserve_pool_timeout": {"5", "5", "yes"},
		"tcp_keepalive":        {"1", "1", "no"},
		"pool_mode":            {"transaction", "transaction", "yes"},
		"listen_port":          {"0", "6432", "no"},
		"ban_time":             {"15", "15", "yes"},
	} {
		r := config[key]
		if got := [3]string{r["value"], r["default"], r["changeable"]}; got != want {
			t.Errorf("SHOW CONFIG %s: %v, want %v", key, got, want)
		}
	}
}

// adminErr runs a console command that must fail with code.
func adminErr(t *testing.T, admin *pgconn.PgConn, cmd, code string) {
	t.Helper()
	if _, err := admin.Exec(t.Context(), cmd).ReadAll(); sqlState(err) != code {
		t.Errorf("%s: %v, want SQLSTATE %s", cmd, err, code)
	}
}

// notWithin asserts that done has not delivered within d, and returns.
func notWithin(t *testing.T, done chan error, d time.Duration, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s returned early: %v", what, err)
	case <-time.After(d):
	}
}

// TestAdminControl drives SET, DISABLE/ENABLE, SUSPEND/RESUME, WAIT_CLOSE
// and KILL through real clients.
func TestAdminControl(t *testing.T) {
	_, addr, stop, err := startServer(func(c *topology.Config) { c.AdminUsers = []string{"admin"} })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx := t.Context()
	dsn := "postgres://postgres@" + addr + "/app?sslmode=disable"
	admin, admin2 := adminConn(t, addr), adminConn(t, addr)
	app := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
	exec := func(conn *pgx.Conn) chan error {
		done := make(chan error, 1)
		go func() { _, err := conn.Exec(context.Background(), "SELECT * FROM users WHERE id = 3"); done <- err }()
		return done
	}
	configValue := func(key string) string {
		for _, r := range adminRows(t, admin, "SHOW CONFIG") {
			if r["key"] == key {
				return r["value"]
			}
		}
		return ""
	}

	// SET takes PgBouncer's names and values; the change applies at once.
	adminRows(t, admin, "SET default_pool_size = 7")
	adminRows(t, admin, "SET query_wait_timeout = '0.5'")
	if got, got2 := configValue("default_pool_size"), configValue("query_wait_timeout"); got != "7" || got2 != "0.5" {
		t.Fatalf("after SET: default_pool_size %s, query_wait_timeout %s", got, got2)
	}
	if pools := adminRows(t, admin, "SHOW DATABASES"); pools[0]["pool_size"] != "7" {
		t.Fatalf("SHOW DATABASES after SET: %v", pools[0])
	}
	adminRows(t, admin, "SET query_wait_timeout TO 30")
	adminErr(t, admin, "SET listen_port = 1", "22023")
	adminErr(t, admin, "SET no_such_setting = 1", "22023")
	adminErr(t, admin, "SET min_pool_size = 100", "22023")

	// DISABLE refuses new clients with PgBouncer's error; those connected stay.
	adminErr(t, admin, "DISABLE nosuchdb", "3D000")
	adminRows(t, admin, "DISABLE app")
	if _, err := pgconn.Connect(ctx, dsn); sqlState(err) != "08P01" || !strings.Contains(err.Error(), `database "app" is disabled`) {
		t.Fatalf("connect while disabled: %v", err)
	}
	if _, err := app.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("connected client while disabled: %v", err)
	}
	adminRows(t, admin, "ENABLE app")
	dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)

	// SUSPEND holds requests until RESUME.
	adminRows(t, admin, "SUSPEND")
	if st := adminRows(t, admin, "SHOW STATE"); st[2]["value"] != "yes" {
		t.Fatalf("SHOW STATE while suspended: %v", st)
	}
	adminErr(t, admin, "SUSPEND", "08P01")
	held := exec(app)
	notWithin(t, held, 200*time.Millisecond, "a query while suspended")
	adminRows(t, admin2, "RESUME")
	if err := <-held; err != nil {
		t.Fatalf("query after RESUME: %v", err)
	}
	adminErr(t, admin, "RESUME", "08P01")

	// WAIT_CLOSE waits for the connection an open transaction holds
	// across RECONNECT.
	tx, err := app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT * FROM users WHERE id = 3"); err != nil {
		t.Fatal(err)
	}
	adminRows(t, admin, "RECONNECT app")
	if !slices.ContainsFunc(adminRows(t, admin, "SHOW SERVERS"), func(r map[string]string) bool { return r["close_needed"] == "1" }) {
		t.Fatal("SHOW SERVERS: no connection marked close_needed after RECONNECT")
	}
	closed := make(chan error, 1)
	go func() { _, err := admin2.Exec(context.Background(), "WAIT_CLOSE app").ReadAll(); closed <- err }()
	notWithin(t, closed, 200*time.Millisecond, "WAIT_CLOSE with a connection still lent")
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("WAIT_CLOSE: %v", err)
	}

	// KILL drops clients and server connections; new clients wait for RESUME.
	adminErr(t, admin, "KILL nosuchdb", "3D000")
	adminRows(t, admin, "KILL app")
	if _, err := app.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a client survived KILL")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(adminRows(t, admin, "SHOW SERVERS")) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("server connections after KILL: %v", adminRows(t, admin, "SHOW SERVERS"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if db := adminRows(t, admin, "SHOW DATABASES"); db[0]["paused"] != "1" {
		t.Fatalf("SHOW DATABASES after KILL: %v", db[0])
	}
	late := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
	waiting := exec(late)
	notWithin(t, waiting, 200*time.Millisecond, "a query after KILL")
	adminRows(t, admin, "RESUME app")
	if err := <-waiting; err != nil {
		t.Fatalf("query after KILL and RESUME: %v", err)
	}
	if help := adminRows(t, admin, "SHOW HELP"); !slices.ContainsFunc(help, func(r map[string]string) bool { return r["command"] == "WAIT_CLOSE [db]" }) {
		t.Fatalf("SHOW HELP: %v", help)
	}
}
