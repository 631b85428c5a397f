package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/shardgate/shardgate/bench/loadgen"
	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

// database is the one the pgx suite's CONTRIBUTING.md calls pgx_test.
const database = "pgx_test"

// pgxSetup is pgx's testsetup/postgresql_setup.sql minus the roles of the
// optional tests (TLS, md5, scram, oauth), which skip without their
// PGX_TEST_* variables. The role with odd characters is used by pgtype's
// aclitem tests; psql's `\\` in the original is one backslash.
const pgxSetup = `
CREATE EXTENSION hstore;
CREATE EXTENSION ltree;
CREATE DOMAIN uint64 AS numeric(20,0);
CREATE USER " tricky, ' } "" \ test user " SUPERUSER PASSWORD 'secret';
`

// pgbenchTables are pgbench's tables as sharded tables, named in the
// config whether or not it has a default shard, as issue 17's acceptance
// asks: pgbench through the proxy "with the pgbench tables configured".
var pgbenchTables = map[string]topology.TableConfig{
	"pgbench_accounts": {ShardKey: "aid", KeyType: topology.KeyInt},
	"pgbench_branches": {ShardKey: "bid", KeyType: topology.KeyInt},
	"pgbench_tellers":  {ShardKey: "tid", KeyType: topology.KeyInt},
	"pgbench_history":  {ShardKey: "aid", KeyType: topology.KeyInt},
}

// pgbenchTablesNote names pgbenchTables and their shard keys for the report.
func pgbenchTablesNote() string {
	names := slices.Sorted(maps.Keys(pgbenchTables))
	for i, n := range names {
		names[i] = n + " by " + pgbenchTables[n].ShardKey
	}
	return strings.Join(names, ", ")
}

// env is the system under test: a one-shard sandbox and a proxy per pool
// mode in front of it.
type env struct {
	cluster      *sandbox.Cluster
	remove       func() error
	direct       string            // DSN of the primary
	proxies      map[string]string // pool mode -> DSN through the proxy
	stops        []func()
	defaultShard bool   // the config has default_shard
	twoPhase     bool   // the config has two_phase_commit
	configNote   string // how the config was made, for the report
}

// startEnv starts the sandbox and one in-process proxy for each proxied
// mode. On error it undoes what it did.
func startEnv(ctx context.Context, modes []string, twoPhase bool, log *slog.Logger) (_ *env, err error) {
	e := &env{proxies: map[string]string{}, twoPhase: twoPhase}
	defer func() {
		if err != nil {
			e.close(log)
		}
	}()
	began := time.Now()
	e.cluster, e.remove, err = sandbox.StartTemp(ctx, "shardgate-compat-", sandbox.Options{
		Shards: 1, Replicas: sandbox.NoReplicas, Database: database, Schema: pgxSetup, Fast: true})
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	primary := e.cluster.Shards[0].Primary
	e.direct = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", primary.Port, database)
	log.Info("sandbox ready", "dir", e.cluster.Dir, "took", time.Since(began).Round(time.Millisecond))
	for _, mode := range modes {
		if mode == modeDirect {
			continue
		}
		cfg, err := e.config(mode)
		if err != nil {
			return nil, err
		}
		dsn, stop, err := loadgen.ServeProxy(ctx, cfg, database)
		if err != nil {
			return nil, fmt.Errorf("proxy (%s mode): %w", mode, err)
		}
		e.proxies[mode], e.stops = dsn, append(e.stops, stop)
	}
	if twoPhase {
		e.configNote += "; two_phase_commit: true"
	}
	return e, nil
}

// config is the sandbox's config in pool mode mode, with pgbench's tables
// and default_shard so that pgx's and psycopg's own tables route to the
// one shard. Until topology knows that
// key, the config goes without it and the report says so: pgx's tables are
// then refused as in issue 17.
func (e *env) config(mode string) (*topology.Config, error) {
	base := e.cluster.ConfigYAML("127.0.0.1:0")
	shard := e.cluster.Shards[0].Name
	withDefault := append(append([]byte{}, base...), "default_shard: "+shard+"\n"...)
	cfg, err := topology.ParseConfig("compat.yaml", withDefault)
	switch {
	case err == nil:
		e.defaultShard = true
		e.configNote = "default_shard: " + shard + " (tables the config does not name live on the one shard)"
	case strings.Contains(err.Error(), "default_shard") && strings.Contains(err.Error(), "unknown field"):
		if cfg, err = topology.ParseConfig("compat.yaml", base); err != nil {
			return nil, fmt.Errorf("proxy config: %w", err)
		}
		e.configNote = "no default_shard: this build's config does not know the key, so tables it does not " +
			"name are refused"
	default:
		return nil, fmt.Errorf("proxy config: %w", err)
	}
	for name, t := range pgbenchTables {
		cfg.Tables[name] = t
	}
	cfg.Pool.Mode = mode
	cfg.TwoPhaseCommit = e.twoPhase
	// Session mode holds a server connection per client: room for pgxpool's
	// tests, below the sandbox's max_connections of 200.
	cfg.Pool.Size = 20
	if mode == modeSession {
		cfg.Pool.Size = 80
	}
	return cfg, nil
}

// close stops the proxies and the sandbox and removes its directory.
func (e *env) close(log *slog.Logger) {
	for _, stop := range e.stops {
		stop()
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

// dsn is where mode's run connects.
func (e *env) dsn(mode string) string {
	if mode == modeDirect {
		return e.direct
	}
	return e.proxies[mode]
}
