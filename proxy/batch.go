package proxy

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/router"
)

// extended is the client's extended-protocol state: the unnamed statement,
// the batch being built up to Sync, and the last Bind decoded.
type extended struct {
	unnamed   prepared
	batch     batch
	bound     []boundStmt
	params    [][]byte
	formats   []int16
	results   []int16           // result format codes of the last Bind
	ops       []op              // reused per round trip
	willHave  []string          // server-side names the batch being built prepares
	willClose []string          // server-side names it closes to make room
	sets      []*router.Setting // the batch's SETs and RESETs
	deallocs  int               // its Binds of DEALLOCATE, answered by the proxy
}

// batch holds extended-protocol messages up to Sync or Flush: routing needs
// the Bind parameters before the first byte goes to a server.
type batch struct {
	buf  []byte
	msgs []msgRef
}

type msgRef struct {
	typ        byte
	start, end int
}

func (b *batch) add(typ byte, body []byte) {
	start := len(b.buf)
	b.buf = append(b.buf, body...)
	b.msgs = append(b.msgs, msgRef{typ, start, len(b.buf)})
}

func (b *batch) body(m msgRef) []byte { return b.buf[m.start:m.end] }

// synced reports whether the batch ends with Sync (rather than Flush).
func (b *batch) synced() bool {
	return len(b.msgs) > 0 && b.msgs[len(b.msgs)-1].typ == 'S'
}

// executes reports whether the batch runs anything (has an Execute).
func (b *batch) executes() bool {
	for _, m := range b.msgs {
		if m.typ == 'E' {
			return true
		}
	}
	return false
}

func (b *batch) reset() {
	b.buf, b.msgs = b.buf[:0], b.msgs[:0]
}

// prepared is a client's prepared statement. Its server-side name is derived
// from the statement itself, so every client preparing the same SQL shares
// one server-side statement per server connection, and no two clients'
// names can collide.
type prepared struct {
	serverName string
	parse      []byte // Parse body carrying serverName
	analysis   *router.Analysis
}

func (p *prepared) query() []byte {
	_, rest, _ := cstring(p.parse)
	q, _, _ := cstring(rest)
	return q
}

// boundStmt is a Parse seen in the current batch, not yet confirmed by a
// server, so later messages of the same batch can refer to it.
type boundStmt struct {
	clientName string
	prep       *prepared
}

// newPrepared names the server-side statement after its Parse body and the
// DDL generation (Server.ddlGen): a statement keeps the parameter and result
// types of its Parse, so one prepared after DDL must not share a server-side
// statement prepared before it, while a client still using its old one
// gets what Postgres gives (0A000 "cached plan must not change result type").
func newPrepared(rest []byte, a *router.Analysis, ddlGen uint64) *prepared {
	sum := xxhash.Sum64(rest)
	var raw [8]byte
	binary.BigEndian.PutUint64(raw[:], sum)
	name := "sg_" + hex.EncodeToString(raw[:])
	if ddlGen > 0 {
		name += "_" + strconv.FormatUint(ddlGen, 10)
	}
	parse := make([]byte, 0, len(name)+1+len(rest))
	parse = append(append(append(parse, name...), 0), rest...)
	return &prepared{serverName: name, parse: parse, analysis: a}
}

// remember registers a client's named statement, making the map on first
// use: most clients never prepare a named statement.
func (c *client) remember(name string, p *prepared) {
	if c.sess.stmts == nil {
		c.sess.stmts = make(map[string]*prepared)
	}
	c.sess.stmts[name] = p
}

// lookup finds a statement by client name, newest Parse in the batch first.
func (c *client) lookup(name string) *prepared { return c.lookupAt(name, len(c.ext.bound)) }

