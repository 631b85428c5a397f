package merge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// AggKind is the aggregate whose per-shard partial results Combine merges.
type AggKind int

const (
	AggCount   AggKind = iota // partial: int8 count; final: sum of counts, int8
	AggSum                    // partial: sum; final: sum of sums (see CombineColumns for the type); NULL if all partials are NULL
	AggMin                    // partial: min; final: min of the non-NULL partials
	AggMax                    // partial: max; final: max of the non-NULL partials
	AggBoolAnd                // partial: bool_and; final: and of the non-NULL partials
	AggBoolOr                 // partial: bool_or; final: or of the non-NULL partials
	AggAvg                    // partials: sum(x) at Col and count(x) at CountCol; final: sum/count as PostgreSQL's avg prints it
)

func (k AggKind) String() string {
	switch k {
	case AggCount:
		return "count"
	case AggSum:
		return "sum"
	case AggMin:
		return "min"
	case AggMax:
		return "max"
	case AggBoolAnd:
		return "bool_and"
	case AggBoolOr:
		return "bool_or"
	case AggAvg:
		return "avg"
	}
	return fmt.Sprintf("AggKind(%d)", int(k))
}

// Agg is one aggregate over partial columns.
type Agg struct {
	Kind     AggKind
	Col      int // partial column (for AggAvg: the sum column)
	CountCol int // AggAvg only: the count column
}

// OutCol describes one output column: either a group-by column copied from
// the partials (Group >= 0), or an aggregate (Group = -1 and Agg set). A
// Const column is copied like a group column but is no part of the
// grouping: a constant that HAVING reads.
type OutCol struct {
	Group int
	Const bool
	Agg   *Agg
}

// CombineColumns returns the type of each output column of Combine, for the
// RowDescription sent to the client (all text format):
//   - count: int8
//   - sum: int8 for an int2/int4/int8 partial (Postgres's sum(int2/int4) is
//     int8; sum(int8) is numeric, so its partial arrives as numeric), numeric
//     for numeric, float4 for float4, float8 for float8
//   - avg: numeric for an integer or numeric sum partial, float8 for a float one
//   - min, max: the partial's type; bool_and, bool_or: bool
//   - group columns: the partial's type
func CombineColumns(partialCols []Column, out []OutCol) ([]Column, error) {
	res := make([]Column, len(out))
	for i, o := range out {
		if err := checkOut(partialCols, o); err != nil {
			return nil, fmt.Errorf("merge: output column %d: %w", i, err)
		}
		if o.Agg == nil {
			res[i] = Column{Name: partialCols[o.Group].Name, TypeOID: partialCols[o.Group].TypeOID}
			continue
		}
		p := partialCols[o.Agg.Col]
		c := Column{Name: p.Name}
		switch o.Agg.Kind {
		case AggCount:
			c.TypeOID = OIDInt8
		case AggSum:
			c.TypeOID = p.TypeOID
			if kindOf(p.TypeOID) == kInt {
				c.TypeOID = OIDInt8
			}
		case AggAvg:
			c.TypeOID = OIDNumeric
			if kindOf(p.TypeOID) == kFloat {
				c.TypeOID = OIDFloat8
			}
		case AggMin, AggMax:
			c.TypeOID = p.TypeOID
		case AggBoolAnd, AggBoolOr:
			c.TypeOID = OIDBool
		}
		res[i] = c
	}
	return res, nil
}

