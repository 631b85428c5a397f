package router

import (
	"slices"

	pg "github.com/pganalyze/pg_query_go/v5"
)

// Work the shards do whole. A shard-key value lives on one shard (the
// proxy refuses NULL keys), so a group, distinct row or window partition
// whose key includes the shard key has all its rows on one shard. Such a
// SELECT, run on every shard, gives each output row exactly once: the
// answers need only be concatenated (Citus's co-located pushdown).

// keyColumns tells which column references name the shard key, for a
// statement whose sharded relations are tied into one key class: each of
// their keys then holds, row by row, a value that lives on one shard.
type keyColumns struct {
	k        *keyAnalysis
	oneClass bool
}

var noKey = func(*pg.Node) bool { return false }

// in returns the test for sel's level: a plain reference to the shard key
// of a sharded relation in its FROM, unless an outer join can null it (the
// NULL-extended rows of every shard would then share one value).
func (kc keyColumns) in(sel *pg.SelectStmt) func(*pg.Node) bool {
	if !kc.oneClass || sel == nil {
		return noKey
	}
	s := kc.k.newScope(topLevelRelations(sel.FromClause, nil), nil)
	nullable := nullableRelations(sel.FromClause)
	return func(n *pg.Node) bool {
		if n.GetColumnRef() == nil {
			return false
		}
		r := kc.k.column(s, n)
		// users u(n, id): the key's visible name depends on column order.
		return r != nil && len(r.GetAlias().GetColnames()) == 0 && !slices.Contains(nullable, r)
	}
}

// nullableRelations lists the relations of a FROM clause on the nullable
// side of an outer join.
func nullableRelations(from []*pg.Node) []*pg.RangeVar {
	var out []*pg.RangeVar
	var visit func(n *pg.Node, nullable bool)
	visit = func(n *pg.Node, nullable bool) {
		if r := n.GetRangeVar(); r != nil && nullable {
			out = append(out, r)
		}
		if j := n.GetJoinExpr(); j != nil {
			visit(j.Larg, nullable || j.Jointype == pg.JoinType_JOIN_RIGHT || j.Jointype == pg.JoinType_JOIN_FULL)
			visit(j.Rarg, nullable || j.Jointype == pg.JoinType_JOIN_LEFT || j.Jointype == pg.JoinType_JOIN_FULL)
		}
	}
	for _, n := range from {
		visit(n, false)
	}
	return out
}

// partitioned reports a SELECT each of whose output rows comes from one
// shard's rows: row by row, or by groups, distinct rows and window
// partitions keyed by the shard key. Run on every shard and concatenated,
// it is run once.
func partitioned(sel *pg.SelectStmt, keys keyColumns) bool {
	if sel == nil || isSetOperation(sel) || sel.WithClause != nil || sel.LimitCount != nil ||
		sel.LimitOffset != nil || len(sel.WindowClause) > 0 || len(sel.LockingClause) > 0 {
		return false
	}
	isKey := keys.in(sel)
	grouped := len(sel.GroupClause) > 0 || sel.HavingClause != nil
	for _, t := range sel.TargetList {
		v := t.GetResTarget().GetVal()
		grouped = grouped || containsAggregate(v)
		if !partitionedByKey(v, isKey) {
			return false
		}
	}
	for _, s := range sel.SortClause {
		grouped = grouped || containsAggregate(s)
	}
	switch {
	case grouped && !groupedByKey(sel, isKey):
		return false
	case len(sel.DistinctClause) > 0 && !distinctByKey(sel, isKey):
		return false
	}
	return derivedTables(sel.FromClause, keys) == ""
}

func isSetOperation(sel *pg.SelectStmt) bool {
	return sel.Op != pg.SetOperation_SETOP_NONE && sel.Op != pg.SetOperation_SET_OPERATION_UNDEFINED
}

// groupedByKey reports a GROUP BY one of whose items is the shard key,
// written as the column or as the position of a select-list column. An
// output name is not enough: GROUP BY prefers an input column of that
// name, and the router does not know the tables' columns.
func groupedByKey(sel *pg.SelectStmt, isKey func(*pg.Node) bool) bool {
	found := false
	for _, g := range sel.GroupClause {
		if g.GetGroupingSet() != nil {
			return false // ROLLUP, CUBE and GROUPING SETS have groups without the key
		}
		found = found || isKey(g) || isKey(selectListItem(g, sel.TargetList))
	}
	return found
}

// distinctByKey reports DISTINCT rows that include the shard key, or
// DISTINCT ON expressions that do: equal rows never come from two shards.
func distinctByKey(sel *pg.SelectStmt, isKey func(*pg.Node) bool) bool {
	if sel.DistinctClause[0] == nil || sel.DistinctClause[0].Node == nil {
		return slices.ContainsFunc(sel.TargetList, func(t *pg.Node) bool { return isKey(t.GetResTarget().GetVal()) })
	}
	return slices.ContainsFunc(sel.DistinctClause, func(d *pg.Node) bool {
		return isKey(d) || isKey(selectListItem(d, sel.TargetList))
	})
}

// selectListItem is the select-list expression a position (GROUP BY 1)
// names, or nil.
func selectListItem(n *pg.Node, targets []*pg.Node) *pg.Node {
	if c := n.GetAConst(); c != nil && c.GetIval() != nil {
		if pos := int(c.GetIval().Ival); pos >= 1 && pos <= len(targets) {
			return targets[pos-1].GetResTarget().GetVal()
		}
	}
	return &pg.Node{}
}

// cteRefusal says why sel's WITH clause keeps it from running on the
// shards, or "": every CTE must be a partitioned SELECT read exactly once,
// from a FROM clause (not a subquery expression), so that it is a derived
// table written first. A CTE read twice would be joined with itself or
// compared with its whole, which no shard holds.
func cteRefusal(sel *pg.SelectStmt, keys keyColumns) string {
	w := sel.WithClause
	if w == nil {
		return ""
	}
	if w.Recursive {
		return "WITH RECURSIVE across shards"
	}
	for _, c := range w.Ctes {
		cte := c.GetCommonTableExpr()
		body := cte.GetCtequery().GetSelectStmt()
		switch {
		case body == nil:
			return "a data-modifying WITH query across shards"
		case !partitioned(body, keys):
			return "a WITH query with aggregates, DISTINCT, LIMIT, window functions or set operations not keyed by the shard key, across shards"
		case !readOnceFromFrom(sel, cte.Ctename):
			return "a WITH query read more than once or inside a subquery expression, across shards"
		}
	}
	return ""
}

// readOnceFromFrom reports whether the statement names the CTE called name
// exactly once, and not inside a subquery expression.
func readOnceFromFrom(sel *pg.SelectStmt, name string) bool {
	count, inSublink := 0, false
	var visit func(n *pg.Node, sub bool)
	visit = func(n *pg.Node, sub bool) {
		walk(n, func(m any) bool {
			switch v := m.(type) {
			case *pg.RangeVar:
				if v.Schemaname == "" && v.Relname == name {
					count++
					inSublink = inSublink || sub
				}
			case *pg.SubLink:
				visit(v.Testexpr, true)
				visit(v.Subselect, true)
				return false
			}
			return true
		})
	}
	visit(&pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: sel}}, false)
	return count == 1 && !inSublink
}
