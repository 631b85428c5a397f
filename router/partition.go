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

// in returns the test for sel's level: a plain reference to the shard key
// of a sharded relation in its FROM, unless an outer join can null it (the
// NULL-extended rows of every shard would then share one value).
func (kc keyColumns) in(sel *pg.SelectStmt) func(*pg.Node) bool {
	rel := kc.rel(sel)
	return func(n *pg.Node) bool { return rel(n) != nil }
}

// rel is in, returning the relation whose key a reference names.
func (kc keyColumns) rel(sel *pg.SelectStmt) func(*pg.Node) *pg.RangeVar {
	if !kc.oneClass || sel == nil {
		return func(*pg.Node) *pg.RangeVar { return nil }
	}
	rels, nullable := kc.k.levelRelations(sel.FromClause)
	s := &scope{rels: rels}
	return func(n *pg.Node) *pg.RangeVar {
		if n.GetColumnRef() == nil {
			return nil
		}
		r := kc.k.column(s, n)
		// users u(n, id): the key's visible name depends on column order.
		if r == nil || len(r.GetAlias().GetColnames()) > 0 || slices.Contains(nullable, r) {
			return nil
		}
		return r
	}
}

// levelRelations lists the sharded relations of a FROM clause, derived
// tables that pass a shard key through included, and those of them on the
// nullable side of an outer join.
func (k *keyAnalysis) levelRelations(from []*pg.Node) (rels, nullable []*pg.RangeVar) {
	var visit func(n *pg.Node, null bool)
	visit = func(n *pg.Node, null bool) {
		r := n.GetRangeVar()
		if r != nil && !k.sharded(r) {
			r = nil
		}
		if sub := n.GetRangeSubselect(); sub != nil {
			r = k.derived[sub]
		}
		if r != nil {
			rels = append(rels, r)
			if null {
				nullable = append(nullable, r)
			}
		}
		if j := n.GetJoinExpr(); j != nil {
			visit(j.Larg, null || j.Jointype == pg.JoinType_JOIN_RIGHT || j.Jointype == pg.JoinType_JOIN_FULL)
			visit(j.Rarg, null || j.Jointype == pg.JoinType_JOIN_LEFT || j.Jointype == pg.JoinType_JOIN_FULL)
		}
	}
	for _, n := range from {
		visit(n, false)
	}
	return rels, nullable
}

// derivedKey lets a partitioned derived table that passes a shard key
// through stand, in its enclosing scope s, for the relation it comes from:
// t.user_id of (SELECT user_id, count(*) FROM posts GROUP BY user_id) t is
// then posts' key, so a join on it is co-located and a condition on it
// pins posts. A derived table that is not partitioned (LIMIT, groups across
// keys) never does: a key value's row there depends on other shards.
func (k *keyAnalysis) derivedKey(sub *pg.RangeSubselect, inner, s *scope) {
	sel := sub.Subquery.GetSelectStmt()
	kc := keyColumns{k: k, oneClass: true} // several classes are refused later anyway
	if inner == nil || sub.Alias == nil || !partitioned(sel, kc) {
		return
	}
	src, name := k.passedKey(sel, kc.rel(sel), sub.Alias.Colnames)
	if src == nil {
		return
	}
	stand := &pg.RangeVar{Alias: &pg.Alias{Aliasname: sub.Alias.Aliasname}}
	if k.derived == nil {
		k.derived, k.derivedKeys = map[*pg.RangeSubselect]*pg.RangeVar{}, map[*pg.RangeVar]string{}
	}
	k.derived[sub], k.derivedKeys[stand] = stand, name
	k.union(src, stand) // src first: the class's root stays a real table
	s.rels = append(s.rels, stand)
}

// passedKey finds the first select-list column of sel that is a shard key,
// and the name the derived table shows it under (colnames renames). A
// lone * passes the key of a lone sharded relation under its own name.
func (k *keyAnalysis) passedKey(sel *pg.SelectStmt, relOf func(*pg.Node) *pg.RangeVar, colnames []*pg.Node) (*pg.RangeVar, string) {
	if len(sel.TargetList) == 1 && hasStar(sel.TargetList) && len(colnames) == 0 {
		rels, _ := k.levelRelations(sel.FromClause)
		if len(rels) == 1 && len(sel.FromClause) == 1 && len(rels[0].GetAlias().GetColnames()) == 0 {
			return rels[0], k.keyName(rels[0])
		}
		return nil, ""
	}
	for i, t := range sel.TargetList {
		rt := t.GetResTarget()
		src := relOf(rt.Val)
		switch {
		case src == nil || hasStar([]*pg.Node{t}):
		case i < len(colnames):
			return src, colnames[i].GetString_().GetSval()
		default: // colnames rename only the columns they reach
			return src, outputName(rt)
		}
	}
	return nil, ""
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
	case !keys.k.keptSidesSharded(sel.FromClause):
		return false
	}
	return derivedTables(sel.FromClause, keys) == ""
}

// keptSidesSharded reports whether every outer join of a FROM clause
// keeps the rows of a sharded relation: a row kept from reference tables
// alone would come NULL-extended from every shard that has no match.
func (k *keyAnalysis) keptSidesSharded(from []*pg.Node) bool {
	ok := true
	for _, item := range from {
		walk(item, func(m any) bool {
			switch v := m.(type) {
			case *pg.JoinExpr:
				switch v.Jointype {
				case pg.JoinType_JOIN_LEFT:
					ok = ok && k.shardedRows(v.Larg)
				case pg.JoinType_JOIN_RIGHT:
					ok = ok && k.shardedRows(v.Rarg)
				case pg.JoinType_JOIN_FULL:
					ok = ok && k.shardedRows(v.Larg) && k.shardedRows(v.Rarg)
				}
			case *pg.RangeSubselect, *pg.SubLink:
				return false // their own FROM is theirs to check
			}
			return ok
		})
	}
	return ok
}

// shardedRows reports a FROM item that reads a sharded table (in a join
// or a derived table), so each of its rows is one shard's.
func (k *keyAnalysis) shardedRows(n *pg.Node) bool {
	found := false
	walk(n, func(m any) bool {
		switch v := m.(type) {
		case *pg.RangeVar:
			found = found || k.sharded(v)
		case *pg.SubLink:
			return false
		}
		return !found
	})
	return found
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
		found = found || isKey(g) || (g.GetAConst() != nil && isKey(selectListItem(g, sel.TargetList)))
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
		if item := selectListItem(d, sel.TargetList); item.Node != nil {
			return isKey(item)
		}
		return isKey(d)
	})
}

// selectListItem is the select-list expression a position (GROUP BY 1)
// names, or an empty node.
func selectListItem(n *pg.Node, targets []*pg.Node) *pg.Node {
	if c := n.GetAConst(); c != nil && c.GetIval() != nil {
		if pos := int(c.GetIval().Ival); pos >= 1 && pos <= len(targets) {
			return targets[pos-1].GetResTarget().GetVal()
		}
	}
	// DISTINCT ON, like ORDER BY, takes a bare name for the output column
	// of that name first (GROUP BY does not: groupedByKey).
	if q, col, ok := columnOf(n); ok && q == "" {
		for _, t := range targets {
			if rt := t.GetResTarget(); outputName(rt) == col {
				return rt.GetVal()
			}
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
