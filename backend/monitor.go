package backend

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// probeQuery serves every server, whatever its role: its WAL position
// (replay position on a standby), replay age, and whether it is a standby.
const probeQuery = "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, " +
	"coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()), 0), pg_is_in_recovery()"

// start runs the node's monitor, once.
func (n *Node) start() {
	n.startOnce.Do(func() { go n.monitor() })
}

// close stops the monitor and closes the pool.
func (n *Node) close() {
	n.stopOnce.Do(func() { close(n.stop) })
	n.startOnce.Do(func() { close(n.done) }) // never started
	<-n.done
	n.pool.Close()
}

// monitor probes the node until close. It reads its settings from the Set
// now serving the node, so a reload's health check settings apply at the
// next probe.
func (n *Node) monitor() {
	defer close(n.done)
	log := n.owner.Load().deps.Log
	var conn *pgconn.PgConn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	cfg, err := pgconn.ParseConfig(n.dsn)
	if err != nil {
		log.Warn("health check: bad DSN", "server", n.name, "err", err)
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
		interval := time.Duration(n.owner.Load().cfg.HealthCheckInterval)
		began := time.Now()
		ctx, cancel := context.WithTimeout(base, time.Duration(n.owner.Load().cfg.HealthCheckTimeout))
		if conn == nil {
			conn, err = pgconn.ConnectConfig(ctx, cfg)
			if err != nil {
				conn = nil
			}
		}
		if conn != nil {
			if err = n.probe(ctx, conn); err != nil {
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
			n.Ban(err)
			// Clients waiting on this server would wait out its stall:
			// fail them now (replica reads retry elsewhere).
			if k := n.pool.Interrupt(); k > 0 {
				log.Warn("interrupted server connections in use", "server", n.name, "connections", k)
			}
		} else if until := n.bannedUntil.Load(); until != 0 && began.UnixNano() >= until && n.bannedUntil.CompareAndSwap(until, 0) {
			log.Info("ban lifted", "server", n.name)
		}
		if err != nil && wasHealthy {
			log.Warn("health check failed", "server", n.name, "err", err)
		} else if err == nil && !wasHealthy {
			log.Info("health check succeeded", "server", n.name)
		}
		wasHealthy = err == nil
		if !n.idle(base, conn, interval, time.Duration(n.owner.Load().cfg.HealthCheckTimeout)) {
			return
		}
	}
}

// probe checks the node and acts on its role: the shard's primary must not
// be in recovery; a replica out of recovery while the primary is down is
// promoted (it was failed over to); a replaced primary that comes back out
// of recovery is split brain, logged and left alone.
func (n *Node) probe(ctx context.Context, conn *pgconn.PgConn) error {
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
	lsn, err := ParseLSN(string(row[0]))
	if err != nil {
		return err
	}
	n.lsn.Store(lsn)
	inRecovery := string(row[2]) == "t"
	set := n.owner.Load()
	if n.shard >= len(set.primaries) {
		return nil
	}
	cur := set.Primary(n.shard)
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
			set.deps.Log.Error("split brain: replaced primary is up and not in recovery; writes stay on the promoted server", "server", n.name, "primary", cur.name)
		}
		return nil
	case !inRecovery:
		if set.promote(n, cur) {
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
func (s *Set) promote(n, cur *Node) bool {
	s.promoteMu.Lock()
	defer s.promoteMu.Unlock()
	if s.Primary(n.shard) != cur || !cur.Down() {
		return false
	}
	cur.promoted.Store(false)
	n.promoted.Store(true)
	n.bannedUntil.Store(0) // it just answered; writes may go to it now
	s.deps.Log.Warn("replica promoted: it takes the shard's writes now", "server", n.name, "replaces", cur.name)
	return true
}
