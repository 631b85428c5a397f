package main

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

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
	cmd.AddCommand(devAddShardCmd())
	return cmd
}

func devAddShardCmd() *cobra.Command {
	var (
		dir, name string
		logs      logFlags
	)
	cmd := &cobra.Command{
		Use:   "add-shard --name NAME [--dir PATH]",
		Short: "Add an empty shard to a sandbox, e.g. as the target of a reshard",
		Long: "Add a shard to the sandbox in --dir beside the others: a primary with as many streaming replicas as the others have,\n" +
			"the database created but empty (a reshard copies the schema). It may run while `shardgate dev` runs on the same --dir:\n" +
			"the new servers are left running and that dev stops them at Ctrl-C. If the sandbox is stopped, so are the new servers;\n" +
			"the next `shardgate dev` starts them with the rest. The shard joins the proxy's layout only through a reshard.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log, err := newLogger(os.Stderr, cmp.Or(logs.format, "text"), cmp.Or(logs.level, "info"))
			if err != nil {
				return err
			}
			cluster, err := sandbox.Open(sandbox.Options{Dir: dir, Logger: log})
			if err != nil {
				return err
			}
			running := cluster.Running(ctx, cluster.Shards[0].Primary)
			sh, err := cluster.AddShard(ctx, name)
			if err != nil {
				return err
			}
			if !running {
				for _, s := range slices.Concat(sh.Replicas, []*sandbox.Server{sh.Primary}) {
					if err := cluster.StopServer(ctx, s); err != nil {
						return err
					}
				}
			}
			printShard(cmd.OutOrStdout(), cluster, sh, running)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".sandbox", "the sandbox to add to, as given to shardgate dev")
	cmd.Flags().StringVar(&name, "name", "", "the new shard's name, e.g. s2")
	cmd.MarkFlagRequired("name")
	logs.register(cmd)
	return cmd
}

func printShard(w io.Writer, cluster *sandbox.Cluster, sh *sandbox.Shard, running bool) {
	state := "running"
	if !running {
		state = "stopped, as the rest of the sandbox is; shardgate dev starts them"
	}
	fmt.Fprintf(w, "added shard %s to %s (servers %s)\nprimary: %s\n", sh.Name, cluster.Dir, state, sh.Primary.DSN(cluster.Database))
	for _, r := range sh.Replicas {
		fmt.Fprintf(w, "replica: %s\n", r.DSN(cluster.Database))
	}
	fmt.Fprintf(w, "shards entry for shardgate.yaml:\n%s", cluster.ShardYAML(sh))
}

// devServer writes the sandbox's config where the user can read and reuse
// it, and builds the proxy from that file, so `dev` runs exactly what
// `serve --config` would.
func devServer(cluster *sandbox.Cluster, listen, metricsListen string, log *slog.Logger) (*proxy.Server, *topology.Config, string, error) {
	path, err := devConfig(cluster, listen, metricsListen)
	if err != nil {
		return nil, nil, "", err
	}
	cfg, err := topology.LoadConfig(path)
	if err != nil {
		return nil, nil, "", err
	}
	srv, err := proxy.New(cfg, log)
	return srv, cfg, path, err
}

// devConfig writes DIR/shardgate.yaml for the sandbox. The sandbox's
// postgres user may open the admin console (the sandbox trusts every user).
// A file already there keeps its shards and keyspace, which a reshard
// rewrites; everything else is generated afresh.
func devConfig(cluster *sandbox.Cluster, listen, metricsListen string) (string, error) {
	path := filepath.Join(cluster.Dir, "shardgate.yaml")
	text := cluster.ConfigYAML(listen)
	if metricsListen != "" {
		text = fmt.Appendf(text, "metrics_listen: %s\npprof: true\n", metricsListen)
	}
	text = append(text, "admin_users: [postgres]\n"...)
	old, err := topology.LoadConfig(path)
	switch {
	case err == nil:
		if text, err = keepLayout(text, old); err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("keeping the shard layout of %s (delete it to go back to an even split): %w", path, err)
	}
	if err := os.WriteFile(path, text, 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// keepLayout replaces the shards and keyspace of config text with old's.
func keepLayout(text []byte, old *topology.Config) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return nil, err
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		value := root.Content[i+1]
		var err error
		switch root.Content[i].Value {
		case "shards":
			err = value.Encode(old.Shards)
		case "keyspace":
			err = value.Encode(old.Keyspace)
			for _, r := range value.Content {
				r.Style = yaml.FlowStyle // one range a line, as generated
			}
		}
		if err != nil {
			return nil, err
		}
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	return out.Bytes(), enc.Close()
}
