package router

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
		l.pos = i + operatorLen(sql[i:])
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
	for i < len(sql) {
		c := sql[i]
		switch {
		case isDigit(c) || c == '_' || (isIdentStart(c) && c < 0x80):
			if (c == 'e' || c == 'E') && i+1 < len(sql) && (sql[i+1] == '+' || sql[i+1] == '-') && i+2 < len(sql) && isDigit(sql[i+2]) {
				i += 2
				continue
			}
			i++
		case c == '.' && !(i+1 < len(sql) && sql[i+1] == '.'):
			i++
		default:
			return i
		}
	}
	return i
}

// operatorLen is how much of a run of operator characters Postgres takes as
// one operator: it stops before a comment, and a multi-character operator
// may not end in + or - unless it holds one of ~ ! @ # ^ & | ` ? %.
func operatorLen(s string) int {
	n := 0
	for n < len(s) && isOpChar(s[n]) {
		if n > 0 && ((s[n] == '*' && s[n-1] == '/') || (s[n] == '-' && s[n-1] == '-')) {
			n-- // the comment starts at n-1
			break
		}
		n++
	}
	if n == 0 {
		return 1 // a lone / or - that starts a comment is handled by the caller
	}
	for n > 1 && (s[n-1] == '+' || s[n-1] == '-') {
		special := false
		for k := 0; k < n-1; k++ {
			switch s[k] {
			case '~', '!', '@', '#', '^', '&', '|', '`', '?', '%':
				special = true
			}
		}
		if special {
			break
		}
		n--
	}
	return n
}
