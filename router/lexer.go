package router

import "strings"

// sqlLexer splits SQL text into tokens the way Postgres 16's scanner
// (src/backend/parser/scan.l, as built into pg_query) does, as far as the
// nesting pre-scan needs: where strings, quoted identifiers and comments
// begin and end, words, operators and punctuation. It never allocates.
//
// Getting the opaque regions exactly right is the point: a quote that the
// lexer closed too early or too late would hide code from the pre-scan.
// FuzzLexerMatchesScanner checks it against pg_query's own scanner.
type sqlLexer struct {
	sql string
	pos int
	op  opRun // the run of operator characters last scanned
}

// opRun is what operatorLen needs to know of a run of operator characters,
// found once per run: Postgres takes a run apart one operator at a time,
// rescanning the rest each time, which over a long run of + signs costs
// the square of its length.
type opRun struct {
	start, end  int // the run, up to a comment start
	lastSpecial int // last of ~ ! @ # ^ & | ` ? % before end-1; start-1 if none
	lastNonSign int // last character other than + and -; start-1 if none
}

type tokenKind uint8

const (
	tokEOF     tokenKind = iota
	tokWord              // identifier or keyword, unquoted
	tokQuoted            // "quoted identifier" or U&"..."
	tokLiteral           // number, parameter, or string of any kind
	tokOp                // one operator, after Postgres's splitting rules
	tokSelf              // one punctuation character: , ( ) [ ] . ; : and the like
	tokCast              // ::
	tokComment           // -- or /* */ comment
	tokOther             // a byte Postgres's grammar has no use for
)

type token struct {
	kind       tokenKind
	start, end int
}

func (t token) text(sql string) string { return sql[t.start:t.end] }

