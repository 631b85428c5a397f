package proxy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/router"
)

// SQL-level PREPARE, EXECUTE and DEALLOCATE name the client's statements,
// which share one namespace with the extended protocol's, as in Postgres.
// The proxy keeps them with the protocol's (c.sess.stmts), so they outlive
// the server connection they were prepared on: EXECUTE prepares the shared
// server-side statement where it runs, as a Bind does.

// sqlStmt is a PREPARE ('P'), EXECUTE ('E') or DEALLOCATE ('D').
type sqlStmt struct {
	kind  byte
	name  string
	all   bool     // DEALLOCATE ALL
	query string   // PREPARE: the statement after AS
	args  string   // EXECUTE: "(...)" as written, "" without
	vals  [][]byte // EXECUTE: text values of constant arguments (nil: NULL or not a constant)
	exprs bool     // EXECUTE: some argument is an expression, not a constant
}

// sqlPrepareOf recognises a single PREPARE, EXECUTE or DEALLOCATE; nil for
// anything else (left to the router). Only statements starting with one of
// those words are parsed.
func sqlPrepareOf(sql []byte) *sqlStmt {
	word := firstWord(sql)
	if !strings.EqualFold(word, "prepare") && !strings.EqualFold(word, "execute") && !strings.EqualFold(word, "deallocate") {
		return nil
	}
	tree, err := pg.Parse(string(sql))
	if err != nil || len(tree.Stmts) != 1 {
		return nil
	}
	node := tree.Stmts[0].Stmt
	switch {
	case node.GetDeallocateStmt() != nil:
		name := node.GetDeallocateStmt().Name
		return &sqlStmt{kind: 'D', name: name, all: name == ""}
	case node.GetPrepareStmt() != nil:
		query, ok := afterAs(string(sql))
		if !ok {
			return nil
		}
		return &sqlStmt{kind: 'P', name: node.GetPrepareStmt().Name, query: query}
	case node.GetExecuteStmt() != nil:
		e := node.GetExecuteStmt()
		s := &sqlStmt{kind: 'E', name: e.Name}
		if len(e.Params) > 0 {
			s.args = argsText(string(sql))
			if s.args == "" {
				return nil
			}
		}
		for _, p := range e.Params {
			v, ok := constText(p)
			s.vals = append(s.vals, v)
			s.exprs = s.exprs || !ok
		}
		return s
	}
	return nil
}

