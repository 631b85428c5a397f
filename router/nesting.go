package router

import (
	"fmt"
	"strings"

	"github.com/shardgate/shardgate/pgerr"
)

// pg_query's parser is C. Its grammar keeps its own stack on the heap and
// refuses deep right-nested text itself ("memory exhausted"), but turning a
// parse tree into protobuf, and back for Deparse, recurses once per level of
// the tree on the calling thread's C stack. A left-nested chain such as
// 1+1+1+... of some tens of thousands of terms overflows that stack, and a
// segfault in C is no panic that Go could recover: the whole proxy dies.
// So no text reaches the parser before a linear pre-scan has bounded the
// depth of the tree it would build.
//
// Measured with pg_query_go v5.1.0 on linux/amd64, go1.26 (run
// router/testdata/crashdepth): parsing 1+1+... crashes at 23,808 terms on
// an 8 MiB thread stack (the default ulimit -s) and 5,936 on a 2 MiB one
// (a process's threads under ulimit -s unlimited): about 175 bytes of C
// stack per protobuf message level, two per term, so some 47,600 and
// 11,900 message levels, whatever the SQL (UNION chains crash at twice the
// terms, one message each; 1,984 nested subqueries, six each, crash on
// 2 MiB). Go's protobuf decoder refuses trees over 10,000 messages deep.
// The pre-scan's estimate e bounds a tree's message depth by 2e + 8
// (TestNestingDepthBoundsTheTree, FuzzNestingDepth).
const (
	// maxNesting bounds the pre-scan's estimate, so trees stay within
	// about 2,008 message levels: 23 times under the crash with the
	// default stack, 6 times with 2 MiB threads, and far beyond what
	// people and ORMs write.
	maxNesting = 1000
	// maxStatementBytes bounds what the parser is given at all: a parse
	// needs some 50 bytes of memory per byte of text.
	maxStatementBytes = 16 << 20
	// groupNesting is what one ( [ or CASE may add below the tokens the
	// pre-scan counts: the subquery, row or array node it opens and the
	// AND/OR/BETWEEN/WHEN levels, which the pre-scan does not count.
	groupNesting = 4
	// treeSlack is what a tree may nest beyond twice the estimate: the
	// statement's own wrapping and a leaf's few messages.
	treeSlack = 8
)

// treeDepthBound bounds the protobuf nesting of sql's parse tree, as
// measured by messageDepth, for text within the parser's limits.
func treeDepthBound(sql string) int { return 2*nestingDepth(sql, maxNesting) + treeSlack }

// nestingFrame is one open ( [ or CASE, or the statement list itself.
type nestingFrame struct {
	closer byte // ')' ']' or 'E' (END of a CASE); 0 for the top level
	// chain counts UNION, INTERSECT, EXCEPT and JOIN: each nests what came
	// before it one level deeper, commas and ANDs notwithstanding.
	chain int
	// item counts the words and operators of the current list item; a
	// comma, AND, OR, WHEN, THEN or ELSE ends an item (Postgres flattens
	// AND and OR chains, and the rest are siblings).
	item int
	// child is the deepest group inside the current item, items the
	// deepest finished item, stmts the deepest finished statement.
	child, items, stmts int
}

func (f *nestingFrame) endItem() {
	f.items = max(f.items, f.item+f.child)
	f.item, f.child = 0, 0
}

func (f *nestingFrame) endStatement() {
	f.endItem()
	f.stmts = max(f.stmts, f.chain+f.items)
	f.chain, f.items = 0, 0
}

func (f *nestingFrame) depth() int {
	f.endStatement()
	return groupNesting + f.stmts
}

