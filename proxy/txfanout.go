package proxy

import (
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/router"
)

// Statements that fan out to several shards inside a transaction block (a
// multi-row INSERT split by shard, an UPDATE or DELETE broadcast with
// allow_broadcast_writes, a reference-table write, DDL, a cross-shard
// SELECT) run on the transaction's branch on each shard (distributed.go),
// joining the shards it has not reached yet, so that COMMIT settles them
// with everything else the transaction did: in two phases, all or nothing,
// and reads see the transaction's own writes. Without two_phase_commit they
// are refused, as any second shard in a transaction is.

var errWriteInTransaction = &pgerr.Error{
	Code:    pgerr.CodeFeatureNotSupported,
	Message: "a write across shards inside a transaction block needs two_phase_commit, and no savepoint in the transaction",
}

// inTransactionBlock reports whether the client has a transaction block open.
func (c *client) inTransactionBlock() bool { return c.tx.state != txIdle || c.tx.held != nil }

// canSpread reports whether the open transaction may run a statement on
// several shards now.
func (c *client) canSpread() bool {
	if !c.srv.rt.Load().cfg.TwoPhaseCommit || c.tx.savepoint || c.tx.midBatch {
		return false
	}
	return c.tx.held == nil || c.tx.srvStatus == 'T'
}

// writeInTransaction runs reqs[i] on the transaction's branch on
// shards[i] and answers like writeOnShards, leaving the transaction open.
func (c *client) writeInTransaction(shards []int, reqs [][]byte, u unit, same bool) error {
	answers, err := c.runOnBranches(shards, reqs)
	if answers == nil {
		return err
	}
	if same {
		answers = answers[:1]
	}
	return c.answerWrite(answers, u)
}

// everyShardInTransaction runs a statement for every shard (DDL such as a
// migration's CREATE TABLE, or a reference-table write) on the
// transaction's branch on each, so COMMIT makes it appear on all shards at
// once or on none. The client sees the first shard's answer.
func (c *client) everyShardInTransaction(plan router.Plan, u unit) error {
	if plan.Broadcast {
		c.wroteEverywhere()
		return c.broadcastWrite(plan, u)
	}
	shards, reqs, rerr := c.requestPerShard(plan, &router.ScatterSpec{}, u)
	if rerr != nil {
		return c.refuse(rerr)
	}
	c.wroteEverywhere()
	answers, err := c.runOnBranches(shards, reqs)
	if answers == nil {
		return err
	}
	return c.answerShard(answers[0], u)
}

// answerShard relays one shard's gathered answer: its rows, if any, and
// its command tag as it is.
func (c *client) answerShard(a shardAnswer, u unit) error {
	rows := func() {
		for _, r := range a.rows {
			c.out, _ = (&pgproto3.DataRow{Values: r}).Encode(c.out)
		}
		c.out = appendCommandComplete(c.out, a.tag)
	}
	if u.query != nil {
		if a.desc != nil {
			c.out, _ = a.desc.Encode(c.out)
		}
		rows()
		c.out = appendReadyForQuery(c.out, c.status())
		return c.flush()
	}
	c.answerBatch(func() {
		if a.desc != nil {
			c.out, _ = a.desc.Encode(c.out)
		} else {
			c.out = appendEmpty(c.out, 'n')
		}
	}, func(*prepared) bool { rows(); return true })
	return c.flush()
}

// scatterInTransaction answers a cross-shard SELECT inside a transaction
// block from the transaction's branches, so it sees the transaction's own
// writes on every shard.
func (c *client) scatterInTransaction(plan router.Plan, u unit) error {
	spec := plan.Scatter
	if spec.CopyOut {
		return c.refuse(&pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "COPY across shards cannot run inside a transaction block"})
	}
	shards, reqs, rerr := c.requestPerShard(plan, spec, u)
	if rerr != nil {
		return c.refuse(rerr)
	}
	answers, err := c.runOnBranches(shards, reqs)
	if answers == nil {
		return err
	}
	desc, rows, merr := mergeAnswers(spec, answers)
	if merr != nil {
		return c.refuse(&pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "shardgate cannot merge this result: " + merr.Error()})
	}
	return c.answerMerged(spec, desc, rows, u)
}

// requestPerShard is the same request for every shard of plan.
func (c *client) requestPerShard(plan router.Plan, spec *router.ScatterSpec, u unit) ([]int, [][]byte, *pgerr.Error) {
	req, rerr := c.scatterRequest(spec, u)
	if rerr != nil {
		return nil, nil, rerr
	}
	shards := plan.Shards.Slice()
	reqs := make([][]byte, len(shards))
	for i := range reqs {
		reqs[i] = req
	}
	return shards, reqs, nil
}

// runOnBranches runs reqs[i] on the transaction's branch on shards[i], in
// parallel, and returns their answers. A failure on any shard aborts the
// whole transaction, as in Postgres: the client is answered, and the
// answers are nil.
func (c *client) runOnBranches(shards []int, reqs [][]byte) ([]shardAnswer, error) {
	conns := make([]*pool.Conn, len(shards))
	starts := make([][]byte, len(shards))
	for i, shard := range shards {
		sc, start, err := c.branchOf(shard)
		if err != nil {
			return nil, c.refuse(acquireError(err))
		}
		conns[i], starts[i] = sc, start
	}
	c.tx.state, c.tx.srvStatus, c.tx.pending = txActive, 'T', c.tx.pending[:0]
	answers := make([]shardAnswer, len(conns))
	budget := c.gatherBudget()
	c.parallel(conns, func(i int, sc *pool.Conn) {
		r := withSettings(c, sc, starts[i], reqs[i]) // BEGIN where the transaction is new
		c.target.add(sc)
		answers[i] = readAnswerWithin(sc, r.bytes, r.synced, budget)
		c.target.remove(sc)
		if answers[i].err != nil {
			sc.MarkBroken()
		}
	})
	failed := firstFailure(answers)
	if failed == nil {
		return answers, nil
	}
	c.abort() // rolls back every branch; a broken one is closed
	if failed.err != nil {
		return nil, c.serverLost(failed.err)
	}
	c.out = append(c.out, failed.errMsg...)
	c.out = appendReadyForQuery(c.out, c.status())
	return nil, c.flush()
}

// branchOf returns the transaction's connection on shard, taking one in if
// the transaction has not reached it yet; start is then what opens the
// transaction there: the deferred BEGIN and what came with it for the
// first shard, the client's BEGIN for the others.
func (c *client) branchOf(shard int) (sc *pool.Conn, start []byte, err error) {
	if c.tx.held != nil && c.tx.heldShard == shard {
		return c.tx.held, nil, nil
	}
	for _, b := range c.tx.branches {
		if b.shard == shard {
			return b.sc, nil, nil
		}
	}
	if c.tx.held == nil {
		start = append([]byte{}, c.tx.pending...)
		if err := c.acquire(shard); err != nil {
			return nil, nil, err
		}
		return c.tx.held, append(start, ';'), nil
	}
	p, err := c.srv.rt.Load().primaryPool(shard)
	if err == nil {
		sc, err = c.lend(p)
	}
	if err != nil {
		return nil, nil, err
	}
	c.tx.branches = append(c.tx.branches, branch{sc, shard, p})
	return sc, append(append([]byte{}, c.tx.begin...), ';'), nil
}
