package router

import (
	pg "github.com/pganalyze/pg_query_go/v5"
	"google.golang.org/protobuf/proto"

	"github.com/shardgate/shardgate/merge"
)

var comparisons = map[string]bool{"=": true, "<>": true, "<": true, "<=": true, ">": true, ">=": true}

// havingPlan turns a HAVING clause into a merge.Cond, which merge.Build
// evaluates once the shards' partial aggregates are combined. Aggregates
// it reads come from identical select-list entries or are appended to the
// select list after the client's visible columns, as are the constants it
// reads.
type havingPlan struct {
	sel     *pg.SelectStmt
	visible int
	consts  map[int]bool // appended constants: the same in every row, not grouped by
}

// cond translates one boolean expression; a non-empty string names what
// it cannot translate.
func (h *havingPlan) cond(n *pg.Node) (merge.Cond, string) {
	if exprIndex(n, h.sel.TargetList[:h.visible]) >= 0 {
		// The select list computes it (GROUP BY email IS NULL): read that.
		return h.value(n)
	}
	if b := n.GetBoolExpr(); b != nil {
		c := merge.Cond{Op: merge.CondAnd}
		switch b.Boolop {
		case pg.BoolExprType_OR_EXPR:
			c.Op = merge.CondOr
		case pg.BoolExprType_NOT_EXPR:
			c.Op = merge.CondNot
		}
		for _, arg := range b.Args {
			a, why := h.cond(arg)
			if why != "" {
				return merge.Cond{}, why
			}
			c.Args = append(c.Args, a)
		}
		return c, ""
	}
	if t := n.GetNullTest(); t != nil {
		col, why := h.operand(t.Arg, nil)
		c := merge.Cond{Op: merge.CondIsNull, L: col}
		if t.Nulltesttype == pg.NullTestType_IS_NOT_NULL {
			c = not(c) // the same for the scalar values HAVING can read
		}
		return c, why
	}
	if e := n.GetAExpr(); e != nil {
		return h.aExpr(e)
	}
	return h.value(n)
}

// value is a boolean read by itself (HAVING bool_or(x)); a quoted literal
// is read as a boolean, as Postgres does.
func (h *havingPlan) value(n *pg.Node) (merge.Cond, string) {
	col, why := h.operand(n, &pg.Node{Node: &pg.Node_AConst{AConst: &pg.A_Const{Val: &pg.A_Const_Boolval{Boolval: &pg.Boolean{Boolval: true}}}}})
	return merge.Cond{Op: merge.CondValue, L: col}, why
}

func (h *havingPlan) aExpr(e *pg.A_Expr) (merge.Cond, string) {
	op := lastName(e.Name)
	cmp := func(l, r *pg.Node, op string) (merge.Cond, string) {
		lc, why := h.operand(l, r)
		if why != "" {
			return merge.Cond{}, why
		}
		rc, why := h.operand(r, l)
		return merge.Cond{Op: merge.CondCompare, Cmp: op, L: lc, R: rc}, why
	}
	switch e.Kind {
	case pg.A_Expr_Kind_AEXPR_OP:
		if comparisons[op] && e.Lexpr != nil {
			return cmp(e.Lexpr, e.Rexpr, op)
		}
	case pg.A_Expr_Kind_AEXPR_IN:
		// x IN (a, b) is x = a OR x = b; x NOT IN (a, b) is x <> a AND x <> b.
		all := merge.Cond{Op: merge.CondOr}
		if op == "<>" {
			all.Op = merge.CondAnd
		}
		for _, item := range e.Rexpr.GetList().GetItems() {
			c, why := cmp(e.Lexpr, item, op)
			if why != "" {
				return merge.Cond{}, why
			}
			all.Args = append(all.Args, c)
		}
		if len(all.Args) > 0 {
			return all, ""
		}
	case pg.A_Expr_Kind_AEXPR_BETWEEN, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN, pg.A_Expr_Kind_AEXPR_BETWEEN_SYM, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM:
		bounds := e.Rexpr.GetList().GetItems()
		if len(bounds) != 2 {
			break
		}
		between := func(lo, hi *pg.Node) (merge.Cond, string) {
			ge, why := cmp(e.Lexpr, lo, ">=")
			if why != "" {
				return merge.Cond{}, why
			}
			le, why := cmp(e.Lexpr, hi, "<=")
			return merge.Cond{Op: merge.CondAnd, Args: []merge.Cond{ge, le}}, why
		}
		c, why := between(bounds[0], bounds[1])
		if why != "" {
			return merge.Cond{}, why
		}
		if e.Kind == pg.A_Expr_Kind_AEXPR_BETWEEN_SYM || e.Kind == pg.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM {
			swapped, _ := between(bounds[1], bounds[0])
			c = merge.Cond{Op: merge.CondOr, Args: []merge.Cond{c, swapped}}
		}
		if e.Kind == pg.A_Expr_Kind_AEXPR_NOT_BETWEEN || e.Kind == pg.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM {
			c = not(c)
		}
		return c, ""
	}
	switch e.Kind {
	case pg.A_Expr_Kind_AEXPR_DISTINCT, pg.A_Expr_Kind_AEXPR_NOT_DISTINCT:
		return merge.Cond{}, "HAVING with IS [NOT] DISTINCT FROM across shards"
	case pg.A_Expr_Kind_AEXPR_LIKE, pg.A_Expr_Kind_AEXPR_ILIKE, pg.A_Expr_Kind_AEXPR_SIMILAR:
		return merge.Cond{}, "HAVING with LIKE, ILIKE or SIMILAR TO across shards"
	case pg.A_Expr_Kind_AEXPR_OP:
		if containsAggregate(e.Lexpr) || containsAggregate(e.Rexpr) {
			return merge.Cond{}, "HAVING with an expression over aggregates across shards"
		}
	}
	return merge.Cond{}, "HAVING with the operator " + op + " across shards"
}

