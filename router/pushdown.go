package router

import (
	pg "github.com/pganalyze/pg_query_go/v5"
)

// Filters pushed into a gather's copies: a condition of the query that
// reads only one table's columns is applied by the shards before they copy
// that table's rows, so a query that filters copies only the rows it can
// use. The query still applies every condition itself over the copies, so
// pushing one down changes what is copied, never the answer. A condition
// is pushed only where that is plainly safe:
//   - the table appears once in the whole query, so the condition holds
//     for every use of its rows;
//   - the condition is an AND-ed term of a WHERE (or of an inner join's ON)
//     of the SELECT whose FROM holds the table, outside the nullable side
//     of an outer join;
//   - every column it names is qualified by the table's name in the query,
//     or, in a SELECT that cannot be correlated (the statement itself, its
//     set-operation branches, CTEs and derived tables) and whose FROM is
//     that one table, unqualified;
//   - it has no parameter, subquery or volatile function.

// volatileFunctions give another value on every call: filtering twice with
// one would filter differently.
var volatileFunctions = map[string]bool{
	"random": true, "random_normal": true, "setseed": true, "nextval": true, "setval": true, "currval": true,
	"lastval": true, "clock_timestamp": true, "timeofday": true, "gen_random_uuid": true, "uuid_generate_v1": true,
	"uuid_generate_v4": true, "txid_current": true, "pg_sleep": true, "pg_advisory_lock": true,
}

// pushedFilters finds, for each relation of once (the sharded tables the
// query names once, by their RangeVar), the conditions the shards may
// apply before copying it.
func pushedFilters(root *pg.Node, once map[*pg.RangeVar]bool) map[*pg.RangeVar][]*pg.Node {
	out := map[*pg.RangeVar][]*pg.Node{}
	var visit func(s *pg.SelectStmt, uncorrelated bool)
	visit = func(s *pg.SelectStmt, uncorrelated bool) {
		if s == nil {
			return
		}
		visit(s.Larg, uncorrelated)
		visit(s.Rarg, uncorrelated)
		if s.WithClause != nil {
			for _, cte := range s.WithClause.Ctes {
				visit(cte.GetCommonTableExpr().GetCtequery().GetSelectStmt(), true)
			}
		}
		var rels []*pg.RangeVar
		var terms []*pg.Node
		for _, item := range s.FromClause {
			rels, terms = innerRelations(item, rels, terms)
		}
		terms = append(terms, andTerms(s.WhereClause)...)
		for _, r := range rels {
			if !once[r] {
				continue
			}
			alone := uncorrelated && len(s.FromClause) == 1 && s.FromClause[0].GetRangeVar() == r
			for _, t := range terms {
				if pushable(t, refName(r), alone) {
					out[r] = append(out[r], t)
				}
			}
		}
		// Derived tables cannot see this SELECT's columns (unless LATERAL);
		// subqueries elsewhere can.
		walk(&pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: &pg.SelectStmt{FromClause: s.FromClause}}}, func(m any) bool {
			if sub, ok := m.(*pg.RangeSubselect); ok {
				visit(sub.Subquery.GetSelectStmt(), !sub.Lateral)
				return false
			}
			_, sublink := m.(*pg.SubLink)
			return !sublink
		})
		for _, list := range [][]*pg.Node{s.TargetList, s.FromClause, {s.WhereClause}, {s.HavingClause}} {
			for _, n := range list {
				walk(n, func(m any) bool {
					if sl, ok := m.(*pg.SubLink); ok {
						visit(sl.Subselect.GetSelectStmt(), false)
						return false
					}
					_, derived := m.(*pg.RangeSubselect)
					return !derived
				})
			}
		}
	}
	visit(root.GetSelectStmt(), true)
	return out
}

// innerRelations adds the relations of a FROM item whose rows every row of
// the join needs (not the nullable side of an outer join), and the AND-ed
// terms of inner joins' ON conditions.
func innerRelations(item *pg.Node, rels []*pg.RangeVar, terms []*pg.Node) ([]*pg.RangeVar, []*pg.Node) {
	switch {
	case item.GetRangeVar() != nil:
		return append(rels, item.GetRangeVar()), terms
	case item.GetJoinExpr() != nil:
		j := item.GetJoinExpr()
		switch j.Jointype {
		case pg.JoinType_JOIN_INNER:
			rels, terms = innerRelations(j.Larg, rels, terms)
			rels, terms = innerRelations(j.Rarg, rels, terms)
			if !j.IsNatural && len(j.UsingClause) == 0 {
				terms = append(terms, andTerms(j.Quals)...)
			}
		case pg.JoinType_JOIN_LEFT:
			rels, terms = innerRelations(j.Larg, rels, terms)
		case pg.JoinType_JOIN_RIGHT:
			rels, terms = innerRelations(j.Rarg, rels, terms)
		}
	}
	return rels, terms
}

// andTerms splits a condition into its AND-ed terms.
func andTerms(n *pg.Node) []*pg.Node {
	if n == nil {
		return nil
	}
	if b := n.GetBoolExpr(); b != nil && b.Boolop == pg.BoolExprType_AND_EXPR {
		var out []*pg.Node
		for _, a := range b.Args {
			out = append(out, andTerms(a)...)
		}
		return out
	}
	return []*pg.Node{n}
}

// refName is the name a relation's columns are qualified by in its query.
func refName(r *pg.RangeVar) string {
	if r.Alias != nil {
		return r.Alias.Aliasname
	}
	return r.Relname
}

// pushable reports whether term reads only the columns of the relation
// called name, and nothing that may differ between two evaluations.
func pushable(term *pg.Node, name string, unqualifiedOK bool) bool {
	ok, columns := true, 0
	walk(term, func(m any) bool {
		switch v := m.(type) {
		case *pg.ColumnRef:
			columns++
			switch len(v.Fields) {
			case 1:
				ok = ok && unqualifiedOK && v.Fields[0].GetAStar() == nil
			case 2:
				ok = ok && v.Fields[0].GetString_().GetSval() == name && v.Fields[1].GetAStar() == nil
			default:
				ok = false
			}
		case *pg.ParamRef, *pg.SubLink:
			ok = false
		case *pg.FuncCall:
			ok = ok && !volatileFunctions[lastName(v.Funcname)] && !isAggregate(v) && v.Over == nil
		}
		return ok
	})
	return ok && columns > 0
}