func (c *client) runBatch() error {
	defer func() {
		c.ext.batch.reset()
		c.ext.bound = c.ext.bound[:0]
	}()
	return c.gated(func() (router.Plan, unit, bool, error) {
		c.ext.bound = c.ext.bound[:0] // routed again: the batch's Parses are planned afresh
		plan, perr := c.planBatch()
		if perr != nil {
			return plan, unit{}, true, c.refuse(perr)
		}
		if c.ext.deallocs > 0 {
			c.answerBatch(func() { c.out = appendEmpty(c.out, 'n') }, c.deallocateBound)
			return plan, unit{}, true, c.flush()
		}
		u := unit{sets: c.ext.sets}
		if plan.Target == router.TargetNone {
			if c.answerBatchTx() {
				return plan, u, true, c.flush()
			}
			if plan.Set != nil {
				return plan, u, true, c.setting(plan, u)
			}
		}
		if perr := c.batchSettings(plan); perr != nil {
			return plan, u, true, c.refuse(perr)
		}
		return plan, u, false, nil
	})
}

// batchSettings refuses SET or RESET in a batch the proxy cannot follow:
// one that spans shards, or whose Syncs end several transactions (one
// could commit its SET and a later one fail).
func (c *client) batchSettings(plan router.Plan) *pgerr.Error {
	if len(c.ext.sets) == 0 {
		return nil
	}
	syncs := 0
	for _, m := range c.ext.batch.msgs {
		if m.typ == 'S' {
			syncs++
		}
	}
	if (plan.Target == router.TargetShard || plan.Target == router.TargetAny) && !plan.Split && plan.CopyIn == nil && syncs <= 1 {
		return nil
	}
	return &pgerr.Error{Code: pgerr.CodeFeatureNotSupported,
		Message: "shardgate: SET and RESET in a pipeline are supported with statements on one shard up to one Sync; send this SET on its own"}
}

// planBatch routes every Bind of the batch and merges the plans: the batch
// runs on one server, so its statements must agree on a shard.
func (c *client) planBatch() (plan router.Plan, perr *pgerr.Error) {
	plan = router.Plan{Target: router.TargetAny}
	bound := false
	c.ext.sets, c.ext.deallocs = c.ext.sets[:0], 0
	defer func() {
		if c.ext.deallocs > 0 && bound {
			plan = router.Plan{Target: router.TargetError}
			perr = &pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "shardgate: send DEALLOCATE in a batch of its own"}
		}
	}()
	for _, m := range c.ext.batch.msgs {
		body := c.ext.batch.body(m)
		switch m.typ {
		case 'P':
			if err := c.planParse(body); err != nil {
				return plan, err
			}
		case 'B':
			if c.bindsDeallocate(body) {
				c.ext.deallocs++
				continue
			}
			p, err := c.planBind(body)
			if err != nil {
				return plan, err
			}
			if p.Tx == router.TxBegin && c.mode == modeStatement {
				return plan, errStatementMode
			}
			if p.Set != nil {
				c.ext.sets = append(c.ext.sets, p.Set)
			}
			if !bound {
				plan, bound = p, true
				continue
			}
			merged, err := c.merge(plan, p)
			if err != nil {
				return plan, err
			}
			if plan.Role == router.RolePrimary || p.Role == router.RolePrimary {
				merged.Role = router.RolePrimary // one server runs the batch: a write, or transaction control, keeps it on the primary
			}
			plan = merged
		}
	}
	return plan, nil
}

func (c *client) planParse(body []byte) *pgerr.Error {
	name, rest, ok := cstring(body)
	if !ok {
		return &pgerr.Error{Code: pgerr.CodeProtocolViolation, Message: "invalid Parse message"}
	}
	query, _, ok := cstring(rest)
	if !ok {
		return &pgerr.Error{Code: pgerr.CodeProtocolViolation, Message: "invalid Parse message"}
	}
	a, _ := c.srv.router.Analyze(query)
	if a.Err == nil && len(a.Stmts) > 1 {
		return &pgerr.Error{Code: pgerr.CodeSyntaxError, Message: "cannot insert multiple commands into a prepared statement"}
	}
	if len(name) == 0 {
		c.ext.unnamed.parse = append(c.ext.unnamed.parse[:0], body...)
		c.ext.unnamed.analysis = a
		return nil
	}
	c.ext.bound = append(c.ext.bound, boundStmt{clientName: string(name), prep: newPrepared(rest, a, c.srv.ddlGen.Load())})
	return nil
}

