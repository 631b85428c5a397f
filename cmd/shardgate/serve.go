package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
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
		Long: `Run the proxy: listen on the config's address (and, with unix_socket_dir, on
a Unix socket for the same port), route every statement by its shard key and
pool server connections.

Signals, as PgBouncer's:
  SIGHUP   reload the config file, as the admin console's RELOAD.
  SIGINT   safe shutdown (PgBouncer's SHUTDOWN WAIT_FOR_SERVERS): stop
           accepting connections, let every client finish its transaction,
           disconnect each client as soon as it is between transactions, and
           exit once all are gone, however long that takes.
  SIGTERM  the same within shutdown_timeout, then close the clients left.
           (PgBouncer 1.23+ waits for clients to disconnect on their own.)
  SIGQUIT  stop at once, as the admin console's SHUTDOWN.
A second SIGINT or SIGTERM during a shutdown stops at once.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := configArg(cmd, args, &configPath); err != nil {
				return err
			}
			procs := startupWorkers() // before anything changes GOMAXPROCS
			cfg, err := topology.LoadConfig(configPath)
			if err != nil {
				return err
			}
			log, err := logs.logger(cmd.ErrOrStderr(), cfg)
			if err != nil {
				return err
			}
			topology.WarnExposedSecrets(log, configPath, cfg)
			if cfg.PidFile != "" {
				// Before anything else runs: a second shardgate on this
				// config must not resolve in-doubt transactions too.
				remove, err := writePidfile(cfg.PidFile)
				if err != nil {
					return err
				}
				defer remove()
			}
			procs.set(cfg.Workers)
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
			// workers is the process's, so serve applies it rather than the
			// proxy, after every RELOAD and SIGHUP.
			srv.OnApply(func(cfg *topology.Config) { procs.reload(cfg.Workers, log) })
			go handleSignals(ctx, srv, log, time.Duration(cfg.ShutdownTimeout), cancel)
			log.Info("shardgate listening", "addr", cfg.Listen, "database", cfg.Database, "shards", len(cfg.Shards),
				"workers", runtime.GOMAXPROCS(0), "workers_source", procs.source(cfg.Workers))
			return srv.ListenAndServe(ctx)
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "shardgate.yaml", "config file")
	logs.register(cmd)
	return cmd
}

// handleSignals gives the signals PgBouncer operators expect (see the
// serve command's help): reload is SIGHUP's; stop ends the proxy at once.
func handleSignals(ctx context.Context, srv *proxy.Server, log *slog.Logger, drainTimeout time.Duration, stop context.CancelFunc) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	shuttingDown := false
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-sigs:
			switch {
			case sig == syscall.SIGHUP:
				if err := srv.Reload(); err != nil {
					log.Error("reload failed; the running configuration stays", "err", err)
				}
			case sig == syscall.SIGQUIT || shuttingDown:
				log.Info("stopping now", "signal", sig.String())
				stop()
			case sig == syscall.SIGINT:
				shuttingDown = true
				log.Info("safe shutdown: waiting for every transaction to end; signal again to stop now")
				go drainThenStop(ctx, srv, log, 0, stop)
			default: // SIGTERM
				shuttingDown = true
				log.Info("shutdown: waiting for transactions to end", "shutdown_timeout", drainTimeout)
				go drainThenStop(ctx, srv, log, drainTimeout, stop)
			}
		}
	}
}

// drainThenStop drains srv, within timeout unless it is 0, then stops it.
func drainThenStop(ctx context.Context, srv *proxy.Server, log *slog.Logger, timeout time.Duration, stop context.CancelFunc) {
	defer stop()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if err := srv.Drain(ctx); err != nil && ctx.Err() == context.DeadlineExceeded {
		log.Warn("drain timed out; closing the remaining clients", "err", err)
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
