package proxy

import "github.com/shardgate/shardgate/router"

// answerBatchTx answers a batch made only of transaction control (BEGIN as
// psycopg 3 and JDBC send it, Parse/Bind/Execute/Sync) without a server, when
// every statement in it can be answered locally. It reports whether it did.
func (c *client) answerBatchTx() bool {
	if c.tx.held != nil || !c.batchTxLocal() {
		return false
	}
	c.answerBatch(func() { c.out = appendEmpty(c.out, 'n') }, func(current *prepared) bool {
		plan := c.srv.router.RouteHinted(current.analysis, nil, nil, c.hint())
		tag := c.txTag(plan)
		c.answerTx(plan, current.query())
		c.out = appendCommandComplete(c.out, tag)
		return true
	})
	return true
}

// answerBatch answers the client's extended batch message by message in
// place of a server: describe writes what follows a Describe's parameter
// description, execute an Execute's answer for the statement bound last
// and reports whether it succeeded: after an error, as in Postgres, the
// rest of the batch up to Sync is skipped.
func (c *client) answerBatch(describe func(), execute func(current *prepared) bool) {
	bi := 0
	var current *prepared
	failed := false
	for _, m := range c.ext.batch.msgs {
		body := c.ext.batch.body(m)
		if failed && m.typ != 'S' {
			continue
		}
		switch m.typ {
		case 'P':
			c.out = appendEmpty(c.out, '1')
			if name, _, _ := cstring(body); len(name) > 0 {
				b := c.ext.bound[bi]
				bi++
				c.remember(b.clientName, b.prep)
			}
		case 'B':
			_, rest, _ := cstring(body)
			stmt, _, _ := cstring(rest)
			current = c.lookupAt(string(stmt), bi)
			c.out = appendEmpty(c.out, '2')
		case 'D':
			if body[0] == 'S' {
				c.out = append(c.out, 't', 0, 0, 0, 6, 0, 0) // no parameters
			}
			describe()
		case 'E':
			failed = !execute(current)
		case 'C':
			c.out = appendEmpty(c.out, '3')
		case 'S':
			c.out = appendReadyForQuery(c.out, c.status())
		}
	}
}

// batchTxLocal reports whether every Execute in the batch runs transaction
// control the proxy can answer in turn, simulating the state changes.
func (c *client) batchTxLocal() bool {
	state, pendingLen, settingsLen := c.tx.state, len(c.tx.pending), len(c.sess.txSettings)
	session, tx := c.sess.sessionHint, c.sess.txHint
	defer func() {
		c.tx.state, c.tx.pending, c.sess.txSettings = state, c.tx.pending[:pendingLen], c.sess.txSettings[:settingsLen]
		c.sess.sessionHint, c.sess.txHint = session, tx
	}()
	executed, local := false, true
	c.walkBatch(func(typ byte, current *prepared, _ []byte) bool {
		switch typ {
		case 'E':
			if current == nil {
				local = false
				break
			}
			plan := c.srv.router.RouteHinted(current.analysis, nil, nil, c.hint())
			local = plan.Target == router.TargetNone && c.answerTx(plan, current.query())
			executed = true
		case 'H':
			local = false
		}
		return local
	})
	return local && executed
}

// walkBatch calls fn for each message of the batch with the statement the
// last Bind so far named and that Bind's body after the statement name;
// fn returns false to stop.
func (c *client) walkBatch(fn func(typ byte, current *prepared, bindRest []byte) bool) {
	bi := 0
	var current *prepared
	var bindRest []byte
	for _, m := range c.ext.batch.msgs {
		body := c.ext.batch.body(m)
		switch m.typ {
		case 'P':
			if name, _, _ := cstring(body); len(name) > 0 {
				bi++
			}
		case 'B':
			_, rest, _ := cstring(body)
			stmt, rest, _ := cstring(rest)
			current, bindRest = c.lookupAt(string(stmt), bi), rest
		}
		if !fn(m.typ, current, bindRest) {
			return
		}
	}
}
