package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/shardgate/shardgate/topology"
)

func importPgBouncerCmd() *cobra.Command {
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "import-pgbouncer pgbouncer.ini [-o shardgate.yaml]",
		Short: "Convert a single-database pgbouncer.ini into a shardgate config",
		Long: "Convert a pgbouncer.ini that serves one database into a shardgate config that serves the same pools:\n" +
			"one shard holding every table (default_shard), the database's server as its primary, and the pool, timeout,\n" +
			"auth and TLS settings under their PgBouncer names. Settings with no equivalent are listed as notes, on stderr\n" +
			"and as comments in the file. The result is validated as `shardgate check` would before it is written.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			text, notes, err := topology.FromPgBouncer(args[0], data)
			if err != nil {
				return err
			}
			name := out
			if name == "" || name == "-" {
				name = "shardgate.yaml"
			}
			if _, err := topology.ParseConfig(name, text); err != nil {
				return fmt.Errorf("the converted config is not valid (please report this): %w", err)
			}
			for _, n := range notes {
				fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
			}
			if out == "" || out == "-" {
				_, err := cmd.OutOrStdout().Write(text)
				return err
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			f, err := os.OpenFile(out, flags, 0o600) // it may hold server passwords
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s exists: --force overwrites it", out)
			}
			if err != nil {
				return err
			}
			if _, err := f.Write(text); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the config here (default: stdout)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite the output file")
	return cmd
}