// nestingDepth over-approximates how deeply the parse tree of sql nests,
// in levels of roughly one node each, stopping as soon as it exceeds
// limit. Every word and operator of a list item counts, since in a chain
// like a + b - c each may nest the ones before it, and each bracket or
// CASE adds groupNesting. Literals count nothing.
func nestingDepth(sql string, limit int) int {
	if i := strings.IndexByte(sql, 0); i >= 0 {
		sql = sql[:i] // the parser reads a C string
	}
	var frames [32]nestingFrame
	stack := append(frames[:0], nestingFrame{})
	lex := sqlLexer{sql: sql}
	for {
		top := &stack[len(stack)-1]
		if top.item > limit || top.chain > limit || len(stack)*groupNesting > limit {
			return limit + 1
		}
		tok := lex.next()
		switch tok.kind {
		case tokEOF:
			for len(stack) > 1 {
				stack = closeFrame(stack)
			}
			return stack[0].depth()
		case tokLiteral, tokComment:
		case tokSelf:
			switch c := sql[tok.start]; c {
			case '(', '[':
				closer := byte(')')
				if c == '[' {
					closer = ']'
				}
				stack = append(stack, nestingFrame{closer: closer})
			case ')', ']':
				stack = closeUpTo(stack, c)
			case ',':
				top.endItem()
			case ';':
				top.endStatement()
			}
		case tokWord:
			stack = nestingWord(stack, tok.text(sql))
		default:
			top.item++
		}
		if d := stack[len(stack)-1].child; d > limit {
			return d
		}
	}
}

// nestingWord counts a word, which may be a keyword that ends an item,
// chains statements, or opens or closes a CASE.
func nestingWord(stack []nestingFrame, w string) []nestingFrame {
	top := &stack[len(stack)-1]
	if len(w) < 2 || len(w) > 9 {
		top.item++
		return stack
	}
	switch {
	case strings.EqualFold(w, "and"), strings.EqualFold(w, "or"), strings.EqualFold(w, "when"),
		strings.EqualFold(w, "then"), strings.EqualFold(w, "else"):
		top.endItem()
	case strings.EqualFold(w, "union"), strings.EqualFold(w, "intersect"), strings.EqualFold(w, "except"),
		strings.EqualFold(w, "join"):
		// The left operand nests one level deeper with each: chain counts
		// that, and the right operand is a new item.
		top.chain++
		top.endItem()
	case strings.EqualFold(w, "case"):
		top.item++
		stack = append(stack, nestingFrame{closer: 'E'})
	case strings.EqualFold(w, "end") && top.closer == 'E':
		stack = closeFrame(stack)
	default:
		top.item++
	}
	return stack
}

// closeFrame pops the innermost group into its parent's current item.
func closeFrame(stack []nestingFrame) []nestingFrame {
	d := stack[len(stack)-1].depth()
	stack = stack[:len(stack)-1]
	parent := &stack[len(stack)-1]
	parent.child = max(parent.child, d)
	return stack
}

// closeUpTo closes the group a ) or ] ends, with any CASE or bracket left
// open inside it (text the parser will refuse anyway). A closer with no
// opener is ignored: the parser refuses that too.
func closeUpTo(stack []nestingFrame, closer byte) []nestingFrame {
	for i := len(stack) - 1; i > 0; i-- {
		if stack[i].closer == closer {
			for len(stack) > i {
				stack = closeFrame(stack)
			}
			return stack
		}
	}
	return stack
}

// checkParseable refuses text the parser must not be given: too long, or
// nested too deeply for the C stack.
func checkParseable(sql string) *pgerr.Error {
	if len(sql) > maxStatementBytes {
		return &pgerr.Error{Code: pgerr.CodeStatementTooComplex, Message: fmt.Sprintf(
			"statement too complex: %d bytes is over shardgate's parser limit of %d", len(sql), maxStatementBytes)}
	}
	if d := nestingDepth(sql, maxNesting); d > maxNesting {
		return &pgerr.Error{Code: pgerr.CodeStatementTooComplex, Message: fmt.Sprintf(
			"statement too complex: expressions nested deeper than %d levels (shardgate's parser limit)", maxNesting),
			Hint: "Split long chains of operators, UNIONs or JOINs, or nest fewer subqueries and parentheses."}
	}
	return nil
}
