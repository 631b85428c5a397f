package router

import (
	"strings"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v5"
)

// FuzzNestingDepth: whatever the pre-scan lets through parses, and
// deparses when shallow enough, without crashing the process (a crash
// fails the fuzzer), and its tree nests no deeper than the estimate
// promises. Seeds sit near and beyond the limit in every shape.
func FuzzNestingDepth(f *testing.F) {
	for _, shape := range nestingShapes {
		for _, n := range []int{3, 120, 240, 499, 501, 999, 1001} {
			f.Add(shape(n))
		}
	}
	f.Add("SELECT E'\\'' || (1+(2*(3-4)))")
	f.Add("SELECT $a$ (( $a$, \"((\", '((' -- ((\n/* (( /* (( */ */ FROM t")
	f.Fuzz(func(t *testing.T, sql string) {
		est := nestingDepth(sql, maxNesting)
		if est > maxNesting {
			return
		}
		if full := nestingDepth(sql, 1<<30); full != est {
			t.Fatalf("estimate %d with a limit, %d without", est, full)
		}
		tree, err := pg.Parse(strings.ToValidUTF8(sql, "?"))
		if err != nil {
			return
		}
		got := messageDepth(tree.ProtoReflect(), 1<<30)
		est = nestingDepth(strings.ToValidUTF8(sql, "?"), 1<<30)
		if got > 2*est+treeSlack {
			t.Fatalf("tree nests %d messages, pre-scan estimated %d levels", got, est)
		}
		for _, raw := range tree.Stmts {
			_, _ = deparse(raw.Stmt, unknownDepth)
		}
	})
}

// FuzzLexerMatchesScanner: the pre-scan's lexer agrees with pg_query's own
// scanner, byte for byte, on what is a string, quoted identifier or
// comment, so no code can hide from the pre-scan inside a "string" that
// the parser does not see as one. Its seeds are in testdata/fuzz.
func FuzzLexerMatchesScanner(f *testing.F) {
	f.Fuzz(func(t *testing.T, sql string) {
		if i := strings.IndexByte(sql, 0); i >= 0 {
			sql = sql[:i]
		}
		scan, err := pg.Scan(sql)
		if err != nil {
			return // the parser refuses the text as well
		}
		want := make([]bool, len(sql))
		loose := make([]bool, len(sql))
		for k, tok := range scan.Tokens {
			end := tok.End
			if tok.Token == pg.Token_USCONST || tok.Token == pg.Token_UIDENT {
				// pg_query reports U&'' and U&"" with the wrong end: the
				// text up to the next token may be either.
				end = int32(len(sql))
				if k+1 < len(scan.Tokens) {
					end = scan.Tokens[k+1].Start
				}
				for i := tok.Start + 1; i < end; i++ {
					loose[i] = true
				}
			}
			if opaqueToken(tok.Token, sql[tok.Start:tok.End]) {
				for i := tok.Start; i < end; i++ {
					want[i] = true
				}
			}
		}
		lex := sqlLexer{sql: sql}
		got := make([]bool, len(sql))
		for tok := lex.next(); tok.kind != tokEOF; tok = lex.next() {
			if opaque(tok, sql) {
				for i := tok.start; i < tok.end; i++ {
					got[i] = true
				}
			}
		}
		for i := range want {
			if want[i] != got[i] && !loose[i] {
				t.Fatalf("byte %d (%q...): the scanner says opaque=%v, the lexer %v", i, sql[i:min(len(sql), i+20)], want[i], got[i])
			}
		}
	})
}

func opaqueToken(kind pg.Token, text string) bool {
	switch kind {
	case pg.Token_SCONST, pg.Token_USCONST, pg.Token_BCONST, pg.Token_XCONST, pg.Token_SQL_COMMENT, pg.Token_C_COMMENT, pg.Token_UIDENT:
		return true
	case pg.Token_IDENT:
		return strings.HasPrefix(text, `"`)
	}
	return false
}

func opaque(tok token, sql string) bool {
	switch tok.kind {
	case tokComment, tokQuoted:
		return true
	case tokLiteral:
		c := sql[tok.start]
		return !isDigit(c) && c != '.' && !(c == '$' && tok.end > tok.start+1 && isDigit(sql[tok.start+1]))
	}
	return false
}
