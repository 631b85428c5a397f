package router

import (
	"fmt"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/shardgate/shardgate/topology"
)

// RunFirstSpec plans a read whose WHERE clause holds uncorrelated
// subqueries over sharded tables, `x IN (SELECT ...)`, `EXISTS (SELECT
// ...)` and scalar `(SELECT avg(x) ...)`, that tie the query to rows on other shards: Citus's
// "recursive planning". An uncorrelated subquery has one value for every
// row, so the proxy runs it first, on its own shards, and puts its result
// in its place as constants: `x IN ('v1'::T, 'v2'::T)` or false for an IN,
// true or false for an EXISTS. Both keep SQL's three-valued logic: a NULL
// among the values makes a non-match NULL, as the subquery would. The
// query with the values in place routes by its own shard keys (the values
// may pin it) and runs as any other. The plan carries a gather too: a
// subquery that refers to the query after all (an unqualified column of
// the outer query, which the router cannot tell from its own) fails on
// its own, and the query is gathered instead.
type RunFirstSpec struct {
	Subqueries []RunFirstQuery
	// parts is the query's text around the subqueries: parts[i] comes
	// before subquery i's result, the last one after all of them.
	parts []string
}

// RunFirstQuery is one subquery the proxy runs before the query.
type RunFirstQuery struct {
	// SQL is what the shards run: the subquery (IN), or SELECT EXISTS
	// (subquery), whose answers OR together.
	SQL    string
	Exists bool
	// Scalar: a subquery used as a value, which goes in as that value
	// (NULL for no row; more than one row leaves the query to the gather,
	// as Postgres raises 21000 only if it evaluates the subquery).
	Scalar bool
	// Merge, when set, is how the shards' answers merge into the
	// subquery's own (aggregates, ORDER BY and LIMIT); nil: they are put
	// together. Its SQL, when set, is what the shards run instead of SQL.
	Merge *ScatterSpec
	// test is the IN's tested expression, as SQL.
	test string
	// Any: every shard answers the same (a reference table), else Shards.
	Any    bool
	Shards ShardSet
}

// RunFirstResult is what one subquery returned.
type RunFirstResult struct {
	Exists bool // EXISTS: some row exists
	// Type is the SQL name of the IN or scalar subquery's column type
	// (TypeName); Values are the IN's distinct values as text, nil for
	// NULL, or the scalar's one value, none for no row.
	Type   string
	Values [][]byte
}

// runFirstMarker stands for subquery i in the deparsed query: a string
// constant that must occur exactly once in the text.
func runFirstMarker(i int) string { return "'shardgate_run_first_" + strconv.Itoa(i) + "'" }

// withRunFirst adds a run-first plan to a statement that would be gathered.
func withRunFirst(t *topology.Topology, root *pg.Node, st *Statement) *Statement {
	if st.Gather != nil {
		st.RunFirst = runFirstSpec(t, root)
	}
	return st
}

// runFirstSpec plans root, a SELECT it does not modify, as a run-first, or
// returns nil when no subquery can run first or the query would still need
// a gather once they did.
func runFirstSpec(t *topology.Topology, root *pg.Node) *RunFirstSpec {
	clone := proto.Clone(root).(*pg.Node)
	sel := clone.GetSelectStmt()
	if sel == nil || sel.WithClause != nil || sel.WhereClause == nil || !plainSelect(sel) {
		// A subquery may name the statement's CTEs, which do not exist
		// on their own.
		return nil
	}
	spec := &RunFirstSpec{}
	eachSubLink(sel.WhereClause, func(n *pg.Node) {
		q, ok := runFirstQuery(t, n.GetSubLink())
		if !ok {
			return
		}
		n.Node = &pg.Node_AConst{AConst: &pg.A_Const{Val: &pg.A_Const_Sval{Sval: &pg.String{Sval: strings.Trim(runFirstMarker(len(spec.Subqueries)), "'")}}}}
		spec.Subqueries = append(spec.Subqueries, q)
	})
	if len(spec.Subqueries) == 0 {
		return nil
	}
	sql, err := deparse(clone, unknownDepth)
	if err != nil {
		return nil
	}
	rest := sql
	for i := range spec.Subqueries {
		m := runFirstMarker(i)
		if strings.Count(sql, m) != 1 {
			return nil // the client's own text holds the marker
		}
		before, after, _ := strings.Cut(rest, m)
		spec.parts = append(spec.parts, before)
		rest = after
	}
	spec.parts = append(spec.parts, rest)
	// With the markers, constants, in place, the query must route
	// without a gather: its results are then only the values.
	if !routesAlone(analyzeSelect(t, sel, clone)) {
		return nil
	}
	return spec
}

