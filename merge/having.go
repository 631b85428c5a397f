package merge

import "fmt"

// truth is a value of SQL's three-valued logic.
type truth int8

const (
	unknown truth = iota
	no
	yes
)

// having keeps the combined rows for which cond is true, as HAVING does,
// in place.
func having(cond *Cond, cols []Column, rows []Row) ([]Row, error) {
	kept := rows[:0]
	for _, r := range rows {
		t, err := eval(cond, cols, r)
		if err != nil {
			return nil, err
		}
		if t == yes {
			kept = append(kept, r)
		}
	}
	return kept, nil
}

func eval(c *Cond, cols []Column, r Row) (truth, error) {
	switch c.Op {
	case CondAnd, CondOr:
		// AND is false if any argument is, OR true if any is; otherwise
		// either is unknown if any argument is.
		decisive, res := no, yes
		if c.Op == CondOr {
			decisive, res = yes, no
		}
		for i := range c.Args {
			t, err := eval(&c.Args[i], cols, r)
			if err != nil {
				return unknown, err
			}
			if t == decisive {
				return t, nil
			}
			if t == unknown {
				res = unknown
			}
		}
		return res, nil
	case CondNot:
		t, err := eval(&c.Args[0], cols, r)
		switch t {
		case yes:
			t = no
		case no:
			t = yes
		}
		return t, err
	case CondIsNull:
		return asTruth(r[c.L] == nil), nil
	case CondValue:
		if r[c.L] == nil {
			return unknown, nil
		}
		if cols[c.L].TypeOID != OIDBool {
			return unknown, fmt.Errorf("HAVING reads %s of type OID %d as a boolean", cols[c.L].Name, cols[c.L].TypeOID)
		}
		n, err := Compare(cols[c.L], r[c.L], []byte("t"))
		return asTruth(n == 0), err
	case CondCompare:
		if r[c.L] == nil || r[c.R] == nil {
			return unknown, nil
		}
		n, err := CompareAcross(cols[c.L], r[c.L], cols[c.R], r[c.R])
		if err != nil {
			return unknown, err
		}
		switch c.Cmp {
		case "=":
			return asTruth(n == 0), nil
		case "<>":
			return asTruth(n != 0), nil
		case "<":
			return asTruth(n < 0), nil
		case "<=":
			return asTruth(n <= 0), nil
		case ">":
			return asTruth(n > 0), nil
		case ">=":
			return asTruth(n >= 0), nil
		}
		return unknown, fmt.Errorf("HAVING comparison %q", c.Cmp)
	}
	return unknown, fmt.Errorf("HAVING condition %d", c.Op)
}

func asTruth(b bool) truth {
	if b {
		return yes
	}
	return no
}
