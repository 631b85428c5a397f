package router

import (
	"fmt"
	"slices"
	"strconv"

	pg "github.com/pganalyze/pg_query_go/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/shardgate/shardgate/merge"
)

// ScatterSpec tells the proxy how to run a SELECT on several shards and
// merge the answers into what one Postgres holding all rows would return:
// the per-shard SQL (ORDER BY pushed down, LIMIT offset+count, avg split
// into sum and count, HAVING kept only for Postgres to check), and the
// merge.Spec of how their answers combine. The router only describes; the
// proxy runs the SQL and merge.Build the merge.
type ScatterSpec struct {
	SQL string // what each shard runs; "" means the client's own text
	merge.Spec
	Refusal string // non-empty: a construct the merger cannot reproduce
	// KeyGroups: grouped by the shard key, so the shards compute every
	// group whole and the merge sees plain rows.
	KeyGroups bool
	// CopyOut: COPY ... TO STDOUT, gathered by concatenating the shards'
	// data; CopyHeader: the CSV header line comes from the first shard only.
	CopyOut, CopyHeader bool
}

// mergeableAggs are the aggregates whose per-shard partials merge.Combine
// combines, by the kind it combines them as.
var mergeableAggs = map[string]merge.AggKind{
	"count": merge.AggCount, "sum": merge.AggSum, "min": merge.AggMin, "max": merge.AggMax,
	"bool_and": merge.AggBoolAnd, "bool_or": merge.AggBoolOr, "every": merge.AggBoolAnd, "avg": merge.AggAvg,
}

func mergeable(name string) bool {
	_, ok := mergeableAggs[name]
	return ok
}

