package router

import (
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"

	"github.com/shardgate/shardgate/topology"
)

// tableKind sorts the relations a statement touches.
type tableSet struct {
	sharded   []*pg.RangeVar
	reference []*pg.RangeVar
}

func isSystemRelation(r *pg.RangeVar) bool {
	switch r.Schemaname {
	case "pg_catalog", "information_schema":
		return true
	case "":
		return strings.HasPrefix(r.Relname, "pg_")
	}
	return false
}

// classifyTables sorts every relation in the tree, refusing tables that the
// config does not name: guessing where an unknown table lives would be
// silently wrong.
func classifyTables(t *topology.Topology, root *pg.Node) (tableSet, *Statement) {
	var ts tableSet
	for _, r := range relations(root) {
		switch {
		case isSystemRelation(r):
		case t.Reference[r.Relname]:
			ts.reference = append(ts.reference, r)
		default:
			if _, ok := t.Tables[r.Relname]; ok {
				ts.sharded = append(ts.sharded, r)
				continue
			}
			return ts, refused("table %q is not in shardgate's config: add it to tables (with its shard_key) or to reference_tables", r.Relname)
		}
	}
	return ts, nil
}

func analyzeSelect(t *topology.Topology, sel *pg.SelectStmt, root *pg.Node) *Statement {
	if sel.IntoClause != nil {
		return refused("SELECT INTO is not supported: use CREATE TABLE AS")
	}
	ts, bad := classifyTables(t, root)
	if bad != nil {
		return bad
	}
	role := RoleReplica
	if len(sel.LockingClause) > 0 || writesData(root) {
		role = RolePrimary
	}
	if len(ts.sharded) == 0 {
		reason := "no sharded table: any shard answers the same"
		if len(ts.reference) > 0 {
			reason = "reads only reference tables, which every shard holds"
		}
		return &Statement{Class: ClassAny, Role: role, Reason: reason}
	}
	st := keyed(t, ts.sharded, topLevelRelations(sel.FromClause, nil), sel.WhereClause)
	if st.Class == ClassKeyed {
		st.Role = role
	}
	return st
}

func analyzeInsert(t *topology.Topology, ins *pg.InsertStmt, root *pg.Node) *Statement {
	ts, bad := classifyTables(t, root)
	if bad != nil {
		return bad
	}
	rel := ins.Relation
	if st := unshardedWrite(t, ts, rel); st != nil {
		return st
	}
	if len(ts.sharded) > 1 {
		return refused("INSERT ... SELECT from sharded tables is not supported yet")
	}
	table := t.Tables[rel.Relname]
	col := -1
	for i, c := range ins.Cols {
		if c.GetResTarget().GetName() == table.ShardKey {
			col = i
		}
	}
	if col < 0 {
		return refused("INSERT into %s must name its shard key column %q", table.Name, table.ShardKey)
	}
	values := ins.GetSelectStmt().GetSelectStmt()
	if values == nil || len(values.ValuesLists) == 0 {
		return refused("INSERT into %s must use VALUES (INSERT ... SELECT is not supported yet)", table.Name)
	}
	st := &Statement{Class: ClassKeyed, Role: RolePrimary, Table: table.Name, KeyType: table.KeyType}
	for _, row := range values.ValuesLists {
		items := row.GetList().GetItems()
		if col >= len(items) {
			return refused("INSERT into %s has fewer values than columns", table.Name)
		}
		ref, ok := keyRefOf(items[col])
		if !ok {
			return refused("INSERT into %s: the shard key %s must be a constant or a parameter", table.Name, table.ShardKey)
		}
		st.Keys = append(st.Keys, ref)
	}
	st.Reason = "INSERT into " + table.Name + " by " + table.ShardKey
	return st
}