func not(c merge.Cond) merge.Cond { return merge.Cond{Op: merge.CondNot, Args: []merge.Cond{c}} }

// operand resolves one side of a comparison, whose other side is other
// (nil if none), to an output column: a mergeable aggregate, an expression
// the select list groups by, or a constant.
func (h *havingPlan) operand(n, other *pg.Node) (int, string) {
	if f := n.GetFuncCall(); f != nil && mergeable(lastName(f.Funcname)) && f.Over == nil {
		return h.column(n, false), ""
	}
	if constant(n) {
		if untyped(n) && other != nil && !untyped(other) {
			// A quoted literal takes the type of what it is compared with;
			// CASE resolves it alike, so the shards convert it as Postgres
			// would (time zone included).
			n = &pg.Node{Node: &pg.Node_CaseExpr{CaseExpr: &pg.CaseExpr{
				Args: []*pg.Node{{Node: &pg.Node_CaseWhen{CaseWhen: &pg.CaseWhen{
					Expr:   &pg.Node{Node: &pg.Node_AConst{AConst: &pg.A_Const{Val: &pg.A_Const_Boolval{Boolval: &pg.Boolean{}}}}},
					Result: other,
				}}}},
				Defresult: n,
			}}}
		}
		return h.column(n, true), ""
	}
	switch {
	case contains(n, func(m any) bool { _, ok := m.(*pg.SubLink); return ok }):
		return 0, "HAVING with a subquery across shards"
	case contains(n, func(m any) bool { _, ok := m.(*pg.ParamRef); return ok }):
		return 0, "HAVING with a parameter across shards"
	case containsAggregate(n):
		return 0, "HAVING with an expression over aggregates across shards"
	}
	if col := exprIndex(n, h.sel.TargetList[:h.visible]); col >= 0 {
		return col, "" // aggregates() requires it to be grouped
	}
	return 0, "HAVING on an expression that is not in the select list, across shards"
}

// column is the select-list entry computing n, appended if none does.
func (h *havingPlan) column(n *pg.Node, isConst bool) int {
	if col := exprIndex(n, h.sel.TargetList); col >= 0 {
		return col
	}
	// A copy: planning rewrites select-list aggregates (avg), and the
	// shards must still check the HAVING as written.
	val := proto.Clone(n).(*pg.Node)
	h.sel.TargetList = append(h.sel.TargetList, &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: val}}})
	col := len(h.sel.TargetList) - 1
	if isConst {
		h.consts[col] = true
	}
	return col
}

// constant: a literal, possibly cast, which every shard computes alike.
func constant(n *pg.Node) bool {
	for n.GetTypeCast() != nil {
		n = n.GetTypeCast().Arg
	}
	return n.GetAConst() != nil
}

// untyped: a quoted literal or NULL without a cast, whose type Postgres
// takes from the context.
func untyped(n *pg.Node) bool {
	c := n.GetAConst()
	return c != nil && (c.Isnull || c.GetSval() != nil)
}

// orTrue is how the shards run a HAVING the proxy evaluates: Postgres
// still checks it (names, grouping, literal types) and reports its errors,
// but folds it to true and so returns every group.
func orTrue(cond *pg.Node) *pg.Node {
	t := &pg.Node{Node: &pg.Node_AConst{AConst: &pg.A_Const{Val: &pg.A_Const_Boolval{Boolval: &pg.Boolean{Boolval: true}}}}}
	return &pg.Node{Node: &pg.Node_BoolExpr{BoolExpr: &pg.BoolExpr{Boolop: pg.BoolExprType_OR_EXPR, Args: []*pg.Node{cond, t}}}}
}

func contains(n *pg.Node, match func(any) bool) bool {
	found := false
	walk(n, func(m any) bool {
		found = found || match(m)
		return !found
	})
	return found
}