// scatterSpec plans the merge of a SELECT; it may rewrite sel. keys tells
// which column references are the shard key.
func scatterSpec(sel *pg.SelectStmt, keys keyColumns) *ScatterSpec {
	spec := &ScatterSpec{Spec: merge.Spec{Limit: -1}}
	refuse := func(what string) *ScatterSpec { return &ScatterSpec{Refusal: what} }
	shardKey := keys.in(sel)
	switch {
	case isSetOperation(sel):
		return refuse("UNION, INTERSECT or EXCEPT across shards")
	case len(sel.LockingClause) > 0:
		return refuse("SELECT ... FOR UPDATE/SHARE across shards")
	case len(sel.WindowClause) > 0:
		return refuse("window functions across shards")
	case sel.LimitOption == pg.LimitOption_LIMIT_OPTION_WITH_TIES:
		return refuse("FETCH ... WITH TIES across shards")
	}
	if why := cteRefusal(sel, keys); why != "" {
		return refuse(why)
	}
	if !keys.k.keptSidesSharded(sel.FromClause) {
		return refuse("an outer join keeping rows of reference tables alone, across shards")
	}
	// Grouped by the shard key, every group is one shard's: the shards
	// compute all of it (any aggregate, HAVING, expressions over them) and
	// their rows are merged like plain rows.
	byKey := len(sel.GroupClause) > 0 && groupedByKey(sel, shardKey)
	spec.KeyGroups = byKey
	if len(sel.DistinctClause) > 0 {
		switch {
		case distinctByKey(sel, shardKey):
			// Equal rows never come from two shards: each shard's DISTINCT is the whole one.
		case sel.DistinctClause[0] != nil && sel.DistinctClause[0].Node != nil:
			return refuse("DISTINCT ON across shards")
		default:
			spec.Distinct = true
		}
	}
	names := make([]string, len(sel.TargetList))
	hasAgg, windowed := false, false
	for i, t := range sel.TargetList {
		rt := t.GetResTarget()
		names[i] = outputName(rt)
		if containsWindow(rt.Val) {
			if !partitionedByKey(rt.Val, shardKey) {
				return refuse("window functions not partitioned by the shard key, across shards")
			}
			windowed = true
		}
		if byKey {
			continue
		}
		if f := rt.Val.GetFuncCall(); f != nil && mergeable(lastName(f.Funcname)) && !f.AggWithinGroup && len(f.AggOrder) == 0 {
			hasAgg = true
		} else if containsAggregate(rt.Val) {
			return refuse("an aggregate other than count, sum, min, max, avg, bool_and and bool_or, or an expression over aggregates, across shards")
		}
	}
	if why := derivedTables(sel.FromClause, keys); why != "" {
		return refuse(why)
	}
	if windowed && !byKey && (hasAgg || len(sel.GroupClause) > 0 || sel.HavingClause != nil || len(sel.DistinctClause) > 0) {
		return refuse("window functions over groups or DISTINCT rows, across shards")
	}
	// ORDER BY is resolved before planning aggregates rewrites the select
	// list (avg(x) to sum(x)) and HAVING extends it.
	for _, s := range sel.SortClause {
		sb := s.GetSortBy()
		col, name := columnIndex(sb.Node, names), ""
		if col < 0 {
			col = exprIndex(sb.Node, sel.TargetList)
		}
		if _, c, ok := columnOf(sb.Node); col < 0 && ok && hasStar(sel.TargetList) {
			name = c // resolved against the result's columns
		} else if col < 0 {
			return refuse("ORDER BY an expression that is not in the select list, across shards")
		}
		desc := sb.SortbyDir == pg.SortByDir_SORTBY_DESC
		nullsFirst := desc
		switch sb.SortbyNulls {
		case pg.SortByNulls_SORTBY_NULLS_FIRST:
			nullsFirst = true
		case pg.SortByNulls_SORTBY_NULLS_LAST:
			nullsFirst = false
		}
		spec.Sort = append(spec.Sort, merge.OrderBy{Col: col, Name: name, Desc: desc, NullsFirst: nullsFirst})
	}
	h := havingPlan{sel: sel, visible: len(sel.TargetList), consts: map[int]bool{}}
	if sel.HavingClause != nil && !byKey {
		cond, why := h.cond(sel.HavingClause)
		if why != "" {
			return refuse(why)
		}
		spec.Having, spec.Hidden = &cond, len(sel.TargetList)-h.visible
		sel.HavingClause = orTrue(sel.HavingClause)
	}
	if !byKey && (hasAgg || len(sel.GroupClause) > 0 || spec.Having != nil) {
		if why := spec.aggregates(sel, names, shardKey, h.consts); why != "" {
			return refuse(why)
		}
	}
	var ok bool
	if spec.Limit, ok = constInt(sel.LimitCount, -1); !ok {
		return refuse("a LIMIT that is not a constant, across shards")
	}
	if spec.Offset, ok = constInt(sel.LimitOffset, 0); !ok {
		return refuse("an OFFSET that is not a constant, across shards")
	}
	rewrite := spec.Aggregate || spec.Offset > 0
	if spec.Aggregate {
		// Groups are cut only after combining: shards return all of theirs.
		sel.SortClause, sel.LimitCount, sel.LimitOffset = nil, nil, nil
	} else if spec.Offset > 0 {
		if spec.Limit >= 0 {
			sel.LimitCount = intConst(spec.Limit + spec.Offset)
		}
		sel.LimitOffset = nil
	}
	if rewrite {
		sql, err := deparse(&pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: sel}}, unknownDepth)
		if err != nil {
			return refuse("a query " + err.Error())
		}
		spec.SQL = sql
	}
	return spec
}

// aggregates plans partial aggregation: every output column is a group
// column, a mergeable aggregate or one of consts; avg(x) becomes sum(x)
// plus a count(x) appended to the select list.
func (spec *ScatterSpec) aggregates(sel *pg.SelectStmt, names []string, shardKey func(*pg.Node) bool, consts map[int]bool) string {
	spec.Aggregate = true
	groups := map[int]bool{}
	for _, g := range sel.GroupClause {
		col := columnIndex(g, names)
		if col < 0 {
			col = exprIndex(g, sel.TargetList)
		}
		if col < 0 {
			return "GROUP BY an expression that is not in the select list, across shards"
		}
		groups[col] = true
	}
	n := len(sel.TargetList)
	for i := 0; i < n; i++ {
		rt := sel.TargetList[i].GetResTarget()
		f := rt.Val.GetFuncCall()
		if f == nil || !mergeable(lastName(f.Funcname)) {
			if !groups[i] && !consts[i] {
				return "a select-list column that is neither grouped nor aggregated, across shards"
			}
			spec.Output = append(spec.Output, merge.OutCol{Group: i, Const: consts[i]})
			continue
		}
		name := lastName(f.Funcname)
		// Shards hold disjoint sets of shard-key values, so their counts
		// of distinct keys add up; of other values they may overlap.
		switch {
		case !f.AggDistinct:
		case name != "count":
			return name + "(DISTINCT ...) across shards"
		case len(f.Args) != 1 || !shardKey(f.Args[0]):
			return "count(DISTINCT ...) of anything but the shard key, across shards"
		}
		agg := &merge.Agg{Kind: mergeableAggs[name], Col: i}
		if name == "avg" {
			count := &pg.FuncCall{Funcname: []*pg.Node{{Node: &pg.Node_String_{String_: &pg.String{Sval: "count"}}}}, Args: f.Args, AggFilter: f.AggFilter}
			f.Funcname = []*pg.Node{{Node: &pg.Node_String_{String_: &pg.String{Sval: "sum"}}}}
			sel.TargetList = append(sel.TargetList, &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: &pg.Node{Node: &pg.Node_FuncCall{FuncCall: count}}}}})
			agg.CountCol = len(sel.TargetList) - 1
		}
		spec.Output = append(spec.Output, merge.OutCol{Group: -1, Agg: agg})
	}
	return ""
}

