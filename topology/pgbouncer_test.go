package topology

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFromPgBouncer converts the representative pgbouncer.ini and checks
// that every setting it carries over means the same in shardgate, and that
// every one it cannot is named in a note.
func TestFromPgBouncer(t *testing.T) {
	data, err := os.ReadFile("../testdata/pgbouncer/pgbouncer.ini")
	if err != nil {
		t.Fatal(err)
	}
	data = []byte(strings.NewReplacer("PORT", "5999", "LISTEN", "6999", "DIR", "/tmp/x").Replace(string(data)))
	ini := filepath.Join("..", "testdata", "pgbouncer", "pgbouncer.ini")
	out, notes, err := FromPgBouncer(ini, data)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(filepath.Join(t.TempDir(), "shardgate.yaml"), out)
	if err != nil {
		t.Fatalf("the converted config does not load: %v\n%s", err, out)
	}
	pc := cfg.Pool
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.Listen, "127.0.0.1:6999"},
		{"database", cfg.Database, "app"},
		{"primary", cfg.Shards[0].Primary, "postgres://postgres@127.0.0.1:5999/app"},
		{"default_shard", cfg.DefaultShard, "s0"},
		{"pool_mode", pc.Mode, "transaction"},
		{"pool_size (the database's overrides default_pool_size)", pc.Size, 12},
		{"min_pool_size", pc.MinSize, 2},
		{"reserve_pool_size", pc.ReserveSize, 3},
		{"reserve_pool_timeout", pc.ReserveTimeout, Duration(2500 * time.Millisecond)},
		{"max_client_conn", pc.MaxClientConn, 500},
		{"server_lifetime", pc.ServerLifetime, Duration(30 * time.Minute)},
		{"server_idle_timeout", pc.ServerIdleTimeout, Duration(5 * time.Minute)},
		{"server_connect_timeout", pc.ServerConnectTimeout, Duration(10 * time.Second)},
		{"query_wait_timeout", pc.QueryWaitTimeout, Duration(time.Minute)},
		{"idle_transaction_timeout", pc.IdleTransactionTimeout, Duration(2 * time.Minute)},
		{"client_login_timeout", pc.ClientLoginTimeout, Duration(30 * time.Second)},
		{"tcp_keepidle", pc.TCPKeepIdle, Duration(45 * time.Second)},
		{"auth_type", cfg.Auth.Type, "md5"},
		{"auth_file", cfg.Auth.File, "/tmp/x/userlist.txt"},
		{"admin_users", strings.Join(cfg.AdminUsers, ","), "admin"},
		{"pidfile", cfg.PidFile, "/tmp/x/pgbouncer.pid"},
		{"unix_socket_dir (empty: off)", cfg.UnixSocketDir, ""},
		{"auth_query", cfg.Auth.Query, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1"},
		{"users.batch.pool_mode", cfg.Users["batch"].PoolMode, "session"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	for _, dropped := range []string{"logfile", "stats_users", "server_reset_query", "ignore_startup_parameters", "auth_user", "batch max_user_connections"} {
		if !strings.Contains(strings.Join(notes, "\n"), dropped) {
			t.Errorf("no note for %s among\n%s", dropped, strings.Join(notes, "\n"))
		}
	}
	if !strings.Contains(string(out), "# note: ") {
		t.Errorf("the notes are not in the file:\n%s", out)
	}
}

func TestFromPgBouncerRefuses(t *testing.T) {
	for name, ini := range map[string]string{
		"two databases":   "[databases]\na = host=h\nb = host=h\n",
		"no database":     "[databases]\n* = host=h\n",
		"include":         "%include other.ini\n",
		"unquoted string": "[databases]\na = host='h\n",
		"several hosts":   "[databases]\na = host=h1,h2\n",
		"no section":      "pool_mode = session\n",
	} {
		if out, _, err := FromPgBouncer("p.ini", []byte(ini)); err == nil {
			t.Errorf("%s: converted to\n%s", name, out)
		}
	}
}

// TestFromPgBouncerRelativePath: a relative file in the ini is found
// beside it, wherever the converted config is written.
func TestFromPgBouncerRelativePath(t *testing.T) {
	out, _, err := FromPgBouncer("/etc/pgbouncer/pgbouncer.ini", []byte("[databases]\napp = host=h user=u\n[pgbouncer]\nauth_file = userlist.txt\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "auth_file: /etc/pgbouncer/userlist.txt") {
		t.Errorf("auth_file not resolved beside the ini:\n%s", out)
	}
}

func TestParseConnString(t *testing.T) {
	got, err := parseConnString(`host=/var/run/pg port=5433 password='it\'s x' dbname=a`)
	if err != nil {
		t.Fatal(err)
	}
	if got["host"] != "/var/run/pg" || got["port"] != "5433" || got["dbname"] != "a" || got["password"] != "it's x" {
		t.Errorf("got %q", got)
	}
}
