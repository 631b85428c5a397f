package router

import (
	"fmt"
	"slices"

	pg "github.com/pganalyze/pg_query_go/v5"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func typeName(v any) string { return fmt.Sprintf("%T", v) }

// walk calls fn for every node below n, depth first; fn returning false
// skips that node's children. The router walks the whole tree so that no
// table reference can hide in a node type it forgot to list (a missed table
// means a wrong shard). The node types queries are made of are walked
// directly; everything else falls back to protobuf reflection, which is
// several times slower.
func walk(n *pg.Node, fn func(any) bool) {
	if n == nil || n.Node == nil {
		return
	}
	switch v := n.Node.(type) {
	case *pg.Node_ColumnRef:
		fn(v.ColumnRef)
	case *pg.Node_AConst:
		fn(v.AConst)
	case *pg.Node_ParamRef:
		fn(v.ParamRef)
	case *pg.Node_String_:
		fn(v.String_)
	case *pg.Node_Integer:
		fn(v.Integer)
	case *pg.Node_AStar:
		fn(v.AStar)
	case *pg.Node_RangeVar:
		fn(v.RangeVar)
	case *pg.Node_AExpr:
		if fn(v.AExpr) {
			walk(v.AExpr.Lexpr, fn)
			walk(v.AExpr.Rexpr, fn)
		}
	case *pg.Node_BoolExpr:
		if fn(v.BoolExpr) {
			walkList(v.BoolExpr.Args, fn)
		}
	case *pg.Node_List:
		if fn(v.List) {
			walkList(v.List.Items, fn)
		}
	case *pg.Node_ResTarget:
		if fn(v.ResTarget) {
			walkList(v.ResTarget.Indirection, fn)
			walk(v.ResTarget.Val, fn)
		}
	case *pg.Node_TypeCast:
		if fn(v.TypeCast) {
			walk(v.TypeCast.Arg, fn)
		}
	case *pg.Node_FuncCall:
		f := v.FuncCall
		if fn(f) {
			walkList(f.Args, fn)
			walkList(f.AggOrder, fn)
			walk(f.AggFilter, fn)
			if f.Over != nil {
				walkValue(f.Over.ProtoReflect(), fn)
			}
		}
	case *pg.Node_JoinExpr:
		if fn(v.JoinExpr) {
			walk(v.JoinExpr.Larg, fn)
			walk(v.JoinExpr.Rarg, fn)
			walk(v.JoinExpr.Quals, fn)
		}
	case *pg.Node_SubLink:
		if fn(v.SubLink) {
			walk(v.SubLink.Testexpr, fn)
			walk(v.SubLink.Subselect, fn)
		}
	case *pg.Node_RangeSubselect:
		if fn(v.RangeSubselect) {
			walk(v.RangeSubselect.Subquery, fn)
		}
	case *pg.Node_SortBy:
		if fn(v.SortBy) {
			walk(v.SortBy.Node, fn)
		}
	case *pg.Node_SelectStmt:
		walkSelect(v.SelectStmt, fn)
	default:
		walkReflect(n.ProtoReflect(), fn)
	}
}

func walkList(nodes []*pg.Node, fn func(any) bool) {
	for _, n := range nodes {
		walk(n, fn)
	}
}

func walkSelect(s *pg.SelectStmt, fn func(any) bool) {
	if s == nil || !fn(s) {
		return
	}
	if s.WithClause != nil {
		for _, cte := range s.WithClause.Ctes {
			if c := cte.GetCommonTableExpr(); c != nil && fn(c) {
				walk(c.Ctequery, fn)
			}
		}
	}
	for _, list := range [][]*pg.Node{s.DistinctClause, s.TargetList, s.FromClause, s.GroupClause, s.WindowClause, s.ValuesLists, s.SortClause, s.LockingClause} {
		walkList(list, fn)
	}
	walk(s.WhereClause, fn)
	walk(s.HavingClause, fn)
	walk(s.LimitOffset, fn)
	walk(s.LimitCount, fn)
	walkSelect(s.Larg, fn)
	walkSelect(s.Rarg, fn)
}

// walkReflect walks any message by reflection, handing nodes back to walk.
func walkReflect(m protoreflect.Message, fn func(any) bool) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			list := v.List()
			for i := 0; i < list.Len(); i++ {
				walkValue(list.Get(i).Message(), fn)
			}
		} else {
			walkValue(v.Message(), fn)
		}
		return true
	})
}

