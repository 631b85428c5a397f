package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/topology"
)

func serveCmd() *cobra.Command {
	var configPath, logLevel string
	cmd := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Run the proxy with a config file",
		Long:  "Run the proxy: listen on the config's address, route every statement by its shard key and pool server connections.\nStops on SIGINT or SIGTERM.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			cfg, err := topology.LoadConfig(configPath)
			if err != nil {
				return err
			}
			srv, err := proxy.New(cfg, log)
			if err != nil {
				return err
			}
			log.Info("shardgate listening", "addr", cfg.Listen, "database", cfg.Database, "shards", len(cfg.Shards))
			return srv.ListenAndServe(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "shardgate.yaml", "config file")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func checkCmd() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Validate a config file and print its keyspace",
		Long:  "Validate a config file: unknown keys, keyspace gaps and overlaps, unknown shards and bad DSNs are reported with file and line.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, t, err := loadTopology(configPath)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s: ok: %d shards, %d sharded tables, %d reference tables\n", configPath, len(t.Shards), len(t.Tables), len(t.Reference))
			for _, r := range t.Ranges {
				fmt.Fprintf(out, "  %-12s %s\n", r.Range, t.Shards[r.Shard].Name)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "shardgate.yaml", "config file")
	return cmd
}
