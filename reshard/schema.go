package reshard

import (
	"bytes"
	"context"
	"fmt"
	osexec "os/exec" // the tests have a helper called exec
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// CopySchema creates tables on the target as they are on the source: their
// columns, defaults, indexes, constraints and owned sequences, as pg_dump
// --schema-only writes them (PostgreSQL's own tool knows every kind of
// object; a hand-written catalog walk would miss some). It does nothing if
// the target already has every table, so a rerun is safe, and runs the
// whole dump as one implicit transaction, so a failure leaves nothing
// half-made.
func CopySchema(ctx context.Context, srcDSN, dstDSN string, tables []string) error {
	dst, err := pgconn.Connect(ctx, dstDSN)
	if err != nil {
		return fmt.Errorf("connect to the target: %w", err)
	}
	defer dst.Close(context.Background())
	missing, err := missingTables(ctx, dst, tables)
	if err != nil {
		return err
	}
	switch {
	case len(missing) == 0:
		return nil
	case len(missing) < len(tables):
		return fmt.Errorf("the target has some of the tables but not %s: drop them or create the rest by hand", strings.Join(missing, ", "))
	}
	ddl, err := dumpSchema(ctx, srcDSN, tables)
	if err != nil {
		return err
	}
	if _, err := dst.Exec(ctx, withoutMetaCommands(ddl)).ReadAll(); err != nil {
		return fmt.Errorf("create the schema on the target: %w", err)
	}
	return nil
}

// withoutMetaCommands drops the psql meta-commands of a dump (\restrict
// and \unrestrict since 15.14, guarding psql against a hostile server),
// which the server would take for SQL. A line of the schema SQL never
// starts with a backslash.
func withoutMetaCommands(dump []byte) string {
	var b strings.Builder
	for line := range strings.Lines(string(dump)) {
		if !strings.HasPrefix(line, "\\") {
			b.WriteString(line)
		}
	}
	return b.String()
}

func missingTables(ctx context.Context, conn *pgconn.PgConn, tables []string) ([]string, error) {
	var missing []string
	for _, t := range tables {
		res := conn.ExecParams(ctx, "SELECT to_regclass($1) IS NULL", [][]byte{[]byte(pgx.Identifier{t}.Sanitize())}, nil, nil, nil).Read()
		if res.Err != nil {
			return nil, fmt.Errorf("look up table %s on the target: %w", t, res.Err)
		}
		if string(res.Rows[0][0]) == "t" {
			missing = append(missing, t)
		}
	}
	return missing, nil
}

func dumpSchema(ctx context.Context, srcDSN string, tables []string) ([]byte, error) {
	bin, err := pgDump()
	if err != nil {
		return nil, err
	}
	args := []string{"--schema-only", "--no-owner", "--no-privileges", "--no-publications", "--no-subscriptions", "-d", srcDSN}
	for _, t := range tables {
		args = append(args, "-t", pgx.Identifier{t}.Sanitize()) // quoted: not a pattern
	}
	var stderr bytes.Buffer
	cmd := osexec.CommandContext(ctx, bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("pg_dump --schema-only of the source: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// pgDump finds pg_dump: on PATH, else where Debian installs PostgreSQL 15.
func pgDump() (string, error) {
	if p, err := osexec.LookPath("pg_dump"); err == nil {
		return p, nil
	}
	if p, err := osexec.LookPath("/usr/lib/postgresql/15/bin/pg_dump"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("pg_dump not found: install the PostgreSQL client (it copies the schema onto the target)")
}
