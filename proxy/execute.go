package proxy

import (
	"errors"
	"fmt"
	"time"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/router"
)

// unit is what one client round trip sends to a server: a simple Query or
// the extended-protocol batch up to Sync (or Flush).
type unit struct {
	query []byte // simple Query body (SQL and its NUL); nil for a batch
	// ensure: a statement the query EXECUTEs, prepared first where missing.
	ensure  *prepared
	retried bool // once, after a shared statement went stale
	// sets: the session SETs and RESETs the unit runs, kept for the
	// client once its transaction commits.
	sets []*router.Setting
	// state: the session state the unit leaves on its server, for which
	// the client keeps that connection (see pin.go).
	state string
}

var errStatementMode = &pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "transaction blocks are not allowed in statement pooling mode"}

var errAborted = &pgerr.Error{Code: pgerr.CodeInFailedTransaction, Message: "current transaction is aborted, commands ignored until end of transaction block"}

func (c *client) simpleQuery(body []byte) error {
	sql := body
	if n := len(sql); n > 0 && sql[n-1] == 0 {
		sql = sql[:n-1]
	}
	u := unit{query: body}
	return c.gated(func() (router.Plan, unit, bool, error) {
		if s := sqlPrepareOf(sql); s != nil {
			return c.sqlPrepare(s, sql)
		}
		a, params, _ := c.srv.router.AnalyzeSimple(sql, &c.sess.norm)
		plan := c.srv.router.RouteHinted(a, params, nil, c.hint())
		if plan.Explain != nil {
			return plan, u, true, c.explain(plan.Explain, params)
		}
		if plan.Tx == router.TxBegin && c.mode == modeStatement {
			return plan, u, true, c.refuse(errStatementMode)
		}
		if plan.Target == router.TargetNone {
			tag := c.txTag(plan)
			if c.answerTx(plan, sql) {
				c.out = appendCommandComplete(c.out, tag)
				c.out = appendReadyForQuery(c.out, c.status())
				return plan, u, true, c.flush()
			}
			if plan.Set != nil {
				return plan, u, true, c.setting(plan, u)
			}
		}
		u.sets = plan.Sets
		return plan, u, false, nil
	})
}

// txTag is the tag Postgres gives a transaction-control statement: COMMIT
// of a failed transaction reports ROLLBACK.
func (c *client) txTag(plan router.Plan) string {
	if plan.Tx == router.TxCommit && c.tx.state == txFailed {
		return "ROLLBACK"
	}
	return plan.Tag
}

// answerTx applies a transaction-control statement that needs no server
// connection, and reports whether it did. BEGIN is deferred until a
// statement picks the shard; everything said before that point travels
// with it.
func (c *client) answerTx(plan router.Plan, sql []byte) bool {
	if plan.HintSet != nil && c.tx.state != txFailed {
		c.applyHintSet(plan.HintSet)
		return true
	}
	if c.tx.held != nil {
		return false
	}
	op := plan.Tx
	switch {
	case op == router.TxBegin && c.tx.state == txIdle:
		c.tx.state = txPending
		c.tx.pending = append(c.tx.pending[:0], sql...)
		c.tx.begin = append(c.tx.begin[:0], sql...)
	case op == router.TxOther && c.tx.state == txPending:
		c.tx.pending = append(append(c.tx.pending, ';'), sql...)
		c.tx.savepoint = c.tx.savepoint || plan.Tag == "SAVEPOINT"
		if plan.Set != nil {
			c.sess.txSettings = append(c.sess.txSettings, plan.Set)
		}
	case (op == router.TxCommit || op == router.TxRollback) && (c.tx.state == txPending || c.tx.state == txFailed):
		if op == router.TxCommit && c.tx.state == txPending {
			c.settleSettings(nil, true) // nothing ran, but its SETs count
		} else {
			c.settleSettings(nil, false)
		}
		c.tx.state = txIdle
		c.tx.pending = c.tx.pending[:0]
	default:
		return false
	}
	return true
}

