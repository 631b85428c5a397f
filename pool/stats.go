package pool

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
	"time"
)

// counters are cumulative, like PgBouncer's SHOW STATS totals.
type counters struct {
	xacts, queries, received, sent atomic.Int64
	xactNanos, queryNanos          atomic.Int64
	waitNanos                      atomic.Int64
	assignments                    atomic.Int64 // connections lent
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
	// Used counts the idle connections past CheckDelay, which are checked
	// before they are lent (PgBouncer's sv_used).
	Used int
	// CloseNeeded counts lent connections that close when they come back
	// (after Reconnect, Kill or Close): PgBouncer's close_needed.
	CloseNeeded int
	MaxWait     time.Duration // how long the oldest waiter has waited
	Paused      bool

	Xacts, Queries, Received, Sent int64
	Assignments                    int64 // connections lent
	XactTime, QueryTime, WaitTime  time.Duration
}

func (p *Pool) Stats() Stats {
	p.mu.Lock()
	s := Stats{Open: p.open, Idle: len(p.idle), Active: len(p.lent), Waiting: len(p.waiters), Paused: p.paused}
	if len(p.waiters) > 0 {
		s.MaxWait = time.Since(p.waiters[0].since)
	}
	for _, c := range p.idle {
		if p.usedLocked(c) {
			s.Used++
		}
	}
	for c := range p.lent {
		if p.closeNeededLocked(c) {
			s.CloseNeeded++
		}
	}
	p.mu.Unlock()
	s.Assignments = p.stats.assignments.Load()
	s.Xacts, s.Queries = p.stats.xacts.Load(), p.stats.queries.Load()
	s.Received, s.Sent = p.stats.received.Load(), p.stats.sent.Load()
	s.XactTime = time.Duration(p.stats.xactNanos.Load())
	s.QueryTime = time.Duration(p.stats.queryNanos.Load())
	s.WaitTime = time.Duration(p.stats.waitNanos.Load())
	return s
}

// usedLocked: an idle connection that will be checked before it is lent.
func (p *Pool) usedLocked(c *Conn) bool {
	return p.cfg.CheckDelay > 0 && time.Since(c.lastUsed) > p.cfg.CheckDelay
}

// closeNeededLocked: a lent connection that closes when it comes back.
func (p *Pool) closeNeededLocked(c *Conn) bool {
	return p.closed || c.generation != p.generation || c.interrupt.Load()
}

// ServerInfo describes one server connection for SHOW SERVERS.
type ServerInfo struct {
	ID          uint64 // unique in the pool
	Ptr         string // the connection object's address, as PgBouncer's ptr
	PID         uint32
	State       string // "active" (lent), "idle", or "used" (idle past CheckDelay)
	Addr        string
	Local       string // the proxy's end of the connection
	TLS         string // version/cipher, empty without TLS
	ConnectTime time.Time
	RequestTime time.Time
	CloseNeeded bool
	Prepared    int // server-side prepared statements as of its last return to the pool
}

func (p *Pool) Servers() []ServerInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ServerInfo, 0, len(p.lent)+len(p.idle))
	for c := range p.lent {
		out = append(out, p.serverInfoLocked(c, "active"))
	}
	for _, c := range p.idle {
		state := "idle"
		if p.usedLocked(c) {
			state = "used"
		}
		out = append(out, p.serverInfoLocked(c, state))
	}
	return out
}

func (p *Pool) serverInfoLocked(c *Conn, state string) ServerInfo {
	info := ServerInfo{ID: c.id, Ptr: fmt.Sprintf("%p", c), PID: c.PID, State: state, Addr: c.ServerAddr, Local: c.LocalAddr().String(),
		ConnectTime: c.created, RequestTime: c.lastUsed, Prepared: c.prepared}
	if state == "active" {
		info.CloseNeeded = p.closeNeededLocked(c)
	}
	if tc, ok := c.Conn.(*tls.Conn); ok {
		st := tc.ConnectionState()
		info.TLS = tls.VersionName(st.Version) + "/" + tls.CipherSuiteName(st.CipherSuite)
	}
	return info
}
