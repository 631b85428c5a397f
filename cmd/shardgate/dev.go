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
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/shardgate/shardgate/metrics"
	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

// Holders of the sandbox's run lock, as its error names them.
const (
	devHolder      = "shardgate dev"
	addShardHolder = "shardgate dev add-shard"
)

const devLong = `Start (or restart, if --dir already holds one) a sandbox: PostgreSQL primaries with streaming replicas
on loopback ports, with sandbox/schema.sql loaded, and run the proxy in the foreground. Ctrl-C (SIGINT), SIGTERM
and SIGHUP (a closed terminal) all stop the proxy and then every server of the sandbox.

Config: the first start writes DIR/shardgate.yaml (admin_users: [postgres], so
psql postgresql://postgres@127.0.0.1:6432/shardgate opens the admin console). Later starts use that file as you
left it: tables, pool settings, admin_users, and the shards and keyspace a reshard wrote. Two exceptions:
  - --listen and --metrics-listen, when given, override the file's listen and metrics_listen for this run
    (the file keeps its values);
  - a shard DSN on a loopback host whose port is no server of the sandbox (say the sandbox was made anew) is
    pointed at the sandbox's server of the same shard and role (primary, or the n-th replica): dev rewrites just
    that port in the file and logs each change. DSNs of other hosts, and shards the sandbox lacks, are left alone.
Delete the file to have it generated again.

Ports: servers take free ports, or with --pg-port consecutive ports from that base (s0's primary, its replicas,
then s1's, ...; shards added later take the next ones). A sandbox keeps its ports across restarts.

One dev at a time per --dir: a second one fails at once, naming the first one's pid, and touches nothing.
` + "`shardgate dev add-shard`" + ` may run beside it.`

type devOptions struct {
	dir, listen, metricsListen string
	listenSet, metricsSet      bool // given on the command line: they override the config file
	shards, replicas, pgPort   int
	logs                       logFlags
}

func devCmd() *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev [--shards 2] [--replicas 1] [--dir PATH] [--listen 127.0.0.1:6432] [--pg-port PORT]",
		Short: "Run a local sandbox: shards with streaming replicas behind the proxy",
		Long:  devLong,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.listenSet, o.metricsSet = cmd.Flags().Changed("listen"), cmd.Flags().Changed("metrics-listen")
			return runDev(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", ".sandbox", "where the clusters live; reused when it already holds a sandbox")
	f.StringVar(&o.listen, "listen", "127.0.0.1:6432", "proxy listen address; if not given, the config's listen once DIR/shardgate.yaml exists")
	f.IntVar(&o.shards, "shards", 2, "number of shards (new sandboxes only)")
	f.IntVar(&o.replicas, "replicas", 1, "streaming replicas per shard (new sandboxes only)")
	f.IntVar(&o.pgPort, "pg-port", 0, "first of consecutive PostgreSQL ports for the servers (new sandboxes only; 0: free ports)")
	f.StringVar(&o.metricsListen, "metrics-listen", "127.0.0.1:9187", "Prometheus /metrics and pprof listener, empty for none; if not given, the config's metrics_listen once DIR/shardgate.yaml exists")
	o.logs.register(cmd)
	cmd.AddCommand(devAddShardCmd())
	return cmd
}

// runDev runs the sandbox and the proxy until ctx ends or a signal comes.
// Once the sandbox is locked, every failure stops exactly the servers this
// run started; once the proxy serves, the end stops every server.
func runDev(ctx context.Context, out, errOut io.Writer, o devOptions) (err error) {
	path := filepath.Join(o.dir, "shardgate.yaml")
	file, err := loadDevConfig(path) // nil on a first start
	if err != nil {
		return err
	}
	log, err := devLogger(errOut, o.logs, file)
	if err != nil {
		return err
	}
	ctx, stopSignals := stopOnSignals(ctx, log)
	defer stopSignals()
	unlock, err := sandbox.Lock(o.dir, devHolder)
	if err != nil {
		if _, ok := errors.AsType[*sandbox.InUseError](err); ok {
			return fmt.Errorf("%w; stop it or use --dir", err)
		}
		return err
	}
	defer unlock()

	// Listen before starting servers, so a taken port fails fast.
	listen, metricsListen := o.addrs(file)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	var mln net.Listener
	if metricsListen != "" {
		if mln, err = net.Listen("tcp", metricsListen); err != nil {
			return fmt.Errorf("metrics_listen: %w", err)
		}
		defer mln.Close()
	}

	began := time.Now()
	replicas := o.replicas
	if replicas == 0 {
		replicas = sandbox.NoReplicas
	}
	cluster, err := sandbox.Start(ctx, sandbox.Options{
		Dir: o.dir, Shards: o.shards, Replicas: replicas, BasePort: o.pgPort, Schema: sandbox.Schema, Logger: log,
	})
	if err != nil {
		return devPortHint(err, o.pgPort)
	}
	serving := false
	defer func() {
		stop := cluster.StopStarted
		if serving {
			stop = cluster.Stop
		}
		if err := stop(); err != nil {
			log.Error("stopping sandbox", "err", err)
			return
		}
		log.Info("sandbox stopped", "dir", cluster.Dir)
	}()

	cfg, err := devConfig(cluster, path, o, log)
	if err != nil {
		return err
	}
	srv, err := proxy.New(cfg, log)
	if err != nil {
		return err
	}
	srv.SetConfigFile(path) // RELOAD in the admin console re-reads the file
	if mln != nil {
		log.Info("metrics listening", "addr", "http://"+mln.Addr().String()+"/metrics", "pprof", cfg.PProf)
		go func() {
			if err := metrics.Serve(ctx, mln, srv.MetricsHandler()); err != nil {
				log.Error("metrics listener failed", "err", err)
			}
		}()
	}
	serving = true
	fmt.Fprintf(out, "shardgate dev ready in %.1fs: psql postgresql://postgres@%s/%s  (config %s; Ctrl-C stops)\n",
		time.Since(began).Seconds(), ln.Addr(), cfg.Database, path)
	return srv.Serve(ctx, ln)
}