// execute runs a routed unit on its shard (or shards) and relays the answer.
func (c *client) execute(plan router.Plan, u unit) error {
	if c.srv.rt.Load().cfg.LogMinDuration > 0 {
		defer c.logIfSlow(time.Now(), plan, u)
	}
	c.tx.ranOnReplica = false
	if c.tx.state == txFailed && plan.Target != router.TargetError {
		return c.refuse(errAborted)
	}
	if perr := c.checkPin(plan.SessionState, &u); perr != nil {
		return c.refuse(perr)
	}
	if plan.DDL {
		// Statements prepared from now until it ends may see either schema.
		c.srv.ddlGen.Add(1)
		defer c.srv.ddlGen.Add(1)
	}
	c.planCapture(plan)
	switch {
	case plan.CopyIn != nil && u.query == nil:
		return c.refuse(errCopyExtended)
	case plan.CopyIn != nil && plan.Target != router.TargetShard:
		c.wroteEverywhere()
		return c.copyIn(plan, u)
	case plan.Split:
		c.wroteEverywhere()
		return c.splitInsert(u)
	case plan.Target == router.TargetMulti && plan.RunFirst != nil && plan.Gather != nil && plan.Err == nil:
		return c.runFirst(plan, u)
	case plan.Target == router.TargetMulti && plan.Gather != nil && plan.Err == nil:
		return c.gather(plan, u)
	case plan.Target == router.TargetMulti && plan.Err == nil:
		return c.scatter(plan, u)
	case plan.Target == router.TargetMulti && c.broadcastAllowed(plan):
		c.wroteEverywhere()
		return c.broadcastWrite(plan, u)
	case plan.Target == router.TargetError || plan.Target == router.TargetMulti:
		return c.refuse(c.refusal(plan))
	}
	if plan.Target == router.TargetNone {
		plan.Target = router.TargetAny // e.g. COMMIT outside a transaction: let Postgres warn
	}
	if c.tx.held != nil {
		return c.inTransaction(plan, u)
	}
	if c.tx.state == txPending && u.query == nil && !c.ext.batch.executes() && c.ext.batch.synced() {
		return c.describeOutside()
	}
	switch plan.Target {
	case router.TargetAll:
		if c.tx.state == txPending && c.canSpread() {
			return c.everyShardInTransaction(plan, u)
		}
		if c.tx.state == txPending {
			return c.refuse(c.crossShard(plan))
		}
		c.wroteEverywhere()
		if plan.Broadcast {
			// Reference-table writes: one transaction per shard, all
			// committed or none (atomically with two_phase_commit).
			return c.broadcastWrite(plan, u)
		}
		return c.broadcast(u)
	case router.TargetAny:
		plan.Shard = c.srv.anyShard()
	}
	if c.tx.state == txIdle && u.query == nil && !c.ext.batch.executes() && c.ext.batch.synced() && c.srv.rt.Load().backends.Primary(plan.Shard).Down() {
		// A prepare (Parse/Describe) executes nothing: with the primary
		// down a replica answers it, so drivers can still prepare reads.
		plan.Role = router.RoleReplica
	}
	if plan.Role == router.RoleReplica && c.tx.state == txIdle && c.readsReplicas() && (u.query != nil || c.ext.batch.synced()) {
		// A replica that cannot be connected to is banned and the read
		// picks again, so it lands on another replica or the primary.
		for range len(c.srv.rt.Load().backends.Replicas(plan.Shard)) + 1 {
			n, rerr := c.pickRead(plan.Shard)
			if rerr != nil {
				return c.refuse(rerr)
			}
			if n == nil {
				break
			}
			err := c.acquireReplica(n)
			if err == nil {
				if err := c.runHeldOn(u, true); err != errRetryRead {
					return err
				}
				c.srv.metrics.ReadRetries.Inc()
				c.tx.ranOnReplica = false
				continue
			}
			if errors.Is(err, pool.ErrWaitTimeout) || c.ctx.Err() != nil {
				return c.refuse(acquireError(err))
			}
			n.Ban(err)
		}
	}
	if err := c.acquire(plan.Shard); err != nil {
		return c.refuse(acquireError(err))
	}
	return c.runHeld(u)
}

