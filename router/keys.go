package router

import (
	"cmp"
	"slices"

	pg "github.com/pganalyze/pg_query_go/v5"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/topology"
)

// Key analysis. A query may touch several sharded relations (joins,
// subqueries, CTEs). Equalities between their shard keys (u.id =
// p.user_id) put them in one class: one value pins the whole class. Each
// class needs a pin (key = value, key IN (...), key = ANY($n)); the
// statement runs on the union of its classes' shards.

// KeyPin is one condition fixing a class's key: = value, IN (values), or =
// ANY(array) where Array is the array parameter's number.
type KeyPin struct {
	Refs  []KeyRef
	Array int
}

// KeyClass is a set of sharded relations whose shard keys the query makes
// equal, and what pins them.
type KeyClass struct {
	Table   string // one of its tables, for messages
	KeyType topology.KeyType
	Pins    []KeyPin // all hold at once (AND): the shards are their intersection
	Rows    bool     // INSERT rows: each pin is one row (OR): the union
}

// scope is one SELECT/UPDATE/DELETE level: its FROM relations, seen by its
// conditions and by the subqueries below it.
type scope struct {
	rels   []*pg.RangeVar
	parent *scope
	// from and target are all the level's FROM items, sharded or not (an
	// UPDATE's or DELETE's target besides). A reference resolves at the
	// innermost level that has its column, and the router knows only
	// shard-key columns: an unqualified column at a level with a FROM, or
	// one qualified by a name of the level, may be that level's, so it is
	// never looked up outwards (correlation) past it.
	from   []*pg.Node
	target *pg.RangeVar
}

// mayOwn reports whether a column the level's sharded relations do not
// resolve may still be one of its own (see scope.from).
func (s *scope) mayOwn(qual string) bool {
	if qual == "" {
		return len(s.from) > 0 || s.target != nil
	}
	if s.target != nil && cmp.Or(s.target.GetAlias().GetAliasname(), s.target.Relname) == qual {
		return true
	}
	found := false
	for _, item := range s.from {
		walk(item, func(m any) bool {
			switch v := m.(type) {
			case *pg.RangeVar:
				found = found || cmp.Or(v.GetAlias().GetAliasname(), v.Relname) == qual
			case *pg.RangeSubselect:
				found = found || v.GetAlias().GetAliasname() == qual
				return false
			case *pg.RangeFunction:
				// Without an alias its name is the function's: any
				// qualifier may be its.
				found = found || v.GetAlias() == nil || v.GetAlias().GetAliasname() == qual
				return false
			case *pg.RangeTableFunc, *pg.RangeTableSample:
				found = true // XMLTABLE, TABLESAMPLE: be safe, whatever their names
				return false
			case *pg.JoinExpr:
				found = found || v.GetAlias().GetAliasname() == qual
			case *pg.SubLink:
				return false
			}
			return !found
		})
	}
	return found
}

// keyAnalysis builds classes with a union-find over the (few) sharded
// relations of one statement; slices beat maps at this size.
type keyAnalysis struct {
	t       *topology.Topology
	rels    []relInfo
	refused *Statement
	// derived maps a derived table that passes a shard key through to the
	// relation standing for it (derivedKey); derivedKeys names its key.
	derived     map[*pg.RangeSubselect]*pg.RangeVar
	derivedKeys map[*pg.RangeVar]string
	// guard is the level whose rows the subquery being analysed does not
	// filter (it sits under NOT or OR, in a select list, ...): its
	// conditions pin no relation of that level or above (pinIn).
	guard *scope
}

type relInfo struct {
	rel    *pg.RangeVar
	parent int // union-find parent, an index into rels
	pins   []KeyPin
	rows   bool // an INSERT ... VALUES class: pins are rows
}

func newKeyAnalysis(t *topology.Topology) *keyAnalysis { return &keyAnalysis{t: t} }

// index returns r's slot, adding it (as its own class) when new.
func (k *keyAnalysis) index(r *pg.RangeVar) int {
	for i := range k.rels {
		if k.rels[i].rel == r {
			return i
		}
	}
	k.rels = append(k.rels, relInfo{rel: r, parent: len(k.rels)})
	return len(k.rels) - 1
}

