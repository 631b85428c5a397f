package proxy

import (
	"errors"
	"time"

	"github.com/shardgate/shardgate/pool"
)

// How a client holds server connections, by pool mode:
//   - transaction (default): from a transaction's first routed statement to
//     its end (ReadyForQuery 'I');
//   - statement: the same, but transaction blocks are refused, so a
//     connection serves one statement;
//   - session: one connection per shard the client touches, kept until it
//     disconnects and then reset with DISCARD ALL.

const (
	modeTransaction = "transaction"
	modeSession     = "session"
	modeStatement   = "statement"
)

// acquire makes a connection of shard the held one.
func (c *client) acquire(shard int) error {
	c.dropRetiredSession(shard)
	if sc := c.sessionConn(shard); sc != nil {
		c.tx.held, c.tx.heldShard, c.tx.heldPool = sc, shard, c.tx.sessionConns[shard].pool
		c.tx.started = time.Now()
		c.shown.activeShard.Store(int32(shard))
		return nil
	}
	p, err := c.srv.rt.Load().primaryPool(shard)
	if err != nil {
		return err
	}
	sc, err := c.lend(p)
	if err != nil {
		var ce *pool.ConnectError
		if errors.As(err, &ce) {
			c.log().Warn("server connection failed", "server", ce.Pool, "err", ce.Err)
		}
		return err
	}
	c.tx.held, c.tx.heldShard, c.tx.heldPool = sc, shard, p
	c.tx.started = time.Now()
	c.shown.activeShard.Store(int32(shard))
	if c.mode == modeSession {
		if c.tx.sessionConns == nil {
			c.tx.sessionConns = make(map[int]sessionConn)
		}
		c.tx.sessionConns[shard] = sessionConn{sc, p, c.srv.fences.gen(shard)}
	}
	return nil
}

type sessionConn struct {
	sc   *pool.Conn
	pool *pool.Pool
	gen  uint64 // the shard's servers' generation (fences.gen)
}

func (c *client) sessionConn(shard int) *pool.Conn {
	if s, ok := c.tx.sessionConns[shard]; ok && !s.sc.Broken() {
		return s.sc
	}
	return nil
}

// releaseHeld ends the client's use of the held connection: back to the
// pool, or kept for the session.
func (c *client) releaseHeld() {
	if c.tx.held == nil {
		return
	}
	c.tx.heldPool.RecordXact(time.Since(c.tx.started))
	c.shown.activeShard.Store(-1)
	if c.tx.heldNode != nil {
		c.tx.heldNode.Returned()
		c.tx.heldNode = nil
	}
	if c.mode == modeSession && !c.tx.held.Broken() {
		c.tx.held = nil
		return
	}
	delete(c.tx.sessionConns, c.tx.heldShard)
	c.tx.heldPool.Release(c.tx.held)
	c.tx.held = nil
}

// releaseSession returns a disconnecting session-mode client's connections
// after DISCARD ALL, so the next client finds a clean session.
func (c *client) releaseSession() {
	for shard, s := range c.tx.sessionConns {
		c.sout = appendMessage(c.sout[:0], 'Q', []byte("DISCARD ALL\x00"))
		var sink []byte
		if res, err := c.send(s.sc, []op{{typ: 'Q', drop: true}}, &sink, false); err != nil || res.status != 'I' || res.sawError {
			s.sc.MarkBroken()
		}
		clear(s.sc.Prepared)
		clear(s.sc.Settings)
		s.pool.Release(s.sc)
		delete(c.tx.sessionConns, shard)
	}
}
