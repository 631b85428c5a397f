package proxy

import (
	"context"
	"fmt"
	"time"

	"github.com/shardgate/shardgate/pool"
)

// logStats logs, every stats_period, PgBouncer's line of averages over
// the period, from every pool's counters, until ctx ends. A RELOAD that
// changes stats_period takes effect at once; 0 logs nothing.
func (s *Server) logStats(ctx context.Context) {
	w := statsWindow{last: time.Now(), prev: s.poolStats()}
	for s.nextStats(ctx, &w) {
	}
}

// nextStats waits for the end of the period, or a RELOAD, and reports
// whether to go on.
func (s *Server) nextStats(ctx context.Context, w *statsWindow) bool {
	var tick <-chan time.Time
	if period := time.Duration(s.rt.Load().cfg.StatsPeriod); period > 0 {
		timer := time.NewTimer(period - time.Since(w.last))
		defer timer.Stop()
		tick = timer.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-s.reloaded:
	case now := <-tick:
		s.log.Info(w.advance(now, s.poolStats()).String())
	}
	return true
}

// poolStats snapshots the counters of every pool, keyed by pool: a RELOAD
// may replace some, whose counters start again at zero.
func (s *Server) poolStats() map[*pool.Pool]pool.Stats {
	nodes := s.rt.Load().backends.Nodes()
	out := make(map[*pool.Pool]pool.Stats, len(nodes))
	for _, n := range nodes {
		out[n.Pool()] = n.Pool().Stats()
	}
	return out
}

// statsWindow remembers the counters at the start of the current period.
type statsWindow struct {
	last time.Time
	prev map[*pool.Pool]pool.Stats
}

// periodStats are a period's averages, in PgBouncer's units.
type periodStats struct {
	xacts, queries, in, out int64 // per second
	xact, query             time.Duration
	wait                    time.Duration // spent waiting for a server connection, per second
}

// String is PgBouncer's stats line, without the prepared-statement
// counts shardgate does not keep.
func (p periodStats) String() string {
	return fmt.Sprintf("stats: %d xacts/s, %d queries/s, in %d B/s, out %d B/s, xact %d us, query %d us, wait %d us",
		p.xacts, p.queries, p.in, p.out, p.xact.Microseconds(), p.query.Microseconds(), p.wait.Microseconds())
}

// advance ends the period at now, with the counters cur, and starts the
// next one.
func (w *statsWindow) advance(now time.Time, cur map[*pool.Pool]pool.Stats) periodStats {
	var d pool.Stats
	for p, c := range cur {
		old := w.prev[p] // zero for a pool new since the last period
		d.Xacts += c.Xacts - old.Xacts
		d.Queries += c.Queries - old.Queries
		d.Received += c.Received - old.Received
		d.Sent += c.Sent - old.Sent
		d.XactTime += c.XactTime - old.XactTime
		d.QueryTime += c.QueryTime - old.QueryTime
		d.WaitTime += c.WaitTime - old.WaitTime
	}
	secs := now.Sub(w.last).Seconds()
	w.last, w.prev = now, cur
	if secs <= 0 {
		return periodStats{}
	}
	perSec := func(n int64) int64 { return int64(float64(n) / secs) }
	return periodStats{
		xacts: perSec(d.Xacts), queries: perSec(d.Queries), in: perSec(d.Received), out: perSec(d.Sent),
		xact: avg(d.XactTime, d.Xacts), query: avg(d.QueryTime, d.Queries),
		wait: time.Duration(float64(d.WaitTime) / secs),
	}
}