// inTransaction runs a unit inside the transaction the held connection
// carries, taking in another shard when the config allows it.
func (c *client) inTransaction(plan router.Plan, u unit) error {
	if len(c.tx.branches) > 0 {
		switch {
		case plan.Tx == router.TxCommit || plan.Tx == router.TxRollback:
			c.sess.capture = captureNone
			if plan.Tx == router.TxCommit {
				c.wroteEverywhere()
			}
			return c.finishBranches(plan, u)
		case plan.Tx == router.TxOther && (plan.Tag == "SAVEPOINT" || plan.Tag == "RELEASE" || plan.Tag == "ROLLBACK"):
			return c.refuse(errSavepointAcross)
		}
	}
	if plan.Tx == router.TxOther && plan.Tag == "SAVEPOINT" {
		c.tx.savepoint = true
	}
	switch {
	case plan.Target == router.TargetShard && plan.Shard != c.tx.heldShard && c.tx.srvStatus == 'E':
		return c.refuse(errAborted)
	case plan.Target == router.TargetShard && plan.Shard != c.tx.heldShard && c.canJoin():
		return c.switchTo(plan.Shard, u)
	case plan.Target == router.TargetAll && c.canSpread():
		return c.everyShardInTransaction(plan, u)
	case plan.Target == router.TargetShard && plan.Shard != c.tx.heldShard, plan.Target == router.TargetAll:
		return c.refuse(c.crossShard(plan))
	}
	return c.runHeld(u)
}

func acquireError(err error) *pgerr.Error {
	if errors.Is(err, pool.ErrWaitTimeout) {
		return &pgerr.Error{Code: pgerr.CodeTooManyConnections, Message: "shardgate: " + err.Error()}
	}
	return &pgerr.Error{Code: pgerr.CodeConnectionFailure, Message: "shardgate: " + clientText(err)}
}

// clientText is what a client is told of a server connection failure: a
// failed connect names the server, and the driver's account (addresses,
// roles, the server's words) stays in the proxy's log.
func clientText(err error) string {
	var ce *pool.ConnectError
	if errors.As(err, &ce) {
		return "could not connect to server " + ce.Pool + " (see the shardgate log)"
	}
	return err.Error()
}

func (c *client) crossShard(plan router.Plan) *pgerr.Error {
	t := c.srv.topo()
	held := t.Shards[c.tx.heldShard].Name
	const joinHint = "With two_phase_commit: true, statements for several shards join the transaction."
	if c.tx.held == nil {
		return &pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "a statement for every shard cannot run inside a transaction block", Hint: joinHint}
	}
	if plan.Target == router.TargetAll {
		return &pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: fmt.Sprintf("transaction is on shard %s; a statement for every shard cannot join it", held), Hint: joinHint}
	}
	return &pgerr.Error{
		Code:    pgerr.CodeFeatureNotSupported,
		Message: fmt.Sprintf("transaction is on shard %s; this statement needs shard %s (cross-shard transactions are not supported)", held, t.Shards[plan.Shard].Name),
		Hint:    "The transaction has been rolled back. Keep each transaction to one user's rows.",
	}
}

// refuse answers a unit with an error without running it. Inside a
// transaction block the error aborts the transaction, as in Postgres.
func (c *client) refuse(e *pgerr.Error) error {
	if c.tx.state == txPending || c.tx.state == txActive {
		if err := c.abort(); err != nil {
			return err
		}
	}
	c.srv.metrics.ProxyError(e.Code)
	c.out = appendError(c.out, e)
	c.out = appendReadyForQuery(c.out, c.status())
	return c.flush()
}

