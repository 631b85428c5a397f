package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/shardgate/shardgate/bench/loadgen"
	"github.com/shardgate/shardgate/sandbox"
)

// poolSize is shardgate's default pool.size, which the sandbox's config
// keeps; PgBouncer gets the same.
const poolSize = 20

// startPgBouncer runs PgBouncer in transaction mode in front of the
// sandbox's primary, configured as bench/run.sh configures it: the same
// pool size as shardgate, trust authentication, no connection logging. It
// runs in the foreground (its pid is the process's own) as the postgres
// user when we are root, since PgBouncer refuses to run as root.
func startPgBouncer(ctx context.Context, dir string, c *sandbox.Cluster) (proxyProcess, error) {
	bin, err := findProgram("pgbouncer", "/usr/sbin/pgbouncer", "package pgbouncer, which .ci/run installs; or remove end_to_end.pgbouncer from the budget")
	if err != nil {
		return proxyProcess{}, err
	}
	addr, err := loadgen.FreeAddr()
	if err != nil {
		return proxyProcess{}, err
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return proxyProcess{}, err
	}
	users := filepath.Join(dir, "pgbouncer-users.txt")
	if err := os.WriteFile(users, []byte(`"postgres" ""`+"\n"), 0o644); err != nil {
		return proxyProcess{}, err
	}
	ini := filepath.Join(dir, "pgbouncer.ini")
	conf := fmt.Sprintf(`[databases]
%s = host=127.0.0.1 port=%d dbname=%s user=postgres

[pgbouncer]
listen_addr = %s
listen_port = %s
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
default_pool_size = %d
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 100
log_connections = 0
log_disconnections = 0
log_stats = 0
`, c.Database, c.Shards[0].Primary.Port, c.Database, host, port, users, poolSize)
	if err := os.WriteFile(ini, []byte(conf), 0o644); err != nil {
		return proxyProcess{}, err
	}
	cmd := exec.Command(bin, ini)
	if cmd.SysProcAttr, err = asPostgres(); err != nil {
		return proxyProcess{}, err
	}
	// SIGTERM is PgBouncer's immediate shutdown (SIGINT would wait for clients).
	pid, stop, err := startListening(ctx, cmd, filepath.Join(dir, "pgbouncer.log"), addr, syscall.SIGTERM)
	if err != nil {
		return proxyProcess{}, fmt.Errorf("pgbouncer: %w", err)
	}
	dsn := "postgres://postgres@" + addr + "/" + c.Database + "?sslmode=disable"
	return proxyProcess{dsn: dsn, pid: pid, stop: stop}, nil
}

// asPostgres runs a child as the OS user postgres when we are root, as the
// sandbox runs PostgreSQL; nil otherwise.
func asPostgres() (*syscall.SysProcAttr, error) {
	cred, err := sandbox.PostgresCred()
	if err != nil || cred == nil {
		return nil, err
	}
	return &syscall.SysProcAttr{Credential: cred}, nil
}
