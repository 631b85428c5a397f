// Package merge combines the result streams of a query that ran on several
// shards into exactly what one PostgreSQL server would have returned: a
// streaming k-way merge for ORDER BY, OFFSET/LIMIT, the final step of
// aggregates whose partial results were computed on each shard, and DISTINCT.
//
// It is pure logic over DataRow values: no sockets and no SQL parsing. Values
// are compared the way PostgreSQL 15 compares them with the C collation; a
// type it does not know is an error, never a guess.
package merge

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Column is one result column as the RowDescription gave it.
type Column struct {
	Name    string
	TypeOID uint32
	Format  int16 // 0 text, 1 binary
}

// Row is one DataRow's column values; nil is NULL.
type Row [][]byte

// SortKey orders by column Col. NullsFirst is taken literally; PostgreSQL's
// defaults are NULLS LAST for ASC and NULLS FIRST for DESC, which is what
// DefaultSortKey fills in.
type SortKey struct {
	Col        int
	Desc       bool
	NullsFirst bool
}

// DefaultSortKey is the key of ORDER BY col [ASC|DESC] without a NULLS clause.
func DefaultSortKey(col int, desc bool) SortKey {
	return SortKey{Col: col, Desc: desc, NullsFirst: desc}
}

// Type OIDs this package understands.
const (
	OIDBool        = 16
	OIDBytea       = 17
	OIDName        = 19
	OIDInt8        = 20
	OIDInt2        = 21
	OIDInt4        = 23
	OIDText        = 25
	OIDFloat4      = 700
	OIDFloat8      = 701
	OIDBpchar      = 1042
	OIDVarchar     = 1043
	OIDDate        = 1082
	OIDTimestamp   = 1114
	OIDTimestamptz = 1184
	OIDNumeric     = 1700
	OIDUUID        = 2950
)

// ErrUnsupportedType is wrapped by every error about a column type this
// package cannot compare or combine; the proxy refuses such queries (0A000).
var ErrUnsupportedType = errors.New("merge: unsupported column type")

type kind uint8

const (
	kInvalid kind = iota
	kInt
	kFloat
	kNumeric
	kText
	kBpchar
	kBool
	kTime // date, timestamp, timestamptz: one int64 per value
	kUUID
	kBytea
)

func kindOf(oid uint32) kind {
	switch oid {
	case OIDInt2, OIDInt4, OIDInt8:
		return kInt
	case OIDFloat4, OIDFloat8:
		return kFloat
	case OIDNumeric:
		return kNumeric
	case OIDText, OIDVarchar, OIDName:
		return kText
	case OIDBpchar:
		return kBpchar
	case OIDBool:
		return kBool
	case OIDDate, OIDTimestamp, OIDTimestamptz:
		return kTime
	case OIDUUID:
		return kUUID
	case OIDBytea:
		return kBytea
	}
	return kInvalid
}

// Supported reports whether Compare (and so sorting, grouping and DISTINCT)
// handles col; the error says why not.
func Supported(col Column) error {
	if kindOf(col.TypeOID) == kInvalid {
		return fmt.Errorf("%w: column %q has type OID %d", ErrUnsupportedType, col.Name, col.TypeOID)
	}
	if col.Format != 0 && col.Format != 1 {
		return fmt.Errorf("merge: column %q has format code %d", col.Name, col.Format)
	}
	return nil
}

// Compare orders two non-NULL values of col's type the way PostgreSQL does
// (C collation): it returns -1, 0 or +1.
func Compare(col Column, a, b []byte) (int, error) {
	if err := Supported(col); err != nil {
		return 0, err
	}
	switch kindOf(col.TypeOID) {
	case kText:
		return bytes.Compare(a, b), nil
	case kBpchar:
		return bytes.Compare(trimSpaces(a), trimSpaces(b)), nil
	case kFloat:
		x, err := decodeFloat(col, a)
		if err != nil {
			return 0, err
		}
		y, err := decodeFloat(col, b)
		if err != nil {
			return 0, err
		}
		return compareFloat(x, y), nil
	case kNumeric:
		x, err := decodeNumeric(col, a)
		if err != nil {
			return 0, err
		}
		y, err := decodeNumeric(col, b)
		if err != nil {
			return 0, err
		}
		return x.cmp(y), nil
	case kUUID:
		x, err := decodeUUID(col, a)
		if err != nil {
			return 0, err
		}
		y, err := decodeUUID(col, b)
		if err != nil {
			return 0, err
		}
		return bytes.Compare(x[:], y[:]), nil
	case kBytea:
		x, err := decodeBytea(col, a)
		if err != nil {
			return 0, err
		}
		y, err := decodeBytea(col, b)
		if err != nil {
			return 0, err
		}
		return bytes.Compare(x, y), nil
	default: // kInt, kBool, kTime
		x, err := decodeInt64(col, a)
		if err != nil {
			return 0, err
		}
		y, err := decodeInt64(col, b)
		if err != nil {
			return 0, err
		}
		return cmp.Compare(x, y), nil
	}
}