func analyzeUpdate(t *topology.Topology, upd *pg.UpdateStmt, root *pg.Node) *Statement {
	table, ok := t.Tables[upd.Relation.Relname]
	if ok {
		for _, target := range upd.TargetList {
			if target.GetResTarget().GetName() == table.ShardKey {
				return refused("UPDATE of the shard key %s.%s is not supported: delete and insert the row instead", table.Name, table.ShardKey)
			}
		}
	}
	return analyzeWrite(t, root, upd.Relation, upd.FromClause, upd.WhereClause)
}

func analyzeDelete(t *topology.Topology, del *pg.DeleteStmt, root *pg.Node) *Statement {
	return analyzeWrite(t, root, del.Relation, del.UsingClause, del.WhereClause)
}

func analyzeWrite(t *topology.Topology, root *pg.Node, rel *pg.RangeVar, from []*pg.Node, where *pg.Node) *Statement {
	ts, bad := classifyTables(t, root)
	if bad != nil {
		return bad
	}
	if st := unshardedWrite(t, ts, rel); st != nil {
		return st
	}
	st := keyed(t, ts.sharded, topLevelRelations(from, []*pg.RangeVar{rel}), where)
	st.Role = RolePrimary
	return st
}

// unshardedWrite answers writes whose target is not a sharded table:
// reference tables are written on every shard, catalogs not at all. It
// returns nil for a sharded target.
func unshardedWrite(t *topology.Topology, ts tableSet, rel *pg.RangeVar) *Statement {
	switch {
	case t.Reference[rel.Relname] && len(ts.sharded) > 0:
		return refused("a write to reference table %q may not read sharded tables", rel.Relname)
	case t.Reference[rel.Relname]:
		return &Statement{Class: ClassAll, Role: RolePrimary, Reason: "writes reference table " + rel.Relname + " on every shard"}
	case isSystemRelation(rel):
		return refused("writes to system catalogs are not supported")
	}
	return nil
}

// writesData reports data-modifying CTEs and functions known to write, which
// make an otherwise read-only SELECT need the primary.
func writesData(root *pg.Node) bool {
	return hasMessage(root, func(m any) bool {
		switch n := m.(type) {
		case *pg.InsertStmt, *pg.UpdateStmt, *pg.DeleteStmt:
			return true
		case *pg.FuncCall:
			return writingFunctions[lastName(n.Funcname)]
		}
		return false
	})
}

var writingFunctions = map[string]bool{
	"nextval": true, "setval": true, "pg_advisory_lock": true, "pg_advisory_xact_lock": true,
	"pg_try_advisory_lock": true, "pg_try_advisory_xact_lock": true, "pg_advisory_unlock": true,
	"txid_current": true, "pg_current_xact_id": true, "lo_create": true, "lo_unlink": true,
}

func lastName(names []*pg.Node) string {
	if len(names) == 0 {
		return ""
	}
	return names[len(names)-1].GetString_().GetSval()
}

// topLevelRelations lists the relations of a FROM list that the WHERE clause
// can pin directly, looking through joins.
func topLevelRelations(from []*pg.Node, acc []*pg.RangeVar) []*pg.RangeVar {
	for _, n := range from {
		acc = appendJoinRelations(n, acc)
	}
	return acc
}

func appendJoinRelations(n *pg.Node, acc []*pg.RangeVar) []*pg.RangeVar {
	if r := n.GetRangeVar(); r != nil {
		return append(acc, r)
	}
	if j := n.GetJoinExpr(); j != nil {
		return appendJoinRelations(j.Rarg, appendJoinRelations(j.Larg, acc))
	}
	return acc
}

