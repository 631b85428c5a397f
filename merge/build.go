package merge

import (
	"fmt"
	"slices"
	"sort"
)

// Result is a merged result: its columns, and its rows as they are merged.
type Result struct {
	Cols []Column
	// Origin is, for each of Cols, the shard column it is computed from,
	// whose description (table, attribute, type size) it keeps where its
	// type is unchanged; nil when Cols are the shards' columns as they are.
	Origin []int
	Rows   Source
}

// Build assembles the pipeline that merges shards, one Source per shard
// each returning rows of cols, as spec says: a k-way merge by the sort keys
// or a concatenation; for aggregates, combining the partials, HAVING,
// dropping the hidden columns and sorting; then DISTINCT, then OFFSET and
// LIMIT. It reads no row: they are read as the Result's Rows are. What it
// can check of spec against cols fails here; everything else (a shard's
// error, a value it cannot compare or combine) comes from Rows.Next.
//
// Without aggregates and DISTINCT no step holds more than one row per
// shard, so the result streams; the other steps need every row first.
func Build(spec *Spec, cols []Column, shards []Source) (Result, error) {
	var res Result
	var err error
	if spec.Aggregate {
		res, err = aggregate(spec, cols, shards)
	} else {
		res, err = mergeShards(spec, cols, shards)
	}
	if err != nil {
		return Result{}, err
	}
	if spec.Distinct {
		res.Rows = &gather{src: res.Rows, step: func(rows []Row) ([]Row, error) { return Distinct(res.Cols, rows) }}
	}
	if spec.Offset > 0 || spec.Limit >= 0 {
		res.Rows = Limit(res.Rows, spec.Offset, spec.Limit)
	}
	return res, nil
}

// mergeShards is the result of a query without aggregates: the shards'
// rows merge-sorted when it has an ORDER BY, else one shard after another.
func mergeShards(spec *Spec, cols []Column, shards []Source) (Result, error) {
	if len(spec.Sort) == 0 {
		return Result{Cols: cols, Rows: Concat(shards)}, nil
	}
	keys, err := sortKeys(cols, spec.Sort)
	if err != nil {
		return Result{}, err
	}
	m, err := NewMerger(cols, keys, shards)
	if err != nil {
		return Result{}, err
	}
	return Result{Cols: cols, Rows: m}, nil
}

// aggregate is the result of an aggregate query: the partial rows of all
// shards combined into one per group, filtered by HAVING, without the
// columns only HAVING reads, and sorted.
func aggregate(spec *Spec, cols []Column, shards []Source) (Result, error) {
	partial := make([]Column, len(cols))
	for i, c := range cols {
		c.Format = 0 // the shards were asked for text, which combining reads
		partial[i] = c
	}
	final, origin, err := finalColumns(partial, spec.Output)
	if err != nil {
		return Result{}, err
	}
	var groups []int
	for _, o := range spec.Output {
		if o.Agg == nil && !o.Const {
			groups = append(groups, o.Group)
		}
	}
	visible := len(final) - spec.Hidden
	if visible < 0 {
		return Result{}, fmt.Errorf("merge: %d hidden columns of %d", spec.Hidden, len(final))
	}
	step := func(rows []Row) ([]Row, error) {
		rows, err := CombineGroups(partial, groups, spec.Output, rows)
		if err != nil {
			return nil, err
		}
		if spec.Having != nil {
			if rows, err = having(spec.Having, final, rows); err != nil {
				return nil, err
			}
		}
		if spec.Hidden > 0 {
			for i := range rows {
				rows[i] = rows[i][:visible]
			}
		}
		return rows, sortRows(final[:visible], spec.Sort, rows)
	}
	return Result{Cols: final[:visible], Origin: origin[:visible], Rows: &gather{src: Concat(shards), step: step}}, nil
}

// finalColumns describes the combined columns as the client sees them:
// each like the partial column it comes from, in text; an avg of integers
// or numerics is numeric, and keeps the name of an unaliased avg, which
// the shards return as their sum's.
func finalColumns(partial []Column, out []OutCol) ([]Column, []int, error) {
	final := make([]Column, len(out))
	origin := make([]int, len(out))
	for i, o := range out {
		from := o.Group
		if o.Agg != nil {
			from = o.Agg.Col
		}
		if from < 0 || from >= len(partial) {
			return nil, nil, fmt.Errorf("merge: output column %d: partial column %d out of range (%d columns)", i, from, len(partial))
		}
		c := partial[from]
		if o.Agg != nil && o.Agg.Kind == AggAvg {
			if c.TypeOID == OIDInt8 || c.TypeOID == OIDNumeric {
				c.TypeOID = OIDNumeric
			}
			if c.Name == "sum" {
				c.Name = "avg"
			}
		}
		final[i], origin[i] = c, from
	}
	return final, origin, nil
}

// sortKeys resolves ORDER BY items against the result's columns.
func sortKeys(cols []Column, order []OrderBy) ([]SortKey, error) {
	keys := make([]SortKey, len(order))
	for i, o := range order {
		col := o.Col
		if col < 0 {
			col = slices.IndexFunc(cols, func(c Column) bool { return c.Name == o.Name })
			if col < 0 {
				return nil, fmt.Errorf("ORDER BY %s is not a result column", o.Name)
			}
		}
		keys[i] = SortKey{Col: col, Desc: o.Desc, NullsFirst: o.NullsFirst}
	}
	return keys, nil
}

// sortRows sorts rows in place, stably, by order.
func sortRows(cols []Column, order []OrderBy, rows []Row) error {
	if len(order) == 0 {
		return nil
	}
	keys, err := sortKeys(cols, order)
	if err != nil {
		return err
	}
	sort.SliceStable(rows, func(i, j int) bool {
		c, e := CompareRows(cols, keys, rows[i], rows[j])
		if e != nil {
			err = e
		}
		return c < 0
	})
	return err
}
