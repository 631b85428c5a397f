package proxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/router"
	"github.com/shardgate/shardgate/topology"
)

// Replicas and health: every server (primary or replica) is a node with a
// pool and a monitor that probes it every health_check_interval on a
// dedicated connection. Replica-eligible reads outside transaction blocks go
// to the least busy healthy replica of their shard; with read_your_writes a
// client's read goes only to a replica that has replayed the client's last
// write on that shard (its WAL insert position, captured after the write).

// node is one server of a shard and what the monitor knows of it.
type node struct {
	pool    *pool.Pool
	dsn     string
	shard   int
	replica bool
	name    string // "s0/primary", "s0/replica1"

	healthy     atomic.Bool
	lsn         atomic.Uint64 // primary: current WAL position; replica: replay position
	lagBytes    atomic.Int64
	lagMicros   atomic.Int64
	outstanding atomic.Int32 // connections lent to clients by the proxy
	// bannedUntil is when the node's ban expires (UnixNano); 0: not banned.
	// Only the monitor lifts a ban, after a probe that began past it succeeds.
	bannedUntil atomic.Int64
	// promoted: a replica that now takes its shard's writes in place of
	// the configured primary (runtime.primary).
	promoted   atomic.Bool
	splitBrain atomic.Bool // a replaced primary is up and not in recovery (logged once)
	// wanted is the highest position a read needed this replica to have
	// replayed; while lsn is below it the monitor polls (replay.go).
	wanted   atomic.Uint64
	wantedAt atomic.Int64  // when wanted last rose (UnixNano)
	poke     chan struct{} // wakes the monitor when wanted rises

	stop      chan struct{}
	done      chan struct{}
	stopOnce  sync.Once
	startOnce sync.Once
}

// rywNone marks a shard the client wrote to without a captured position
// (multi-shard writes): its reads there go to the primary until the next
// captured write.
const rywNone = math.MaxUint64

const (
	lsnQuery = "SELECT pg_current_wal_insert_lsn()\x00"
	// probeQuery serves every server, whatever its role: its WAL position
	// (replay position on a standby), replay age, and whether it is a standby.
	probeQuery = "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, " +
		"coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()), 0), pg_is_in_recovery()"
)