// keyed pins every sharded relation to a shard-key value from the WHERE
// clause's AND-ed equalities.
func keyed(t *topology.Topology, sharded, topLevel []*pg.RangeVar, where *pg.Node) *Statement {
	eqs := equalities(where, nil)
	first := t.Tables[sharded[0].Relname]
	st := &Statement{Class: ClassKeyed, Table: first.Name, KeyType: first.KeyType}
	for _, rel := range sharded {
		if !containsRelation(topLevel, rel) {
			return refused("sharded table %s inside a subquery or CTE is not supported yet", rel.Relname)
		}
		table := t.Tables[rel.Relname]
		if table.KeyType != first.KeyType {
			return refused("tables %s and %s have different shard key types", first.Name, table.Name)
		}
		ref, ok := keyFor(eqs, rel, table.ShardKey, len(sharded) == 1)
		if !ok {
			return refused("query on sharded table %s has no %s = <value> condition, so it would need every shard (cross-shard queries are not supported yet)", table.Name, table.ShardKey)
		}
		st.Keys = append(st.Keys, ref)
	}
	st.Reason = "shard key " + first.Name + "." + first.ShardKey
	return st
}

func containsRelation(list []*pg.RangeVar, r *pg.RangeVar) bool {
	for _, x := range list {
		if x == r {
			return true
		}
	}
	return false
}

// equality is "qualifier.column = value" found in a WHERE clause.
type equality struct {
	qualifier, column string
	ref               KeyRef
}

func equalities(n *pg.Node, acc []equality) []equality {
	if n == nil {
		return acc
	}
	if b := n.GetBoolExpr(); b != nil {
		if b.Boolop == pg.BoolExprType_AND_EXPR {
			for _, arg := range b.Args {
				acc = equalities(arg, acc)
			}
		}
		return acc
	}
	e := n.GetAExpr()
	if e == nil || e.Kind != pg.A_Expr_Kind_AEXPR_OP || lastName(e.Name) != "=" {
		return acc
	}
	for _, side := range [2][2]*pg.Node{{e.Lexpr, e.Rexpr}, {e.Rexpr, e.Lexpr}} {
		qual, col, ok := columnOf(side[0])
		if !ok {
			continue
		}
		if ref, ok := keyRefOf(side[1]); ok {
			acc = append(acc, equality{qual, col, ref})
		}
	}
	return acc
}

func columnOf(n *pg.Node) (qualifier, column string, ok bool) {
	c := n.GetColumnRef()
	if c == nil {
		return "", "", false
	}
	names := make([]string, 0, len(c.Fields))
	for _, f := range c.Fields {
		s := f.GetString_()
		if s == nil {
			return "", "", false
		}
		names = append(names, s.Sval)
	}
	switch len(names) {
	case 1:
		return "", names[0], true
	case 0:
		return "", "", false
	}
	return names[len(names)-2], names[len(names)-1], true
}

func keyFor(eqs []equality, rel *pg.RangeVar, column string, onlyTable bool) (KeyRef, bool) {
	name := rel.Relname
	if rel.Alias != nil {
		name = rel.Alias.Aliasname
	}
	for _, eq := range eqs {
		if eq.column != column {
			continue
		}
		if eq.qualifier == name || (eq.qualifier == "" && onlyTable) {
			return eq.ref, true
		}
	}
	return KeyRef{}, false
}

// keyRefOf accepts constants and parameters, looking through casts
// ('42'::bigint, $1::int8).
func keyRefOf(n *pg.Node) (KeyRef, bool) {
	if n == nil {
		return KeyRef{}, false
	}
	if c := n.GetTypeCast(); c != nil {
		return keyRefOf(c.Arg)
	}
	if p := n.GetParamRef(); p != nil {
		return KeyRef{Param: int(p.Number)}, true
	}
	c := n.GetAConst()
	if c == nil || c.Isnull {
		return KeyRef{}, false
	}
	switch v := c.Val.(type) {
	case *pg.A_Const_Ival:
		return KeyRef{Literal: strconv.FormatInt(int64(v.Ival.Ival), 10)}, true
	case *pg.A_Const_Fval:
		return KeyRef{Literal: v.Fval.Fval}, true
	case *pg.A_Const_Sval:
		return KeyRef{Literal: v.Sval.Sval}, true
	}
	return KeyRef{}, false
}
