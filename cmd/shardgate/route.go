package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shardgate/shardgate/router"
	"github.com/shardgate/shardgate/topology"
)

func routeCmd() *cobra.Command {
	var (
		configPath string
		asJSON     bool
		params     []string
	)
	cmd := &cobra.Command{
		Use:   "route --config FILE [--json] [--param VALUE]... SQL|-",
		Short: "Show where the proxy would send a statement, and why",
		Long: "Route SQL exactly as the proxy does and print the plan: shards, role, shard-key values, hashes, keyspace ranges and the reason.\n" +
			"--param gives $1, $2, ... as text bind parameters. SQL \"-\" reads the statement from standard input\n" +
			"(an argument holds at most 128 KiB). Exits 1 when the statement would be refused.",
		Example: `  shardgate route --config shardgate.yaml --json "SELECT * FROM users WHERE id = 42"
  shardgate route -c shardgate.yaml --param 42 "SELECT * FROM posts WHERE user_id = $1"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, t, err := loadTopology(configPath)
			if err != nil {
				return err
			}
			sql, err := statementArg(cmd, args[0])
			if err != nil {
				return err
			}
			ex := router.New(t, 1).Explain(sql, params)
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				enc.SetEscapeHTML(false)
				if err := enc.Encode(ex); err != nil {
					return err
				}
			} else {
				printExplanation(out, ex)
			}
			if ex.Error != nil {
				return exitError(1)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "shardgate.yaml", "config file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON")
	cmd.Flags().StringArrayVarP(&params, "param", "p", nil, "a text bind parameter ($1, $2, ... in order)")
	return cmd
}

// statementArg is the SQL argument, or standard input for "-".
func statementArg(cmd *cobra.Command, arg string) (string, error) {
	if arg != "-" {
		return arg, nil
	}
	b, err := io.ReadAll(cmd.InOrStdin())
	return string(b), err
}

// loadTopology reads and validates a config file and builds its topology.
func loadTopology(path string) (*topology.Config, *topology.Topology, error) {
	cfg, err := topology.LoadConfig(path)
	if err != nil {
		return nil, nil, err
	}
	t, err := topology.New(cfg)
	return cfg, t, err
}

func printExplanation(w interface{ Write([]byte) (int, error) }, ex router.Explanation) {
	if ex.Error != nil {
		fmt.Fprintf(w, "refused: %s (SQLSTATE %s)\n", ex.Error.Message, ex.Error.Code)
		if len(ex.Shards) > 0 {
			fmt.Fprintf(w, "needs:   %s\n", strings.Join(ex.Shards, ", "))
		}
		return
	}
	fmt.Fprintf(w, "shards: %s\nrole:   %s\ntarget: %s\nreason: %s\ncached: %v\n", strings.Join(ex.Shards, ", "), ex.Role, ex.Target, ex.Reason, ex.CacheHit)
	for _, k := range ex.Keys {
		fmt.Fprintf(w, "key:    %s = %s  hash %s  range %s  shard %s\n", k.Table, k.Value, k.Hash, k.Range, k.Shard)
	}
	if ex.Plan != nil {
		fmt.Fprintf(w, "plan:   %s\n", ex.Plan)
	}
}
