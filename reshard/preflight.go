package reshard

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

// Preflight checks, before anything is touched, that the source and the
// targets of p can take the reshard, and returns every reason they cannot,
// each a sentence a DBA can act on. An error means a server could not be
// asked. It reads only: nothing is created or changed.
func Preflight(ctx context.Context, cfg *topology.Config, p Plan) ([]string, error) {
	source := slices.IndexFunc(cfg.Shards, func(s topology.ShardConfig) bool { return s.Name == p.Source })
	if source < 0 {
		return nil, fmt.Errorf("source shard %s is not in the config", p.Source)
	}
	src, err := pgx.Connect(ctx, cfg.Shards[source].Primary)
	if err != nil {
		return nil, fmt.Errorf("connect to the primary of source shard %s: %w", p.Source, err)
	}
	defer src.Close(context.Background())
	c := &checker{ctx: ctx}
	c.walLevel("source shard "+p.Source, src)
	c.inDoubt("source shard "+p.Source, src)
	tables := slices.Sorted(maps.Keys(cfg.Tables))
	for _, name := range tables {
		c.replicable(p.Source, src, name, cfg.Tables[name].ShardKey)
	}
	for _, name := range cfg.ReferenceTables {
		c.replicable(p.Source, src, name, "")
	}
	all := append(slices.Clone(tables), cfg.ReferenceTables...)
	for _, part := range p.Parts {
		c.target(part.Target, all)
	}
	return c.problems, c.err
}

// checker gathers problems; the first query that fails ends the checks.
type checker struct {
	ctx      context.Context
	problems []string
	err      error
}

func (c *checker) query(conn *pgx.Conn, sql string, args []any, dest ...any) bool {
	if c.err != nil {
		return false
	}
	err := conn.QueryRow(c.ctx, sql, args...).Scan(dest...)
	if err == pgx.ErrNoRows {
		return false
	}
	if err != nil {
		c.err = fmt.Errorf("preflight query %q: %w", strings.Fields(sql)[1], err)
		return false
	}
	return true
}

func (c *checker) problem(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// walLevel: the copy and the catch-up read a logical replication slot on
// the source, and reverse replication after cutover one on the target.
func (c *checker) walLevel(server string, conn *pgx.Conn) {
	var level string
	if c.query(conn, "SELECT current_setting('wal_level')", nil, &level) && level != "logical" {
		c.problem("%s: wal_level is %s; resharding needs wal_level = logical (postgresql.conf, then restart)", server, level)
	}
}

// inDoubt: a prepared transaction of shardgate's two-phase commit holds
// rows the copy cannot see as committed or not.
func (c *checker) inDoubt(server string, conn *pgx.Conn) {
	var n int
	if c.query(conn, `SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'shardgate\_%' AND database = current_database()`, nil, &n) && n > 0 {
		c.problem("%s: %d in-doubt prepared transaction(s) of shardgate: restart shardgate serve to resolve them first", server, n)
	}
}

// replicable: applying updates and deletes from the change stream needs
// each row's identity, and the shard key to know whether the row moves.
func (c *checker) replicable(shard string, conn *pgx.Conn, table, key string) {
	var (
		identity       string
		hasPK, keyInPK bool
	)
	const q = `SELECT c.relreplident::text,
	EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
	EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		WHERE i.indrelid = c.oid AND i.indisprimary AND a.attname = $2)
FROM pg_class c WHERE c.oid = to_regclass($1)`
	if !c.query(conn, q, []any{pgx.Identifier{table}.Sanitize(), key}, &identity, &hasPK, &keyInPK) {
		if c.err == nil {
			c.problem("source shard %s: table %s is in the config but does not exist there", shard, table)
		}
		return
	}
	switch {
	case !hasPK && identity == "f" && key == "":
		// A reference table needs only its rows' identity.
	case !hasPK:
		c.problem("source shard %s: table %s has no primary key; resharding needs one to apply updates and deletes", shard, table)
	case key != "" && !keyInPK && identity != "f":
		c.problem("source shard %s: the primary key of table %s does not contain its shard key %s; add it to the key or ALTER TABLE %s REPLICA IDENTITY FULL", shard, table, key, table)
	}
}

// target checks a new shard's primary.
func (c *checker) target(to topology.ShardConfig, tables []string) {
	if c.err != nil {
		return
	}
	dst, err := pgx.Connect(c.ctx, to.Primary)
	if err != nil {
		c.err = fmt.Errorf("connect to the primary of target shard %s: %w", to.Name, err)
		return
	}
	defer dst.Close(context.Background())
	c.walLevel("target shard "+to.Name, dst)
	c.inDoubt("target shard "+to.Name, dst)
	for _, name := range tables {
		c.empty(to.Name, dst, name)
	}
}

// empty: the target must hold nothing of the tables, or moved rows would
// mix with rows no one can account for.
func (c *checker) empty(shard string, conn *pgx.Conn, table string) {
	var exists bool
	if !c.query(conn, "SELECT to_regclass($1) IS NOT NULL", []any{pgx.Identifier{table}.Sanitize()}, &exists) || !exists {
		return // the schema step creates it
	}
	var rows bool
	if c.query(conn, "SELECT EXISTS (SELECT 1 FROM "+pgx.Identifier{table}.Sanitize()+")", nil, &rows) && rows {
		c.problem("target shard %s is not empty: table %s has rows; resharding moves keys only onto an empty shard", shard, table)
	}
}
