package backend

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// replayPoll is how often the monitor re-reads a replica's replay position
// while a client's read needs a newer one (read_your_writes). The health
// probe alone refreshes it every health_check_interval, which would keep
// every client that writes more often than that on the primary: a replica
// replays a write within milliseconds, and the proxy should know it about
// as fast. Polling stops once the replica has caught up with what was asked.
const replayPoll = 2 * time.Millisecond

// replayPollFor bounds polling after the last read that asked: a replica
// that stays behind (replay paused, or far behind) is not polled for good.
const replayPollFor = time.Second

const replayQuery = "SELECT pg_last_wal_replay_lsn()"

// wantReplay notes that a read needed replica n to have replayed lsn, so
// its monitor refreshes n's position until it has.
func (n *Node) wantReplay(lsn uint64) {
	for {
		cur := n.wanted.Load()
		if cur >= lsn {
			return
		}
		if n.wanted.CompareAndSwap(cur, lsn) {
			n.wantedAt.Store(time.Now().UnixNano())
			break
		}
	}
	select {
	case n.poke <- struct{}{}:
	default: // the monitor is already told
	}
}

// idle waits for the next probe, reporting false when the node stops.
// Meanwhile, while reads wait for n to replay further, it re-reads n's
// replay position every replayPoll on the monitor's connection.
func (n *Node) idle(base context.Context, conn *pgconn.PgConn, interval, timeout time.Duration) bool {
	due := time.NewTimer(interval)
	defer due.Stop()
	for {
		var poll <-chan time.Time
		if conn != nil && n.wanted.Load() > n.lsn.Load() && time.Since(time.Unix(0, n.wantedAt.Load())) < replayPollFor {
			poll = time.After(replayPoll)
		}
		select {
		case <-n.stop:
			return false
		case <-due.C:
			return true
		case <-n.poke: // a read wants a newer position: poll from now on
		case <-poll:
			if err := n.refreshReplay(base, conn, timeout); err != nil {
				return true // the probe decides what a failure means
			}
		}
	}
}

// refreshReplay reads n's replay position.
func (n *Node) refreshReplay(base context.Context, conn *pgconn.PgConn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(base, timeout)
	defer cancel()
	results, err := conn.Exec(ctx, replayQuery).ReadAll()
	if err != nil {
		return err
	}
	if len(results) != 1 || len(results[0].Rows) != 1 || results[0].Rows[0][0] == nil {
		return errors.New("no replay position")
	}
	lsn, err := ParseLSN(string(results[0].Rows[0][0]))
	if err != nil {
		return err
	}
	n.lsn.Store(lsn)
	return nil
}