// CompareAcross orders a non-NULL value x of column a against a non-NULL
// value y of column b as PostgreSQL's comparison operators between the two
// types do: values of one type as Compare does; text, varchar and name by
// their bytes; integers and numerics exactly; with a float on either side,
// both as float8 (PostgreSQL resolves such mixes to float8 operators). Other
// mixes are ErrUnsupportedType.
func CompareAcross(a Column, x []byte, b Column, y []byte) (int, error) {
	ka, kb := kindOf(a.TypeOID), kindOf(b.TypeOID)
	number := func(k kind) bool { return k == kInt || k == kNumeric || k == kFloat }
	switch {
	case a.TypeOID == b.TypeOID && a.Format == b.Format:
		return Compare(a, x, y)
	case ka == kText && kb == kText && a.Format == b.Format:
		return bytes.Compare(x, y), nil // text's binary format is its bytes too
	case ka == kInt && kb == kInt:
		i, err := decodeInt64(a, x)
		if err != nil {
			return 0, err
		}
		j, err := decodeInt64(b, y)
		if err != nil {
			return 0, err
		}
		return cmp.Compare(i, j), nil
	case (ka == kFloat || kb == kFloat) && number(ka) && number(kb):
		f, err := toFloat8(a, x)
		if err != nil {
			return 0, err
		}
		g, err := toFloat8(b, y)
		if err != nil {
			return 0, err
		}
		return compareFloat(f, g), nil
	case number(ka) && number(kb):
		d, err := toDecimal(a, x)
		if err != nil {
			return 0, err
		}
		e, err := toDecimal(b, y)
		if err != nil {
			return 0, err
		}
		return d.cmp(e), nil
	}
	if err := Supported(a); err != nil {
		return 0, err
	}
	if err := Supported(b); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%w: comparing type OID %d with type OID %d", ErrUnsupportedType, a.TypeOID, b.TypeOID)
}

// toFloat8 converts an integer, numeric or float value as a cast to float8
// does.
func toFloat8(col Column, v []byte) (float64, error) {
	switch kindOf(col.TypeOID) {
	case kInt:
		n, err := decodeInt64(col, v)
		return float64(n), err
	case kNumeric:
		d, err := decodeNumeric(col, v)
		if err != nil {
			return 0, err
		}
		f, err := strconv.ParseFloat(d.String(), 64) // NaN and ±Infinity included
		if err != nil {
			return 0, badValue(col, v, "out of range for float8")
		}
		return f, nil
	}
	return decodeFloat(col, v)
}

func toDecimal(col Column, v []byte) (decimal, error) {
	if kindOf(col.TypeOID) == kInt {
		n, err := decodeInt64(col, v)
		return decimalFromInt(n), err
	}
	return decodeNumeric(col, v)
}

// CompareRows applies keys in order, placing NULLs as each key says.
func CompareRows(cols []Column, keys []SortKey, a, b Row) (int, error) {
	for _, k := range keys {
		if k.Col < 0 || k.Col >= len(cols) || k.Col >= len(a) || k.Col >= len(b) {
			return 0, fmt.Errorf("merge: sort column %d out of range", k.Col)
		}
		x, y := a[k.Col], b[k.Col]
		switch {
		case x == nil && y == nil:
			continue
		case x == nil:
			if k.NullsFirst {
				return -1, nil
			}
			return 1, nil
		case y == nil:
			if k.NullsFirst {
				return 1, nil
			}
			return -1, nil
		}
		c, err := Compare(cols[k.Col], x, y)
		if err != nil {
			return 0, err
		}
		if c != 0 {
			if k.Desc {
				c = -c
			}
			return c, nil
		}
	}
	return 0, nil
}

func trimSpaces(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	return b
}

