package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/shardgate/shardgate/reshard"
	"github.com/shardgate/shardgate/topology"
)

func reshardCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reshard",
		Short: "Move key ranges between shards (so far: plan and preflight checks)",
	}
	cmd.AddCommand(reshardPreflightCmd())
	return cmd
}

func reshardPreflightCmd() *cobra.Command {
	var (
		configPath, rangeSpec, at string
		to                        topology.ShardConfig
	)
	cmd := &cobra.Command{
		Use:   "preflight --config FILE --range RANGE [--at BOUND] --to NAME --to-primary DSN",
		Short: "Show the keyspace a split or move would give, and check the servers can take it",
		Long: "With --at, plan a split: the keys of RANGE from BOUND upwards move to the new shard NAME; without it, a move of the\n" +
			"whole range. Prints the keyspace before and after, then checks the source and target primaries (wal_level,\n" +
			"primary keys, in-doubt prepared transactions, an empty target). Reads only; exits 1 when a check fails.",
		Example: `  shardgate reshard preflight -c shardgate.yaml --range 80- --at c0 --to s2 --to-primary postgres://postgres@127.0.0.1:7004/app`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := loadTopology(configPath)
			if err != nil {
				return err
			}
			var p reshard.Plan
			if at != "" {
				p, err = reshard.Split(cfg, rangeSpec, at, to)
			} else {
				p, err = reshard.Move(cfg, rangeSpec, to)
			}
			if err != nil {
				return err
			}
			next, err := p.Apply(cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "keys %s move from shard %s to new shard %s\n", p.Moving, p.Source, p.Target.Name)
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
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "shardgate.yaml", "config file")
	cmd.Flags().StringVar(&rangeSpec, "range", "", "the keyspace range to split or move, as in the config (\"80-\")")
	cmd.Flags().StringVar(&at, "at", "", "split point: keys from here to the end of the range move")
	cmd.Flags().StringVar(&to.Name, "to", "", "name of the new shard")
	cmd.Flags().StringVar(&to.Primary, "to-primary", "", "DSN of the new shard's primary")
	cmd.Flags().StringArrayVar(&to.Replicas, "to-replica", nil, "DSN of a replica of the new shard (repeatable)")
	for _, name := range []string{"range", "to", "to-primary"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func printKeyspace(w io.Writer, label string, cfg *topology.Config) {
	fmt.Fprintf(w, "%s:", label)
	for _, r := range cfg.Keyspace {
		fmt.Fprintf(w, " %s=%s", r.Range, r.Shard)
	}
	fmt.Fprintln(w)
}