// abort rolls back the server side of the transaction and leaves the client
// in the failed state until it says ROLLBACK.
func (c *client) abort() error {
	c.tx.pending = c.tx.pending[:0]
	c.sess.txHint = nil
	c.settleSettings(nil, false)
	c.tx.state = txFailed
	if c.tx.held == nil {
		return nil
	}
	c.sout = c.sout[:0]
	var ops []op
	if c.tx.midBatch { // finish the half-sent batch so the ROLLBACK is read
		c.sout = appendEmpty(c.sout, 'S')
		ops = append(ops, op{typ: 'S', drop: true})
		c.tx.midBatch = false
	}
	c.sout = appendMessage(c.sout, 'Q', []byte("ROLLBACK\x00"))
	ops = append(ops, op{typ: 'Q', drop: true})
	var sink []byte // the client never sees the rollback's answer
	_, err := c.send(c.tx.held, ops, &sink, false)
	c.dropBranches()
	c.releaseHeld()
	c.tx.savepoint = false
	return err
}

// encode writes u for sc into c.sout and returns the ops to relay, led by
// the deferred transaction start when withPending is set.
func (c *client) encode(sc *pool.Conn, u unit, withPending bool) []op {
	c.sout = c.sout[:0]
	ops := c.syncSettings(sc, c.ext.ops[:0])
	if withPending && c.tx.state == txPending {
		c.sout = appendMessage(c.sout, 'Q', append(c.tx.pending, 0))
		ops = append(ops, op{typ: 'Q', drop: true})
	}
	if u.query != nil {
		if u.ensure != nil {
			ops = c.ensureBefore(sc, u.ensure, ops)
		}
		c.sout = appendMessage(c.sout, 'Q', u.query)
		q := op{typ: 'Q'}
		if u.ensure != nil {
			q.stmt = u.ensure.serverName
		}
		ops = append(ops, q)
	} else {
		ops = c.buildBatch(sc, ops)
	}
	c.ext.ops = ops
	return ops
}

// runHeld sends the unit on the held connection, prefixed by a deferred
// BEGIN, relays the answer, and releases the connection at transaction end.
func (c *client) runHeld(u unit) error { return c.runHeldOn(u, false) }

// errRetryRead: a replica failed before answering a read, which is banned
// now; the read can go to another server, as nothing reached the client
// and a statement on a read-only standby has no effects to repeat.
var errRetryRead = errors.New("replica failed before answering")

// runHeldOn is runHeld that, for a replica read (retryable), returns
// errRetryRead instead of an error to the client when the server failed
// before any of its answer was relayed.
func (c *client) runHeldOn(u unit, retryable bool) error {
	if u.state != "" {
		c.keepState(u.state)
	}
	sc := c.tx.held
	wasIdle, mark := c.tx.state == txIdle, len(c.out)
	c.sess.txSettings = append(c.sess.txSettings, u.sets...)
	ops, piped := c.pipelineCapture(u, c.encode(sc, u, true))
	c.sess.captured = 0
	res, err := c.sendFrom(sc, ops, &c.out, true, c.tx.midBatch && c.tx.skipping)
	if err == nil && len(res.stale) > 0 {
		err = c.closeStale(sc, res)
		if err == nil && res.retry && wasIdle && res.status == 'I' && !res.flushed && !u.retried && c.replayable(u) {
			// The statement failed before running, in a transaction of
			// its own that the error ended: nothing happened that the
			// client saw.
			c.out = c.out[:mark]
			for _, b := range c.ext.bound {
				if c.sess.stmts[b.clientName] == b.prep {
					delete(c.sess.stmts, b.clientName) // its Parse runs again
				}
			}
			u.retried = true
			return c.runHeldOn(u, retryable)
		}
	}
	if err != nil {
		if c.tx.heldNode != nil {
			err = replicaLost(err)
		}
		c.dropHeld(err)
		if retryable && !res.answered && !errors.Is(err, errClientWrite) && !errors.Is(err, pool.ErrQueryTimeout) {
			c.log().Info("retrying a read elsewhere: its replica failed before answering", "err", err)
			return errRetryRead
		}
		return c.serverLost(err)
	}
	c.tx.pending = c.tx.pending[:0]
	switch res.status {
	case 0: // flushed batch without Sync: the server is mid-batch
		c.tx.midBatch, c.tx.state = true, txActive
		c.tx.skipping = res.skipping
	case 'I':
		c.dropBranches() // the transaction ended on this shard alone
		c.tx.midBatch = false
		c.tx.state, c.tx.savepoint = txIdle, false
		c.sess.txHint = nil
		if len(c.sess.txSettings) > 0 {
			c.settleSettings(sc, !res.sawError && !c.sess.rolledBack)
		}
		c.settleCapture(sc, piped)
		c.releaseHeld()
	default:
		c.tx.midBatch = false
		c.tx.state, c.tx.srvStatus = txActive, res.status
	}
	c.sess.capture = captureNone
	return c.flush()
}

