package router

import (
	"bytes"
	"strconv"
)

// Simple-protocol statements carry their values as literals, so without
// help every distinct value would cost a parse (~20 µs). normalize rewrites
// constants as placeholders ($1, $2, ...) and returns the constants as text
// parameters: "SELECT * FROM users WHERE id = 42" and "... id = 43" share
// one cached analysis and route through the same code as a Bind. The
// normalised text is used only for analysis; the server always gets the
// original SQL.
//
// It handles what applications send in bulk: numbers (with a unary minus),
// plain '...' strings, identifiers, "quoted identifiers", comments and
// $tag$ dollar quotes (kept as they are). E'', B'', X'', U&'' strings are
// kept verbatim. A statement that already has $n placeholders is not
// normalised. When the normalised text does not parse (INTERVAL '1 day'
// becomes INTERVAL $1), the router falls back to the original text.

// normalizer holds a client's buffers, so normalising does not allocate.
// scratchKeep is the most a Scratch keeps for the next statement: one
// large statement must not cost its size for the life of its connection.
const scratchKeep = 64 << 10

type normalizer struct {
	key    []byte
	params [][]byte
	values []byte // unescaped string constants
	spans  []span // where each constant lies in values, while values grows
}

type span struct{ start, end int }

func isIdentChar(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// unaryContext reports whether a '-' after prev starts a negative number
// rather than a subtraction.
func unaryContext(prev byte) bool {
	switch prev {
	case 0, '=', '<', '>', '!', '(', ',', '+', '-', '*', '/', '%', '^', '|', '&', '[':
		return true
	}
	return false
}

// normalize fills n.key with sql's normalised text and n.params with its
// constants; ok is false when sql cannot be normalised.
func (n *normalizer) normalize(sql []byte) (ok bool) {
	n.key, n.params, n.values = n.key[:0], n.params[:0], n.values[:0]
	if cap(n.key)+cap(n.values) > scratchKeep && len(sql) <= scratchKeep/2 {
		// A large statement grew them: small ones need not keep its size.
		n.key, n.params, n.values = nil, nil, nil
	}
	// Constants alias n.values, which may grow: record offsets first.
	found := n.spans[:0]
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-': // comment to end of line
			j := i
			for j < len(sql) && sql[j] != '\n' {
				j++
			}
			n.key = append(n.key, sql[i:j]...)
			i = j
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			j, ok := skipBlockComment(sql, i)
			if !ok {
				return false
			}
			n.key = append(n.key, sql[i:j]...)
			i = j
		case c == '"':
			j, ok := skipQuoted(sql, i, '"')
			if !ok {
				return false
			}
			n.key = append(n.key, sql[i:j]...)
			i = j
		case c == '\'':
			if i > 0 && (isIdentChar(sql[i-1]) || sql[i-1] == '&') {
				return false // E'', B'', X'', U&'': rare, and escapes differ
			}
			start := len(n.values)
			j := i + 1
			for {
				if j >= len(sql) {
					return false
				}
				if sql[j] == '\'' {
					if j+1 < len(sql) && sql[j+1] == '\'' {
						n.values = append(n.values, '\'')
						j += 2
						continue
					}
					break
				}
				n.values = append(n.values, sql[j])
				j++
			}
			found = append(found, span{start, len(n.values)})
			n.key = appendPlaceholder(n.key, len(found))
			i = j + 1
		case c == '$' && i+1 < len(sql) && isDigit(sql[i+1]):
			return false // already has placeholders
		case c == '$' && (i == 0 || !isIdentChar(sql[i-1])):
			j, ok := skipDollarQuote(sql, i)
			if !ok {
				return false
			}
			n.key = append(n.key, sql[i:j]...)
			i = j
		case isDigit(c) || (c == '.' && i+1 < len(sql) && isDigit(sql[i+1])):
			j := scanNumber(sql, i)
			start := len(n.values)
			if len(n.key) > 0 && n.key[len(n.key)-1] == '-' && unaryBefore(n.key[:len(n.key)-1]) {
				n.key = n.key[:len(n.key)-1]
				n.values = append(n.values, '-')
			}
			n.values = append(n.values, sql[i:j]...)
			found = append(found, span{start, len(n.values)})
			n.key = appendPlaceholder(n.key, len(found))
			i = j
		case isIdentChar(c):
			j := i
			for j < len(sql) && isIdentChar(sql[j]) {
				j++
			}
			n.key = append(n.key, sql[i:j]...)
			i = j
		default:
			n.key = append(n.key, c)
			i++
		}
	}
	for _, s := range found {
		n.params = append(n.params, n.values[s.start:s.end:s.end])
	}
	n.spans = found // kept for the next statement
	return true
}