func badValue(col Column, v []byte, why string) error {
	if len(v) > 64 {
		v = v[:64]
	}
	return fmt.Errorf("merge: column %q (type %d, format %d): invalid value %q: %s", col.Name, col.TypeOID, col.Format, v, why)
}

// compareFloat orders as float8_cmp_internal: NaN equals NaN and sorts above
// everything else; -0 equals 0.
func compareFloat(x, y float64) int {
	xn, yn := math.IsNaN(x), math.IsNaN(y)
	switch {
	case xn && yn:
		return 0
	case xn:
		return 1
	case yn:
		return -1
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func decodeFloat(col Column, v []byte) (float64, error) {
	if col.Format == 1 {
		switch {
		case col.TypeOID == OIDFloat4 && len(v) == 4:
			return float64(math.Float32frombits(binary.BigEndian.Uint32(v))), nil
		case col.TypeOID == OIDFloat8 && len(v) == 8:
			return math.Float64frombits(binary.BigEndian.Uint64(v)), nil
		}
		return 0, badValue(col, v, "wrong length")
	}
	bits := 64
	if col.TypeOID == OIDFloat4 {
		bits = 32
	}
	f, err := strconv.ParseFloat(string(v), bits)
	if err != nil {
		var ne *strconv.NumError
		if !(errors.As(err, &ne) && ne.Err == strconv.ErrRange) {
			return 0, badValue(col, v, "not a float")
		}
	}
	return f, nil
}

// decodeInt64 decodes int2/4/8, bool (0/1) and date/timestamp/timestamptz
// (days or microseconds since 2000-01-01; ±infinity as the extremes).
func decodeInt64(col Column, v []byte) (int64, error) {
	if col.Format == 1 {
		switch col.TypeOID {
		case OIDInt2:
			if len(v) == 2 {
				return int64(int16(binary.BigEndian.Uint16(v))), nil
			}
		case OIDInt4:
			if len(v) == 4 {
				return int64(int32(binary.BigEndian.Uint32(v))), nil
			}
		case OIDDate:
			if len(v) == 4 {
				d := int32(binary.BigEndian.Uint32(v))
				switch d {
				case math.MaxInt32:
					return math.MaxInt64, nil
				case math.MinInt32:
					return math.MinInt64, nil
				}
				return int64(d), nil
			}
		case OIDInt8, OIDTimestamp, OIDTimestamptz:
			if len(v) == 8 {
				return int64(binary.BigEndian.Uint64(v)), nil
			}
		case OIDBool:
			if len(v) == 1 && v[0] <= 1 {
				return int64(v[0]), nil
			}
		}
		return 0, badValue(col, v, "wrong length")
	}
	switch col.TypeOID {
	case OIDBool:
		switch strings.ToLower(string(v)) {
		case "t", "true":
			return 1, nil
		case "f", "false":
			return 0, nil
		}
		return 0, badValue(col, v, "not a bool")
	case OIDDate, OIDTimestamp, OIDTimestamptz:
		t, err := parseDateTime(col.TypeOID, string(v))
		if err != nil {
			return 0, badValue(col, v, err.Error())
		}
		return t, nil
	}
	bits := 64
	switch col.TypeOID {
	case OIDInt2:
		bits = 16
	case OIDInt4:
		bits = 32
	}
	n, err := strconv.ParseInt(string(v), 10, bits)
	if err != nil {
		return 0, badValue(col, v, "not an integer")
	}
	return n, nil
}

const (
	usecPerDay       = 86400 * 1000000
	unixToPGEpochDay = 10957 // days from 1970-01-01 to 2000-01-01
)

// daysFromCivil returns the days since 2000-01-01 of a proleptic Gregorian
// date with an astronomical year (1 BC is year 0).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400
	mp := m - 3
	if m <= 2 {
		mp = m + 9
	}
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468 - unixToPGEpochDay
}

// parseDateTime parses the ISO output of date ("2024-01-02"), timestamp
// ("2024-01-02 03:04:05.123456") and timestamptz (the same with "+05:30"),
// each optionally followed by " BC", or ±infinity. Dates return days and
// timestamps microseconds (UTC for timestamptz) since 2000-01-01.
func parseDateTime(oid uint32, s string) (int64, error) {
	switch s {
	case "infinity":
		return math.MaxInt64, nil
	case "-infinity":
		return math.MinInt64, nil
	}
	bc := false
	if rest, ok := strings.CutSuffix(s, " BC"); ok {
		s, bc = rest, true
	}
	p := &scanner{s: s}
	year := p.num(1, 9)
	p.lit('-')
	month := p.num(2, 2)
	p.lit('-')
	day := p.num(2, 2)
	if p.err == nil && (month < 1 || month > 12 || day < 1 || day > 31 || year < 1) {
		p.err = errors.New("date out of range")
	}
	if bc {
		year = 1 - year
	}
	days := daysFromCivil(year, month, day)
	if oid == OIDDate {
		if p.err == nil && p.i != len(s) {
			p.err = errors.New("trailing characters")
		}
		return days, p.err
	}
	p.lit(' ')
	h := p.num(2, 2)
	p.lit(':')
	mi := p.num(2, 2)
	p.lit(':')
	sec := p.num(2, 2)
	var frac int64
	if p.peek('.') {
		p.i++
		start := p.i
		frac = p.num(1, 6)
		for n := p.i - start; n < 6; n++ {
			frac *= 10
		}
	}
	var off int64
	if oid == OIDTimestamptz && p.err == nil {
		sign := int64(1)
		switch {
		case p.peek('+'):
		case p.peek('-'):
			sign = -1
		default:
			p.err = errors.New("missing time zone offset")
		}
		p.i++
		off = p.num(2, 2) * 3600
		if p.peek(':') {
			p.i++
			off += p.num(2, 2) * 60
			if p.peek(':') {
				p.i++
				off += p.num(2, 2)
			}
		}
		off *= sign
	}
	if p.err == nil && p.i != len(s) {
		p.err = errors.New("trailing characters")
	}
	if p.err != nil {
		return 0, p.err
	}
	return days*usecPerDay + ((h*60+mi)*60+sec-off)*1000000 + frac, nil
}

type scanner struct {
	s   string
	i   int
	err error
}

func (p *scanner) peek(c byte) bool { return p.err == nil && p.i < len(p.s) && p.s[p.i] == c }

func (p *scanner) lit(c byte) {
	if p.err != nil {
		return
	}
	if !p.peek(c) {
		p.err = fmt.Errorf("expected %q at %d", c, p.i)
		return
	}
	p.i++
}

func (p *scanner) num(minDigits, maxDigits int) int64 {
	if p.err != nil {
		return 0
	}
	var n int64
	j := p.i
	for j < len(p.s) && j-p.i < maxDigits && p.s[j] >= '0' && p.s[j] <= '9' {
		n = n*10 + int64(p.s[j]-'0')
		j++
	}
	if j-p.i < minDigits {
		p.err = fmt.Errorf("expected digits at %d", p.i)
		return 0
	}
	p.i = j
	return n
}

func decodeUUID(col Column, v []byte) ([16]byte, error) {
	var u [16]byte
	if col.Format == 1 {
		if len(v) != 16 {
			return u, badValue(col, v, "wrong length")
		}
		copy(u[:], v)
		return u, nil
	}
	s := strings.TrimSuffix(strings.TrimPrefix(string(v), "{"), "}")
	s = strings.ReplaceAll(s, "-", "")
	if len(s) != 32 {
		return u, badValue(col, v, "not a uuid")
	}
	if _, err := hex.Decode(u[:], []byte(s)); err != nil {
		return u, badValue(col, v, "not a uuid")
	}
	return u, nil
}

// decodeBytea decodes bytea's text output in the hex format (\x...) or the
// escape format.
func decodeBytea(col Column, v []byte) ([]byte, error) {
	if col.Format == 1 {
		return v, nil
	}
	if len(v) >= 2 && v[0] == '\\' && v[1] == 'x' {
		out := make([]byte, hex.DecodedLen(len(v)-2))
		if _, err := hex.Decode(out, v[2:]); err != nil {
			return nil, badValue(col, v, "bad hex")
		}
		return out, nil
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return v, nil
	}
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] != '\\' {
			out = append(out, v[i])
			continue
		}
		switch {
		case i+1 < len(v) && v[i+1] == '\\':
			out = append(out, '\\')
			i++
		case i+3 < len(v) && isOct(v[i+1]) && isOct(v[i+2]) && isOct(v[i+3]):
			out = append(out, (v[i+1]-'0')<<6|(v[i+2]-'0')<<3|(v[i+3]-'0'))
			i += 3
		default:
			return nil, badValue(col, v, "bad escape")
		}
	}
	return out, nil
}

func isOct(c byte) bool { return c >= '0' && c <= '7' }