// closeStale closes the statements the server found stale on sc, after
// the exchange, so their next use prepares them again. Mid-batch (no Sync
// yet) the server would skip the Close: sc is dropped at release instead.
func (c *client) closeStale(sc *pool.Conn, res relayResult) error {
	if res.status == 0 {
		sc.MarkBroken()
		return nil
	}
	c.sout = c.sout[:0]
	ops := c.ext.ops[:0]
	for _, name := range res.stale {
		c.sout = appendMessage(c.sout, 'C', append(append([]byte{'S'}, name...), 0))
		ops = append(ops, op{typ: 'C', drop: true, closing: name})
	}
	c.sout = appendEmpty(c.sout, 'S')
	ops = append(ops, op{typ: 'S', drop: true})
	var sink []byte
	_, err := c.send(sc, ops, &sink, false)
	return err
}

// replayable reports whether u can run again as it is: a simple query, or
// a batch with one Sync, at its end (one implicit transaction).
func (c *client) replayable(u unit) bool {
	if u.query != nil {
		return true
	}
	syncs := 0
	for _, m := range c.ext.batch.msgs {
		if m.typ == 'S' {
			syncs++
		}
	}
	return syncs == 1 && c.ext.batch.synced()
}

// dropHeld gives up the held connection after err on it, and with it the
// transaction it carried.
func (c *client) dropHeld(err error) {
	c.banHeld(err)
	c.sess.capture = captureNone
	c.dropBranches()
	c.releaseHeld()
	c.tx.state, c.tx.savepoint = txIdle, false
	c.tx.pending = c.tx.pending[:0]
	c.settleSettings(nil, false)
}

// heldFailed is dropHeld that answers the client.
func (c *client) heldFailed(err error) error {
	c.dropHeld(err)
	return c.serverLost(err)
}

// replicaLost makes a replica's FATAL a lost connection like any other: a
// replica serves the client's reads, not its session, so the read is
// retried elsewhere (nothing answered yet) or answered 08006, the client
// stays, and the replica is banned, as a shutdown sends the same FATAL as
// a terminated backend and the reads in flight must go elsewhere at once.
func replicaLost(err error) error {
	var fatal *serverFatal
	if errors.As(err, &fatal) {
		return errors.New(fatal.Error())
	}
	return err
}