// outputName is the column name Postgres gives a select-list entry.
func outputName(rt *pg.ResTarget) string {
	if rt.Name != "" {
		return rt.Name
	}
	if _, col, ok := columnOf(rt.Val); ok {
		return col
	}
	if f := rt.Val.GetFuncCall(); f != nil {
		return lastName(f.Funcname)
	}
	return "?column?"
}

// columnIndex resolves ORDER BY / GROUP BY items: a position or an output
// column name; -1 otherwise.
func columnIndex(n *pg.Node, names []string) int {
	if c := n.GetAConst(); c != nil && c.GetIval() != nil {
		if pos := int(c.GetIval().Ival); pos >= 1 && pos <= len(names) {
			return pos - 1
		}
		return -1
	}
	if _, col, ok := columnOf(n); ok {
		for i, name := range names {
			if name == col {
				return i
			}
		}
	}
	return -1
}

// exprIndex finds a select-list entry whose expression is n written again
// (GROUP BY length(name) for SELECT length(name) ...); -1 if none.
func exprIndex(n *pg.Node, targets []*pg.Node) int {
	want := withoutLocations(n)
	for i, t := range targets {
		if proto.Equal(want, withoutLocations(t.GetResTarget().GetVal())) {
			return i
		}
	}
	return -1
}

// withoutLocations copies a node with every source position zeroed, so two
// spellings of one expression compare equal.
func withoutLocations(n *pg.Node) *pg.Node {
	if n == nil {
		return nil
	}
	c := proto.Clone(n).(*pg.Node)
	var zero func(m protoreflect.Message)
	zero = func(m protoreflect.Message) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.Name() == "location" && fd.Kind() == protoreflect.Int32Kind:
				m.Clear(fd)
			case fd.Kind() == protoreflect.MessageKind && fd.IsList():
				for i := 0; i < v.List().Len(); i++ {
					zero(v.List().Get(i).Message())
				}
			case fd.Kind() == protoreflect.MessageKind && !fd.IsMap():
				zero(v.Message())
			}
			return true
		})
	}
	zero(c.ProtoReflect())
	return c
}

func hasStar(targets []*pg.Node) bool {
	for _, t := range targets {
		if c := t.GetResTarget().GetVal().GetColumnRef(); c != nil && len(c.Fields) > 0 && c.Fields[len(c.Fields)-1].GetAStar() != nil {
			return true
		}
	}
	return false
}

func constInt(n *pg.Node, def int64) (int64, bool) {
	if n == nil {
		return def, true
	}
	c := n.GetAConst()
	if c == nil {
		return 0, false
	}
	if c.Isnull { // LIMIT NULL / LIMIT ALL
		return def, true
	}
	if c.GetIval() != nil {
		return int64(c.GetIval().Ival), true
	}
	if c.GetFval() != nil {
		v, err := strconv.ParseInt(c.GetFval().Fval, 10, 64)
		return v, err == nil
	}
	return 0, false
}