func (c *client) planBind(body []byte) (router.Plan, *pgerr.Error) {
	_, rest, ok := cstring(body) // portal
	if !ok {
		return router.Plan{}, &pgerr.Error{Code: pgerr.CodeProtocolViolation, Message: "invalid Bind message"}
	}
	stmt, rest, ok := cstring(rest)
	if !ok {
		return router.Plan{}, errInvalidBind
	}
	p := c.lookup(string(stmt))
	if p == nil {
		// Unknown statement: any server gives Postgres's own error.
		return router.Plan{Target: router.TargetAny}, nil
	}
	if err := c.decodeBind(rest); err != nil {
		return router.Plan{}, err
	}
	plan := c.srv.router.RouteHinted(p.analysis, c.ext.params, c.ext.formats, c.hint())
	if plan.Explain != nil {
		return plan, &pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "EXPLAIN (SHARDGATE) needs the simple query protocol"}
	}
	if plan.Target == router.TargetError || (plan.Target == router.TargetMulti && !plan.Split && !c.broadcastAllowed(plan)) {
		return plan, c.refusal(plan)
	}
	return plan, nil
}

// errInvalidBind is shared, like errAborted: a Bind is decoded on every
// extended-protocol request, and an error built there escapes to the heap.
var errInvalidBind = &pgerr.Error{Code: pgerr.CodeProtocolViolation, Message: "invalid Bind message"}

// decodeBind fills c.formats, c.params and c.results (result format codes)
// from the rest of a Bind after the statement name; params alias the batch
// buffer.
func (c *client) decodeBind(b []byte) *pgerr.Error {
	bad := errInvalidBind
	if len(b) < 2 {
		return bad
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < 2*n+2 {
		return bad
	}
	c.ext.formats = c.ext.formats[:0]
	for i := 0; i < n; i++ {
		c.ext.formats = append(c.ext.formats, int16(binary.BigEndian.Uint16(b[2*i:])))
	}
	b = b[2*n:]
	n = int(binary.BigEndian.Uint16(b))
	b = b[2:]
	c.ext.params = c.ext.params[:0]
	for i := 0; i < n; i++ {
		if len(b) < 4 {
			return bad
		}
		size := int32(binary.BigEndian.Uint32(b))
		b = b[4:]
		if size < 0 {
			c.ext.params = append(c.ext.params, nil)
			continue
		}
		if int(size) > len(b) {
			return bad
		}
		c.ext.params = append(c.ext.params, b[:size:size])
		b = b[size:]
	}
	if len(b) < 2 {
		return bad
	}
	n = int(binary.BigEndian.Uint16(b))
	if len(b) < 2+2*n {
		return bad
	}
	c.ext.results = c.ext.results[:0]
	for i := 0; i < n; i++ {
		c.ext.results = append(c.ext.results, int16(binary.BigEndian.Uint16(b[2+2*i:])))
	}
	return nil
}

// merge combines the plans of two Binds in one batch.
func (c *client) merge(a, b router.Plan) (router.Plan, *pgerr.Error) {
	switch {
	case a.Target == router.TargetNone:
		return b, nil
	case b.Target == router.TargetNone, b.Target == router.TargetAny:
		return a, nil
	case a.Target == router.TargetAny:
		return b, nil
	case a.Target == router.TargetShard && b.Target == router.TargetShard && a.Shard == b.Shard:
		if b.Role == router.RolePrimary {
			a.Role = b.Role
		}
		return a, nil
	case a.Target == router.TargetAll && b.Target == router.TargetAll:
		a.DDLTables = slices.Concat(a.DDLTables, b.DDLTables)
		return a, nil
	}
	return a, &pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: fmt.Sprintf("statements of one batch need different shards (%s and %s); send them in separate transactions", c.describe(a), c.describe(b))}
}

