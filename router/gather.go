package router

import (
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"
	"google.golang.org/protobuf/proto"

	"github.com/shardgate/shardgate/topology"
)

// GatherSpec plans a read that no merge of the shards' answers can
// reproduce (UNION, window functions, expressions over aggregates, WITH,
// joins not tied by shard keys): Citus's "pull to coordinator". One shard
// of the plan, the coordinator, copies the rows of every sharded table the
// query reads from every shard of the plan into temporary tables of its
// own, in one transaction, and runs the client's query there with those
// tables in place of the sharded ones. PostgreSQL itself then evaluates
// the query, so its answer is exactly what one server holding all the
// rows returns. The rows move shard to coordinator as COPY data the proxy
// relays without holding them, bounded by max_intermediate_result_size.
type GatherSpec struct {
	Tables []PulledTable
	// SQL is the client's query over the pulled tables; its parameters
	// are the client's.
	SQL string
}

// PulledTable is one sharded table a gathered query reads.
type PulledTable struct {
	Table Relation // as the query names it
	Temp  string   // the coordinator's temporary copy, in pg_temp
	// Select is the query whose rows are copied, when the shards filter
	// them first (pushdown.go); empty: all of the table's rows.
	Select string
}

// gatherPrefix starts the name of every temporary table a gather makes:
// a query naming such a table itself is not gathered, so the rewrite can
// never capture one of the client's own.
const gatherPrefix = "shardgate_pulled_"

// gatherSpec plans clone, a copy of a SELECT reading sharded tables that
// it may rewrite, as a gather, or returns nil when it cannot be one: it
// writes, locks rows, or names a table the config does not list (which
// lives on the default shard only).
func gatherSpec(t *topology.Topology, clone *pg.Node, ts tableSet) *GatherSpec {
	if ts.writes || ts.locks || len(ts.unlisted) > 0 || len(ts.sharded) == 0 || hasLocking(clone) {
		return nil
	}
	refs, _, _, _ := scanTree(clone)
	var sharded []*pg.RangeVar
	uses := map[Relation]int{}
	for _, r := range refs {
		if strings.HasPrefix(r.Relname, gatherPrefix) {
			return nil
		}
		if _, ok := t.Tables[r.Relname]; ok && !t.Reference[r.Relname] && !isSystemRelation(r) {
			sharded = append(sharded, r)
			uses[Relation{Schema: r.Schemaname, Name: r.Relname}]++
		}
	}
	once := map[*pg.RangeVar]bool{}
	for _, r := range sharded {
		once[r] = uses[Relation{Schema: r.Schemaname, Name: r.Relname}] == 1
	}
	filters := pushedFilters(clone, once)
	spec := &GatherSpec{}
	seen := map[Relation]string{}
	for _, r := range sharded {
		rel := Relation{Schema: r.Schemaname, Name: r.Relname}
		temp, ok := seen[rel]
		if !ok {
			temp = gatherPrefix + r.Relname
			if rel.Schema != "" {
				temp = gatherPrefix + rel.Schema + "_" + r.Relname
			}
			seen[rel] = temp
			spec.Tables = append(spec.Tables, PulledTable{Table: rel, Temp: temp, Select: filteredSelect(r, filters[r])})
		}
		if r.Alias == nil {
			// Column references qualified by the table's name keep
			// resolving: the copy goes by that name in the query.
			r.Alias = &pg.Alias{Aliasname: r.Relname}
		}
		r.Schemaname, r.Relname = "pg_temp", temp
	}
	sql, err := deparse(clone, unknownDepth)
	if err != nil {
		return nil
	}
	spec.SQL = sql
	return spec
}

// gatherInstead is a gather from every shard for a read whose shard keys
// the key analysis could not follow (tables joined on other columns,
// sharded tables in subqueries it does not tie to the outer query), or
// refused, the refusal, when it cannot be gathered either.
func gatherInstead(t *topology.Topology, root *pg.Node, ts tableSet, role Role, refused *Statement) *Statement {
	if role != RoleReplica {
		return refused
	}
	g := gatherSpec(t, proto.Clone(root).(*pg.Node), ts)
	if g == nil {
		return refused
	}
	first := t.Tables[ts.sharded[0].Relname]
	// Planned from the literal text: the copy runs the client's own values.
	return &Statement{Class: ClassScatter, Role: role, Gather: g, Table: first.Name, KeyType: first.KeyType, FromText: true,
		Err: refused.Err, Reason: refused.Reason}
}

// filteredSelect is the SELECT of r's rows that pass terms, or "" when
// there are none (or it cannot be written).
func filteredSelect(r *pg.RangeVar, terms []*pg.Node) string {
	if len(terms) == 0 {
		return ""
	}
	where := terms[0]
	if len(terms) > 1 {
		where = &pg.Node{Node: &pg.Node_BoolExpr{BoolExpr: &pg.BoolExpr{Boolop: pg.BoolExprType_AND_EXPR, Args: terms}}}
	}
	star := &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: &pg.Node{Node: &pg.Node_ColumnRef{ColumnRef: &pg.ColumnRef{
		Fields: []*pg.Node{{Node: &pg.Node_AStar{AStar: &pg.A_Star{}}}}}}}}}}
	from := &pg.Node{Node: &pg.Node_RangeVar{RangeVar: &pg.RangeVar{Schemaname: r.Schemaname, Relname: r.Relname, Inh: true,
		Relpersistence: "p", Alias: &pg.Alias{Aliasname: refName(r)}}}}
	sql, err := deparse(&pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: &pg.SelectStmt{TargetList: []*pg.Node{star},
		FromClause: []*pg.Node{from}, WhereClause: where}}}, unknownDepth)
	if err != nil {
		return ""
	}
	return sql
}

// hasLocking reports a FOR UPDATE/SHARE at any level: rows locked in
// temporary copies would lock nothing.
func hasLocking(root *pg.Node) bool {
	found := false
	walk(root, func(m any) bool {
		if s, ok := m.(*pg.SelectStmt); ok && len(s.LockingClause) > 0 {
			found = true
		}
		return !found
	})
	return found
}

// QuotedName is the relation as SQL text, each part quoted.
func (r Relation) QuotedName() string {
	if r.Schema == "" {
		return QuoteIdent(r.Name)
	}
	return QuoteIdent(r.Schema) + "." + QuoteIdent(r.Name)
}

// QuoteIdent quotes an SQL identifier, always, doubling the double quotes
// in it.
func QuoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

func (g *GatherSpec) tableNames() string {
	names := make([]string, len(g.Tables))
	for i, p := range g.Tables {
		names[i] = p.Table.String()
	}
	return strings.Join(names, ", ")
}