func intConst(v int64) *pg.Node {
	if v <= 1<<31-1 {
		return &pg.Node{Node: &pg.Node_AConst{AConst: &pg.A_Const{Val: &pg.A_Const_Ival{Ival: &pg.Integer{Ival: int32(v)}}}}}
	}
	return &pg.Node{Node: &pg.Node_AConst{AConst: &pg.A_Const{Val: &pg.A_Const_Fval{Fval: &pg.Float{Fval: fmt.Sprint(v)}}}}}
}

// aggregateNames are PostgreSQL's built-in aggregate functions (pg_proc
// rows of prokind 'a' in versions 15 and 16). An aggregate the proxy does
// not know as one would be concatenated shard by shard, a wrong answer, so
// any call with an aggregate's syntax (FILTER, WITHIN GROUP, ORDER BY in
// the arguments, *) counts as one too.
var aggregateNames = map[string]bool{
	"any_value": true, "array_agg": true, "avg": true, "bit_and": true, "bit_or": true, "bit_xor": true,
	"bool_and": true, "bool_or": true, "corr": true, "count": true, "covar_pop": true, "covar_samp": true,
	"cume_dist": true, "dense_rank": true, "every": true, "json_agg": true, "json_agg_strict": true,
	"json_object_agg": true, "json_object_agg_strict": true, "json_object_agg_unique": true,
	"json_object_agg_unique_strict": true, "json_objectagg": true, "json_arrayagg": true, "jsonb_agg": true,
	"jsonb_agg_strict": true, "jsonb_object_agg": true, "jsonb_object_agg_strict": true,
	"jsonb_object_agg_unique": true, "jsonb_object_agg_unique_strict": true, "max": true, "min": true,
	"mode": true, "percent_rank": true, "percentile_cont": true, "percentile_disc": true, "range_agg": true,
	"range_intersect_agg": true, "rank": true, "regr_avgx": true, "regr_avgy": true, "regr_count": true,
	"regr_intercept": true, "regr_r2": true, "regr_slope": true, "regr_sxx": true, "regr_sxy": true,
	"regr_syy": true, "stddev": true, "stddev_pop": true, "stddev_samp": true, "string_agg": true,
	"sum": true, "var_pop": true, "var_samp": true, "variance": true, "xmlagg": true,
}

// isAggregate reports a call of an aggregate (not as a window function).
func isAggregate(f *pg.FuncCall) bool {
	return f.Over == nil && (aggregateNames[lastName(f.Funcname)] || f.AggWithinGroup || len(f.AggOrder) > 0 || f.AggFilter != nil || f.AggStar)
}

// containsAggregate reports an aggregate call in n, outside subqueries.
func containsAggregate(n *pg.Node) bool {
	found := false
	walk(n, func(m any) bool {
		if f, ok := m.(*pg.FuncCall); ok && isAggregate(f) {
			found = true
		}
		_, sub := m.(*pg.SubLink)
		return !found && !sub
	})
	return found
}

func containsWindow(n *pg.Node) bool {
	found := false
	walk(n, func(m any) bool {
		if f, ok := m.(*pg.FuncCall); ok && f.Over != nil {
			found = true
		}
		return !found
	})
	return found
}

// derivedTables refuses a derived table (a subquery in FROM) that is not
// partitioned: the shards would compute its groups, distinct rows, limits
// or set operations over their own rows alone.
func derivedTables(from []*pg.Node, keys keyColumns) string {
	why := ""
	for _, item := range from {
		walk(item, func(m any) bool {
			if sub, ok := m.(*pg.RangeSubselect); ok && why == "" {
				if !partitioned(sub.Subquery.GetSelectStmt(), keys) {
					why = "a derived table with aggregates, DISTINCT, LIMIT, window functions or set operations not keyed by the shard key, across shards"
				}
				return false
			}
			_, sublink := m.(*pg.SubLink)
			return why == "" && !sublink
		})
	}
	return why
}

// partitionedByKey reports whether every window function in n is
// partitioned by the shard key: each partition then lies on one shard, which computes the function over all
// of it, so the shards' rows need only be merged.
func partitionedByKey(n *pg.Node, shardKey func(*pg.Node) bool) bool {
	ok := true
	walk(n, func(m any) bool {
		if f, is := m.(*pg.FuncCall); is && f.Over != nil {
			ok = ok && f.Over.Refname == "" && slices.ContainsFunc(f.Over.PartitionClause, shardKey)
		}
		_, sub := m.(*pg.SubLink)
		return ok && !sub
	})
	return ok
}
