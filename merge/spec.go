package merge

// Spec is how the shards' answers to one query merge into what one
// PostgreSQL holding all the rows would return: merge-sort or concatenate,
// combine aggregates, filter by HAVING, sort, de-duplicate, and apply
// OFFSET/LIMIT. The router writes it from the SQL; Build runs it.
type Spec struct {
	Sort     []OrderBy // global order, by result column
	Offset   int64
	Limit    int64 // -1: none
	Distinct bool
	// Aggregate: the shards return partial aggregates and Output lists the
	// final columns.
	Aggregate bool
	Output    []OutCol
	// Having filters the combined rows. The last Hidden columns of Output
	// are aggregates and constants only it reads, dropped before sorting.
	Having *Cond
	Hidden int
}

// OrderBy is one ORDER BY item: result column Col, or, under SELECT *, the
// result column called Name (Col is then -1).
type OrderBy struct {
	Col              int
	Name             string
	Desc, NullsFirst bool
}

// Cond is a HAVING condition over the combined output columns, evaluated
// with SQL's three-valued logic. Constants are output columns too: the
// shards compute them, so they have the type and value PostgreSQL gives
// them.
type Cond struct {
	Op   CondOp
	Args []Cond // CondAnd, CondOr, CondNot
	Cmp  string // CondCompare: =, <>, <, <=, > or >=
	L, R int    // output columns: L Cmp R, L IS NULL, or L by itself
}

// CondOp is what a Cond does with its arguments or columns.
type CondOp uint8

const (
	CondAnd     CondOp = iota // all Args
	CondOr                    // any of Args
	CondNot                   // Args[0] negated
	CondCompare               // L Cmp R
	CondIsNull                // L IS NULL
	CondValue                 // L, a boolean, by itself
)
