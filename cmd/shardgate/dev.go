package main

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

func devCmd() *cobra.Command {
	var (
		dir, listen, metricsListen string
		shards, replicas           int
		logs                       logFlags
	)
	cmd := &cobra.Command{
		Use:   "dev [--shards 2] [--replicas 1] [--dir PATH] [--listen 127.0.0.1:6432]",
		Short: "Run a local sandbox: shards with streaming replicas behind the proxy",
		Long: "Start (or restart, if --dir already holds one) PostgreSQL primaries with streaming replicas on free loopback ports,\n" +
			"load sandbox/schema.sql, write DIR/shardgate.yaml and run the proxy in the foreground until Ctrl-C,\nthen stop every server.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log, err := newLogger(os.Stderr, cmp.Or(logs.format, "text"), cmp.Or(logs.level, "info"))
			if err != nil {
				return err
			}
			if replicas == 0 {
				replicas = sandbox.NoReplicas
			}
			ln, err := net.Listen("tcp", listen) // fail before starting clusters if the port is taken
			if err != nil {
				return fmt.Errorf("listen: %w", err)
			}
			defer ln.Close()
			began := time.Now()
			cluster, err := sandbox.Start(ctx, sandbox.Options{
				Dir: dir, Shards: shards, Replicas: replicas, Schema: sandbox.Schema, Logger: log,
			})
			if err != nil {
				return err
			}
			defer func() {
				if err := cluster.Stop(); err != nil {
					log.Error("stopping sandbox", "err", err)
				}
			}()
			srv, cfg, configPath, err := devServer(cluster, listen, metricsListen, log)
			if err != nil {
				return err
			}
			if err := serveMetrics(ctx, srv, cfg, log); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "shardgate dev ready in %.1fs: psql postgresql://postgres@%s/%s  (config %s; Ctrl-C stops)\n",
				time.Since(began).Seconds(), listen, cluster.Database, configPath)
			return srv.Serve(ctx, ln)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".sandbox", "where the clusters live; reused when it already holds a sandbox")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:6432", "proxy listen address")
	cmd.Flags().IntVar(&shards, "shards", 2, "number of shards (new sandboxes only)")
	cmd.Flags().IntVar(&replicas, "replicas", 1, "streaming replicas per shard (new sandboxes only)")
	cmd.Flags().StringVar(&metricsListen, "metrics-listen", "127.0.0.1:9187", "Prometheus /metrics and pprof listener (empty: none)")
	logs.register(cmd)
	return cmd
}

// devServer writes the sandbox's config where the user can read and reuse
// it, and builds the proxy from that file, so `dev` runs exactly what
// `serve --config` would.
func devServer(cluster *sandbox.Cluster, listen, metricsListen string, log *slog.Logger) (*proxy.Server, *topology.Config, string, error) {
	path := filepath.Join(cluster.Dir, "shardgate.yaml")
	yaml := cluster.ConfigYAML(listen)
	if metricsListen != "" {
		yaml = fmt.Appendf(yaml, "metrics_listen: %s\npprof: true\n", metricsListen)
	}
	if err := os.WriteFile(path, yaml, 0o644); err != nil {
		return nil, nil, "", err
	}
	cfg, err := topology.LoadConfig(path)
	if err != nil {
		return nil, nil, "", err
	}
	srv, err := proxy.New(cfg, log)
	return srv, cfg, path, err
}
