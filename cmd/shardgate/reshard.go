package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shardgate/shardgate/reshard"
	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

func reshardCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reshard",
		Short: "Split or move a shard's key range onto new shards, online",
		Long: "A reshard moves every key of one shard onto new shards while the proxies serve: split or move copies\n" +
			"the schema and the rows, a logical replication stream catches up, cutover switches the proxies, and\n" +
			"complete removes the moved rows from the retired source. State: CONFIG.reshard.json. See README.",
	}
	var o reshardOpts
	o.register(cmd)
	cmd.AddCommand(reshardPreflightCmd(&o), reshardStartCmd(&o, "split"), reshardStartCmd(&o, "move"),
		reshardStatusCmd(&o), reshardVerifyCmd(&o), reshardStepCmd(&o, "cutover"), reshardStepCmd(&o, "abort"), reshardStepCmd(&o, "complete"))
	return cmd
}

// reshardOpts are the flags every reshard command takes.
type reshardOpts struct {
	config         string
	proxies        []string
	cutoverTimeout time.Duration
	json           bool
	logs           logFlags
}

func (o *reshardOpts) register(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVarP(&o.config, "config", "c", "shardgate.yaml", "config file (the state is kept beside it)")
	f.StringArrayVar(&o.proxies, "proxy", nil, "admin console DSN of a proxy serving this config, e.g. postgres://postgres@127.0.0.1:6432/shardgate (repeat for each)")
	f.DurationVar(&o.cutoverTimeout, "cutover-timeout", 10*time.Second, "longest write pause at cutover; past it the old layout keeps serving")
	f.BoolVar(&o.json, "json", false, "status and verify: print JSON")
	f.StringVar(&o.logs.level, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logs.format, "log-format", "text", "text or json")
}

func (o *reshardOpts) logger() (*slog.Logger, error) {
	return newLogger(os.Stderr, o.logs.format, o.logs.level)
}

// runner loads the config and the reshard in progress.
func (o *reshardOpts) runner() (*reshard.Runner, error) {
	cfg, err := topology.LoadConfig(o.config)
	if err != nil {
		return nil, err
	}
	st, ok, err := reshard.LoadState(o.config)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("no reshard in progress for %s (no %s)", o.config, reshard.StatePath(o.config))
	}
	return o.newRunner(cfg, st)
}

func (o *reshardOpts) newRunner(cfg *topology.Config, st *reshard.State) (*reshard.Runner, error) {
	log, err := o.logger()
	if err != nil {
		return nil, err
	}
	return &reshard.Runner{State: st, Config: cfg, Proxies: o.proxies, Log: log, CutoverTimeout: o.cutoverTimeout}, nil
}

// targetFlags name the new shards: NAME=PRIMARY_DSN, or just NAME for a
// shard of the sandbox whose directory holds the config.
type targetFlags struct {
	to, replicas []string
}

func (t *targetFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&t.to, "to", nil, "new shard: NAME=PRIMARY_DSN, or NAME of a sandbox shard (shardgate dev add-shard); split takes two")
	cmd.Flags().StringArrayVar(&t.replicas, "to-replica", nil, "NAME=DSN: a replica of a new shard (repeatable)")
	_ = cmd.MarkFlagRequired("to")
}

func (t *targetFlags) resolve(configPath string) ([]topology.ShardConfig, error) {
	var out []topology.ShardConfig
	for _, spec := range t.to {
		name, dsn, explicit := strings.Cut(spec, "=")
		if !explicit {
			sc, err := sandboxShard(filepath.Dir(configPath), name)
			if err != nil {
				return nil, err
			}
			out = append(out, sc)
			continue
		}
		out = append(out, topology.ShardConfig{Name: name, Primary: dsn})
	}
	for _, spec := range t.replicas {
		name, dsn, ok := strings.Cut(spec, "=")
		i := indexOfShard(out, name)
		if !ok || i < 0 {
			return nil, fmt.Errorf("--to-replica %q: want NAME=DSN for a shard named by --to", spec)
		}
		out[i].Replicas = append(out[i].Replicas, dsn)
	}
	return out, nil
}

func indexOfShard(shards []topology.ShardConfig, name string) int {
	for i, s := range shards {
		if s.Name == name {
			return i
		}
	}
	return -1
}