// plainSelect is a SELECT ... FROM ... WHERE, not a set operation or VALUES.
func plainSelect(sel *pg.SelectStmt) bool {
	return (sel.Op == pg.SetOperation_SETOP_NONE || sel.Op == pg.SetOperation_SET_OPERATION_UNDEFINED) && len(sel.ValuesLists) == 0
}

// routesAlone reports a statement that runs on one shard, any shard, or is
// merged from several, without a gather or a refusal.
func routesAlone(st *Statement) bool {
	switch {
	case st.Gather != nil || st.Unlisted != "" || st.Role != RoleReplica || len(st.Classes) > 1:
		return false
	case st.Class == ClassAny:
		return true
	case st.Class == ClassKeyed || st.Class == ClassScatter:
		return (st.Class == ClassKeyed && st.Scatter == nil) || (st.Scatter != nil && st.Scatter.Refusal == "")
	}
	return false
}

// eachSubLink calls fn for every SubLink node in n, not looking inside
// them; fn may replace the node.
func eachSubLink(n *pg.Node, fn func(*pg.Node)) {
	if n == nil {
		return
	}
	if n.GetSubLink() != nil {
		fn(n)
		return
	}
	var visit func(m protoreflect.Message)
	visit = func(m protoreflect.Message) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
				return true
			}
			if fd.IsList() {
				for i := 0; i < v.List().Len(); i++ {
					each(v.List().Get(i).Message(), visit, fn)
				}
			} else {
				each(v.Message(), visit, fn)
			}
			return true
		})
	}
	visit(n.ProtoReflect())
}

func each(m protoreflect.Message, visit func(protoreflect.Message), fn func(*pg.Node)) {
	if n, ok := m.Interface().(*pg.Node); ok && n.GetSubLink() != nil {
		fn(n)
		return
	}
	visit(m)
}

