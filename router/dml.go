package router

import (
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"
	"google.golang.org/protobuf/proto"

	"github.com/shardgate/shardgate/topology"
)

// tableSet sorts the relations a statement touches.
type tableSet struct {
	sharded   []*pg.RangeVar
	reference []*pg.RangeVar
	unlisted  []*pg.RangeVar // named by the config neither way: the default shard's
	writes    bool           // data-modifying CTEs or functions known to write
	locks     bool           // calls a function taking a session advisory lock
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

// listed reports whether the config names a table, sharded or reference.
func listed(t *topology.Topology, name string) bool {
	_, sharded := t.Tables[name]
	return sharded || t.Reference[name]
}

// classifyTables sorts every relation in the tree. Without a default
// shard, a table the config does not name is refused: guessing where it
// lives would be silently wrong.
func classifyTables(t *topology.Topology, root *pg.Node) (tableSet, *Statement) {
	var ts tableSet
	refs, ctes, writes, locks := scanTree(root)
	ts.writes, ts.locks = writes, locks
	for _, name := range ctes {
		if listed(t, name) {
			// Routing and the rewrites of cross-shard plans find tables by
			// name: a CTE wearing one's would be taken for it.
			return ts, refused("the WITH query %q has the name of a table in shardgate's config: rename the WITH query", name)
		}
	}
	for _, r := range refs {
		switch {
		case isSystemRelation(r):
		case t.Reference[r.Relname]:
			ts.reference = append(ts.reference, r)
		default:
			if _, ok := t.Tables[r.Relname]; ok {
				ts.sharded = append(ts.sharded, r)
				continue
			}
			if _, ok := t.DefaultShard(); !ok {
				return ts, unknownTable(r)
			}
			ts.unlisted = append(ts.unlisted, r)
		}
	}
	return ts, nil
}

// unknownTable refuses a table the config does not name, keeping it for
// the proxy to answer 42P01 if no such relation exists.
func unknownTable(r *pg.RangeVar) *Statement {
	st := refused("table %q is not in shardgate's config: add it to tables (with its shard_key) or to reference_tables, or set default_shard", r.Relname)
	st.Missing = &Relation{Schema: r.Schemaname, Name: r.Relname}
	return st
}

// onDefault is the statement for one whose tables are all unlisted or
// reference tables (which the default shard holds too).
func onDefault(ts tableSet, role Role) *Statement {
	return &Statement{Class: ClassDefault, Role: role, Reason: "table " + ts.unlisted[0].Relname + " is not in the config: the default shard"}
}

// markUnlisted records on a statement for sharded or reference tables
// that it also names an unlisted table, which routing allows only when
// every shard it needs is the default shard.
func markUnlisted(st *Statement, ts tableSet) *Statement {
	if len(ts.unlisted) == 0 || (st.Class != ClassKeyed && st.Class != ClassScatter && st.Class != ClassAll) {
		return st
	}
	st.Unlisted = ts.unlisted[0].Relname
	switch {
	case len(ts.sharded) > 0:
		st.Listed = ts.sharded[0].Relname
	case len(ts.reference) > 0:
		st.Listed = ts.reference[0].Relname
	}
	return st
}

func analyzeSelect(t *topology.Topology, sel *pg.SelectStmt, root *pg.Node) (st *Statement) {
	if sel.IntoClause != nil {
		return refused("SELECT INTO is not supported: use CREATE TABLE AS")
	}
	ts, bad := classifyTables(t, root)
	if bad != nil {
		return bad
	}
	defer func() {
		if ts.locks && st.Class != ClassRefuse {
			st.SessionState = stateLock
		}
	}()
	role := RoleReplica
	if len(sel.LockingClause) > 0 || ts.writes {
		role = RolePrimary
	}
	if len(ts.sharded) == 0 && len(ts.unlisted) > 0 {
		return onDefault(ts, role)
	}
	if len(ts.sharded) == 0 {
		reason := "no sharded table: any shard answers the same"
		if len(ts.reference) > 0 {
			reason = "reads only reference tables, which every shard holds"
		}
		return &Statement{Class: ClassAny, Role: role, Reason: reason}
	}
	k := newKeyAnalysis(t)
	k.selectScope(sel, nil)
	st = markUnlisted(keyedStatement(k, ts.sharded), ts)
	if st.Class == ClassRefuse {
		return withRunFirst(t, root, gatherInstead(t, root, ts, role, st))
	}
	if st.Class == ClassKeyed || st.Class == ClassScatter {
		st.Role = role
	}
	if st.Class == ClassScatter || st.mayScatter() {
		pristine := proto.Clone(root).(*pg.Node) // scatterSpec rewrites sel
		// Planned from the literal text: LIMIT 10 must stay 10, not $1.
		st.Scatter, st.FromText = scatterSpec(sel, keyColumns{k: k, oneClass: st.Class == ClassScatter || len(st.Classes) == 1}), true
		if st.Scatter.Refusal == "" && !rowsPartitioned(t, pristine) {
			st.Scatter.Refusal = unpartitionedRows
		}
		if st.Scatter.Refusal != "" || len(st.Classes) > 1 {
			st.Gather, st.RunFirst = gatherOrRunFirst(t, pristine, ts)
		}
	}
	return st
}

// keyedStatement turns a finished key analysis into a statement.
func keyedStatement(k *keyAnalysis, sharded []*pg.RangeVar) *Statement {
	classes, bad := k.classes(sharded)
	if bad != nil {
		return bad
	}
	c := classes[0]
	return &Statement{Class: ClassKeyed, Role: RolePrimary, Table: c.Table, KeyType: c.KeyType, Classes: classes,
		Reason: "shard key " + c.Table + "." + k.t.Tables[c.Table].ShardKey}
}

func analyzeInsert(t *topology.Topology, ins *pg.InsertStmt, root *pg.Node) *Statement {
	ts, bad := classifyTables(t, root)
	if bad != nil {
		return bad
	}
	if st := unshardedWrite(t, ts, ins.Relation); st != nil {
		return st
	}
	k := newKeyAnalysis(t)
	if ins.WithClause != nil {
		for _, cte := range ins.WithClause.Ctes {
			k.nested(cte.GetCommonTableExpr().GetCtequery(), nil)
		}
	}
	k.insert(ins, nil)
	return markUnlisted(keyedStatement(k, ts.sharded), ts)
}

func analyzeUpdate(t *topology.Topology, upd *pg.UpdateStmt, root *pg.Node) *Statement {
	var newKey *KeyRef
	if table, ok := t.Tables[upd.Relation.Relname]; ok {
		for _, target := range upd.TargetList {
			rt := target.GetResTarget()
			if rt.GetName() != table.ShardKey {
				continue
			}
			ref, ok := keyRefOf(rt.Val)
			if !ok {
				return refused("UPDATE of the shard key %s.%s must set a constant or a parameter", table.Name, table.ShardKey)
			}
			newKey = &ref
		}
	}
	st := analyzeWrite(t, root, upd.Relation, upd.WithClause, func(k *keyAnalysis) {
		s := k.write(upd.Relation, upd.FromClause, upd.WhereClause, nil)
		for _, target := range upd.TargetList {
			k.sublinks(s, target)
		}
	})
	if st.Class == ClassKeyed {
		st.NewKey = newKey
	}
	st.Broadcastable = newKey == nil && len(st.Classes) <= 1
	return st
}

func analyzeDelete(t *topology.Topology, del *pg.DeleteStmt, root *pg.Node) *Statement {
	st := analyzeWrite(t, root, del.Relation, del.WithClause, func(k *keyAnalysis) {
		k.write(del.Relation, del.UsingClause, del.WhereClause, nil)
	})
	st.Broadcastable = len(st.Classes) <= 1
	return st
}

func analyzeWrite(t *topology.Topology, root *pg.Node, rel *pg.RangeVar, with *pg.WithClause, scopes func(*keyAnalysis)) *Statement {
	ts, bad := classifyTables(t, root)
	if bad != nil {
		return bad
	}
	if st := unshardedWrite(t, ts, rel); st != nil {
		return st
	}
	k := newKeyAnalysis(t)
	if with != nil {
		for _, cte := range with.Ctes {
			k.nested(cte.GetCommonTableExpr().GetCtequery(), nil)
		}
	}
	scopes(k)
	return markUnlisted(keyedStatement(k, ts.sharded), ts)
}

// unshardedWrite answers writes whose target is not a sharded table:
// reference tables are written on every shard, catalogs not at all. It
// returns nil for a sharded target.
func unshardedWrite(t *topology.Topology, ts tableSet, rel *pg.RangeVar) *Statement {
	switch {
	case t.Reference[rel.Relname] && len(ts.sharded) > 0:
		return refused("a write to reference table %q may not read sharded tables", rel.Relname)
	case t.Reference[rel.Relname]:
		st := &Statement{Class: ClassAll, Role: RolePrimary, Broadcastable: true, Reason: "writes reference table " + rel.Relname + " on every shard"}
		return markUnlisted(st, ts)
	case isSystemRelation(rel):
		return refused("writes to system catalogs are not supported")
	case len(ts.sharded) == 0 && len(ts.unlisted) > 0:
		return onDefault(ts, RolePrimary)
	}
	return nil
}

// writingFunctions make an otherwise read-only SELECT need the primary.
var writingFunctions = map[string]bool{
	"nextval": true, "setval": true, "pg_advisory_lock": true, "pg_advisory_xact_lock": true,
	"pg_try_advisory_lock": true, "pg_try_advisory_xact_lock": true, "pg_advisory_unlock": true,
	"txid_current": true, "pg_current_xact_id": true, "lo_create": true, "lo_unlink": true,
	"pg_notify": true, "pg_advisory_lock_shared": true, "pg_try_advisory_lock_shared": true,
	"pg_advisory_unlock_shared": true, "pg_advisory_unlock_all": true,
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
