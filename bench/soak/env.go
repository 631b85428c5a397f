package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/bench/loadgen"
	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

// env is the system under test: the sandbox, the proxy process and the
// seeded users' shards.
type env struct {
	cluster *sandbox.Cluster
	remove  func() error // stops the sandbox and deletes its directory
	proxy   *proxyProcess
	shardOf []int // shard index by user id
}

// startEnv starts the sandbox and the proxy and seeds the users; on error
// it undoes what it did.
func startEnv(ctx context.Context, o options, log *slog.Logger) (_ *env, err error) {
	e := &env{}
	defer func() {
		if err != nil {
			e.close(log)
		}
	}()
	if _, err := os.Stat(o.bin); err != nil {
		return nil, fmt.Errorf("%w (make build)", err)
	}
	began := time.Now()
	e.cluster, e.remove, err = sandbox.StartTemp(ctx, "shardgate-soak-", sandbox.Options{
		Shards: 2, Replicas: 1, Fast: true, Schema: sandbox.Schema})
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	log.Info("sandbox ready", "dir", e.cluster.Dir, "took", time.Since(began).Round(time.Millisecond))
	cfgYAML, err := proxyConfig(e.cluster, o.maxClientConn)
	if err != nil {
		return nil, err
	}
	if e.shardOf, err = shardOfUsers(cfgYAML, o.users); err != nil {
		return nil, err
	}
	if e.proxy, err = startProxy(ctx, o.bin, cfgYAML); err != nil {
		return nil, err
	}
	log.Info("proxy started", "pid", e.proxy.pid(), "addr", e.proxy.addr, "metrics", e.proxy.metricsAddr)
	if err := seed(ctx, e.proxy.dsn(e.cluster.Database), o.users); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	if err := waitReplicas(ctx, e.cluster); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	return e, nil
}

// proxyConfig is the sandbox's config with a client limit low enough that
// a few hundred unfinished logins exhaust it, and the metrics listener on.
// The listen and metrics addresses are placeholders startProxy fills in.
func proxyConfig(c *sandbox.Cluster, maxClientConn int) (string, error) {
	const poolLine = "pool: {mode: transaction, size: 20}"
	y := string(c.ConfigYAML(listenPlaceholder))
	if !strings.Contains(y, poolLine) {
		return "", fmt.Errorf("the sandbox's config has no %q line to add max_client_conn to", poolLine)
	}
	y = strings.Replace(y, poolLine, fmt.Sprintf("pool: {mode: transaction, size: 20, max_client_conn: %d}", maxClientConn), 1)
	return y + "metrics_listen: " + metricsPlaceholder + "\n", nil
}

const (
	listenPlaceholder  = "LISTEN_ADDR"
	metricsPlaceholder = "METRICS_ADDR"
)

// shardOfUsers maps user ids to shard indexes by the hashing contract, so
// an error can be put down to the shard it happened on.
func shardOfUsers(cfgYAML string, users int) ([]int, error) {
	y := strings.NewReplacer(listenPlaceholder, "127.0.0.1:1", metricsPlaceholder, "127.0.0.1:2").Replace(cfgYAML)
	cfg, err := topology.ParseConfig("soak.yaml", []byte(y))
	if err != nil {
		return nil, err
	}
	topo, err := topology.New(cfg)
	if err != nil {
		return nil, err
	}
	return loadgen.ShardOfUsers(topo, users)
}

// seed inserts the users through the proxy, which splits each INSERT by
// shard, and the countries every shard holds.
func seed(ctx context.Context, dsn string, users int) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "INSERT INTO countries (code, name) VALUES ('de', 'Germany'), ('fr', 'France'), ('jp', 'Japan')"); err != nil {
		return err
	}
	const batch = 500
	for first := 1; first <= users; first += batch {
		var b strings.Builder
		b.WriteString("INSERT INTO users (id, name, country) VALUES ")
		for id := first; id < first+batch && id <= users; id++ {
			if id > first {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "(%d, 'user %d', 'de')", id, id)
		}
		if _, err := conn.Exec(ctx, b.String()); err != nil {
			return err
		}
	}
	return nil
}

// waitReplicas waits until every replica has replayed its primary's WAL,
// so that reads find the seeded users.
func waitReplicas(ctx context.Context, c *sandbox.Cluster) error {
	for _, sh := range c.Shards {
		conn, err := pgx.Connect(ctx, sh.Primary.DSN(c.Database))
		if err != nil {
			return err
		}
		var lsn string
		err = conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn)
		conn.Close(context.Background())
		if err != nil {
			return err
		}
		for _, r := range sh.Replicas {
			if err := loadgen.WaitReplay(ctx, r.DSN(c.Database), lsn); err != nil {
				return fmt.Errorf("%s: %w", r.Name, err)
			}
		}
	}
	return nil
}

// close stops the proxy and the sandbox and removes its directory.
func (e *env) close(log *slog.Logger) {
	if e.proxy != nil {
		e.proxy.stop()
	}
	if e.remove == nil {
		return
	}
	if err := e.remove(); err != nil {
		log.Error("cleaning up the sandbox", "dir", e.cluster.Dir, "err", err)
		return
	}
	log.Info("sandbox stopped and removed")
}