func walkValue(m protoreflect.Message, fn func(any) bool) {
	if n, ok := m.Interface().(*pg.Node); ok {
		walk(n, fn)
		return
	}
	if fn(m.Interface()) {
		walkReflect(m, fn)
	}
}

// scanTree lists every table reference in the tree, minus references to
// the statement's own CTEs, and reports whether anything in it writes
// (data-modifying CTEs, functions known to write) and whether it takes a
// session advisory lock: one walk for all three. ctes are the names the
// tree's WITH clauses define.
func scanTree(root *pg.Node) (refs []*pg.RangeVar, ctes []string, writes, locks bool) {
	var sc treeScan
	sc.scan(root, nil)
	return sc.refs, sc.ctes, sc.writes, sc.locks
}

type treeScan struct {
	refs          []*pg.RangeVar
	ctes          []string
	writes, locks bool
}

// scan walks n, where the CTEs named visible are in scope: a name is a CTE
// only there, so WITH foo AS (SELECT * FROM foo) still reads table foo.
func (sc *treeScan) scan(n *pg.Node, visible []string) {
	walk(n, func(m any) bool {
		switch v := m.(type) {
		case *pg.RangeVar:
			if v.Schemaname != "" || !slices.Contains(visible, v.Relname) {
				sc.refs = append(sc.refs, v)
			}
		case *pg.SelectStmt, *pg.InsertStmt, *pg.UpdateStmt, *pg.DeleteStmt:
			_, isSelect := v.(*pg.SelectStmt)
			sc.writes = sc.writes || !isSelect
			if with := withClause(v); *with != nil {
				sc.scoped(with, statementNode(v), visible)
				return false
			}
		case *pg.FuncCall:
			name := lastName(v.Funcname)
			sc.writes = sc.writes || writingFunctions[name]
			sc.locks = sc.locks || sessionLocks[name]
		}
		return true
	})
}

// withClause returns where a statement keeps its WITH clause.
func withClause(stmt any) **pg.WithClause {
	switch v := stmt.(type) {
	case *pg.SelectStmt:
		return &v.WithClause
	case *pg.InsertStmt:
		return &v.WithClause
	case *pg.UpdateStmt:
		return &v.WithClause
	}
	return &stmt.(*pg.DeleteStmt).WithClause
}

// statementNode wraps a SELECT, INSERT, UPDATE or DELETE as a node.
func statementNode(stmt any) *pg.Node {
	switch v := stmt.(type) {
	case *pg.SelectStmt:
		return &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: v}}
	case *pg.InsertStmt:
		return &pg.Node{Node: &pg.Node_InsertStmt{InsertStmt: v}}
	case *pg.UpdateStmt:
		return &pg.Node{Node: &pg.Node_UpdateStmt{UpdateStmt: v}}
	}
	return &pg.Node{Node: &pg.Node_DeleteStmt{DeleteStmt: stmt.(*pg.DeleteStmt)}}
}

// scoped scans stmt, whose WITH clause is *with: each CTE's body sees the
// CTEs before it (all of them when RECURSIVE), the statement sees all.
// The clause is detached while the statement is scanned, so the walk does
// not meet it again; the tree is the caller's own parse, walked by one
// goroutine.
func (sc *treeScan) scoped(with **pg.WithClause, stmt *pg.Node, visible []string) {
	w := *with
	visible = slices.Clip(visible) // appends below never reach the caller's scope
	if w.Recursive {
		for _, c := range w.Ctes {
			visible = append(visible, c.GetCommonTableExpr().GetCtename())
		}
	}
	for _, c := range w.Ctes {
		cte := c.GetCommonTableExpr()
		sc.ctes = append(sc.ctes, cte.GetCtename())
		sc.scan(cte.GetCtequery(), visible)
		if !w.Recursive {
			visible = append(visible, cte.GetCtename())
		}
	}
	*with = nil
	sc.scan(stmt, visible)
	*with = w
}
