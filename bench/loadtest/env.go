package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/shardgate/shardgate/bench/loadgen"
	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

const (
	shards           = 2
	replicasPerShard = 1
	consistency      = "read_your_writes"
)

// env is the system under test: a sandbox with the seed and a proxy.
type env struct {
	cluster   *sandbox.Cluster
	remove    func() error // stops the sandbox and deletes its directory
	cfg       *topology.Config
	proxyDSN  string
	stopProxy func() // idempotent
	shardOf   []int  // shard index by user id
}

// startEnv starts the sandbox and the proxy and loads the seed. On error it
// undoes what it did.
func startEnv(ctx context.Context, size seedSize, log *slog.Logger) (_ *env, err error) {
	e := &env{}
	defer func() {
		if err != nil {
			e.close(log)
		}
	}()
	began := time.Now()
	log.Info("starting sandbox", "shards", shards, "replicas_per_shard", replicasPerShard)
	e.cluster, e.remove, err = sandbox.StartTemp(ctx, "shardgate-loadtest-", sandbox.Options{Shards: shards, Replicas: replicasPerShard,
		Fast: true, Schema: sandbox.Schema})
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	log.Info("sandbox ready", "dir", e.cluster.Dir, "took", time.Since(began).Round(time.Millisecond))
	if err = e.startProxy(ctx, size.users); err != nil {
		return nil, err
	}
	began = time.Now()
	if err = loadSeed(ctx, e.proxyDSN, e.cluster, size, log); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	log.Info("seed loaded and replicated", "took", time.Since(began).Round(time.Millisecond))
	return e, nil
}

// startProxy runs an in-process shardgate with the sandbox's config and
// read-your-writes consistency, the default a real deployment gets.
func (e *env) startProxy(ctx context.Context, users int) error {
	cfg, err := topology.ParseConfig("loadtest.yaml", e.cluster.ConfigYAML("127.0.0.1:0"))
	if err != nil {
		return fmt.Errorf("proxy config: %w", err)
	}
	cfg.Consistency = consistency
	e.cfg = cfg
	topo, err := topology.New(cfg)
	if err != nil {
		return fmt.Errorf("proxy config: %w", err)
	}
	if e.shardOf, err = loadgen.ShardOfUsers(topo, users); err != nil {
		return err
	}
	if e.proxyDSN, e.stopProxy, err = loadgen.ServeProxy(ctx, cfg, e.cluster.Database); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return nil
}

// close stops the proxy and the sandbox and removes its directory.
func (e *env) close(log *slog.Logger) {
	if e.stopProxy != nil {
		e.stopProxy()
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

func (e *env) shardNames() []string {
	names := make([]string, len(e.cluster.Shards))
	for i, sh := range e.cluster.Shards {
		names[i] = sh.Name
	}
	return names
}