func (k *keyAnalysis) root(i int) int {
	for k.rels[i].parent != i {
		i = k.rels[i].parent
	}
	return i
}

func (k *keyAnalysis) union(a, b *pg.RangeVar) {
	ra, rb := k.root(k.index(a)), k.root(k.index(b))
	if ra != rb {
		k.rels[rb].parent = ra
		k.rels[ra].pins = append(k.rels[ra].pins, k.rels[rb].pins...)
		k.rels[rb].pins = nil
	}
}

func (k *keyAnalysis) pin(r *pg.RangeVar, p KeyPin) {
	root := k.root(k.index(r))
	k.rels[root].pins = append(k.rels[root].pins, p)
}

func (k *keyAnalysis) sharded(r *pg.RangeVar) bool {
	_, ok := k.t.Tables[r.Relname]
	return ok && !isSystemRelation(r)
}

// newScope registers a scope's sharded relations.
func (k *keyAnalysis) newScope(rels []*pg.RangeVar, parent *scope) *scope {
	s := &scope{parent: parent}
	for _, r := range rels {
		if k.sharded(r) {
			s.rels = append(s.rels, r)
			k.index(r) // registered: covered by a scope
		}
	}
	return s
}

// resolve finds the sharded relation whose shard key a column reference
// names, looking outwards through enclosing scopes (correlation).
func (k *keyAnalysis) resolve(s *scope, qual, col string) *pg.RangeVar {
	for ; s != nil; s = s.parent {
		var only *pg.RangeVar
		matches := 0
		for _, r := range s.rels {
			if len(r.GetAlias().GetColnames()) > 0 {
				// users u(n, id): which visible name is the key depends on
				// the table's column order, which only the server knows.
				continue
			}
			name := r.Relname
			if r.Alias != nil {
				name = r.Alias.Aliasname
			}
			if qual != "" && qual != name {
				continue
			}
			if k.keyName(r) == col {
				only = r
				matches++
			}
		}
		if matches == 1 {
			return only
		}
		if matches > 1 {
			return nil // ambiguous: Postgres would say so
		}
		if s.mayOwn(qual) {
			return nil // maybe another column of this level (see scope.from)
		}
	}
	return nil
}

// conditions applies a scope's AND-ed conditions: key = key joins classes,
// key = value pins them.
func (k *keyAnalysis) conditions(s *scope, n *pg.Node) {
	for _, c := range conjuncts(n, nil) {
		e := c.GetAExpr()
		if e == nil {
			continue
		}
		switch {
		case e.Kind == pg.A_Expr_Kind_AEXPR_OP && lastName(e.Name) == "=":
			k.equality(s, e.Lexpr, e.Rexpr)
		case e.Kind == pg.A_Expr_Kind_AEXPR_IN && lastName(e.Name) == "=":
			if r := k.column(s, e.Lexpr); r != nil {
				if p, ok := listPin(e.Rexpr); ok {
					k.pinIn(s, r, p)
				}
			}
		case e.Kind == pg.A_Expr_Kind_AEXPR_OP_ANY && lastName(e.Name) == "=":
			if r := k.column(s, e.Lexpr); r != nil {
				if p, ok := arrayPin(e.Rexpr); ok {
					k.pinIn(s, r, p)
				}
			}
		}
	}
}

// pinIn pins r by a condition of level s, unless r is of the guard's
// level or above: WHERE NOT EXISTS (SELECT ... WHERE u.id = 5) keeps the
// users of every shard.
func (k *keyAnalysis) pinIn(s *scope, r *pg.RangeVar, p KeyPin) {
	for sc := s; k.guard != nil; sc = sc.parent {
		if sc == nil || sc == k.guard {
			return
		}
		if slices.Contains(sc.rels, r) {
			break
		}
	}
	k.pin(r, p)
}

// ties applies only the key = key equalities among AND-ed conditions.
func (k *keyAnalysis) ties(s *scope, n *pg.Node) {
	for _, c := range conjuncts(n, nil) {
		if e := c.GetAExpr(); e != nil && e.Kind == pg.A_Expr_Kind_AEXPR_OP && lastName(e.Name) == "=" {
			if lr, rr := k.column(s, e.Lexpr), k.column(s, e.Rexpr); lr != nil && rr != nil {
				k.union(lr, rr)
			}
		}
	}
}