func isIdentStart(c byte) bool {
	return c == '_' || c >= 0x80 || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

// isOpChar is scan.l's op_chars.
func isOpChar(c byte) bool {
	switch c {
	case '~', '!', '@', '#', '^', '&', '|', '`', '?', '+', '-', '*', '/', '%', '<', '>', '=':
		return true
	}
	return false
}

// isSpace is scan.l's space: Postgres 16 does not count \v.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' }

func (l *sqlLexer) next() token {
	sql := l.sql
	for l.pos < len(sql) && isSpace(sql[l.pos]) {
		l.pos++
	}
	start := l.pos
	if start >= len(sql) {
		return token{kind: tokEOF, start: start, end: start}
	}
	kind := l.scan()
	return token{kind: kind, start: start, end: l.pos}
}

// scan consumes one token at l.pos and says what it was.
func (l *sqlLexer) scan() tokenKind {
	sql, i := l.sql, l.pos
	c := sql[i]
	peek := func(k int) byte {
		if i+k < len(sql) {
			return sql[i+k]
		}
		return 0
	}
	switch {
	case c == '-' && peek(1) == '-':
		l.pos = lineEnd(sql, i)
		return tokComment
	case c == '/' && peek(1) == '*':
		l.pos = blockCommentEnd(sql, i)
		return tokComment
	case c == '\'':
		l.pos = quotedEnd(sql, i, false)
		return tokLiteral
	case (c == 'e' || c == 'E') && peek(1) == '\'':
		l.pos = quotedEnd(sql, i+1, true)
		return tokLiteral
	case (c == 'b' || c == 'B' || c == 'x' || c == 'X') && peek(1) == '\'':
		l.pos = bitStringEnd(sql, i+1)
		return tokLiteral
	case (c == 'u' || c == 'U') && peek(1) == '&' && peek(2) == '\'':
		l.pos = quotedEnd(sql, i+2, false)
		return tokLiteral
	case (c == 'u' || c == 'U') && peek(1) == '&' && peek(2) == '"':
		l.pos = quotedIdentEnd(sql, i+2)
		return tokQuoted
	case c == '"':
		l.pos = quotedIdentEnd(sql, i)
		return tokQuoted
	case c == '$':
		return l.dollar()
	case isIdentStart(c):
		j := i + 1
		for j < len(sql) && (isIdentChar(sql[j])) {
			j++
		}
		l.pos = j
		return tokWord
	case isDigit(c) || (c == '.' && isDigit(peek(1))):
		l.pos = numberEnd(sql, i)
		return tokLiteral
	case c == ':' && peek(1) == ':':
		l.pos = i + 2
		return tokCast
	case c == ':' && peek(1) == '=', c == '.' && peek(1) == '.':
		l.pos = i + 2
		return tokSelf
	case isOpChar(c):
		l.pos = i + l.operatorLen(i)
		return tokOp
	case c == ',' || c == '(' || c == ')' || c == '[' || c == ']' || c == '.' || c == ';' || c == ':':
		l.pos = i + 1
		return tokSelf
	}
	l.pos = i + 1
	return tokOther
}

func lineEnd(sql string, i int) int {
	for i < len(sql) && sql[i] != '\n' && sql[i] != '\r' {
		i++
	}
	return i
}

// blockCommentEnd: /* comments nest; an unterminated one runs to the end
// (Postgres then refuses the text).
func blockCommentEnd(sql string, i int) int {
	depth := 0
	for i < len(sql) {
		switch {
		case sql[i] == '/' && i+1 < len(sql) && sql[i+1] == '*':
			depth++
			i += 2
		case sql[i] == '*' && i+1 < len(sql) && sql[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return i
}

// quotedEnd returns the end of the string whose opening quote is at
// sql[q]: ” is a quote, and with backslashes (E”) a backslash escapes the
// next byte. A string followed by whitespace holding a newline and another
// quote continues, with the same escaping.
func quotedEnd(sql string, q int, backslashes bool) int {
	i := q + 1
	for i < len(sql) {
		switch c := sql[i]; {
		case c == '\\' && backslashes:
			i += 2
		case c == '\'' && i+1 < len(sql) && sql[i+1] == '\'':
			i += 2
		case c == '\'':
			if next, ok := continuation(sql, i+1); ok {
				i = next + 1
				continue
			}
			return i + 1
		default:
			i++
		}
	}
	return len(sql)
}

// bitStringEnd: B” and X” have no escapes at all; they continue like
// other strings.
func bitStringEnd(sql string, q int) int {
	i := q + 1
	for i < len(sql) {
		if sql[i] != '\'' {
			i++
			continue
		}
		next, ok := continuation(sql, i+1)
		if !ok {
			return i + 1
		}
		i = next + 1
	}
	return len(sql)
}

// continuation reports whether the text at i continues a string: spaces,
// tabs and form feeds, a newline, any whitespace, then a quote, whose
// index it returns. Postgres 16 lets no comment stand in the gap.
func continuation(sql string, i int) (int, bool) {
	for i < len(sql) && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\f') {
		i++
	}
	if i >= len(sql) || (sql[i] != '\n' && sql[i] != '\r') {
		return 0, false
	}
	for i < len(sql) && isSpace(sql[i]) {
		i++
	}
	return i, i < len(sql) && sql[i] == '\''
}

func quotedIdentEnd(sql string, q int) int {
	for i := q + 1; i < len(sql); i++ {
		if sql[i] == '"' {
			if i+1 < len(sql) && sql[i+1] == '"' {
				i++
				continue
			}
			return i + 1
		}
	}
	return len(sql)
}

// dollar scans what starts with $: a parameter ($1), a dollar-quoted string
// ($tag$...$tag$), or a lone $ that Postgres returns as a character of its
// own (then the text after it is scanned afresh).
func (l *sqlLexer) dollar() tokenKind {
	sql, i := l.sql, l.pos
	j := i + 1
	if j < len(sql) && isDigit(sql[j]) {
		for j < len(sql) && isDigit(sql[j]) {
			j++
		}
		l.pos = j
		return tokLiteral
	}
	if j < len(sql) && isIdentStart(sql[j]) {
		for j < len(sql) && isIdentStart(sql[j]) || j < len(sql) && isDigit(sql[j]) {
			j++
		}
	}
	if j >= len(sql) || sql[j] != '$' {
		l.pos = i + 1
		return tokOther
	}
	tag := sql[i : j+1]
	for k := j + 1; k+len(tag) <= len(sql); k++ {
		if sql[k] == '$' && sql[k:k+len(tag)] == tag {
			l.pos = k + len(tag)
			return tokLiteral
		}
	}
	l.pos = len(sql)
	return tokLiteral
}

// numberEnd scans a numeric constant loosely: digits, letters, underscores
// and dots, with a sign after an exponent. Postgres 16 refuses digits glued
// to letters ("trailing junk"), so precision beyond where the number ends
// does not matter: nothing that hides code (a quote) is ever taken in.
func numberEnd(sql string, i int) int {
	if end, ok := prefixedIntegerEnd(sql, i); ok {
		return end
	}
	dot, exp := false, false
	for i < len(sql) {
		c := sql[i]
		switch {
		case isDigit(c) || c == '_':
			i++
		case c == '.' && !dot && !exp && !(i+1 < len(sql) && sql[i+1] == '.'):
			dot = true // a second point starts the next token: 1.2.3 is 1.2 then .3
			i++
		case (c == 'e' || c == 'E') && !exp && exponentAt(sql, i+1):
			exp = true
			i++
			if sql[i] == '+' || sql[i] == '-' {
				i++
			}
		case isIdentStart(c):
			// Trailing junk (12abc): Postgres's integer_junk takes one
			// identifier character, the rest is a word of its own, so
			// 1a$$ holds no dollar quote, and 0b0$$$$ does (the longer
			// bininteger 0b0 wins). Opaque regions come out the same.
			return i + 1
		default:
			return i
		}
	}
	return i
}

// prefixedIntegerEnd scans a hexadecimal, octal or binary integer (0x1f,
// 0o17, 0b101, underscores between digits), which takes neither a point nor
// an exponent: 0b0.a$$ is 0b0, then ".", then the word a$$.
func prefixedIntegerEnd(sql string, i int) (int, bool) {
	if sql[i] != '0' || i+2 >= len(sql) {
		return 0, false
	}
	var isRadixDigit func(byte) bool
	switch sql[i+1] | 0x20 {
	case 'x':
		isRadixDigit = func(c byte) bool { return isDigit(c) || 'a' <= c|0x20 && c|0x20 <= 'f' }
	case 'o':
		isRadixDigit = func(c byte) bool { return '0' <= c && c <= '7' }
	case 'b':
		isRadixDigit = func(c byte) bool { return c == '0' || c == '1' }
	default:
		return 0, false
	}
	j := i + 2
	for j < len(sql) && (isRadixDigit(sql[j]) || sql[j] == '_' && j+1 < len(sql) && isRadixDigit(sql[j+1])) {
		j++
	}
	if j == i+2 {
		return 0, false // 0x alone: the integer 0 with trailing junk
	}
	if j < len(sql) && isIdentStart(sql[j]) {
		return j + 1, true // trailing junk, as after a decimal integer
	}
	return j, true
}

// exponentAt reports whether sql[i:] continues an exponent: digits, or a
// sign and a digit.
func exponentAt(sql string, i int) bool {
	if i < len(sql) && (sql[i] == '+' || sql[i] == '-') {
		i++
	}
	return i < len(sql) && isDigit(sql[i])
}

// operatorLen is how much of the run of operator characters at i Postgres
// takes as one operator: it stops before a comment, and a multi-character
// operator may not end in + or - unless it holds one of ~ ! @ # ^ & | ` ? %.
func (l *sqlLexer) operatorLen(i int) int {
	if i < l.op.start || i >= l.op.end {
		l.op = scanOpRun(l.sql, i)
	}
	r := l.op
	if r.end == i {
		return 1 // a lone / or - that starts a comment is handled by the caller
	}
	last := l.sql[r.end-1]
	if r.end-i == 1 || (last != '+' && last != '-') || r.lastSpecial >= i {
		return r.end - i
	}
	// No special character: trailing signs go, down to one character.
	if r.lastNonSign >= i {
		return r.lastNonSign + 1 - i
	}
	return 1
}

func scanOpRun(sql string, i int) opRun {
	r := opRun{start: i, end: i, lastSpecial: i - 1, lastNonSign: i - 1}
	for n := i; n < len(sql) && isOpChar(sql[n]); n++ {
		if n > i && ((sql[n] == '*' && sql[n-1] == '/') || (sql[n] == '-' && sql[n-1] == '-')) {
			r.end = n - 1 // the comment starts at n-1
			break
		}
		r.end = n + 1
	}
	for n := i; n < r.end; n++ {
		switch c := sql[n]; {
		case strings.IndexByte("~!@#^&|`?%", c) >= 0 && n < r.end-1:
			r.lastSpecial = n
			r.lastNonSign = n
		case c != '+' && c != '-':
			r.lastNonSign = n
		}
	}
	return r
}