// addrs are the proxy's and the metrics' listen addresses: the flags when
// given, else the config file's, else the flags' defaults.
func (o devOptions) addrs(file *topology.Config) (listen, metricsListen string) {
	listen, metricsListen = o.listen, o.metricsListen
	if file != nil && !o.listenSet {
		listen = file.Listen
	}
	if file != nil && !o.metricsSet {
		metricsListen = file.MetricsListen
	}
	return listen, metricsListen
}

func devLogger(w io.Writer, logs logFlags, file *topology.Config) (*slog.Logger, error) {
	if file != nil {
		return logs.logger(w, file)
	}
	return newLogger(w, cmp.Or(logs.format, "text"), cmp.Or(logs.level, "info"))
}

// devPortHint names the flag when the ports --pg-port asked for are taken.
func devPortHint(err error, pgPort int) error {
	if pgPort != 0 {
		return fmt.Errorf("%w (--pg-port %d)", err, pgPort)
	}
	return err
}

// stopOnSignals ends ctx at the first SIGINT, SIGTERM or SIGHUP, logging
// which: dev's servers must be stopped however the terminal goes away.
// Later signals are logged and ignored while dev stops. SIGPIPE is caught
// too, so that logging to a closed pipe cannot kill dev mid-stop.
func stopOnSignals(parent context.Context, log *slog.Logger) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGPIPE)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case sig := <-sigs:
				name := signalName(sig)
				switch {
				case sig == syscall.SIGPIPE:
				case ctx.Err() == nil:
					log.Info("stopping the proxy, then the sandbox's servers", "signal", name)
					cancel(errors.New(name))
				default:
					log.Info("already stopping", "signal", name)
				}
			}
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel(nil)
	}
}

func signalName(sig os.Signal) string {
	switch sig {
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	}
	return sig.String()
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
			"the new servers are left running and that dev stops them when it stops. If no dev runs the sandbox, add-shard stops\n" +
			"the new servers again; the next `shardgate dev` starts them with the rest. The shard joins the proxy's layout only\n" +
			"through a reshard.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			log, err := newLogger(cmd.ErrOrStderr(), cmp.Or(logs.format, "text"), cmp.Or(logs.level, "info"))
			if err != nil {
				return err
			}
			cluster, err := sandbox.Open(sandbox.Options{Dir: dir, Logger: log})
			if err != nil {
				return err
			}
			running, unlock, err := lockForAddShard(dir)
			if err != nil {
				return err
			}
			defer unlock()
			sh, err := cluster.AddShard(ctx, name)
			if err != nil {
				return err
			}
			if !running {
				for _, s := range slices.Concat(sh.Replicas, []*sandbox.Server{sh.Primary}) {
					if err := cluster.StopServer(context.WithoutCancel(ctx), s); err != nil {
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

// lockForAddShard tells whether a dev runs the sandbox in dir. If one does,
// the new servers are its to stop and add-shard takes no lock (AddShard
// guards sandbox.json itself). If none does, add-shard holds the run lock
// until it has stopped its servers again, so that no dev starting meanwhile
// sees them stop under it.
func lockForAddShard(dir string) (devRunning bool, unlock func() error, err error) {
	unlock, err = sandbox.Lock(dir, addShardHolder)
	inUse, ok := errors.AsType[*sandbox.InUseError](err)
	switch {
	case err == nil:
		return false, unlock, nil
	case !ok:
		return false, nil, err
	case inUse.Holder == addShardHolder:
		return false, nil, fmt.Errorf("%w; wait for it to finish", err)
	}
	return true, func() error { return nil }, nil
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