func (k *keyAnalysis) equality(s *scope, l, r *pg.Node) {
	lr, rr := k.column(s, l), k.column(s, r)
	switch {
	case lr != nil && rr != nil:
		k.union(lr, rr)
	case lr != nil:
		if ref, ok := keyRefOf(r); ok {
			k.pinIn(s, lr, KeyPin{Refs: []KeyRef{ref}})
		}
	case rr != nil:
		if ref, ok := keyRefOf(l); ok {
			k.pinIn(s, rr, KeyPin{Refs: []KeyRef{ref}})
		}
	}
}

// column resolves an expression that is a shard-key column reference.
func (k *keyAnalysis) column(s *scope, n *pg.Node) *pg.RangeVar {
	if c := n.GetTypeCast(); c != nil {
		n = c.Arg
	}
	qual, col, ok := columnOf(n)
	if !ok {
		return nil
	}
	return k.resolve(s, qual, col)
}

func listPin(n *pg.Node) (KeyPin, bool) {
	items := n.GetList().GetItems()
	if len(items) == 0 {
		return KeyPin{}, false
	}
	p := KeyPin{Refs: make([]KeyRef, 0, len(items))}
	for _, it := range items {
		ref, ok := keyRefOf(it)
		if !ok {
			return KeyPin{}, false
		}
		p.Refs = append(p.Refs, ref)
	}
	return p, true
}

// arrayPin reads = ANY(ARRAY[...]) or = ANY($n).
func arrayPin(n *pg.Node) (KeyPin, bool) {
	if c := n.GetTypeCast(); c != nil {
		n = c.Arg
	}
	if p := n.GetParamRef(); p != nil {
		return KeyPin{Array: int(p.Number)}, true
	}
	if c := n.GetAConst(); c != nil && c.GetSval() != nil {
		elems, err := textArray([]byte(c.GetSval().Sval))
		if err != nil || len(elems) == 0 {
			return KeyPin{}, false
		}
		p := KeyPin{Refs: make([]KeyRef, 0, len(elems))}
		for _, e := range elems {
			p.Refs = append(p.Refs, KeyRef{Literal: string(e)})
		}
		return p, true
	}
	if a := n.GetAArrayExpr(); a != nil && len(a.Elements) > 0 {
		p := KeyPin{Refs: make([]KeyRef, 0, len(a.Elements))}
		for _, el := range a.Elements {
			ref, ok := keyRefOf(el)
			if !ok {
				return KeyPin{}, false
			}
			p.Refs = append(p.Refs, ref)
		}
		return p, true
	}
	return KeyPin{}, false
}

// conjuncts flattens AND-ed conditions.
func conjuncts(n *pg.Node, acc []*pg.Node) []*pg.Node {
	if n == nil {
		return acc
	}
	if b := n.GetBoolExpr(); b != nil {
		if b.Boolop == pg.BoolExprType_AND_EXPR {
			for _, arg := range b.Args {
				acc = conjuncts(arg, acc)
			}
		}
		return acc
	}
	return append(acc, n)
}

// selectScope analyses a SELECT and everything nested in it.
func (k *keyAnalysis) selectScope(sel *pg.SelectStmt, parent *scope) *scope {
	if sel == nil {
		return nil
	}
	if sel.WithClause != nil {
		for _, cte := range sel.WithClause.Ctes {
			k.nested(cte.GetCommonTableExpr().GetCtequery(), parent)
		}
	}
	if sel.Op != pg.SetOperation_SETOP_NONE && sel.Op != pg.SetOperation_SET_OPERATION_UNDEFINED {
		k.selectScope(sel.Larg, parent)
		k.selectScope(sel.Rarg, parent)
		return nil
	}
	s := k.newScope(topLevelRelations(sel.FromClause, nil), parent)
	s.from = sel.FromClause
	k.fromClause(s, sel.FromClause)
	k.conditions(s, sel.WhereClause)
	k.filterSublinks(s, sel.WhereClause)
	k.sublinks(s, sel.HavingClause)
	for _, t := range sel.TargetList {
		k.sublinks(s, t)
	}
	for _, row := range sel.ValuesLists {
		k.sublinks(s, row)
	}
	return s
}

