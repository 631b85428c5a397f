package merge

import (
	"encoding/binary"
	"errors"
	"math/big"
	"strings"
)

// decimal is an exact PostgreSQL numeric: u / 10^scale, where scale is the
// display scale (dscale), or one of the special values.
type decimal struct {
	special byte // 0 finite, 'N' NaN, '+' Infinity, '-' -Infinity
	u       *big.Int
	scale   int
}

var bigTen = big.NewInt(10)

func pow10(n int) *big.Int {
	return new(big.Int).Exp(bigTen, big.NewInt(int64(n)), nil)
}

func decimalFromInt(n int64) decimal { return decimal{u: big.NewInt(n)} }

// rank orders the classes: -Infinity < finite < Infinity < NaN.
func (d decimal) rank() int {
	switch d.special {
	case '-':
		return 0
	case '+':
		return 2
	case 'N':
		return 3
	}
	return 1
}

// aligned returns a and b's unscaled values at a common scale.
func aligned(a, b decimal) (*big.Int, *big.Int, int) {
	switch {
	case a.scale == b.scale:
		return a.u, b.u, a.scale
	case a.scale < b.scale:
		return new(big.Int).Mul(a.u, pow10(b.scale-a.scale)), b.u, b.scale
	default:
		return a.u, new(big.Int).Mul(b.u, pow10(a.scale-b.scale)), a.scale
	}
}

func (d decimal) cmp(e decimal) int {
	if r, s := d.rank(), e.rank(); r != s || r != 1 {
		if r < s {
			return -1
		} else if r > s {
			return 1
		}
		return 0
	}
	x, y, _ := aligned(d, e)
	return x.Cmp(y)
}

// add is numeric addition: the result's display scale is the larger one.
func (d decimal) add(e decimal) decimal {
	if d.special != 0 || e.special != 0 {
		switch {
		case d.special == 'N' || e.special == 'N':
			return decimal{special: 'N'}
		case d.special != 0 && e.special != 0 && d.special != e.special:
			return decimal{special: 'N'} // Infinity + -Infinity
		case d.special != 0:
			return decimal{special: d.special}
		default:
			return decimal{special: e.special}
		}
	}
	x, y, s := aligned(d, e)
	return decimal{u: new(big.Int).Add(x, y), scale: s}
}

// key is a canonical form: equal values (1.0 and 1.00) give equal keys.
func (d decimal) key() string {
	if d.special != 0 {
		return string(d.special)
	}
	u, s := new(big.Int).Set(d.u), d.scale
	if u.Sign() == 0 {
		return "0"
	}
	m := new(big.Int)
	for s > 0 {
		q, r := new(big.Int).QuoRem(u, bigTen, m)
		if r.Sign() != 0 {
			break
		}
		u, s = q, s-1
	}
	return u.String() + "e-" + itoa(s)
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }

// String is numeric_out: every digit of the display scale, no exponent.
func (d decimal) String() string {
	switch d.special {
	case 'N':
		return "NaN"
	case '+':
		return "Infinity"
	case '-':
		return "-Infinity"
	}
	digits := new(big.Int).Abs(d.u).String()
	var b strings.Builder
	if d.u.Sign() < 0 {
		b.WriteByte('-')
	}
	if d.scale == 0 {
		b.WriteString(digits)
		return b.String()
	}
	if len(digits) <= d.scale {
		digits = strings.Repeat("0", d.scale-len(digits)+1) + digits
	}
	b.WriteString(digits[:len(digits)-d.scale])
	b.WriteByte('.')
	b.WriteString(digits[len(digits)-d.scale:])
	return b.String()
}

// parseDecimal parses numeric_in's input (which includes numeric_out's
// output): [sign] digits [. digits] [e [sign] digits], NaN, ±Infinity.
func parseDecimal(s string) (decimal, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "nan":
		return decimal{special: 'N'}, nil
	case "infinity", "+infinity", "inf", "+inf":
		return decimal{special: '+'}, nil
	case "-infinity", "-inf":
		return decimal{special: '-'}, nil
	}
	i := 0
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	var digits []byte
	frac, seenDot, nd := 0, false, 0
	for ; i < len(s); i++ {
		c := s[i]
		if c >= '0' && c <= '9' {
			digits = append(digits, c)
			nd++
			if seenDot {
				frac++
			}
		} else if c == '.' && !seenDot {
			seenDot = true
		} else {
			break
		}
	}
	if nd == 0 {
		return decimal{}, errors.New("not a number")
	}
	exp := 0
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		eneg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			eneg = s[i] == '-'
			i++
		}
		start := i
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			exp = exp*10 + int(s[i]-'0')
			if exp > 100000 {
				return decimal{}, errors.New("exponent out of range")
			}
		}
		if i == start {
			return decimal{}, errors.New("bad exponent")
		}
		if eneg {
			exp = -exp
		}
	}
	if i != len(s) {
		return decimal{}, errors.New("trailing characters")
	}
	u, _ := new(big.Int).SetString(string(digits), 10)
	scale := frac - exp
	if scale < 0 {
		u.Mul(u, pow10(-scale))
		scale = 0
	}
	if neg {
		u.Neg(u)
	}
	return decimal{u: u, scale: scale}, nil
}

