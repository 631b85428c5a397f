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
	if cfg := adminRows(t, admin, "SHOW CONFIG"); !slices.ContainsFunc(cfg, func(r map[string]string) bool { return r["key"] == "pool_size" && r["value"] == "20" }) {
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
			if r["key"] == "pool_size" {
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
