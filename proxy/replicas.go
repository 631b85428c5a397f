package proxy

import (
	"encoding/binary"
	"strconv"
	"time"

	"github.com/shardgate/shardgate/backend"
	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/router"
)

// Read routing for clients: replica-eligible reads outside transaction
// blocks go to the least busy healthy replica of their shard (package
// backend chooses it); with read_your_writes a client's read goes only to a
// replica that has replayed the client's last write on that shard (its WAL
// insert position, captured after the write).

// rywNone marks a shard the client wrote to without a captured position
// (multi-shard writes): its reads there go to the primary until the next
// captured write.
const rywNone = backend.UnknownLSN

const lsnQuery = "SELECT pg_current_wal_insert_lsn()\x00"

// readsReplicas reports whether this client may send reads to replicas.
func (c *client) readsReplicas() bool {
	return c.rt.cfg.Consistency != "primary" && c.mode != modeSession
}

// pickRead chooses the server for a replica-eligible read on shard: a
// replica node, or nil for the primary. A non-nil error refuses the read.
func (c *client) pickRead(shard int) (*backend.Node, *pgerr.Error) {
	cfg := c.rt.cfg
	var need uint64
	if cfg.Consistency == "read_your_writes" && c.sess.ryw != nil {
		c.dropSwitchedRYW()
		if shard < len(c.sess.ryw) {
			need = c.sess.ryw[shard]
		}
	}
	return c.srv.rt.Load().backends.PickRead(shard, need, backend.ReadPolicyOf(cfg))
}

// recordWrite remembers the primary's WAL position after the client's write
// on shard.
func (c *client) recordWrite(shard int, lsn uint64) {
	c.dropSwitchedRYW()
	for len(c.sess.ryw) < c.srv.rt.Load().backends.Shards() {
		c.sess.ryw = append(c.sess.ryw, 0) // first write, or shards appended by a reshard
	}
	if shard < len(c.sess.ryw) {
		c.sess.ryw[shard] = lsn
	}
	c.shareWrite(shard, lsn)
}

// wroteEverywhere is recordWrite for writes whose positions the proxy did
// not capture (cross-shard writes, DDL, COPY): the client reads from the
// primaries until its next captured write on each shard.
func (c *client) wroteEverywhere() {
	if c.rt.cfg.Consistency != "read_your_writes" {
		return
	}
	for shard := range c.srv.rt.Load().backends.Shards() {
		c.recordWrite(shard, rywNone)
	}
}

// captureMode says how runHeld learns the WAL position after a write.
type captureMode uint8

const (
	captureNone     captureMode = iota
	capturePipeline             // the unit should end the transaction: pipeline the LSN query after it
	captureAfter                // if the unit ends a transaction anyway, ask in a round trip of its own
)

var lsnQueryMsg = []byte(lsnQuery)

// dataRowLSN reads a one-column DataRow holding an LSN; 0 if it is not one.
func dataRowLSN(msg []byte) uint64 {
	if len(msg) < 11 || binary.BigEndian.Uint16(msg[5:]) != 1 {
		return 0
	}
	n := int32(binary.BigEndian.Uint32(msg[7:]))
	if n < 0 || int(n) > len(msg)-11 {
		return 0
	}
	var hi, lo uint64
	slash := false
	for _, b := range msg[11 : 11+n] {
		var d byte
		switch {
		case b == '/' && !slash:
			slash = true
			continue
		case b >= '0' && b <= '9':
			d = b - '0'
		case b >= 'A' && b <= 'F':
			d = b - 'A' + 10
		case b >= 'a' && b <= 'f':
			d = b - 'a' + 10
		default:
			return 0
		}
		if slash {
			lo = lo<<4 | uint64(d)
		} else {
			hi = hi<<4 | uint64(d)
		}
	}
	if !slash {
		return 0
	}
	return hi<<32 | lo
}

// rywOn reports whether the client's writes are tracked for read-your-writes.
func (c *client) rywOn() bool {
	return c.rt.cfg.Consistency == "read_your_writes" && c.mode != modeSession
}

// planCapture decides, before a unit runs, how its write position is learnt.
func (c *client) planCapture(plan router.Plan) {
	c.sess.capture = captureNone
	if !c.rywOn() || plan.Role == router.RoleReplica || plan.Tx == router.TxRollback {
		return
	}
	// A COPY FROM's data must follow it on the wire, not the LSN query.
	if ((c.tx.state == txIdle && c.tx.held == nil) || plan.Tx == router.TxCommit) && plan.CopyIn == nil {
		c.sess.capture = capturePipeline
	} else {
		c.sess.capture = captureAfter
	}
}

// pipelineCapture appends the LSN query to the unit just encoded when the
// unit should leave the primary idle.
func (c *client) pipelineCapture(u unit, ops []op) ([]op, bool) {
	if c.sess.capture != capturePipeline || c.tx.heldNode != nil || (u.query == nil && !c.ext.batch.synced()) {
		return ops, false
	}
	c.sout = appendMessage(c.sout, 'Q', lsnQueryMsg)
	ops = append(ops, op{typ: 'Q', drop: true, capture: true})
	c.ext.ops = ops
	return ops, true
}

// settleCapture records the write position after a unit left the primary
// idle: the pipelined answer, or one asked for now.
func (c *client) settleCapture(sc *pool.Conn, piped bool) {
	mode := c.sess.capture
	c.sess.capture = captureNone
	if mode == captureNone || c.tx.heldNode != nil {
		return
	}
	lsn := c.sess.captured
	if !piped || lsn == 0 {
		c.sout = appendMessage(c.sout[:0], 'Q', lsnQueryMsg)
		c.sess.captured = 0
		var sink []byte
		res, err := c.send(sc, []op{{typ: 'Q', drop: true, capture: true}}, &sink, false)
		lsn = c.sess.captured
		if err != nil || res.status != 'I' || lsn == 0 {
			lsn = rywNone
		}
	}
	c.recordWrite(c.tx.heldShard, lsn)
}

// acquireReplica makes a connection of replica n the held one.
func (c *client) acquireReplica(n *backend.Node) error {
	var q *pool.Quota
	if c.user != nil {
		q = c.user.quota(n.Pool())
	}
	sc, err := n.Lend(c.ctx, q)
	if err != nil {
		return err
	}
	c.tx.held, c.tx.heldShard, c.tx.heldPool, c.tx.heldNode = sc, n.Shard(), n.Pool(), n
	c.tx.ranOnReplica = true
	c.tx.started = time.Now()
	c.shown.activeShard.Store(int32(n.Shard()))
	return nil
}

// healthColumns are role, healthy, lag_bytes, lag_seconds and banned_until
// (empty when not banned; a past time while waiting for a good probe) for
// the admin console.
func healthColumns(b *backend.Set, n *backend.Node) []string {
	role := "replica"
	switch {
	case n.Shard() < b.Shards() && b.Primary(n.Shard()) == n:
		role = "primary"
	case !n.Replica():
		role = "demoted" // a configured primary a replica was promoted over
	}
	banned := ""
	if until := n.BannedUntil(); !until.IsZero() {
		banned = until.UTC().Format("2006-01-02 15:04:05.000 UTC")
	}
	return []string{role, strconv.FormatBool(n.Healthy()), strconv.FormatInt(n.LagBytes(), 10), strconv.FormatFloat(n.LagSeconds(), 'f', 3, 64), banned}
}
