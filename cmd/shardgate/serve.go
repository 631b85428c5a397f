package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/topology"
)

func serveCmd() *cobra.Command {
	var (
		configPath string
		logs       logFlags
	)
	cmd := &cobra.Command{
		Use:   "serve [--config] FILE",
		Short: "Run the proxy with a config file",
		Long:  "Run the proxy: listen on the config's address, route every statement by its shard key and pool server connections.\nStops on SIGINT or SIGTERM.",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := configArg(cmd, args, &configPath); err != nil {
				return err
			}
			cfg, err := topology.LoadConfig(configPath)
			if err != nil {
				return err
			}
			log, err := logs.logger(cmd.ErrOrStderr(), cfg)
			if err != nil {
				return err
			}
			topology.WarnExposedSecrets(log, configPath, cfg)
			srv, err := proxy.New(cfg, log)
			if err != nil {
				return err
			}
			srv.SetConfigFile(configPath)
			if cfg.TwoPhaseCommit {
				if err := srv.Recover(cmd.Context()); err != nil {
					return fmt.Errorf("resolving in-doubt transactions: %w", err)
				}
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			if err := serveMetrics(ctx, srv, cfg, log); err != nil {
				return err
			}
			go handleSignals(ctx, srv, log, time.Duration(cfg.ShutdownTimeout), cancel)
			log.Info("shardgate listening", "addr", cfg.Listen, "database", cfg.Database, "shards", len(cfg.Shards))
			return srv.ListenAndServe(ctx)
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "shardgate.yaml", "config file")
	logs.register(cmd)
	return cmd
}

// handleSignals gives the signals PgBouncer operators expect: SIGHUP
// reloads the config, SIGTERM drains (no new clients, transactions finish,
// up to shutdown_timeout), SIGINT stops at once.
func handleSignals(ctx context.Context, srv *proxy.Server, log *slog.Logger, drainTimeout time.Duration, stop context.CancelFunc) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sigs)
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				if err := srv.Reload(); err != nil {
					log.Error("reload failed; the running configuration stays", "err", err)
				}
			case syscall.SIGTERM:
				go func() {
					dctx, cancel := context.WithTimeout(ctx, drainTimeout)
					defer cancel()
					if err := srv.Drain(dctx); err != nil {
						log.Warn("drain timed out; closing the remaining clients", "err", err)
					}
					stop()
				}()
			default:
				log.Info("stopping now")
				stop()
			}
		}
	}
}

func checkCmd() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "check [--config] FILE",
		Short: "Validate a config file and print its keyspace",
		Long:  "Validate a config file: unknown keys, keyspace gaps and overlaps, unknown shards and bad DSNs are reported with file and line.",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := configArg(cmd, args, &configPath); err != nil {
				return err
			}
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