// describe names a plan's shards for error messages.
func (c *client) describe(p router.Plan) string {
	switch p.Target {
	case router.TargetShard:
		return "shard " + c.srv.topo().Shards[p.Shard].Name
	case router.TargetAll:
		return "every shard"
	}
	return "any shard"
}

// lookupAt is lookup as of the message after the first n named Parses of
// the batch.
func (c *client) lookupAt(name string, n int) *prepared {
	if name == "" {
		if c.ext.unnamed.analysis == nil {
			return nil
		}
		return &c.ext.unnamed
	}
	for i := n - 1; i >= 0; i-- {
		if c.ext.bound[i].clientName == name {
			return c.ext.bound[i].prep
		}
	}
	return c.sess.stmts[name]
}

// appendRenamed re-encodes a Bind or Describe with a server-side statement
// name: head is everything before the name, rest everything after its NUL.
func appendRenamed(dst []byte, typ byte, head []byte, name string, rest []byte) []byte {
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+len(head)+len(name)+1+len(rest)))
	dst = append(append(append(dst, head...), name...), 0)
	return append(dst, rest...)
}

func serverNameOr(p *prepared, clientName []byte) string {
	if p == nil {
		return string(clientName) // unknown: let the server report it
	}
	return p.serverName
}

// serverHas reports whether sc has p prepared, or will once the batch
// being built reaches it, and marks it used by this batch.
func (c *client) serverHas(sc *pool.Conn, p *prepared) bool {
	if slices.Contains(c.ext.willClose, p.serverName) {
		return slices.Contains(c.ext.willHave, p.serverName) // closed, then prepared again
	}
	if _, ok := sc.Prepared[p.serverName]; ok {
		sc.Prepared[p.serverName] = sc.Batch
		return true
	}
	return slices.Contains(c.ext.willHave, p.serverName)
}

// makeRoom closes sc's least recently used statement when preparing one
// more would exceed pool.prepared_statements. Statements this batch uses
// are never chosen.
//
// The victim leaves sc.Prepared only when the server confirms the Close: an
// earlier error in the batch makes the server skip it, and the statement
// then stays.
func (c *client) makeRoom(sc *pool.Conn, ops []op) []op {
	if len(sc.Prepared)-len(c.ext.willClose)+len(c.ext.willHave) < c.rt.cfg.Pool.PreparedStatements {
		return ops
	}
	victim, oldest := "", sc.Batch
	for name, used := range sc.Prepared {
		if used < oldest && !slices.Contains(c.ext.willClose, name) {
			victim, oldest = name, used
		}
	}
	if victim == "" {
		return ops
	}
	c.ext.willClose = append(c.ext.willClose, victim)
	body := append(append([]byte{'S'}, victim...), 0)
	c.sout = appendMessage(c.sout, 'C', body)
	return append(ops, op{typ: 'C', drop: true, closing: victim})
}

// ensureBefore prepares p on sc ahead of a simple query that EXECUTEs it,
// unless sc has it: Parse and Sync, their answers swallowed (an error
// still reaches the client).
func (c *client) ensureBefore(sc *pool.Conn, p *prepared, ops []op) []op {
	c.ext.willHave, c.ext.willClose = c.ext.willHave[:0], c.ext.willClose[:0]
	sc.Batch++
	if c.serverHas(sc, p) {
		return ops
	}
	ops = c.makeRoom(sc, ops)
	c.ext.willHave = append(c.ext.willHave, p.serverName)
	c.sout = appendMessage(c.sout, 'P', p.parse)
	c.sout = appendEmpty(c.sout, 'S')
	return append(ops, op{typ: 'P', drop: true, prepared: p}, op{typ: 'S', drop: true})
}

