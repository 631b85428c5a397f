// Command shardgate is the PostgreSQL sharding proxy's CLI.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/shardgate/shardgate/metrics"
	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/topology"
)

func main() {
	if err := rootCmd().ExecuteContext(context.Background()); err != nil {
		var exit exitError
		if errors.As(err, &exit) {
			os.Exit(int(exit))
		}
		fmt.Fprintln(os.Stderr, "shardgate:", err)
		os.Exit(1)
	}
}

// exitError ends the process with a status and no further message.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit %d", int(e)) }

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "shardgate",
		Short:         "shardgate is a PostgreSQL sharding proxy",
		Long:          "shardgate speaks the Postgres wire protocol, routes each statement by its shard key to the shard that owns it,\nand pools server connections. Point an application's DSN at it; see README.md.",
		Version:       proxy.BuildVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("shardgate {{.Version}}\n")
	var cpuProfile string
	root.PersistentFlags().StringVar(&cpuProfile, "cpu-profile", "", "write a CPU profile of the whole run to this file")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if cpuProfile == "" {
			return nil
		}
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		return pprof.StartCPUProfile(f)
	}
	root.PersistentPostRun = func(*cobra.Command, []string) { pprof.StopCPUProfile() }
	root.AddCommand(serveCmd(), devCmd(), routeCmd(), checkCmd(), reshardCmd(), importPgBouncerCmd(), versionCmd())
	return root
}

// newLogger builds the process's logger from the config's log_format and
// log_level, each overridden by its flag when that is set.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// configArg lets a config file be named as PgBouncer users name
// pgbouncer.ini, as the only argument, as well as with --config.
func configArg(cmd *cobra.Command, args []string, path *string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.Flags().Changed("config") {
		return fmt.Errorf("config file given twice: --config %s and %s", *path, args[0])
	}
	*path = args[0]
	return nil
}

// logFlags are --log-level and --log-format: empty means the config's.
type logFlags struct{ level, format string }

func (f *logFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.level, "log-level", "", "debug, info, warn or error (default: the config's log_level, else info)")
	cmd.Flags().StringVar(&f.format, "log-format", "", "text or json (default: the config's log_format, else text)")
}

func (f *logFlags) logger(w io.Writer, cfg *topology.Config) (*slog.Logger, error) {
	return newLogger(w, cmp.Or(f.format, cfg.LogFormat), cmp.Or(f.level, cfg.LogLevel))
}

// serveMetrics opens cfg's metrics listener, if it names one, and serves
// srv's metrics (and pprof) there until ctx ends.
func serveMetrics(ctx context.Context, srv *proxy.Server, cfg *topology.Config, log *slog.Logger) error {
	if cfg.MetricsListen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", cfg.MetricsListen)
	if err != nil {
		return fmt.Errorf("metrics_listen: %w", err)
	}
	log.Info("metrics listening", "addr", "http://"+ln.Addr().String()+"/metrics", "pprof", cfg.PProf)
	go func() {
		if err := metrics.Serve(ctx, ln, srv.MetricsHandler()); err != nil {
			log.Error("metrics listener failed", "err", err)
		}
	}()
	return nil
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print shardgate's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "shardgate", proxy.BuildVersion())
		},
	}
}