// unaryBefore reports whether the text before a '-' makes it a sign.
func unaryBefore(key []byte) bool {
	i := len(key) - 1
	for i >= 0 && (key[i] == ' ' || key[i] == '\t' || key[i] == '\n' || key[i] == '\r') {
		i--
	}
	if i < 0 {
		return true
	}
	return unaryContext(key[i])
}

func appendPlaceholder(dst []byte, n int) []byte {
	return strconv.AppendInt(append(dst, '$'), int64(n), 10)
}

// scanNumber returns the end of a numeric constant: digits, a fraction, an
// exponent.
func scanNumber(sql []byte, i int) int {
	for i < len(sql) && isDigit(sql[i]) {
		i++
	}
	if i < len(sql) && sql[i] == '.' {
		i++
		for i < len(sql) && isDigit(sql[i]) {
			i++
		}
	}
	if i+1 < len(sql) && (sql[i] == 'e' || sql[i] == 'E') && (isDigit(sql[i+1]) || ((sql[i+1] == '+' || sql[i+1] == '-') && i+2 < len(sql) && isDigit(sql[i+2]))) {
		i += 2
		for i < len(sql) && isDigit(sql[i]) {
			i++
		}
	}
	return i
}

func skipQuoted(sql []byte, i int, q byte) (int, bool) {
	for j := i + 1; j < len(sql); j++ {
		if sql[j] == q {
			if j+1 < len(sql) && sql[j+1] == q {
				j++
				continue
			}
			return j + 1, true
		}
	}
	return 0, false
}

func skipBlockComment(sql []byte, i int) (int, bool) {
	depth := 0
	for j := i; j+1 < len(sql); j++ {
		switch {
		case sql[j] == '/' && sql[j+1] == '*':
			depth++
			j++
		case sql[j] == '*' && sql[j+1] == '/':
			depth--
			j++
			if depth == 0 {
				return j + 1, true
			}
		}
	}
	return 0, false
}

// skipDollarQuote skips $tag$...$tag$ starting at sql[i] == '$'.
func skipDollarQuote(sql []byte, i int) (int, bool) {
	j := i + 1
	for j < len(sql) && sql[j] != '$' {
		if !isIdentChar(sql[j]) {
			return 0, false
		}
		j++
	}
	if j >= len(sql) {
		return 0, false
	}
	tag := sql[i : j+1]
	for k := j + 1; k+len(tag) <= len(sql); k++ {
		if string(sql[k:k+len(tag)]) == string(tag) {
			return k + len(tag), true
		}
	}
	return 0, false
}

// Redact returns sql with its constants replaced by placeholders, for logs
// that must not show values such as passwords. Text with a quote the
// normaliser cannot take apart (an E” string, literals beside $n
// placeholders) is withheld entirely; dollar-quoted strings, which it
// keeps verbatim, are shown.
func Redact(sql []byte) string {
	var n normalizer
	if !n.normalize(sql) {
		if bytes.IndexByte(sql, '\'') >= 0 {
			return "(query withheld: its constants could not be separated)"
		}
		return string(sql)
	}
	return string(n.key)
}