// runFirstQuery plans one subquery to run first: an EXISTS, or an IN (=
// ANY) of one column, uncorrelated, reading sharded tables, whose rows are
// its shards' rows put together.
func runFirstQuery(t *topology.Topology, sl *pg.SubLink) (RunFirstQuery, bool) {
	inner := sl.Subselect.GetSelectStmt()
	if inner == nil {
		return RunFirstQuery{}, false
	}
	q := RunFirstQuery{}
	switch sl.SubLinkType {
	case pg.SubLinkType_EXISTS_SUBLINK:
		q.Exists = true
	case pg.SubLinkType_EXPR_SUBLINK:
		if len(inner.TargetList) != 1 || hasStar(inner.TargetList) || !plainSelect(inner) {
			return q, false
		}
		q.Scalar = true
	case pg.SubLinkType_ANY_SUBLINK:
		if len(sl.OperName) > 1 || (len(sl.OperName) == 1 && lastName(sl.OperName) != "=") {
			return q, false
		}
		if sl.Testexpr == nil || sl.Testexpr.GetRowExpr() != nil || len(inner.TargetList) != 1 || hasStar(inner.TargetList) ||
			!plainSelect(inner) {
			return q, false
		}
		test, ok := exprSQL(sl.Testexpr)
		if !ok {
			return q, false
		}
		q.test = test
	default:
		return q, false
	}
	if correlated(inner, nil) {
		return q, false
	}
	sub := proto.Clone(sl.Subselect).(*pg.Node)
	run := sub
	if q.Exists {
		run = &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: &pg.SelectStmt{TargetList: []*pg.Node{{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{
			Val: &pg.Node{Node: &pg.Node_SubLink{SubLink: &pg.SubLink{SubLinkType: pg.SubLinkType_EXISTS_SUBLINK, Subselect: sub}}}}}}}}}}
	}
	sql, err := deparse(run, unknownDepth)
	if err != nil {
		return q, false
	}
	q.SQL = sql
	alone := proto.Clone(sub).(*pg.Node)
	st := analyzeSelect(t, alone.GetSelectStmt(), alone)
	if st.Gather != nil || st.Unlisted != "" || st.Role != RoleReplica || len(st.Classes) > 1 {
		return q, false
	}
	every := ShardSet(1)<<len(t.Shards) - 1
	switch st.Class {
	case ClassKeyed:
		set, err := statementShards(t, st, nil, nil, nil)
		if err != nil {
			return q, false
		}
		q.Shards = set
	case ClassScatter:
		q.Shards = every
	default:
		// No sharded table (nothing to run first: the query keeps it), or
		// a refusal.
		return q, false
	}
	if q.Shards.Count() > 1 && !concatenates(st.Scatter, q.Exists) {
		if q.Exists || st.Scatter == nil || st.Scatter.Refusal != "" {
			return q, false
		}
		q.Merge = st.Scatter // the proxy merges it as it would the subquery sent alone
	}
	return q, true
}

// concatenates reports a scatter whose rows, put together, are the
// subquery's rows as a set (IN), or are some row when it has one (EXISTS,
// where a LIMIT of at least one row changes nothing).
func concatenates(s *ScatterSpec, exists bool) bool {
	switch {
	case s == nil || s.Refusal != "" || s.Aggregate || s.Offset > 0 || s.SQL != "":
		return false
	case s.Limit >= 0:
		return exists && s.Limit > 0
	}
	return true
}

// exprSQL writes one expression as SQL.
func exprSQL(n *pg.Node) (string, bool) {
	sel := &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: &pg.SelectStmt{TargetList: []*pg.Node{{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: n}}}}}}}
	sql, err := deparse(sel, unknownDepth)
	if err != nil || !strings.HasPrefix(sql, "SELECT ") {
		return "", false
	}
	return strings.TrimPrefix(sql, "SELECT "), true
}

// correlated reports a SELECT that may refer to an enclosing query: a
// column qualified by a name none of its own FROM items (or those of the
// queries around it, up to the subquery, visible) takes, or a parameter.
// An unqualified column of the enclosing query goes unseen: run alone, the
// subquery fails on it (42703) and the proxy gathers instead.
func correlated(sel *pg.SelectStmt, visible []string) bool {
	if sel == nil {
		return false
	}
	if sel.WithClause != nil {
		for _, cte := range sel.WithClause.Ctes {
			if q := cte.GetCommonTableExpr().GetCtequery(); q.GetSelectStmt() == nil || correlated(q.GetSelectStmt(), visible) {
				return true
			}
		}
	}
	if !plainSelect(sel) && len(sel.ValuesLists) == 0 {
		return correlated(sel.Larg, visible) || correlated(sel.Rarg, visible)
	}
	names := visible
	for _, item := range sel.FromClause {
		var ok bool
		if names, ok = fromNames(item, names, visible); !ok {
			return true
		}
	}
	for _, list := range [][]*pg.Node{sel.TargetList, sel.GroupClause, sel.DistinctClause, sel.SortClause, sel.WindowClause, sel.ValuesLists} {
		for _, n := range list {
			if refersOutside(n, names) {
				return true
			}
		}
	}
	for _, n := range []*pg.Node{sel.WhereClause, sel.HavingClause, sel.LimitCount, sel.LimitOffset} {
		if refersOutside(n, names) {
			return true
		}
	}
	return false
}

