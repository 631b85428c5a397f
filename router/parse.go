package router

import (
	"errors"
	"fmt"
	"unicode/utf8"

	pg "github.com/pganalyze/pg_query_go/v5"
	"github.com/pganalyze/pg_query_go/v5/parser"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/shardgate/shardgate/pgerr"
)

// Every call into pg_query's C code goes through this file: parse after the
// pre-scan (nesting.go), deparse after measuring the tree. A C stack
// overflow cannot be recovered, so nothing else in the router may call
// pg.Parse, pg.Deparse or their relatives (TestOnlyParseGoCallsC).

// parse parses sql, or says why it was not given to the parser or what the
// parser refused.
func parse(sql string) (*pg.ParseResult, *pgerr.Error) {
	if err := checkParseable(sql); err != nil {
		return nil, err
	}
	if !utf8.ValidString(sql) {
		// Postgres refuses such bytes as they arrive; pg_query would
		// parse them and then fail to put its strings into protobuf.
		return nil, invalidUTF8(sql)
	}
	tree, err := pg.Parse(sql)
	if err != nil {
		return nil, parseError(err)
	}
	return tree, nil
}

// parseError turns a parse failure into the client's error. The parser's
// own messages are Postgres's; anything else comes from the library around
// it (Go's protobuf decoder refuses trees over 10,000 messages deep) and
// is not for clients to read.
func parseError(err error) *pgerr.Error {
	var perr *parser.Error
	if errors.As(err, &perr) {
		return &pgerr.Error{Code: pgerr.CodeSyntaxError, Message: perr.Message, Position: int32(perr.Cursorpos)}
	}
	return &pgerr.Error{Code: pgerr.CodeStatementTooComplex, Message: "statement too complex: shardgate's parser cannot represent it"}
}

func invalidUTF8(sql string) *pgerr.Error {
	i := 0
	for i < len(sql) {
		r, n := utf8.DecodeRuneInString(sql[i:])
		if r == utf8.RuneError && n <= 1 {
			break
		}
		i += n
	}
	return &pgerr.Error{Code: pgerr.CodeCharacterNotInRepertoire, Message: fmt.Sprintf(`invalid byte sequence for encoding "UTF8": 0x%02x`, sql[i])}
}

// maxDeparseDepth bounds the protobuf nesting of a tree given to Deparse,
// which needs about 950 bytes of C stack per message level, five times
// what parsing does: it crashed at 2,208 levels on a 2 MiB thread stack
// and not below 8,192 on 8 MiB. 200 keeps ten times clear of both.
const maxDeparseDepth = 200

// errTooDeepToRewrite is why a statement shardgate would have to rewrite
// (per-shard INSERTs, merged aggregates) is not rewritten.
// A level of SQL is about two protobuf messages (a Node and what it holds).
var errTooDeepToRewrite = fmt.Errorf("a statement nested deeper than %d levels", maxDeparseDepth/2)

// unknownDepth asks deparse to measure the tree itself.
const unknownDepth = -1

// deparse writes stmt back as SQL. depth bounds how deeply stmt's messages
// nest, when the caller knows (treeDepthBound); otherwise deparse walks the
// tree to find out, which costs about as much as deparsing a small one.
func deparse(stmt *pg.Node, depth int) (string, error) {
	if depth == unknownDepth {
		depth = messageDepth(stmt.ProtoReflect(), maxDeparseDepth)
	}
	if depth > maxDeparseDepth {
		return "", errTooDeepToRewrite
	}
	sql, err := pg.Deparse(&pg.ParseResult{Stmts: []*pg.RawStmt{{Stmt: stmt}}})
	if err != nil {
		// The deparser's messages name its internals ("unsupported node
		// type"), not the client's SQL.
		return "", errors.New("a statement shardgate's deparser cannot write")
	}
	return sql, nil
}

// messageDepth is how deeply m's messages nest, counting m, or limit+1 as
// soon as it is clear that it is over limit.
func messageDepth(m protoreflect.Message, limit int) int {
	if limit < 1 {
		return 1
	}
	deepest := 0
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			list := v.List()
			for i := 0; i < list.Len() && deepest < limit; i++ {
				deepest = max(deepest, messageDepth(list.Get(i).Message(), limit-1))
			}
		} else {
			deepest = max(deepest, messageDepth(v.Message(), limit-1))
		}
		return deepest < limit
	})
	return deepest + 1
}