// buildBatch turns the batch into bytes for sc in c.sout, rewriting
// statement names and preparing statements sc lacks, and returns the ops.
func (c *client) buildBatch(sc *pool.Conn, ops []op) []op {
	c.ext.willHave, c.ext.willClose = c.ext.willHave[:0], c.ext.willClose[:0]
	sc.Batch++
	unnamedSent := false
	ensure := func(p *prepared) {
		if p == nil || p.serverName == "" || c.serverHas(sc, p) {
			return
		}
		ops = c.makeRoom(sc, ops)
		c.ext.willHave = append(c.ext.willHave, p.serverName)
		c.sout = appendMessage(c.sout, 'P', p.parse)
		ops = append(ops, op{typ: 'P', drop: true, prepared: p})
	}
	bi := 0
	skipping := false // after an error the proxy raised, Postgres would skip to Sync
	for _, m := range c.ext.batch.msgs {
		if skipping && m.typ != 'S' {
			if m.typ == 'P' {
				if name, _, _ := cstring(c.ext.batch.body(m)); len(name) > 0 {
					bi++
				}
			}
			continue
		}
		skipping = false
		body := c.ext.batch.body(m)
		switch m.typ {
		case 'P':
			name, _, _ := cstring(body)
			if len(name) == 0 {
				unnamedSent = true
				c.sout = appendMessage(c.sout, 'P', body)
				ops = append(ops, op{typ: 'P'})
				continue
			}
			b := c.ext.bound[bi]
			bi++
			if _, exists := c.sess.stmts[b.clientName]; exists {
				ops = append(ops, op{typ: 'P', err: &pgerr.Error{Code: pgerr.CodeDuplicatePreparedStatement, Message: fmt.Sprintf("prepared statement %q already exists", b.clientName)}})
				skipping = true
				continue
			}
			if c.serverHas(sc, b.prep) {
				ops = append(ops, op{typ: 'P', fake: '1', prepared: b.prep, clientName: b.clientName})
				continue
			}
			ops = c.makeRoom(sc, ops)
			c.ext.willHave = append(c.ext.willHave, b.prep.serverName)
			c.sout = appendMessage(c.sout, 'P', b.prep.parse)
			ops = append(ops, op{typ: 'P', prepared: b.prep, clientName: b.clientName})
		case 'B':
			server := ""
			portal, rest, _ := cstring(body)
			head := body[:len(portal)+1]
			stmt, rest, _ := cstring(rest)
			if len(stmt) == 0 {
				if !unnamedSent && c.ext.unnamed.parse != nil {
					c.sout = appendMessage(c.sout, 'P', c.ext.unnamed.parse)
					ops = append(ops, op{typ: 'P', drop: true})
					unnamedSent = true
				}
				c.sout = appendMessage(c.sout, 'B', body)
			} else {
				p := c.lookupAt(string(stmt), bi)
				ensure(p)
				server = serverNameOr(p, stmt)
				c.sout = appendRenamed(c.sout, 'B', head, server, rest)
			}
			ops = append(ops, op{typ: 'B', stmt: server})
		case 'D':
			server := ""
			if len(body) > 1 && body[0] == 'S' && body[1] != 0 {
				stmt, rest, _ := cstring(body[1:])
				p := c.lookupAt(string(stmt), bi)
				ensure(p)
				server = serverNameOr(p, stmt)
				c.sout = appendRenamed(c.sout, 'D', body[:1], server, rest)
			} else {
				c.sout = appendMessage(c.sout, 'D', body)
			}
			ops = append(ops, op{typ: 'D', stmt: server})
		case 'C':
			if len(body) > 1 && body[0] == 'S' && body[1] != 0 {
				name, _, _ := cstring(body[1:])
				// The server-side statement stays cached for others.
				ops = append(ops, op{typ: 'C', fake: '3', clientName: string(name), forget: true})
				continue
			}
			c.sout = appendMessage(c.sout, 'C', body)
			ops = append(ops, op{typ: 'C'})
		case 'E':
			c.sout = appendMessage(c.sout, 'E', body)
			ops = append(ops, op{typ: 'E'})
		case 'H':
			c.sout = appendMessage(c.sout, 'H', body)
		case 'S':
			c.sout = appendMessage(c.sout, 'S', body)
			ops = append(ops, op{typ: 'S'})
		}
	}
	return ops
}