// fromNames adds the names a FROM item makes visible to names, checking
// the expressions in it: a LATERAL subquery or function sees the items
// before it (names), any other only the enclosing queries (outer). ok is
// false for a reference outside, or an item it does not know.
func fromNames(item *pg.Node, names, outer []string) ([]string, bool) {
	switch {
	case item.GetRangeVar() != nil:
		r := item.GetRangeVar()
		if r.Alias != nil {
			return append(names, r.Alias.Aliasname), true
		}
		return append(names, r.Relname), true
	case item.GetRangeSubselect() != nil:
		rs := item.GetRangeSubselect()
		sees := outer
		if rs.Lateral {
			sees = names
		}
		if correlated(rs.Subquery.GetSelectStmt(), sees) || rs.Subquery.GetSelectStmt() == nil {
			return nil, false
		}
		if rs.Alias != nil {
			names = append(names, rs.Alias.Aliasname)
		}
		return names, true
	case item.GetRangeFunction() != nil:
		rf := item.GetRangeFunction()
		sees := outer
		if rf.Lateral {
			sees = names
		}
		for _, f := range rf.Functions {
			if refersOutside(f, sees) {
				return nil, false
			}
		}
		if rf.Alias != nil {
			return append(names, rf.Alias.Aliasname), true
		}
		for _, f := range rf.Functions {
			for _, it := range f.GetList().GetItems() {
				if fc := it.GetFuncCall(); fc != nil {
					names = append(names, lastName(fc.Funcname))
				}
			}
		}
		return names, true
	case item.GetJoinExpr() != nil:
		j := item.GetJoinExpr()
		start := len(names)
		joined, ok := fromNames(j.Larg, names, outer)
		if !ok {
			return nil, false
		}
		if joined, ok = fromNames(j.Rarg, joined, outer); !ok {
			return nil, false
		}
		// ON sees the join's own items, and the enclosing queries.
		on := append(append([]string{}, outer...), joined[start:]...)
		if refersOutside(j.Quals, on) {
			return nil, false
		}
		if j.Alias != nil {
			joined = append(joined, j.Alias.Aliasname)
		}
		return joined, true
	}
	return nil, false
}

// refersOutside reports a parameter, or a column qualified by a name not
// in names, in n; subqueries are checked with names around them.
func refersOutside(n *pg.Node, names []string) bool {
	found := false
	walk(n, func(m any) bool {
		switch v := m.(type) {
		case *pg.ParamRef:
			found = true
		case *pg.SubLink:
			found = found || correlated(v.Subselect.GetSelectStmt(), names)
			return false
		case *pg.SelectStmt:
			found = found || correlated(v, names)
			return false
		case *pg.ColumnRef:
			if len(v.Fields) >= 2 {
				q := v.Fields[len(v.Fields)-2].GetString_().GetSval()
				found = found || !containsName(names, q)
			}
		}
		return !found
	})
	return found
}