// firstWord is the statement's first word, after blanks and comments.
func firstWord(sql []byte) string {
	for {
		sql = bytes.TrimLeft(sql, " \t\r\n\f")
		switch {
		case bytes.HasPrefix(sql, []byte("--")):
			i := bytes.IndexByte(sql, '\n')
			if i < 0 {
				return ""
			}
			sql = sql[i+1:]
			continue
		case bytes.HasPrefix(sql, []byte("/*")):
			i := bytes.Index(sql, []byte("*/"))
			if i < 0 {
				return ""
			}
			sql = sql[i+2:]
			continue
		}
		end := bytes.IndexFunc(sql, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') })
		if end < 0 {
			end = len(sql)
		}
		return string(sql[:end])
	}
}

// afterAs returns the statement a PREPARE names: the text after its first
// AS outside parentheses, without a trailing semicolon.
func afterAs(sql string) (string, bool) {
	scan, err := pg.Scan(sql)
	if err != nil {
		return "", false
	}
	depth := 0
	for _, t := range scan.Tokens {
		switch t.Token {
		case pg.Token_ASCII_40:
			depth++
		case pg.Token_ASCII_41:
			depth--
		case pg.Token_AS:
			if depth == 0 {
				q := strings.TrimSpace(sql[t.End:])
				return strings.TrimSpace(strings.TrimRight(q, "; \t\r\n")), true
			}
		}
	}
	return "", false
}

// argsText returns an EXECUTE's parenthesised arguments as written.
func argsText(sql string) string {
	scan, err := pg.Scan(sql)
	if err != nil {
		return ""
	}
	depth, start := 0, -1
	for _, t := range scan.Tokens {
		switch t.Token {
		case pg.Token_ASCII_40:
			if depth == 0 {
				start = int(t.Start)
			}
			depth++
		case pg.Token_ASCII_41:
			depth--
			if depth == 0 && start >= 0 {
				return sql[start:t.End]
			}
		}
	}
	return ""
}

// constText is a constant argument's value as text (nil for NULL), for
// routing; ok is false for anything the server must evaluate.
func constText(n *pg.Node) ([]byte, bool) {
	if tc := n.GetTypeCast(); tc != nil {
		n = tc.Arg
	}
	c := n.GetAConst()
	if c == nil {
		return nil, false
	}
	switch {
	case c.Isnull:
		return nil, true
	case c.GetIval() != nil:
		return strconv.AppendInt(nil, int64(c.GetIval().Ival), 10), true
	case c.GetFval() != nil:
		return []byte(c.GetFval().Fval), true
	case c.GetSval() != nil:
		return []byte(c.GetSval().Sval), true
	case c.GetBoolval() != nil:
		if c.GetBoolval().Boolval {
			return []byte("t"), true
		}
		return []byte("f"), true
	}
	return nil, false
}

func undefinedStatement(name string) *pgerr.Error {
	return &pgerr.Error{Code: pgerr.CodeInvalidSQLStatementName, Message: fmt.Sprintf("prepared statement %q does not exist", name)}
}

// sqlPrepare answers a PREPARE or DEALLOCATE, or routes an EXECUTE: done
// reports that the client was answered.
func (c *client) sqlPrepare(s *sqlStmt, sql []byte) (plan router.Plan, u unit, done bool, err error) {
	if c.tx.state == txFailed {
		return plan, u, true, c.refuse(errAborted)
	}
	switch s.kind {
	case 'D':
		return plan, u, true, c.deallocate(s)
	case 'P':
		return plan, u, true, c.prepareSQL(s, sql)
	}
	p := c.sess.stmts[s.name]
	if p == nil {
		return plan, u, true, c.refuse(undefinedStatement(s.name))
	}
	plan = c.srv.router.RouteHinted(p.analysis, s.vals, nil, c.hint())
	switch {
	case s.exprs && plan.Target != router.TargetAny && c.srv.rt.Load().backends.Shards() > 1:
		// An expression's value is the server's to compute: the plan
		// took it for NULL.
		return plan, u, true, c.refuse(&pgerr.Error{Code: pgerr.CodeFeatureNotSupported,
			Message: fmt.Sprintf("shardgate: EXECUTE of %q needs constant arguments to find its shard", s.name)})
	case plan.Target == router.TargetError:
		return plan, u, true, c.refuse(plan.Err)
	case plan.Target != router.TargetShard && plan.Target != router.TargetAny,
		plan.Split, plan.CopyIn != nil, plan.Set != nil, plan.Tx != router.TxNone:
		return plan, u, true, c.refuse(&pgerr.Error{Code: pgerr.CodeFeatureNotSupported,
			Message: fmt.Sprintf("shardgate: EXECUTE of %q runs only statements on one shard; send this one with the extended protocol or as plain SQL", s.name)})
	}
	query := append([]byte("EXECUTE "+p.serverName), s.args...)
	return plan, unit{query: append(query, 0), ensure: p}, false, nil
}

// bindsDeallocate reports whether a Bind body names a DEALLOCATE.
func (c *client) bindsDeallocate(body []byte) bool {
	_, rest, _ := cstring(body)
	stmt, _, _ := cstring(rest)
	p := c.lookup(string(stmt))
	if p == nil || !strings.EqualFold(firstWord(p.query()), "deallocate") {
		return false
	}
	s := sqlPrepareOf(p.query())
	return s != nil && s.kind == 'D'
}

// deallocateBound runs the DEALLOCATE a batch bound, for answerBatch.
func (c *client) deallocateBound(p *prepared) bool {
	var s *sqlStmt
	if p != nil {
		s = sqlPrepareOf(p.query())
	}
	if s == nil {
		c.out = appendError(c.out, &pgerr.Error{Code: pgerr.CodeProtocolViolation, Message: "Execute without a DEALLOCATE bound"})
		return false
	}
	if !s.all && c.sess.stmts[s.name] == nil {
		c.out = appendError(c.out, undefinedStatement(s.name))
		return false
	}
	if s.all {
		clear(c.sess.stmts)
		c.out = appendCommandComplete(c.out, "DEALLOCATE ALL")
		return true
	}
	delete(c.sess.stmts, s.name)
	c.out = appendCommandComplete(c.out, "DEALLOCATE")
	return true
}

// deallocate forgets client statements; the shared server-side statements
// stay cached for other clients, as after a protocol Close.
func (c *client) deallocate(s *sqlStmt) error {
	tag := "DEALLOCATE ALL"
	if s.all {
		clear(c.sess.stmts)
	} else {
		if c.sess.stmts[s.name] == nil {
			return c.refuse(undefinedStatement(s.name))
		}
		delete(c.sess.stmts, s.name)
		tag = "DEALLOCATE"
	}
	c.out = appendCommandComplete(c.out, tag)
	c.out = appendReadyForQuery(c.out, c.status())
	return c.flush()
}

// prepareSQL has a server check a PREPARE (so its errors come when
// Postgres gives them) and resolve its parameter types, then keeps it as
// the client's statement. The server's copy is dropped at once: EXECUTE
// prepares the shared one where it runs.
func (c *client) prepareSQL(s *sqlStmt, sql []byte) error {
	if c.sess.stmts[s.name] != nil {
		return c.refuse(&pgerr.Error{Code: pgerr.CodeDuplicatePreparedStatement, Message: fmt.Sprintf("prepared statement %q already exists", s.name)})
	}
	a, _ := c.srv.router.Analyze([]byte(s.query))
	if a.Err != nil {
		return c.refuse(a.Err)
	}
	held := c.tx.held != nil
	if !held {
		if err := c.acquire(c.srv.anyShard()); err != nil {
			return c.refuse(acquireError(err))
		}
	}
	sc := c.tx.held
	check := fmt.Sprintf("%s\n;SELECT parameter_types::oid[]::text FROM pg_prepared_statements WHERE name = %s;DEALLOCATE %s",
		sql, quoteLiteral(s.name), router.QuoteIdent(s.name))
	c.sout = c.sout[:0]
	ops := c.syncSettings(sc, c.ext.ops[:0])
	c.sout = appendMessage(c.sout, 'Q', append([]byte(check), 0))
	ops = append(ops, op{typ: 'Q'})
	var sink []byte
	res, err := c.send(sc, ops, &sink, false)
	if err != nil {
		return c.heldFailed(err)
	}
	if held {
		c.tx.srvStatus = res.status
	} else {
		if res.status != 'I' {
			sc.MarkBroken()
		}
		c.releaseHeld()
	}
	oids, failed := c.prepareAnswer(sink)
	if !failed {
		rest := append([]byte(s.query), 0)
		rest = binary.BigEndian.AppendUint16(rest, uint16(len(oids)))
		for _, o := range oids {
			rest = binary.BigEndian.AppendUint32(rest, o)
		}
		c.remember(s.name, newPrepared(rest, a, c.srv.ddlGen.Load()))
		c.out = appendCommandComplete(c.out, "PREPARE")
	}
	c.out = appendReadyForQuery(c.out, c.status())
	return c.flush()
}

// prepareAnswer relays the notices and error of a PREPARE check to the
// client and returns the parameter types it resolved.
func (c *client) prepareAnswer(sink []byte) (oids []uint32, failed bool) {
	for len(sink) >= 5 {
		n := 1 + int(binary.BigEndian.Uint32(sink[1:5]))
		msg := sink[:n]
		sink = sink[n:]
		switch msg[0] {
		case 'E':
			if !failed {
				c.out = append(c.out, msg...)
			}
			failed = true
		case 'N', 'S', 'A':
			c.out = append(c.out, msg...)
		case 'D':
			oids = parseOIDArray(msg)
		}
	}
	return oids, failed
}

// parseOIDArray reads a DataRow of one text column like {23,25}.
func parseOIDArray(msg []byte) []uint32 {
	if len(msg) < 11 {
		return nil
	}
	text := strings.Trim(string(msg[11:]), "{}")
	var oids []uint32
	for _, f := range strings.Split(text, ",") {
		if v, err := strconv.ParseUint(f, 10, 32); err == nil {
			oids = append(oids, uint32(v))
		}
	}
	return oids
}
