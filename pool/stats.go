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

// RecordQuery counts one round trip: bytes to and from the server and its
// duration.
func (p *Pool) RecordQuery(received, sent int, d time.Duration) {
	p.stats.queries.Add(1)
	p.stats.received.Add(int64(received))
	p.stats.sent.Add(int64(sent))
	p.stats.queryNanos.Add(int64(d))
}

// RecordXact counts one finished transaction and its duration.
func (p *Pool) RecordXact(d time.Duration) {
	p.stats.xacts.Add(1)
	p.stats.xactNanos.Add(int64(d))
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