func containsName(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// OuterSQL is the query with the subqueries' results in place.
func (s *RunFirstSpec) OuterSQL(results []RunFirstResult) string {
	var b strings.Builder
	for i, q := range s.Subqueries {
		b.WriteString(s.parts[i])
		r := results[i]
		switch {
		case q.Scalar:
			b.WriteString("(")
			if len(r.Values) == 0 {
				b.WriteString("NULL")
			} else {
				writeLiteral(&b, r.Values[0])
			}
			b.WriteString("::")
			b.WriteString(r.Type)
			b.WriteString(")")
		case q.Exists && r.Exists:
			b.WriteString("true")
		case q.Exists || len(r.Values) == 0 && (r.Type == "" || asList(r.Type)):
			// x IN (no rows) is false, for a NULL x too.
			b.WriteString("false")
		case asList(r.Type):
			b.WriteString("((")
			b.WriteString(q.test)
			b.WriteString(") IN (")
			for j, v := range r.Values {
				if j > 0 {
					b.WriteString(", ")
				}
				writeLiteral(&b, v)
				b.WriteString("::")
				b.WriteString(r.Type)
			}
			b.WriteString("))")
		default:
			// One array constant, not a list: the text is parsed into
			// a tree, which for a list of n constants is n nodes and tens
			// of bytes of memory per byte of text. = ANY is IN, NULLs
			// and all.
			b.WriteString("((")
			b.WriteString(q.test)
			b.WriteString(") = ANY (")
			writeLiteral(&b, arrayText(r.Values))
			b.WriteString("::")
			b.WriteString(r.Type)
			b.WriteString("[]))")
		}
	}
	b.WriteString(s.parts[len(s.parts)-1])
	return b.String()
}

// Template is the query with a placeholder for each result, for people.
func (s *RunFirstSpec) Template() string {
	var b strings.Builder
	for i, q := range s.Subqueries {
		b.WriteString(s.parts[i])
		if q.Exists {
			fmt.Fprintf(&b, "<exists %d>", i+1)
		} else if q.Scalar {
			fmt.Fprintf(&b, "(<value %d>)", i+1)
		} else {
			fmt.Fprintf(&b, "(%s) IN (<values %d>)", q.test, i+1)
		}
	}
	b.WriteString(s.parts[len(s.parts)-1])
	return b.String()
}

// asList reports a type whose values go in as a list, not an array: T[][]
// is T[] to Postgres, so an array of arrays would not read back as one,
// and the elements of a box array are delimited by ; not ,.
func asList(typ string) bool {
	return strings.HasSuffix(typ, "]") || strings.HasSuffix(typ, "box")
}

// arrayText is values as an array's text form: each element quoted, with
// backslash escapes, NULL bare.
func arrayText(values [][]byte) []byte {
	n := 2
	for _, v := range values {
		n += len(v) + 3
	}
	out := make([]byte, 0, n)
	out = append(out, '{')
	for i, v := range values {
		if i > 0 {
			out = append(out, ',')
		}
		if v == nil {
			out = append(out, "NULL"...)
			continue
		}
		out = append(out, '"')
		for _, c := range v {
			if c == '"' || c == '\\' {
				out = append(out, '\\')
			}
			out = append(out, c)
		}
		out = append(out, '"')
	}
	return append(out, '}')
}

// writeLiteral writes v as an SQL string constant, or NULL: with
// backslashes as an escape string, read alike whatever
// standard_conforming_strings says.
func writeLiteral(b *strings.Builder, v []byte) {
	if v == nil {
		b.WriteString("NULL")
		return
	}
	s := strings.ReplaceAll(string(v), "'", "''")
	if strings.Contains(s, `\`) {
		b.WriteString("E")
		s = strings.ReplaceAll(s, `\`, `\\`)
	}
	b.WriteString("'")
	b.WriteString(s)
	b.WriteString("'")
}

// builtinTypes names the built-in types whose values' text, cast back to
// the type without its modifier, is the value itself.
var builtinTypes = map[uint32]string{
	16: "pg_catalog.bool", 17: "pg_catalog.bytea", 18: `pg_catalog."char"`, 19: "pg_catalog.name",
	20: "pg_catalog.int8", 21: "pg_catalog.int2", 23: "pg_catalog.int4", 25: "pg_catalog.text", 26: "pg_catalog.oid",
	650: "pg_catalog.cidr", 700: "pg_catalog.float4", 701: "pg_catalog.float8", 829: "pg_catalog.macaddr",
	869: "pg_catalog.inet", 1042: "pg_catalog.bpchar", 1043: "pg_catalog.varchar", 1082: "pg_catalog.date",
	1083: "pg_catalog.time", 1114: "pg_catalog.timestamp", 1184: "pg_catalog.timestamptz",
	1186: "pg_catalog.interval", 1266: "pg_catalog.timetz", 1562: "pg_catalog.varbit", 1700: "pg_catalog.numeric",
	2950: "pg_catalog.uuid", 3802: "pg_catalog.jsonb",
}

// TypeName is the SQL name of a built-in type by OID, or false: the proxy
// asks a shard (format_type) for any other.
func TypeName(oid uint32) (string, bool) {
	name, ok := builtinTypes[oid]
	return name, ok
}

// Anonymous reports a type whose text a cast cannot read back: record and
// unknown.
func Anonymous(oid uint32) bool { return oid == 2249 || oid == 705 }

// gatherOrRunFirst plans root, which it may rewrite, as a gather, and as a
// run-first when it can be one too.
func gatherOrRunFirst(t *topology.Topology, root *pg.Node, ts tableSet) (*GatherSpec, *RunFirstSpec) {
	rf := runFirstSpec(t, root) // before gatherSpec rewrites root
	g := gatherSpec(t, root, ts)
	if g == nil {
		return nil, nil
	}
	return g, rf
}

// unpartitionedRows refuses the merge of a query whose rows come from
// tables every shard holds, filtered by subqueries over sharded tables:
// each shard would filter them by its own rows only, and every shard would
// return the rows that pass.
const unpartitionedRows = "a query whose FROM reads no sharded table, with sharded tables in its subqueries, across shards"

// rowsPartitioned reports a SELECT whose FROM reads a sharded table (in a
// join, a derived table or a CTE it reads), so that each of its rows comes
// from one shard's rows and running it on every shard splits its rows
// among them.
func rowsPartitioned(t *topology.Topology, root *pg.Node) bool {
	sel := root.GetSelectStmt()
	if sel == nil || isSetOperation(sel) {
		return true // refused across shards on their own terms
	}
	found := false
	ctes := map[string]*pg.SelectStmt{}
	var from func(items []*pg.Node)
	selectFrom := func(s *pg.SelectStmt) {
		if s == nil || isSetOperation(s) {
			found = true // refused or gathered on its own terms
			return
		}
		// VALUES reads no table: its rows are every shard's.
		for _, c := range s.GetWithClause().GetCtes() {
			cte := c.GetCommonTableExpr()
			ctes[cte.Ctename] = cte.GetCtequery().GetSelectStmt()
		}
		from(s.FromClause)
	}
	from = func(items []*pg.Node) {
		for _, item := range items {
			switch {
			case item.GetRangeVar() != nil:
				r := item.GetRangeVar()
				if body, ok := ctes[r.Relname]; ok && r.Schemaname == "" {
					delete(ctes, r.Relname) // read once more, it adds nothing
					selectFrom(body)
				} else if _, ok := t.Tables[r.Relname]; ok && !t.Reference[r.Relname] && !isSystemRelation(r) {
					found = true
				}
			case item.GetJoinExpr() != nil:
				from([]*pg.Node{item.GetJoinExpr().Larg, item.GetJoinExpr().Rarg})
			case item.GetRangeSubselect() != nil:
				selectFrom(item.GetRangeSubselect().Subquery.GetSelectStmt())
			}
		}
	}
	selectFrom(sel)
	return found
}

// MaxRunFirstValues bounds the bytes of a run-first's values: past it the
// query is gathered instead, which streams its rows where a text of the
// values would be held and parsed whole (some 50 bytes of memory a byte).
const MaxRunFirstValues = bigStatement

// RouteRunFirst routes spec's query with the subqueries' results in
// place, with the client's parameters, and returns it with its text. The
// analysis is not cached: the values differ from run to run.
func (r *Router) RouteRunFirst(spec *RunFirstSpec, results []RunFirstResult, params [][]byte, formats []int16) (Plan, string) {
	sql := spec.OuterSQL(results)
	defer r.takeTurn(len(sql))()
	t := r.topo.Load()
	return route(t, analyzeText(t, sql), params, formats, nil, nil), sql
}