func checkOut(cols []Column, o OutCol) error {
	inRange := func(i int) error {
		if i < 0 || i >= len(cols) {
			return fmt.Errorf("partial column %d out of range (%d columns)", i, len(cols))
		}
		if cols[i].Format != 0 {
			return fmt.Errorf("partial column %d is not in text format", i)
		}
		return nil
	}
	if o.Agg == nil {
		if err := inRange(o.Group); err != nil {
			return err
		}
		return Supported(cols[o.Group])
	}
	if o.Group >= 0 {
		return errors.New("both Group and Agg set")
	}
	a := o.Agg
	if err := inRange(a.Col); err != nil {
		return err
	}
	t := cols[a.Col].TypeOID
	unsupported := func() error {
		return fmt.Errorf("%w: %s over a partial of type OID %d", ErrUnsupportedType, a.Kind, t)
	}
	switch a.Kind {
	case AggCount:
		if kindOf(t) != kInt {
			return unsupported()
		}
	case AggSum:
		if k := kindOf(t); k != kInt && k != kNumeric && k != kFloat {
			return unsupported()
		}
	case AggAvg:
		if k := kindOf(t); k != kInt && k != kNumeric && k != kFloat {
			return unsupported()
		}
		if err := inRange(a.CountCol); err != nil {
			return err
		}
		if kindOf(cols[a.CountCol].TypeOID) != kInt {
			return fmt.Errorf("%w: avg count partial of type OID %d", ErrUnsupportedType, cols[a.CountCol].TypeOID)
		}
	case AggMin, AggMax:
		return Supported(cols[a.Col])
	case AggBoolAnd, AggBoolOr:
		if t != OIDBool {
			return unsupported()
		}
	default:
		return fmt.Errorf("unknown aggregate kind %d", int(a.Kind))
	}
	return nil
}

// aggState accumulates one aggregate of one group.
type aggState struct {
	seen bool    // a non-NULL partial was seen
	n    int64   // count, or avg's count
	i    int64   // integer sum
	d    decimal // numeric sum
	f    float64 // float8 sum
	f32  float32 // float4 sum
	b    bool    // bool_and / bool_or
	best []byte  // min / max
}

type group struct {
	first Row
	aggs  []aggState
}

// Combine groups partial rows (from all shards) by the non-Const Group
// columns of out (NULLs group together; values group when Compare says they
// are equal) and returns one final row per group, in out's order, in text
// format. Groups come out in the order of their first partial row. With no
// group columns it returns exactly one row even for no input (count 0, every
// other aggregate NULL), as PostgreSQL does for an aggregate without GROUP
// BY.
func Combine(partialCols []Column, out []OutCol, rows []Row) ([]Row, error) {
	var groupCols []int
	for _, o := range out {
		if o.Agg == nil && !o.Const {
			groupCols = append(groupCols, o.Group)
		}
	}
	return CombineGroups(partialCols, groupCols, out, rows)
}

// CombineGroups is Combine grouping by groupCols, which may include partial
// columns that are not in the output (GROUP BY g without g in the SELECT
// list) and need not include every copied column (a constant). With no
// groupCols it returns exactly one row; of no rows, its copied columns are
// NULL.
func CombineGroups(partialCols []Column, groupCols []int, out []OutCol, rows []Row) ([]Row, error) {
	for i, o := range out {
		if err := checkOut(partialCols, o); err != nil {
			return nil, fmt.Errorf("merge: output column %d: %w", i, err)
		}
	}
	for _, g := range groupCols {
		if err := checkOut(partialCols, OutCol{Group: g}); err != nil {
			return nil, fmt.Errorf("merge: group column: %w", err)
		}
	}
	index := map[string]*group{}
	var groups []*group
	var key []byte
	for _, r := range rows {
		if len(r) != len(partialCols) {
			return nil, fmt.Errorf("merge: partial row of %d columns, want %d", len(r), len(partialCols))
		}
		key = key[:0]
		for _, g := range groupCols {
			var err error
			if key, err = appendKey(key, partialCols[g], r[g]); err != nil {
				return nil, err
			}
		}
		gr := index[string(key)]
		if gr == nil {
			gr = &group{first: r, aggs: make([]aggState, len(out))}
			index[string(key)] = gr
			groups = append(groups, gr)
		}
		for i, o := range out {
			if o.Agg != nil {
				if err := accumulate(&gr.aggs[i], partialCols, o.Agg, r); err != nil {
					return nil, err
				}
			}
		}
	}
	if len(groupCols) == 0 && len(groups) == 0 {
		groups = append(groups, &group{aggs: make([]aggState, len(out))})
	}
	res := make([]Row, 0, len(groups))
	for _, gr := range groups {
		row := make(Row, len(out))
		for i, o := range out {
			if o.Agg == nil {
				if gr.first != nil { // nil: the one group of no rows
					row[i] = gr.first[o.Group]
				}
				continue
			}
			v, err := final(&gr.aggs[i], partialCols, o.Agg)
			if err != nil {
				return nil, err
			}
			row[i] = v
		}
		res = append(res, row)
	}
	return res, nil
}