// keyName is the shard-key column of a sharded or derived relation.
func (k *keyAnalysis) keyName(r *pg.RangeVar) string {
	if name, ok := k.derivedKeys[r]; ok {
		return name
	}
	return k.t.Tables[r.Relname].ShardKey
}

// fromClause applies JOIN ... ON conditions and analyses subqueries in FROM.
func (k *keyAnalysis) fromClause(s *scope, from []*pg.Node) {
	for _, n := range from {
		switch {
		case n.GetJoinExpr() != nil:
			j := n.GetJoinExpr()
			k.fromClause(s, []*pg.Node{j.Larg, j.Rarg})
			if j.Jointype == pg.JoinType_JOIN_INNER {
				k.conditions(s, j.Quals)
				k.filterSublinks(s, j.Quals)
			} else {
				// An outer join's ON filters no row of its kept side: its
				// key equalities still co-locate, its values pin nothing.
				k.ties(s, j.Quals)
				k.sublinks(s, j.Quals)
			}
		case n.GetRangeSubselect() != nil:
			sub := n.GetRangeSubselect()
			k.derivedKey(sub, k.selectScope(sub.Subquery.GetSelectStmt(), s), s)
		}
	}
}

// nested analyses a statement below s (a subquery, a CTE).
func (k *keyAnalysis) nested(n *pg.Node, parent *scope) {
	switch {
	case n == nil:
	case n.GetSelectStmt() != nil:
		k.selectScope(n.GetSelectStmt(), parent)
	case n.GetInsertStmt() != nil:
		k.insert(n.GetInsertStmt(), parent)
	case n.GetUpdateStmt() != nil:
		u := n.GetUpdateStmt()
		k.write(u.Relation, u.FromClause, u.WhereClause, parent)
	case n.GetDeleteStmt() != nil:
		d := n.GetDeleteStmt()
		k.write(d.Relation, d.UsingClause, d.WhereClause, parent)
	}
}

// sublinks analyses the subqueries inside an expression, which may refer
// to s (correlation).
func (k *keyAnalysis) sublinks(s *scope, n *pg.Node) {
	if n == nil {
		return
	}
	walk(n, func(m any) bool {
		if sl, ok := m.(*pg.SubLink); ok {
			saved := k.guard
			k.guard = s
			k.nested(sl.Subselect, s)
			k.guard = saved
			return false
		}
		return true
	})
}

// filterSublinks is sublinks for a filter (WHERE, an inner join's ON):
// an EXISTS or IN subquery AND-ed into it filters s's rows, so its
// conditions may pin them; any other subquery's may not.
func (k *keyAnalysis) filterSublinks(s *scope, n *pg.Node) {
	if b := n.GetBoolExpr(); b != nil && b.Boolop == pg.BoolExprType_AND_EXPR {
		for _, arg := range b.Args {
			k.filterSublinks(s, arg)
		}
		return
	}
	if sl := n.GetSubLink(); sl != nil && (sl.SubLinkType == pg.SubLinkType_EXISTS_SUBLINK || sl.SubLinkType == pg.SubLinkType_ANY_SUBLINK) {
		k.sublinks(s, sl.Testexpr)
		k.nested(sl.Subselect, s)
		return
	}
	k.sublinks(s, n)
}

func (k *keyAnalysis) write(rel *pg.RangeVar, from []*pg.Node, where *pg.Node, parent *scope) *scope {
	s := k.newScope(topLevelRelations(from, []*pg.RangeVar{rel}), parent)
	s.from, s.target = from, rel
	k.fromClause(s, from)
	k.conditions(s, where)
	k.filterSublinks(s, where)
	return s
}

