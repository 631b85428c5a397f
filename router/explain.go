package router

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/shardgate/shardgate/topology"
)

// PlanNode is one operator of the plan the proxy executes for a statement
// across shards, as data (Vitess's plan-as-data): its Inputs run first and
// feed it. `shardgate route --json` prints the tree; EXPLAIN (SHARDGATE)
// prints it on one line.
type PlanNode struct {
	Op     string      `json:"op"` // route, merge, stream-merge, gather, copy, run-first
	Shards []string    `json:"shards,omitempty"`
	SQL    string      `json:"sql,omitempty"`
	Detail string      `json:"detail,omitempty"`
	Inputs []*PlanNode `json:"inputs,omitempty"`
}

// planTree is the operator tree of a cross-shard read, nil for any other
// plan (a route to its shards is all there is to it).
func planTree(t *topology.Topology, plan Plan) *PlanNode {
	if plan.Target != TargetMulti || plan.Err != nil {
		return nil
	}
	list := plan.Shards.nameList(t)
	switch {
	case plan.RunFirst != nil:
		return runFirstTree(t, plan.RunFirst)
	case plan.Gather != nil:
		coordinator := t.Shards[plan.Shards.First()].Name
		node := &PlanNode{Op: "gather", Shards: []string{coordinator}, SQL: plan.Gather.SQL, Detail: "the query over the copies"}
		for _, p := range plan.Gather.Tables {
			rows := p.Select
			if rows == "" {
				rows = "SELECT * FROM " + p.Table.QuotedName()
			}
			node.Inputs = append(node.Inputs, &PlanNode{Op: "copy", Shards: list, SQL: rows,
				Detail: fmt.Sprintf("%s into pg_temp.%s on %s", p.Table, p.Temp, coordinator)})
		}
		return node
	case plan.Scatter != nil:
		return scatterTree(list, plan.Scatter, "")
	}
	return nil
}

// scatterTree is a merge over the route to shards; text is the SQL the
// shards run when the spec keeps it, "" for the client's statement.
func scatterTree(shards []string, spec *ScatterSpec, text string) *PlanNode {
	route := &PlanNode{Op: "route", Shards: shards, SQL: cmp.Or(spec.SQL, text)}
	if route.SQL == "" {
		route.Detail = "the statement as sent"
	}
	if spec.KeyGroups {
		route.Detail = strings.TrimPrefix(route.Detail+"; groups by the shard key, computed whole", "; ")
	}
	op := "stream-merge"
	if spec.Aggregate || spec.Distinct {
		op = "merge"
	}
	return &PlanNode{Op: op, Detail: spec.describe(), Inputs: []*PlanNode{route}}
}

// describe names what a merge does, in the order it does it.
func (s *ScatterSpec) describe() string {
	var parts []string
	switch {
	case s.CopyOut:
		parts = append(parts, "concatenate COPY data")
	case s.Aggregate:
		parts = append(parts, "combine partial aggregates")
	case len(s.Sort) > 0:
		parts = append(parts, "merge-sort")
	default:
		parts = append(parts, "concatenate")
	}
	if s.Having != nil {
		parts = append(parts, "HAVING")
	}
	if s.Aggregate && len(s.Sort) > 0 {
		parts = append(parts, "sort")
	}
	if s.Distinct {
		parts = append(parts, "DISTINCT")
	}
	if s.Offset > 0 {
		parts = append(parts, fmt.Sprintf("OFFSET %d", s.Offset))
	}
	if s.Limit >= 0 {
		parts = append(parts, fmt.Sprintf("LIMIT %d", s.Limit))
	}
	return strings.Join(parts, ", ")
}

// String is the tree on one line: each operator, then its inputs in
// brackets.
func (n *PlanNode) String() string {
	if n == nil {
		return ""
	}
	s := n.Op
	if len(n.Shards) > 0 {
		s += " " + strings.Join(n.Shards, ",")
	}
	if n.Detail != "" {
		s += " (" + n.Detail + ")"
	}
	if len(n.Inputs) > 0 {
		in := make([]string, len(n.Inputs))
		for i, c := range n.Inputs {
			in[i] = c.String()
		}
		s += " <- [" + strings.Join(in, "; ") + "]"
	}
	return s
}

// runFirstTree is a run-first's operators: each subquery's route, then the
// query's, which goes where the values in it take it.
func runFirstTree(t *topology.Topology, spec *RunFirstSpec) *PlanNode {
	node := &PlanNode{Op: "run-first", Detail: "the subqueries' results into the query"}
	for i, q := range spec.Subqueries {
		shards := []string{"any"}
		if !q.Any {
			shards = q.Shards.nameList(t)
		}
		what := fmt.Sprintf("values %d", i+1)
		switch {
		case q.Exists:
			what = fmt.Sprintf("exists %d", i+1)
		case q.Scalar:
			what = fmt.Sprintf("value %d", i+1)
		}
		if q.Merge != nil {
			merged := scatterTree(shards, q.Merge, q.SQL)
			merged.Detail += "; " + what
			node.Inputs = append(node.Inputs, merged)
			continue
		}
		node.Inputs = append(node.Inputs, &PlanNode{Op: "route", Shards: shards, SQL: q.SQL, Detail: what})
	}
	node.Inputs = append(node.Inputs, &PlanNode{Op: "route", SQL: spec.Template(),
		Detail: "the query with the results in place, on the shards its keys need; gathered if a subquery fails on its own"})
	return node
}
