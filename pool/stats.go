package pool

import (
	"sync/atomic"
	"time"
)

// counters are cumulative, like PgBouncer's SHOW STATS totals.
type counters struct {
	xacts, queries, received, sent atomic.Int64
	xactNanos, queryNanos          atomic.Int64
	waitNanos                      atomic.Int64
}

// Observer is told of each measurement as the pool makes or records it,
// e.g. to feed latency histograms. The pool's own counters (Stats) stay the
// source of the admin console's totals.
type Observer interface {
	Query(d time.Duration, toServer, fromServer int)
	Xact(d time.Duration)
	Wait(d time.Duration)
	Error(sqlstate string)
}

type nopObserver struct{}

func (nopObserver) Query(time.Duration, int, int) {}
func (nopObserver) Xact(time.Duration)            {}
func (nopObserver) Wait(time.Duration)            {}
func (nopObserver) Error(string)                  {}

// RecordQuery counts one round trip on c in its pool's stats: bytes
// received from the client (and sent to the server), bytes sent back, and
// its duration. The connection knows its pool, so every path that talks to
// a server counts where it ran.
func (c *Conn) RecordQuery(received, sent int, d time.Duration) {
	p := c.pool
	p.stats.queries.Add(1)
	p.stats.received.Add(int64(received))
	p.stats.sent.Add(int64(sent))
	p.stats.queryNanos.Add(int64(d))
	p.observer.Query(d, received, sent)
}

// RecordError passes on an ErrorResponse the server of c sent.
func (c *Conn) RecordError(sqlstate string) { c.pool.observer.Error(sqlstate) }

// RecordXact counts one finished transaction and its duration.
func (p *Pool) RecordXact(d time.Duration) {
	p.stats.xacts.Add(1)
	p.stats.xactNanos.Add(int64(d))
	p.observer.Xact(d)
}

// Stats is a point-in-time view for the admin console and tests.
type Stats struct {
	Open, Idle, Active, Waiting int
	MaxWait                     time.Duration // how long the oldest waiter has waited
	Paused                      bool

	Xacts, Queries, Received, Sent int64
	XactTime, QueryTime, WaitTime  time.Duration
}

func (p *Pool) Stats() Stats {
	p.mu.Lock()
	s := Stats{Open: p.open, Idle: len(p.idle), Active: len(p.lent), Waiting: len(p.waiters), Paused: p.paused}
	if len(p.waiters) > 0 {
		s.MaxWait = time.Since(p.waiters[0].since)
	}
	p.mu.Unlock()
	s.Xacts, s.Queries = p.stats.xacts.Load(), p.stats.queries.Load()
	s.Received, s.Sent = p.stats.received.Load(), p.stats.sent.Load()
	s.XactTime = time.Duration(p.stats.xactNanos.Load())
	s.QueryTime = time.Duration(p.stats.queryNanos.Load())
	s.WaitTime = time.Duration(p.stats.waitNanos.Load())
	return s
}

// ServerInfo describes one server connection for SHOW SERVERS.
type ServerInfo struct {
	PID         uint32
	State       string // "active" (lent) or "idle"
	Addr        string
	ConnectTime time.Time
	RequestTime time.Time
}

func (p *Pool) Servers() []ServerInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ServerInfo, 0, len(p.lent)+len(p.idle))
	for c := range p.lent {
		out = append(out, ServerInfo{c.PID, "active", c.ServerAddr, c.created, c.lastUsed})
	}
	for _, c := range p.idle {
		out = append(out, ServerInfo{c.PID, "idle", c.ServerAddr, c.created, c.lastUsed})
	}
	return out
}
