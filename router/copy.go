package router

import (
	"slices"

	pg "github.com/pganalyze/pg_query_go/v5"

	"github.com/shardgate/shardgate/topology"
)

// CopyIn describes COPY ... FROM STDIN for the proxy, which reads each
// row's shard key and sends the row to the shard that owns it.
type CopyIn struct {
	Schema, Table string
	// Columns is the statement's column list; empty means every column in
	// table order, which only a server knows.
	Columns []string
	// Key is the shard-key column; "" for a reference table, whose rows go
	// to every shard.
	Key     string
	KeyType topology.KeyType
	// Default: a table the config does not name, whose rows all go to
	// the default shard.
	Default bool
	Stmt    *pg.CopyStmt // for the format options
}

func analyzeCopyIn(t *topology.Topology, c *pg.CopyStmt) *Statement {
	if c.Filename != "" || c.IsProgram {
		return refused("COPY from a server file or program is not supported: use COPY ... FROM STDIN")
	}
	rel := c.Relation
	in := &CopyIn{Schema: rel.Schemaname, Table: rel.Relname, Stmt: c}
	for _, a := range c.Attlist {
		in.Columns = append(in.Columns, a.GetString_().GetSval())
	}
	table, sharded := t.Tables[rel.Relname]
	switch {
	case isSystemRelation(rel):
		return refused("COPY into a system catalog is not supported")
	case t.Reference[rel.Relname]:
		return &Statement{Class: ClassCopyIn, Role: RolePrimary, CopyIn: in, Reason: "COPY into a reference table: every row to every shard"}
	case !sharded:
		if _, ok := t.DefaultShard(); ok {
			in.Default = true
			return &Statement{Class: ClassCopyIn, Role: RolePrimary, CopyIn: in, Reason: "COPY into " + rel.Relname + ", which the config does not name: every row to the default shard"}
		}
		return unknownTable(rel)
	case len(in.Columns) > 0 && !slices.Contains(in.Columns, table.ShardKey):
		return refused("COPY into %s must include its shard key column %s", rel.Relname, table.ShardKey)
	}
	in.Key, in.KeyType = table.ShardKey, table.KeyType
	return &Statement{Class: ClassCopyIn, Role: RolePrimary, CopyIn: in, Reason: "COPY FROM: each row to the shard owning its " + table.ShardKey}
}
