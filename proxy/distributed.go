package proxy

import (
	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/router"
)

// A transaction block that reaches a second shard, with two_phase_commit,
// keeps one server connection per shard it touched: the current one is
// c.held, the others wait in c.branches. Each shard gets the client's BEGIN
// when the transaction first reaches it, so its snapshot starts there (as
// in Citus: there is no global snapshot). COMMIT prepares every branch,
// logs the decision, then commits them; ROLLBACK or an error rolls back
// every branch. Savepoints cannot span shards and are refused once the
// transaction has more than one.

// branch is one shard's part of a transaction that spans shards.
type branch struct {
	sc    *pool.Conn
	shard int
	pool  *pool.Pool
}

var errSavepointAcross = &pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "savepoints are not supported in a transaction across shards"}

// canJoin reports whether the open transaction may take in another shard.
func (c *client) canJoin() bool {
	return c.srv.rt.Load().cfg.TwoPhaseCommit && !c.tx.midBatch && c.tx.srvStatus == 'T' && !c.tx.savepoint
}

// switchTo makes shard's branch the held connection, parking the current
// one, and runs u there; a shard new to the transaction starts it first.
func (c *client) switchTo(shard int, u unit) error {
	c.tx.branches = append(c.tx.branches, branch{c.tx.held, c.tx.heldShard, c.tx.heldPool})
	c.tx.held = nil
	for i, b := range c.tx.branches {
		if b.shard == shard {
			c.tx.held, c.tx.heldShard, c.tx.heldPool = b.sc, b.shard, b.pool
			c.tx.branches = append(c.tx.branches[:i], c.tx.branches[i+1:]...)
			c.shown.activeShard.Store(int32(shard))
			return c.runHeld(u)
		}
	}
	if err := c.acquire(shard); err != nil {
		// Back to the shard it was on, so the refusal rolls back every branch.
		last := c.tx.branches[len(c.tx.branches)-1]
		c.tx.branches = c.tx.branches[:len(c.tx.branches)-1]
		c.tx.held, c.tx.heldShard, c.tx.heldPool = last.sc, last.shard, last.pool
		return c.refuse(acquireError(err))
	}
	c.tx.state = txPending
	c.tx.pending = append(c.tx.pending[:0], c.tx.begin...)
	return c.runHeld(u)
}

// finishBranches answers COMMIT or ROLLBACK of a transaction on several
// shards: every branch commits (atomically, in two phases) or none does.
func (c *client) finishBranches(plan router.Plan, u unit) error {
	tag := c.txTag(plan)
	if c.tx.srvStatus == 'E' {
		tag = "ROLLBACK"
	}
	conns := c.branchConns()
	errMsg := c.settle(conns, tag == "ROLLBACK")
	c.settleSettings(c.tx.held, errMsg == nil && tag == "COMMIT")
	c.endBranches()
	if u.query != nil {
		if errMsg != nil {
			c.out = append(c.out, errMsg...)
		} else {
			c.out = appendCommandComplete(c.out, tag)
		}
		c.out = appendReadyForQuery(c.out, 'I')
		return c.flush()
	}
	c.answerBatch(func() { c.out = appendEmpty(c.out, 'n') }, func(*prepared) bool {
		if errMsg != nil {
			c.out = append(c.out, errMsg...)
			return false
		}
		c.out = appendCommandComplete(c.out, tag)
		return true
	})
	return c.flush()
}

// branchConns lists every connection of the transaction, the held one last.
func (c *client) branchConns() []*pool.Conn {
	conns := make([]*pool.Conn, 0, len(c.tx.branches)+1)
	for _, b := range c.tx.branches {
		conns = append(conns, b.sc)
	}
	return append(conns, c.tx.held)
}

// endBranches releases every connection of a finished transaction and
// leaves the client idle.
func (c *client) endBranches() {
	c.releaseBranches()
	c.tx.state, c.tx.pending, c.sess.txHint, c.tx.savepoint, c.tx.midBatch = txIdle, c.tx.pending[:0], nil, false, false
	c.releaseHeld()
}

// dropBranches rolls back and releases the parked branches, when the held
// connection's transaction ended some other way (an error, a lost server).
func (c *client) dropBranches() {
	if len(c.tx.branches) == 0 {
		return
	}
	conns := make([]*pool.Conn, len(c.tx.branches))
	for i, b := range c.tx.branches {
		conns[i] = b.sc
	}
	c.parallel(conns, func(_ int, sc *pool.Conn) { simple(asShard(sc), "ROLLBACK") })
	c.releaseBranches()
}

// releaseBranches returns the parked branches' connections, keeping the
// held one held.
func (c *client) releaseBranches() {
	held, shard, p := c.tx.held, c.tx.heldShard, c.tx.heldPool
	for _, b := range c.tx.branches {
		c.tx.held, c.tx.heldShard, c.tx.heldPool = b.sc, b.shard, b.pool
		c.releaseHeld()
	}
	c.tx.branches = c.tx.branches[:0]
	c.tx.held, c.tx.heldShard, c.tx.heldPool = held, shard, p
}

// settle ends the transaction open on every conn and returns the error the
// client should see, if any (executor.settle).
func (c *client) settle(conns []*pool.Conn, rollback bool) []byte {
	return c.executor().settle(shardConns(conns), rollback)
}