var errBigintRange = errors.New("merge: bigint out of range")

func parseText(col Column, v []byte) (int64, error) { return decodeInt64(col, v) }

// addSum adds one non-NULL sum partial to s.
func addSum(s *aggState, col Column, v []byte) error {
	switch kindOf(col.TypeOID) {
	case kInt:
		n, err := parseText(col, v)
		if err != nil {
			return err
		}
		r := s.i + n
		if (r > s.i) != (n > 0) {
			return errBigintRange
		}
		s.i = r
	case kNumeric:
		d, err := decodeNumeric(col, v)
		if err != nil {
			return err
		}
		if !s.seen {
			s.d = d
		} else {
			s.d = s.d.add(d)
		}
	case kFloat:
		f, err := decodeFloat(col, v)
		if err != nil {
			return err
		}
		if !s.seen { // so that sum(-0) is -0, as in Postgres
			s.f, s.f32 = f, float32(f)
		} else {
			s.f += f
			s.f32 += float32(f)
		}
	}
	s.seen = true
	return nil
}

func accumulate(s *aggState, cols []Column, a *Agg, r Row) error {
	col := cols[a.Col]
	v := r[a.Col]
	switch a.Kind {
	case AggCount:
		if v == nil {
			return nil
		}
		n, err := parseText(col, v)
		if err != nil {
			return err
		}
		if s.n+n < s.n {
			return errBigintRange
		}
		s.n += n
	case AggSum:
		if v != nil {
			return addSum(s, col, v)
		}
	case AggAvg:
		cv := r[a.CountCol]
		if cv == nil {
			return nil
		}
		n, err := parseText(cols[a.CountCol], cv)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil // a shard whose group had no non-NULL values: its sum is NULL
		}
		if v == nil {
			return fmt.Errorf("merge: avg partial has count %d but a NULL sum", n)
		}
		if s.n+n < s.n {
			return errBigintRange
		}
		s.n += n
		return addSum(s, col, v)
	case AggMin, AggMax:
		if v == nil {
			return nil
		}
		if !s.seen {
			s.best, s.seen = v, true
			return nil
		}
		c, err := Compare(col, v, s.best)
		if err != nil {
			return err
		}
		if (a.Kind == AggMin && c < 0) || (a.Kind == AggMax && c > 0) {
			s.best = v
		}
	case AggBoolAnd, AggBoolOr:
		if v == nil {
			return nil
		}
		n, err := decodeInt64(col, v)
		if err != nil {
			return err
		}
		b := n == 1
		switch {
		case !s.seen:
			s.b = b
		case a.Kind == AggBoolAnd:
			s.b = s.b && b
		default:
			s.b = s.b || b
		}
		s.seen = true
	}
	return nil
}

func final(s *aggState, cols []Column, a *Agg) ([]byte, error) {
	col := cols[a.Col]
	switch a.Kind {
	case AggCount:
		return strconv.AppendInt(nil, s.n, 10), nil
	case AggSum:
		if !s.seen {
			return nil, nil
		}
		switch kindOf(col.TypeOID) {
		case kInt:
			return strconv.AppendInt(nil, s.i, 10), nil
		case kNumeric:
			return []byte(s.d.String()), nil
		default:
			if col.TypeOID == OIDFloat4 {
				return []byte(FormatFloat4(s.f32)), nil
			}
			return []byte(FormatFloat8(s.f)), nil
		}
	case AggAvg:
		if s.n == 0 || !s.seen {
			return nil, nil
		}
		switch kindOf(col.TypeOID) {
		case kInt:
			return []byte(decimalFromInt(s.i).div(decimalFromInt(s.n)).String()), nil
		case kNumeric:
			return []byte(s.d.div(decimalFromInt(s.n)).String()), nil
		default:
			sum := s.f
			if col.TypeOID == OIDFloat4 {
				sum = float64(s.f32)
			}
			if sum == 0 {
				sum = 0 // avg's accumulator starts at +0, so avg(-0) is 0
			}
			return []byte(FormatFloat8(sum / float64(s.n))), nil
		}
	case AggMin, AggMax:
		if !s.seen {
			return nil, nil
		}
		return s.best, nil
	case AggBoolAnd, AggBoolOr:
		if !s.seen {
			return nil, nil
		}
		if s.b {
			return []byte("t"), nil
		}
		return []byte("f"), nil
	}
	return nil, fmt.Errorf("merge: unknown aggregate kind %d", int(a.Kind))
}

