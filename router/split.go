package router

import (
	"cmp"
	"errors"
	"slices"

	pg "github.com/pganalyze/pg_query_go/v5"

	"github.com/shardgate/shardgate/pgerr"
)

// A multi-row INSERT ... VALUES whose rows live on several shards can run
// as one INSERT per shard, each with only its own rows. Route marks such a
// plan with Plan.Split (keeping its refusal for proxies that cannot split);
// SplitInsert, on that slow path only, parses the client's text again and
// writes the per-shard statements.

// InsertPart is the INSERT one shard runs when SplitInsert splits a
// statement.
type InsertPart struct {
	Shard int    // index into the topology's shards
	SQL   string // the statement with only this shard's rows
	// Params maps the part's parameters to the client's: the part's $i+1 is
	// the client's parameter with 0-based index Params[i] (the client's
	// $(Params[i]+1)). They are numbered in order of first appearance in
	// the client's text, and only those the part uses. Parameter types
	// from the client's Parse map the same way.
	Params []int
}

// Bind picks the part's parameter values and format codes out of the
// client's Bind that SplitInsert was given, whose format codes may be none
// (all text), one (for all) or one per parameter. The values alias params.
func (p InsertPart) Bind(params [][]byte, formats []int16) ([][]byte, []int16) {
	values := make([][]byte, len(p.Params))
	codes := make([]int16, len(p.Params))
	for i, c := range p.Params {
		values[i], codes[i] = params[c], paramFormat(formats, c)
	}
	return values, codes
}

// splitRows returns the VALUES rows of an analysed INSERT that may be split
// by shard, or nil. Each row must be pinned by its own key value; a WITH
// clause, ORDER BY or LIMIT would mean something else once the rows are
// apart, and an INSERT ... SELECT has no rows to sort. k.insert pins one
// row after another, so the class's pin i is row i's key.
func splitRows(ins *pg.InsertStmt, st *Statement) []*pg.Node {
	sel := ins.GetSelectStmt().GetSelectStmt()
	if st.Class != ClassKeyed || len(st.Classes) != 1 || !st.Classes[0].Rows || ins.WithClause != nil ||
		sel == nil || sel.WithClause != nil || len(sel.SortClause) > 0 || sel.LimitCount != nil || sel.LimitOffset != nil ||
		len(sel.ValuesLists) != len(st.Classes[0].Pins) {
		return nil
	}
	return sel.ValuesLists
}

const notSplittable = "only a lone INSERT ... VALUES whose rows each give their shard key can be split by shard"

// SplitInsert splits a statement whose plan has Split into one INSERT per
// shard, in shard order, each keeping its rows' order and the rest of the
// statement (column list, ON CONFLICT, RETURNING, ...). sql must be the
// client's own text, not a normalised one, and params and formats its
// Bind's values and format codes as for Route (nil for a simple Query).
// Rows go where Route's key hashing puts them, so the parts' shards are the
// plan's Shards, unless the topology changed in between: send each part to
// its own Shard. An error is the client's answer, as Postgres would give
// it: a parameter the Bind lacks, text the parser rejects.
func (r *Router) SplitInsert(sql string, params [][]byte, formats []int16) ([]InsertPart, *pgerr.Error) {
	t := r.topo.Load()
	defer r.takeTurn(len(sql))()
	tree, perr := parse(sql)
	if perr != nil {
		return nil, perr
	}
	var ins *pg.InsertStmt
	if len(tree.Stmts) == 1 {
		ins = tree.Stmts[0].Stmt.GetInsertStmt()
	}
	if ins == nil {
		return nil, errorf(pgerr.CodeFeatureNotSupported, notSplittable)
	}
	st := analyzeInsert(t, ins, tree.Stmts[0].Stmt)
	if st.Err != nil {
		return nil, st.Err
	}
	rows := splitRows(ins, st)
	if rows == nil {
		return nil, errorf(pgerr.CodeFeatureNotSupported, notSplittable)
	}
	c := st.Classes[0]
	byShard := make([][]*pg.Node, len(t.Shards))
	for i, pin := range c.Pins {
		shard, kerr := keyShard(t, c.Table, c.KeyType, pin.Refs[0], params, formats, nil)
		if kerr != nil {
			return nil, kerr
		}
		byShard[shard] = append(byShard[shard], rows[i])
	}
	sel := ins.SelectStmt.GetSelectStmt()
	// Each part is the statement with fewer rows: the text's bound holds
	// for all of them, and spares deparse a walk per part.
	depth := treeDepthBound(sql)
	if depth > maxDeparseDepth {
		depth = unknownDepth
	}
	var parts []InsertPart
	for shard, own := range byShard {
		if len(own) == 0 {
			continue
		}
		sel.ValuesLists = own
		part, perr := insertPart(ins, len(params), depth)
		if perr != nil {
			return nil, perr
		}
		part.Shard = shard
		parts = append(parts, part)
	}
	return parts, nil
}

// insertPart deparses ins, which holds one shard's rows, with its
// parameters renumbered $1..$k in order of first appearance in the
// client's text. Postgres refuses a Parse with a parameter it cannot type,
// so a part names only the parameters its rows and clauses use. The tree
// is SplitInsert's own, so renumbering in place beats copying it; the
// client's numbers go back afterwards because the next part shares every
// clause but the rows (after an error nothing reads it again).
func insertPart(ins *pg.InsertStmt, nparams, depth int) (InsertPart, *pgerr.Error) {
	node := &pg.Node{Node: &pg.Node_InsertStmt{InsertStmt: ins}}
	var refs []*pg.ParamRef
	walk(node, func(m any) bool {
		if p, ok := m.(*pg.ParamRef); ok {
			refs = append(refs, p)
		}
		return true
	})
	// The walk visits some clauses out of textual order (WHERE after GROUP
	// BY); the parser's locations are in it.
	slices.SortStableFunc(refs, func(a, b *pg.ParamRef) int { return cmp.Compare(a.Location, b.Location) })
	var part InsertPart
	numbers := make([]int32, nparams) // the part's number of each client parameter, 0 until used
	client := make([]int32, len(refs))
	for i, p := range refs {
		if p.Number < 1 || int(p.Number) > nparams {
			return part, errorf(pgerr.CodeUndefinedParameter, "there is no parameter $%d", p.Number)
		}
		if numbers[p.Number-1] == 0 {
			part.Params = append(part.Params, int(p.Number-1))
			numbers[p.Number-1] = int32(len(part.Params))
		}
		client[i], p.Number = p.Number, numbers[p.Number-1]
	}
	sql, err := deparse(node, depth)
	for i, p := range refs {
		p.Number = client[i]
	}
	if errors.Is(err, errTooDeepToRewrite) {
		return part, errorf(pgerr.CodeStatementTooComplex, "statement too complex: shardgate cannot split %v by shard", err)
	}
	if err != nil {
		return part, errorf(pgerr.CodeFeatureNotSupported, "shardgate cannot split %v by shard", err)
	}
	part.SQL = sql
	return part, nil
}