// describeOutside runs a batch that executes nothing (Parse/Describe, as
// drivers send to prepare) on any shard outside the deferred transaction,
// so preparing a statement does not pin the transaction to a shard before
// a statement with a key does.
func (c *client) describeOutside() error {
	if err := c.acquire(c.srv.anyShard()); err != nil {
		return c.refuse(acquireError(err))
	}
	sc := c.tx.held
	res, err := c.send(sc, c.encode(sc, unit{}, false), &c.out, true)
	if err == nil && res.status != 'I' {
		err = fmt.Errorf("describe left the server in state %q", res.status)
		sc.MarkBroken()
	}
	c.releaseHeld()
	if err != nil {
		return c.serverLost(err)
	}
	c.out[len(c.out)-1] = c.status() // the client is still in its transaction
	return c.flush()
}

// banHeld bans the server of the held connection after an I/O error on it
// (not one writing to the client).
func (c *client) banHeld(err error) {
	if errors.Is(err, errClientWrite) || errors.Is(err, pool.ErrQueryTimeout) || errors.Is(err, errServerEnded) || c.tx.held == nil {
		// A slow answer, a lost client or a server ending one session
		// says nothing of the server's health.
		return
	}
	if n := c.tx.heldNode; n != nil {
		n.Ban(err)
		return
	}
	if b := c.srv.rt.Load().backends; c.tx.heldShard < b.Shards() && b.Primary(c.tx.heldShard).Pool() == c.tx.heldPool {
		b.Primary(c.tx.heldShard).Ban(err)
	}
}

// serverLost reports a server connection that died under a client; the
// client stays connected, as it would through PgBouncer, unless the server
// ended the session with a FATAL, which is relayed and ends the client's.
func (c *client) serverLost(err error) error {
	if errors.Is(err, errClientWrite) {
		return err
	}
	var fatal *serverFatal
	if errors.As(err, &fatal) {
		// As Postgres would: the FATAL, unchanged, then the connection
		// closes; the client's session state went with the server's.
		c.out = append(c.out, fatal.msg...)
		if ferr := c.flush(); ferr != nil {
			return fmt.Errorf("%w: %v", errClientWrite, ferr)
		}
		return err
	}
	shard := c.srv.topo().Shards[c.tx.heldShard].Name
	e := &pgerr.Error{Code: pgerr.CodeConnectionFailure, Message: "shardgate: connection to shard " + shard + " lost: " + err.Error()}
	var limit *pgerr.Error
	if errors.As(err, &limit) {
		// The proxy gave up on the server's answer itself (a limit).
		c.srv.metrics.ProxyError(limit.Code)
		c.out = appendError(c.out, limit)
		c.out = appendReadyForQuery(c.out, c.status())
		return c.flush()
	}
	if errors.Is(err, pool.ErrQueryTimeout) {
		e = &pgerr.Error{Code: pgerr.CodeQueryCanceled, Message: fmt.Sprintf("canceling statement due to query_timeout: shard %s did not answer within %s", shard, time.Duration(c.rt.cfg.Pool.QueryTimeout))}
	}
	c.log().Warn("server connection lost", "shard", shard, "err", err)
	c.srv.metrics.ProxyError(e.Code)
	c.out = appendError(c.out, e)
	c.out = appendReadyForQuery(c.out, c.status())
	return c.flush()
}

// broadcast runs a unit on every shard's primary one after another and
// answers with the first failing shard's response, else the first shard's.
func (c *client) broadcast(u unit) error {
	var chosen []byte
	failed := false
	for shard := range c.srv.rt.Load().backends.Shards() {
		if err := c.acquire(shard); err != nil {
			return c.refuse(acquireError(err))
		}
		sc := c.tx.held
		var sink []byte
		res, err := c.send(sc, c.encode(sc, u, false), &sink, false)
		if err == nil && res.status != 'I' {
			err = fmt.Errorf("shard left in transaction state %q", res.status)
			sc.MarkBroken()
		}
		c.releaseHeld()
		if err != nil {
			return c.serverLost(err)
		}
		if chosen == nil || (res.sawError && !failed) {
			chosen, failed = sink, res.sawError
		}
	}
	c.out = append(c.out, chosen...)
	return c.flush()
}

var errClientWrite = errors.New("client write failed")