// FormatFloat8 is float8out with the default extra_float_digits = 1: the
// shortest text that reads back as f, fixed-point for decimal exponents in
// [-4, 15), otherwise like 1e+15.
func FormatFloat8(f float64) string { return formatFloat(f, 64, 15) }

// FormatFloat4 is float4out with the default extra_float_digits = 1.
func FormatFloat4(f float32) string { return formatFloat(float64(f), 32, 6) }

func formatFloat(f float64, bits, fixedBelow int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case f == 0:
		if math.Signbit(f) {
			return "-0"
		}
		return "0"
	}
	e := strconv.FormatFloat(f, 'e', -1, bits)
	i := len(e) - 1
	for e[i] != 'e' {
		i--
	}
	exp, _ := strconv.Atoi(e[i+1:])
	if exp >= -4 && exp < fixedBelow {
		return strconv.FormatFloat(f, 'f', -1, bits)
	}
	return e
}

// appendKey appends a canonical, self-delimiting form of v to dst: two values
// of col get the same key exactly when Compare says they are equal (or both
// are NULL).
func appendKey(dst []byte, col Column, v []byte) ([]byte, error) {
	if v == nil {
		return append(dst, 0), nil
	}
	if err := Supported(col); err != nil {
		return nil, err
	}
	var canon []byte
	switch kindOf(col.TypeOID) {
	case kText:
		canon = v
	case kBpchar:
		canon = trimSpaces(v)
	case kFloat:
		f, err := decodeFloat(col, v)
		if err != nil {
			return nil, err
		}
		switch {
		case math.IsNaN(f):
			canon = []byte("N")
		case f == 0:
			canon = []byte("0")
		default:
			canon = binary.BigEndian.AppendUint64(nil, math.Float64bits(f))
		}
	case kNumeric:
		d, err := decodeNumeric(col, v)
		if err != nil {
			return nil, err
		}
		canon = []byte(d.key())
	case kUUID:
		u, err := decodeUUID(col, v)
		if err != nil {
			return nil, err
		}
		canon = u[:]
	case kBytea:
		b, err := decodeBytea(col, v)
		if err != nil {
			return nil, err
		}
		canon = b
	default:
		n, err := decodeInt64(col, v)
		if err != nil {
			return nil, err
		}
		canon = binary.BigEndian.AppendUint64(nil, uint64(n))
	}
	dst = append(dst, 1)
	dst = binary.AppendUvarint(dst, uint64(len(canon)))
	return append(dst, canon...), nil
}

// Distinct removes duplicate rows (all columns equal by Compare, NULLs equal
// to each other), keeping the first of each in input order.
func Distinct(cols []Column, rows []Row) ([]Row, error) {
	for _, c := range cols {
		if err := Supported(c); err != nil {
			return nil, err
		}
	}
	seen := make(map[string]struct{}, len(rows))
	var res []Row
	var key []byte
	for _, r := range rows {
		if len(r) != len(cols) {
			return nil, fmt.Errorf("merge: row of %d columns, want %d", len(r), len(cols))
		}
		key = key[:0]
		for i, c := range cols {
			var err error
			if key, err = appendKey(key, c, r[i]); err != nil {
				return nil, err
			}
		}
		if _, dup := seen[string(key)]; dup {
			continue
		}
		seen[string(key)] = struct{}{}
		res = append(res, r)
	}
	return res, nil
}
