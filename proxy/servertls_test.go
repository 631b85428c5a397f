package proxy_test

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

// enableServerSSL turns on TLS in every shard primary with the given
// certificate, and off again when the test ends.
func enableServerSSL(t *testing.T, certPath, keyPath string) {
	t.Helper()
	for shard, sh := range cluster.Shards {
		dir := sh.Primary.DataDir
		for src, name := range map[string]string{certPath: "test-server.crt", keyPath: "test-server.key"} {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(dir, name)
			if err := os.WriteFile(dst, b, 0o600); err != nil {
				t.Fatal(err)
			}
			chownLikeDir(t, dst, dir)
		}
		conn := connectShard(t, shard)
		for _, sql := range []string{
			"ALTER SYSTEM SET ssl_cert_file = 'test-server.crt'",
			"ALTER SYSTEM SET ssl_key_file = 'test-server.key'",
			"ALTER SYSTEM SET ssl = on",
			"SELECT pg_reload_conf()",
		} {
			if _, err := conn.Exec(t.Context(), sql); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
	}
	t.Cleanup(func() {
		for shard := range cluster.Shards {
			conn, err := pgx.Connect(t.Context(), cluster.Shards[shard].Primary.DSN("app"))
			if err != nil {
				continue
			}
			conn.Exec(t.Context(), "ALTER SYSTEM RESET ssl")
			conn.Exec(t.Context(), "SELECT pg_reload_conf()")
			conn.Close(t.Context())
		}
	})
}

// chownLikeDir gives path to the postgres OS user, who runs the servers
// when the tests run as root.
func chownLikeDir(t *testing.T, path, _ string) {
	if os.Geteuid() != 0 {
		return
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// TestServerTLS: with server_tls verify-full the proxy reaches the shards
// over TLS, checking their certificate; a wrong CA fails the connection.
func TestServerTLS(t *testing.T) {
	certPath, keyPath, _ := writeTestCert(t)
	enableServerSSL(t, certPath, keyPath)
	dsn := proxyWith(t, func(c *topology.Config) {
		c.ServerTLS = topology.ServerTLSConfig{Mode: "verify-full", CA: certPath}
	})
	conn := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	for i := 0; i < len(cluster.Shards); i++ {
		var ssl bool
		if err := conn.QueryRow(t.Context(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
			t.Fatalf("server connection not TLS: ssl=%v, %v", ssl, err)
		}
	}
	otherCert, _, _ := writeTestCert(t) // a CA that did not sign the servers' certificate
	wrong := proxyWith(t, func(c *topology.Config) {
		c.ServerTLS = topology.ServerTLSConfig{Mode: "verify-full", CA: otherCert}
	})
	// The first client needs a server connection for its startup
	// parameters, so the failure shows at connect.
	if _, err := pgx.Connect(t.Context(), wrong); sqlState(err) != "08006" {
		t.Fatalf("wrong CA: got %v, want 08006", err)
	}
}