// sandboxShard finds shard name in the sandbox in dir (sandbox.json).
func sandboxShard(dir, name string) (topology.ShardConfig, error) {
	if _, err := os.Stat(filepath.Join(dir, "sandbox.json")); err != nil {
		return topology.ShardConfig{}, fmt.Errorf("--to %s: not NAME=DSN, and no sandbox beside the config: %w", name, err)
	}
	c, err := sandbox.Open(sandbox.Options{Dir: dir})
	if err != nil {
		return topology.ShardConfig{}, err
	}
	sh := c.Shard(name)
	if sh == nil {
		return topology.ShardConfig{}, fmt.Errorf("--to %s: the sandbox in %s has no such shard (shardgate dev add-shard --dir %s --name %s)", name, dir, dir, name)
	}
	sc := topology.ShardConfig{Name: name, Primary: sh.Primary.DSN(c.Database)}
	for _, r := range sh.Replicas {
		sc.Replicas = append(sc.Replicas, r.DSN(c.Database))
	}
	return sc, nil
}

// plan builds the plan of split or move from the flags.
func (o *reshardOpts) plan(cfg *topology.Config, verb, rangeSpec, at string, t *targetFlags) (reshard.Plan, error) {
	targets, err := t.resolve(o.config)
	if err != nil {
		return reshard.Plan{}, err
	}
	switch {
	case verb == "split" && len(targets) == 2 && at != "":
		return reshard.Split(cfg, rangeSpec, at, targets[0], targets[1])
	case verb == "split":
		return reshard.Plan{}, errors.New("split takes --at and two --to: the keys below --at go to the first, the rest to the second, and the source retires")
	case len(targets) == 1 && at == "":
		return reshard.Move(cfg, rangeSpec, targets[0])
	default:
		return reshard.Plan{}, errors.New("move takes one --to and no --at")
	}
}

func reshardPreflightCmd(o *reshardOpts) *cobra.Command {
	var (
		rangeSpec, at string
		targets       targetFlags
	)
	cmd := &cobra.Command{
		Use:     "preflight --range RANGE [--at BOUND] --to NAME[=DSN]...",
		Short:   "Show the layout a split (with --at) or move would give, and check the servers can take it; changes nothing",
		Example: `  shardgate reshard preflight -c .sandbox/shardgate.yaml --range 80- --at c0 --to s2 --to s3`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			verb := "move"
			if at != "" {
				verb = "split"
			}
			cfg, err := topology.LoadConfig(o.config)
			if err != nil {
				return err
			}
			p, err := o.plan(cfg, verb, rangeSpec, at, &targets)
			if err != nil {
				return err
			}
			return preflight(cmd, cfg, p)
		},
	}
	planFlags(cmd, &rangeSpec, &at, &targets)
	return cmd
}

func planFlags(cmd *cobra.Command, rangeSpec, at *string, t *targetFlags) {
	cmd.Flags().StringVar(rangeSpec, "range", "", "the source shard's keyspace range, as in the config (\"80-\")")
	cmd.Flags().StringVar(at, "at", "", "split point: keys below it go to the first --to, the rest to the second")
	t.register(cmd)
	_ = cmd.MarkFlagRequired("range")
}

// preflight prints the plan and the checks; a refusal exits 1.
func preflight(cmd *cobra.Command, cfg *topology.Config, p reshard.Plan) error {
	next, err := p.Apply(cfg)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	for _, part := range p.Parts {
		fmt.Fprintf(out, "keys %s move from shard %s to new shard %s\n", part.Range, p.Source, part.Target.Name)
	}
	printKeyspace(out, "before", cfg)
	printKeyspace(out, "after ", next)
	problems, err := reshard.Preflight(cmd.Context(), cfg, p)
	if err != nil {
		return err
	}
	for _, pr := range problems {
		fmt.Fprintln(out, "refused:", pr)
	}
	if len(problems) > 0 {
		return exitError(1)
	}
	fmt.Fprintln(out, "preflight: ok")
	return nil
}

func printKeyspace(w io.Writer, label string, cfg *topology.Config) {
	fmt.Fprintf(w, "%s:", label)
	for _, r := range cfg.Keyspace {
		fmt.Fprintf(w, " %s=%s", r.Range, r.Shard)
	}
	fmt.Fprintln(w)
}