// insert analyses INSERT ... VALUES (one pin per row) and INSERT ... SELECT
// (the key column must come from a pinned class, or be a constant).
func (k *keyAnalysis) insert(ins *pg.InsertStmt, parent *scope) {
	rel := ins.Relation
	if !k.sharded(rel) {
		// An unlisted table's rows may still come from sharded ones.
		k.selectScope(ins.GetSelectStmt().GetSelectStmt(), parent)
		return
	}
	table := k.t.Tables[rel.Relname]
	k.newScope([]*pg.RangeVar{rel}, parent)
	col := -1
	for i, c := range ins.Cols {
		if c.GetResTarget().GetName() == table.ShardKey {
			col = i
		}
	}
	if col < 0 {
		k.refuse("INSERT into %s must name its shard key column %q", table.Name, table.ShardKey)
		return
	}
	sel := ins.GetSelectStmt().GetSelectStmt()
	if sel == nil {
		k.refuse("INSERT into %s needs VALUES or SELECT", table.Name)
		return
	}
	if len(sel.ValuesLists) > 0 {
		for _, row := range sel.ValuesLists {
			items := row.GetList().GetItems()
			if col >= len(items) {
				k.refuse("INSERT into %s has fewer values than columns", table.Name)
				return
			}
			ref, ok := keyRefOf(items[col])
			if !ok {
				k.refuse("INSERT into %s: the shard key %s must be a constant or a parameter", table.Name, table.ShardKey)
				return
			}
			k.pin(rel, KeyPin{Refs: []KeyRef{ref}})
		}
		k.rels[k.root(k.index(rel))].rows = true
		return
	}
	s := k.selectScope(sel, parent)
	if s == nil || col >= len(sel.TargetList) {
		k.refuse("INSERT ... SELECT into %s: the shard key must come from one query level", table.Name)
		return
	}
	expr := sel.TargetList[col].GetResTarget().GetVal()
	if src := k.column(s, expr); src != nil {
		k.union(rel, src)
	} else if ref, ok := keyRefOf(expr); ok {
		k.pin(rel, KeyPin{Refs: []KeyRef{ref}})
	} else {
		k.refuse("INSERT ... SELECT into %s: the shard key must be a shard key column of the selected rows or a constant", table.Name)
	}
}

// scatter is a statement that needs every shard because nothing pins its
// key: refused until cross-shard queries exist, unless a hint names a shard.
func scatter(rel string, table topology.Table) *Statement {
	err := errorf(pgerr.CodeFeatureNotSupported, "query on sharded table %s has no %s = <value> condition, so it would need every shard (cross-shard queries are not supported yet)", rel, table.ShardKey)
	return &Statement{Class: ClassScatter, Err: err, Reason: err.Message, Table: table.Name, KeyType: table.KeyType}
}

func (k *keyAnalysis) refuse(format string, args ...any) {
	if k.refused == nil {
		k.refused = refused(format, args...)
	}
}

// classes returns the analysed classes, or a refusal naming an unpinned
// table or one outside any analysed scope.
func (k *keyAnalysis) classes(sharded []*pg.RangeVar) ([]KeyClass, *Statement) {
	if k.refused != nil {
		return nil, k.refused
	}
	var out []KeyClass
	var seen []int
	var unpinned *pg.RangeVar
	for _, r := range sharded {
		covered := slices.ContainsFunc(k.rels, func(ri relInfo) bool { return ri.rel == r })
		if !covered {
			return nil, refused("sharded table %s is used where shardgate cannot follow its shard key", r.Relname)
		}
		root := k.root(k.index(r))
		if slices.Contains(seen, root) {
			continue
		}
		seen = append(seen, root)
		info := k.rels[root]
		table := k.t.Tables[info.rel.Relname]
		if len(info.pins) == 0 && unpinned == nil {
			unpinned = r
		}
		out = append(out, KeyClass{Table: table.Name, KeyType: table.KeyType, Pins: info.pins, Rows: info.rows})
	}
	switch {
	case unpinned != nil && len(out) > 1:
		// Each shard would join only its own rows: not what one Postgres returns.
		return nil, refused("the query joins sharded tables that are not tied by their shard keys (%s and %s), which would need rows from several shards at once", out[0].Table, out[1].Table)
	case unpinned != nil:
		return nil, scatter(unpinned.Relname, k.t.Tables[unpinned.Relname])
	}
	for _, c := range out {
		if c.KeyType != out[0].KeyType {
			return nil, refused("tables %s and %s have different shard key types", out[0].Table, c.Table)
		}
	}
	return out, nil
}