// parseNumericBinary decodes numeric_send's format: ndigits, weight, sign,
// dscale (int16 each) and ndigits base-10000 digits.
func parseNumericBinary(v []byte) (decimal, error) {
	if len(v) < 8 {
		return decimal{}, errors.New("short numeric")
	}
	nd := int(int16(binary.BigEndian.Uint16(v)))
	weight := int(int16(binary.BigEndian.Uint16(v[2:])))
	sign := binary.BigEndian.Uint16(v[4:])
	dscale := int(int16(binary.BigEndian.Uint16(v[6:])))
	switch sign {
	case 0xC000:
		return decimal{special: 'N'}, nil
	case 0xD000:
		return decimal{special: '+'}, nil
	case 0xF000:
		return decimal{special: '-'}, nil
	case 0, 0x4000:
	default:
		return decimal{}, errors.New("bad numeric sign")
	}
	if nd < 0 || dscale < 0 || len(v) != 8+2*nd {
		return decimal{}, errors.New("bad numeric length")
	}
	u := new(big.Int)
	tenK := big.NewInt(10000)
	for i := 0; i < nd; i++ {
		dg := binary.BigEndian.Uint16(v[8+2*i:])
		if dg > 9999 {
			return decimal{}, errors.New("bad numeric digit")
		}
		u.Mul(u, tenK)
		u.Add(u, big.NewInt(int64(dg)))
	}
	exp10 := 4 * (weight - nd + 1) // value = u * 10^exp10
	var d decimal
	if exp10 >= 0 {
		d = decimal{u: u.Mul(u, pow10(exp10+dscale)), scale: dscale}
	} else if -exp10 >= dscale {
		d = decimal{u: u, scale: -exp10}
	} else {
		d = decimal{u: u.Mul(u, pow10(dscale+exp10)), scale: dscale}
	}
	if sign == 0x4000 {
		d.u.Neg(d.u)
	}
	return d, nil
}

func decodeNumeric(col Column, v []byte) (decimal, error) {
	var d decimal
	var err error
	if col.Format == 1 {
		d, err = parseNumericBinary(v)
	} else {
		d, err = parseDecimal(string(v))
	}
	if err != nil {
		return d, badValue(col, v, err.Error())
	}
	return d, nil
}

// weightAndFirstDigit returns, for a NumericVar holding |d|, the weight of
// its first non-zero base-10000 digit and that digit (0, 0 for zero).
func weightAndFirstDigit(d decimal) (int, int64) {
	a := new(big.Int).Abs(d.u)
	if a.Sign() == 0 {
		return 0, 0
	}
	e10 := len(a.String()) - 1 - d.scale // 10^e10 <= |d| < 10^(e10+1)
	w := e10 / 4
	if e10 < 0 && e10%4 != 0 {
		w--
	}
	shift := -d.scale - 4*w // firstdigit = floor(a * 10^shift)
	if shift >= 0 {
		a.Mul(a, pow10(shift))
	} else {
		a.Quo(a, pow10(-shift))
	}
	return w, a.Int64()
}

// divScale is select_div_scale in PostgreSQL's numeric.c.
func divScale(x, y decimal) int {
	w1, f1 := weightAndFirstDigit(x)
	w2, f2 := weightAndFirstDigit(y)
	qweight := w1 - w2
	if f1 <= f2 {
		qweight--
	}
	rscale := 16 - qweight*4 // NUMERIC_MIN_SIG_DIGITS - qweight*DEC_DIGITS
	rscale = max(rscale, x.scale, y.scale, 0)
	return min(rscale, 1000)
}

// div is numeric_div: x / y at select_div_scale's scale, rounded half away
// from zero. y must be finite and non-zero.
func (x decimal) div(y decimal) decimal {
	if x.special != 0 {
		if x.special == 'N' {
			return x
		}
		if y.u.Sign() < 0 {
			if x.special == '+' {
				return decimal{special: '-'}
			}
			return decimal{special: '+'}
		}
		return x
	}
	rscale := divScale(x, y)
	// x/y = (xu / 10^xs) / (yu / 10^ys); q = round(x/y * 10^rscale)
	num := new(big.Int).Mul(x.u, pow10(rscale+y.scale))
	den := new(big.Int).Mul(y.u, pow10(x.scale))
	neg := num.Sign()*den.Sign() < 0
	num.Abs(num)
	den.Abs(den)
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	if r.Lsh(r, 1).Cmp(den) >= 0 {
		q.Add(q, big.NewInt(1))
	}
	if neg {
		q.Neg(q)
	}
	return decimal{u: q, scale: rscale}
}