func newNode(p *pool.Pool, dsn string, shard int, replica bool, name string) *node {
	return &node{pool: p, dsn: dsn, shard: shard, replica: replica, name: name,
		poke: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// start runs the node's monitor, once.
func (n *node) start(s *Server) {
	n.startOnce.Do(func() { go n.monitor(s) })
}

// close stops the monitor and closes the pool.
func (n *node) close() {
	n.stopOnce.Do(func() { close(n.stop) })
	n.startOnce.Do(func() { close(n.done) }) // never started
	<-n.done
	n.pool.Close()
}

// monitor probes the node until close.
func (n *node) monitor(s *Server) {
	defer close(n.done)
	var conn *pgconn.PgConn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	cfg, err := pgconn.ParseConfig(n.dsn)
	if err != nil {
		s.log.Warn("health check: bad DSN", "server", n.name, "err", err)
		<-n.stop
		return
	}
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	go func() {
		select {
		case <-n.stop:
			cancelBase()
		case <-base.Done():
		}
	}()
	wasHealthy := true
	for {
		interval := time.Duration(s.rt.Load().cfg.HealthCheckInterval)
		began := time.Now()
		ctx, cancel := context.WithTimeout(base, time.Duration(s.rt.Load().cfg.HealthCheckTimeout))
		if conn == nil {
			conn, err = pgconn.ConnectConfig(ctx, cfg)
			if err != nil {
				conn = nil
			}
		}
		if conn != nil {
			if err = n.probe(ctx, s, conn); err != nil {
				conn.Close(context.Background())
				conn = nil
			}
		}
		cancel()
		if base.Err() != nil {
			return
		}
		n.healthy.Store(err == nil)
		if err != nil {
			n.ban(s, err)
			// Clients waiting on this server would wait out its stall:
			// fail them now (replica reads retry elsewhere).
			if k := n.pool.Interrupt(); k > 0 {
				s.log.Warn("interrupted server connections in use", "server", n.name, "connections", k)
			}
		} else if until := n.bannedUntil.Load(); until != 0 && began.UnixNano() >= until && n.bannedUntil.CompareAndSwap(until, 0) {
			s.log.Info("ban lifted", "server", n.name)
		}
		if err != nil && wasHealthy {
			s.log.Warn("health check failed", "server", n.name, "err", err)
		} else if err == nil && !wasHealthy {
			s.log.Info("health check succeeded", "server", n.name)
		}
		wasHealthy = err == nil
		if !n.idle(base, conn, interval, time.Duration(s.rt.Load().cfg.HealthCheckTimeout)) {
			return
		}
	}
}

// probe checks the node and acts on its role: the shard's primary must not
// be in recovery; a replica out of recovery while the primary is down is
// promoted (it was failed over to); a replaced primary that comes back out
// of recovery is split brain, logged and left alone.
func (n *node) probe(ctx context.Context, s *Server, conn *pgconn.PgConn) error {
	res := conn.Exec(ctx, probeQuery)
	results, err := res.ReadAll()
	if err != nil {
		return err
	}
	if len(results) != 1 || len(results[0].Rows) != 1 || len(results[0].Rows[0]) < 3 {
		return fmt.Errorf("unexpected probe answer")
	}
	row := results[0].Rows[0]
	if row[0] == nil {
		return fmt.Errorf("no WAL position (pg_last_wal_replay_lsn() is null)")
	}
	lsn, err := parseLSN(string(row[0]))
	if err != nil {
		return err
	}
	n.lsn.Store(lsn)
	inRecovery := string(row[2]) == "t"
	rt := s.rt.Load()
	if n.shard >= len(rt.primaries) {
		return nil
	}
	cur := rt.primary(n.shard)
	switch {
	case n == cur && inRecovery:
		return fmt.Errorf("primary is in recovery (a standby)")
	case n == cur:
		return nil
	case !n.replica && inRecovery: // replaced primary, back as a standby
		n.splitBrain.Store(false)
		return nil
	case !n.replica:
		if !n.splitBrain.Swap(true) {
			s.log.Error("split brain: replaced primary is up and not in recovery; writes stay on the promoted server", "server", n.name, "primary", cur.name)
		}
		return nil
	case !inRecovery:
		if s.promote(rt, n, cur) {
			return nil
		}
		return fmt.Errorf("not a standby (pg_is_in_recovery() is false) while %s is the primary", cur.name)
	}
	secs, _ := strconv.ParseFloat(string(row[1]), 64)
	var lag int64
	if p := cur.lsn.Load(); p > lsn {
		lag = int64(p - lsn)
	}
	if lag == 0 {
		secs = 0 // caught up: the last replayed transaction's age means nothing
	}
	n.lagBytes.Store(lag)
	n.lagMicros.Store(int64(secs * 1e6))
	return nil
}

// promote makes replica n, found out of recovery, its shard's primary if
// the current primary cur is down (unreachable, or itself in recovery).
func (s *Server) promote(rt *runtime, n, cur *node) bool {
	s.promoteMu.Lock()
	defer s.promoteMu.Unlock()
	if rt.primary(n.shard) != cur || !cur.down() {
		return false
	}
	cur.promoted.Store(false)
	n.promoted.Store(true)
	n.bannedUntil.Store(0) // it just answered; writes may go to it now
	s.log.Warn("replica promoted: it takes the shard's writes now", "server", n.name, "replaces", cur.name)
	return true
}

// parseLSN reads Postgres's "X/Y" WAL position.
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	return h<<32 | l, nil
}

// formatLSN writes a WAL position as Postgres does.
func formatLSN(l uint64) string {
	return fmt.Sprintf("%X/%X", l>>32, uint32(l))
}

// ban keeps new reads off the node for ban_time and until a probe succeeds
// after that, and closes its idle connections, which a failure of the
// server has most likely broken too.
func (n *node) ban(s *Server, reason error) {
	until := time.Now().Add(time.Duration(s.rt.Load().cfg.BanTime)).UnixNano()
	for {
		old := n.bannedUntil.Load()
		if old >= until {
			return
		}
		if n.bannedUntil.CompareAndSwap(old, until) {
			if old == 0 {
				s.metrics.Ban(s.topo().Shards[n.shard].Name, n.role(), n.name)
				s.log.Warn("server banned", "server", n.name, "until", time.Unix(0, until).Format(time.RFC3339Nano), "reason", reason)
			}
			break
		}
	}
	n.pool.Reconnect()
}

// role is the node's configured role, as metrics and logs label it: a
// promoted replica stays "replica".
func (n *node) role() string { return roleName(n.replica) }

func roleName(replica bool) string {
	if replica {
		return "replica"
	}
	return "primary"
}

// banned reports whether the node is banned.
func (n *node) banned() bool { return n.bannedUntil.Load() != 0 }

// down reports whether the node is banned and its last probe failed: a
// ban for one broken connection alone does not make a primary down.
func (n *node) down() bool { return n.banned() && !n.healthy.Load() }

// lagLimit is how far behind a replica may be and still serve reads; zero
// fields are no limit (max_replica_lag, max_replica_lag_bytes).
type lagLimit struct {
	time  time.Duration
	bytes int64
}

func lagLimitOf(cfg *topology.Config) lagLimit {
	return lagLimit{time.Duration(cfg.MaxReplicaLag), cfg.MaxReplicaLagBytes}
}

// usable reports whether a replica may serve reads now.
func (n *node) usable(max lagLimit) bool {
	if !n.healthy.Load() || n.banned() || n.promoted.Load() {
		return false
	}
	return (max.time <= 0 || time.Duration(n.lagMicros.Load())*time.Microsecond <= max.time) &&
		(max.bytes <= 0 || n.lagBytes.Load() <= max.bytes)
}

// readsReplicas reports whether this client may send reads to replicas.
func (c *client) readsReplicas() bool {
	return c.rt.cfg.Consistency != "primary" && c.mode != modeSession
}

// errNoReplica is what primary_reads: never answers when no replica is usable.
func errNoReplica(shard string) *pgerr.Error {
	return &pgerr.Error{Code: "08006", Message: fmt.Sprintf("shardgate: no usable replica for shard %s (primary_reads: never)", shard)}
}

// pickRead chooses the server for a replica-eligible read on shard: a
// replica node, or nil for the primary. A non-nil error refuses the read.
func (c *client) pickRead(shard int) (*node, *pgerr.Error) {
	rt := c.srv.rt.Load()
	cfg := c.rt.cfg
	reps := rt.replicas[shard]
	var need uint64
	if cfg.Consistency == "read_your_writes" && c.ryw != nil {
		need = c.ryw[shard]
	}
	maxLag := lagLimitOf(cfg)
	var deadline time.Time
	for {
		best, anyUsable := c.bestReplica(reps, maxLag, need)
		if best != nil {
			if p := rt.primary(shard); cfg.PrimaryReads == "always" && !p.banned() {
				// The primary competes as one more server: by its lent
				// connections, ties shared round-robin.
				pa, ba := int32(p.pool.Stats().Active), best.outstanding.Load()
				if pa < ba || (pa == ba && c.srv.nextReplica.Load()%uint32(len(reps)+1) == 0) {
					return nil, nil
				}
			}
			return best, nil
		}
		switch {
		case !anyUsable && cfg.PrimaryReads == "never":
			return nil, errNoReplica(c.srv.topo().Shards[shard].Name)
		case !anyUsable, need == rywNone, cfg.RYWWait <= 0:
			return nil, nil
		}
		// Replicas are up but behind the client's last write: wait for
		// replay up to ryw_wait, then use the primary.
		if deadline.IsZero() {
			deadline = time.Now().Add(time.Duration(cfg.RYWWait))
		} else if time.Now().After(deadline) {
			return nil, nil
		}
		time.Sleep(time.Millisecond)
	}
}

// bestReplica returns the usable replica past need with the fewest
// outstanding connections, ties broken round-robin, and whether any replica
// was usable at all (regardless of need).
func (c *client) bestReplica(reps []*node, maxLag lagLimit, need uint64) (*node, bool) {
	n := len(reps)
	if n == 0 {
		return nil, false
	}
	start := int(c.srv.nextReplica.Add(1) % uint32(n))
	var best *node
	anyUsable := false
	for i := range n {
		r := reps[(start+i)%n]
		if !r.usable(maxLag) {
			continue
		}
		anyUsable = true
		if need != 0 && r.lsn.Load() < need {
			if need != rywNone {
				r.wantReplay(need)
			}
			continue
		}
		if best == nil || r.outstanding.Load() < best.outstanding.Load() {
			best = r
		}
	}
	return best, anyUsable
}

// recordWrite remembers the primary's WAL position after the client's write
// on shard.
func (c *client) recordWrite(shard int, lsn uint64) {
	if c.ryw == nil {
		c.ryw = make([]uint64, len(c.srv.rt.Load().primaries))
	}
	if shard < len(c.ryw) {
		c.ryw[shard] = lsn
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
	for shard := range c.srv.rt.Load().primaries {
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
	c.capture = captureNone
	if !c.rywOn() || plan.Role == router.RoleReplica || plan.Tx == router.TxRollback {
		return
	}
	if (c.state == txIdle && c.held == nil) || plan.Tx == router.TxCommit {
		c.capture = capturePipeline
	} else {
		c.capture = captureAfter
	}
}

// pipelineCapture appends the LSN query to the unit just encoded when the
// unit should leave the primary idle.
func (c *client) pipelineCapture(u unit, ops []op) ([]op, bool) {
	if c.capture != capturePipeline || c.heldNode != nil || (u.query == nil && !c.batch.synced()) {
		return ops, false
	}
	c.sout = appendMessage(c.sout, 'Q', lsnQueryMsg)
	ops = append(ops, op{typ: 'Q', drop: true, capture: true})
	c.ops = ops
	return ops, true
}

// settleCapture records the write position after a unit left the primary
// idle: the pipelined answer, or one asked for now.
func (c *client) settleCapture(sc *pool.Conn, piped bool) {
	mode := c.capture
	c.capture = captureNone
	if mode == captureNone || c.heldNode != nil {
		return
	}
	lsn := c.captured
	if !piped || lsn == 0 {
		c.sout = appendMessage(c.sout[:0], 'Q', lsnQueryMsg)
		c.captured = 0
		var sink []byte
		res, err := c.send(sc, []op{{typ: 'Q', drop: true, capture: true}}, &sink, false)
		lsn = c.captured
		if err != nil || res.status != 'I' || lsn == 0 {
			lsn = rywNone
		}
	}
	c.recordWrite(c.heldShard, lsn)
}

// acquireReplica makes a connection of replica n the held one.
func (c *client) acquireReplica(n *node) error {
	n.outstanding.Add(1)
	sc, err := n.pool.Acquire(c.ctx)
	if err != nil {
		n.outstanding.Add(-1)
		return err
	}
	c.held, c.heldShard, c.heldPool, c.heldNode = sc, n.shard, n.pool, n
	c.ranOnReplica = true
	c.txStart = time.Now()
	c.activeShard.Store(int32(n.shard))
	return nil
}

// healthColumns are role, healthy, lag_bytes, lag_seconds and banned_until
// (empty when not banned; a past time while waiting for a good probe) for
// the admin console.
func (n *node) healthColumns(rt *runtime) []string {
	role := "replica"
	switch {
	case n.shard < len(rt.primaries) && rt.primary(n.shard) == n:
		role = "primary"
	case !n.replica:
		role = "demoted" // a configured primary a replica was promoted over
	}
	secs := float64(n.lagMicros.Load()) / 1e6
	banned := ""
	if until := n.bannedUntil.Load(); until != 0 {
		banned = time.Unix(0, until).UTC().Format("2006-01-02 15:04:05.000 UTC")
	}
	return []string{role, strconv.FormatBool(n.healthy.Load()), strconv.FormatInt(n.lagBytes.Load(), 10), strconv.FormatFloat(secs, 'f', 3, 64), banned}
}
