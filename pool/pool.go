package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Config sizes one pool. Durations of 0 disable the optional behaviours.
type Config struct {
	Name           string // "s0/primary", for errors and logs
	DSN            string
	Size           int
	MinSize        int           // opened and kept even when idle
	ReserveSize    int           // extra connections for clients that waited ReserveTimeout
	ReserveTimeout time.Duration //
	WaitTimeout    time.Duration // how long Acquire queues for a busy pool
	ConnectTimeout time.Duration
	IdleTimeout    time.Duration // close connections idle this long (above MinSize)
	Lifetime       time.Duration // close connections this old when they come back
	CheckDelay     time.Duration // check a connection idle this long before lending it
	QueryTimeout   time.Duration // how long a server may take to answer (Conn.Write)
	// KeepAlive configures TCP keepalives on new server connections.
	KeepAlive net.KeepAliveConfig
	Observer  Observer // nil: none; fixed for the pool's life
}

// peekAfter is how long a connection must have been idle before lending
// it costs a peek for a FATAL its server sent meanwhile (Conn.Pending).
// Under load connections come back and go out again within microseconds,
// and a system call per transaction is a few percent of the proxy's CPU;
// a server ends an idle session (pg_terminate_backend, a shutdown) on
// human timescales, and the peek was never more than a narrowing of that
// race anyway.
const peekAfter = time.Millisecond

// maxCheckTime bounds the empty query that checks a long-idle connection:
// a working server answers it in well under a millisecond.
const maxCheckTime = 2 * time.Second

// checkTimeLocked is how long a check may wait: maxCheckTime, or less
// with a shorter connect timeout.
func (p *Pool) checkTimeLocked() time.Duration {
	if ct := p.cfg.ConnectTimeout; ct > 0 && ct < maxCheckTime {
		return ct
	}
	return maxCheckTime
}

// ConnectError: a new server connection failed, or an idle one failed its
// check because the server did not answer. Err is the driver's
// account, with addresses and the server's words: for logs, not clients.
type ConnectError struct {
	Pool string
	Err  error
}

func (e *ConnectError) Error() string { return "pool " + e.Pool + ": connect: " + e.Err.Error() }
func (e *ConnectError) Unwrap() error { return e.Err }

// ErrWaitTimeout is returned when no connection frees up within WaitTimeout.
var ErrWaitTimeout = errors.New("timed out waiting for a server connection")

// Pool is a bounded set of server connections with a FIFO wait queue, like
// a PgBouncer pool: connections are opened on demand up to Size (plus
// ReserveSize for clients that waited long), reused most-recently-released
// first, checked before reuse after long idleness, and retired by the
// janitor when idle or old.
type Pool struct {
	connCfg  *pgconn.Config
	stats    counters
	observer Observer
	// queryTimeout is cfg.QueryTimeout, read by lent connections on every
	// write without the pool's lock.
	queryTimeout atomic.Int64

	mu         sync.Mutex
	cfg        Config
	idle       []*Conn
	lent       map[*Conn]struct{}
	open       int       // idle, lent, or being dialled
	waiters    []*waiter // FIFO
	paused     bool
	closed     bool
	generation uint64 // RECONNECT bumps it; older connections retire on release
	nextID     uint64 // numbers the pool's connections for SHOW SERVERS
	stop       chan struct{}
	// expiry is the one timer behind every waiter's deadlines (see
	// sweep), armed for expiryAt; spare holds waiters to reuse, so a
	// wait allocates no timer, channel or waiter.
	expiry   *time.Timer
	expiryAt time.Time
	spare    []*waiter
}

// waiter is a client queued for a connection. Whatever ends its wait sends
// exactly one grant on ch (cap 1) after taking it off the queue.
type waiter struct {
	ch        chan grant
	since     time.Time
	deadline  time.Time // WaitTimeout ends the wait
	reserveAt time.Time // may open a reserve connection from then; zero: never
}

// grant ends a wait: a connection, a slot to dial one (conn nil), or,
// with expired, nothing before the deadline.
type grant struct {
	conn    *Conn
	expired bool
}

// New validates cfg and starts the janitor; connections are opened lazily
// (and up to MinSize in the background).
func New(cfg Config) (*Pool, error) {
	connCfg, err := pgconn.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", cfg.Name, err)
	}
	if cfg.ConnectTimeout > 0 {
		connCfg.ConnectTimeout = cfg.ConnectTimeout
	}
	connCfg.DialFunc = (&net.Dialer{KeepAliveConfig: cfg.KeepAlive}).DialContext
	if cfg.Size < 1 {
		cfg.Size = 1
	}
	p := &Pool{cfg: cfg, connCfg: connCfg, observer: cfg.Observer, lent: make(map[*Conn]struct{}), stop: make(chan struct{})}
	p.queryTimeout.Store(int64(cfg.QueryTimeout))
	if p.observer == nil {
		p.observer = nopObserver{}
	}
	go p.janitor()
	return p, nil
}

// Name identifies the pool in errors.
func (p *Pool) Name() string { return p.cfg.Name }

// Resize applies new sizes and timeouts (RELOAD); the DSN cannot change.
func (p *Pool) Resize(cfg Config) {
	p.mu.Lock()
	cfg.Name, cfg.DSN = p.cfg.Name, p.cfg.DSN
	if cfg.Size < 1 {
		cfg.Size = 1
	}
	p.cfg = cfg
	p.queryTimeout.Store(int64(cfg.QueryTimeout))
	p.serveWaitersLocked()
	p.mu.Unlock()
}

// Interrupt fails every lent connection's reads and writes now (see
// Conn.Interrupt) and returns how many it interrupted.
func (p *Pool) Interrupt() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.lent {
		c.Interrupt()
	}
	return len(p.lent)
}

// Acquire lends a connection: an idle one, a new one while the pool is
// below its size, else the first to come back, waiting in line up to
// WaitTimeout.
func (p *Pool) Acquire(ctx context.Context) (*Conn, error) {
	c, slowSince, err := p.acquire(ctx, 0)
	if slowSince.IsZero() {
		p.recordWait(0) // an idle connection at once: no clock read on the hot path
	} else {
		p.recordWait(time.Since(slowSince))
	}
	return c, err
}

func (p *Pool) recordWait(waited time.Duration) {
	p.stats.waitNanos.Add(int64(waited))
	p.observer.Wait(waited)
}

// acquire lends a connection; spent is how much of WaitTimeout the caller
// already waited (AcquireUnder). slowSince is when it began to wait, dial
// or check a connection; zero when an idle one was lent at once.
func (p *Pool) acquire(ctx context.Context, spent time.Duration) (c *Conn, slowSince time.Time, err error) {
	c, slowSince, err = p.lend(ctx, spent)
	if err == nil {
		p.stats.assignments.Add(1) // SHOW STATS' total_server_assignment_count
	}
	return c, slowSince, err
}

func (p *Pool) lend(ctx context.Context, spent time.Duration) (*Conn, time.Time, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, time.Time{}, fmt.Errorf("pool %s is closed", p.cfg.Name)
		}
		if p.paused || (len(p.idle) == 0 && p.open >= p.cfg.Size) {
			w := p.enqueueLocked(spent)
			since := w.since
			p.mu.Unlock()
			c, err := p.wait(ctx, w)
			return c, since, err
		}
		if n := len(p.idle); n > 0 {
			c := p.idle[n-1]
			p.idle = p.idle[:n-1]
			p.lent[c] = struct{}{}
			checkDelay, checkTime := p.cfg.CheckDelay, p.checkTimeLocked()
			p.mu.Unlock()
			idleFor := time.Since(c.lastUsed)
			if checkDelay <= 0 || idleFor <= checkDelay {
				if idleFor > peekAfter && c.Pending() {
					// Its server ended it while idle: the FATAL waiting
					// there belongs to no client, so none may read it.
					c.MarkBroken()
					p.Release(c)
					continue
				}
				return c, time.Time{}, nil
			}
			began := time.Now()
			err := c.check(checkTime)
			if err == nil {
				return c, began, nil
			}
			c.MarkBroken()
			p.Release(c)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// The server is up but not answering: checking its other
				// idle connections would cost this client as long again
				// each. Let the caller go elsewhere now.
				p.Reconnect()
				return nil, began, &ConnectError{Pool: p.cfg.Name, Err: fmt.Errorf("server did not answer a connection check: %w", err)}
			}
			continue // a dead idle connection (the server restarted): try the next
		}
		p.open++
		p.mu.Unlock()
		began := time.Now()
		c, err := p.dial(ctx)
		return c, began, err
	}
}

// enqueueLocked queues a new waiter; spent is how much of WaitTimeout the
// caller already waited (AcquireUnder). A client that waited its quota
// still gets a moment in the line: the connection it waits for may be
// coming back now.
func (p *Pool) enqueueLocked(spent time.Duration) *waiter {
	var w *waiter
	if n := len(p.spare); n > 0 {
		w, p.spare = p.spare[n-1], p.spare[:n-1]
	} else {
		w = &waiter{ch: make(chan grant, 1)}
	}
	now := time.Now()
	w.since = now
	w.deadline = now.Add(max(p.cfg.WaitTimeout-spent, time.Millisecond))
	w.reserveAt = time.Time{}
	if r := p.cfg.ReserveTimeout; p.cfg.ReserveSize > 0 && r > 0 && r < p.cfg.WaitTimeout {
		w.reserveAt = now.Add(max(r-spent, 0))
	}
	p.waiters = append(p.waiters, w)
	p.armLocked(w.wakeAt())
	return w
}

// wakeAt is when the sweep must next look at w.
func (w *waiter) wakeAt() time.Time {
	if !w.reserveAt.IsZero() && w.reserveAt.Before(w.deadline) {
		return w.reserveAt
	}
	return w.deadline
}

// armLocked makes sure the expiry timer fires by at.
func (p *Pool) armLocked(at time.Time) {
	if p.expiry == nil {
		p.expiry = time.AfterFunc(time.Until(at), p.sweep)
		p.expiryAt = at
		return
	}
	if p.expiryAt.IsZero() || at.Before(p.expiryAt) {
		p.expiry.Reset(time.Until(at))
		p.expiryAt = at
	}
}

// sweep is the expiry timer's work: it ends the waits past their deadline
// and lets those past the reserve timeout open a reserve connection. The
// line is FIFO with one WaitTimeout, so this runs about once per timeout
// however many clients wait.
func (p *Pool) sweep() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expiryAt = time.Time{}
	now := time.Now()
	var next time.Time
	kept := p.waiters[:0]
	for _, w := range p.waiters {
		switch {
		case !now.Before(w.deadline):
			w.ch <- grant{expired: true}
			continue
		case !w.reserveAt.IsZero() && !now.Before(w.reserveAt):
			w.reserveAt = time.Time{}
			if !p.paused && !p.closed && p.open < p.cfg.Size+p.cfg.ReserveSize {
				p.open++
				w.ch <- grant{}
				continue
			}
		}
		kept = append(kept, w)
		if at := w.wakeAt(); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	clear(p.waiters[len(kept):])
	p.waiters = kept
	if !next.IsZero() {
		p.armLocked(next)
	}
}

func (p *Pool) wait(ctx context.Context, w *waiter) (*Conn, error) {
	var g grant
	select {
	case g = <-w.ch:
	case <-ctx.Done():
		p.mu.Lock()
		queued := p.dequeueLocked(w)
		p.mu.Unlock()
		if queued {
			p.recycle(w)
			return nil, ctx.Err()
		}
		// Granted just as the client gave up: pass it on.
		if g = <-w.ch; g.conn != nil {
			p.Release(g.conn)
		} else if !g.expired {
			p.releaseSlot()
		}
		p.recycle(w)
		return nil, ctx.Err()
	}
	p.recycle(w)
	switch {
	case g.expired:
		p.mu.Lock()
		timeout, size := p.cfg.WaitTimeout, p.cfg.Size
		p.mu.Unlock()
		return nil, fmt.Errorf("pool %s: %w after %s (all %d connections busy)", p.cfg.Name, ErrWaitTimeout, timeout, size)
	case g.conn == nil:
		return p.dial(ctx)
	}
	return g.conn, nil
}

// recycle keeps a waiter whose wait is over (its channel drained) for the
// next one.
func (p *Pool) recycle(w *waiter) {
	p.mu.Lock()
	p.spare = append(p.spare, w)
	p.mu.Unlock()
}

// dequeueLocked takes w off the line, reporting whether it was there,
// without allocating: the line is short (clients beyond the pool size).
func (p *Pool) dequeueLocked(w *waiter) bool {
	for i, x := range p.waiters {
		if x == w {
			p.removeWaiterLocked(i)
			return true
		}
	}
	return false
}

func (p *Pool) removeWaiterLocked(i int) {
	n := copy(p.waiters[i:], p.waiters[i+1:])
	p.waiters[i+n] = nil
	p.waiters = p.waiters[:i+n]
}

func (p *Pool) dial(ctx context.Context) (*Conn, error) {
	p.mu.Lock()
	gen := p.generation
	p.mu.Unlock()
	c, err := dial(ctx, p.connCfg)
	if err != nil {
		p.releaseSlot()
		return nil, &ConnectError{Pool: p.cfg.Name, Err: err}
	}
	c.generation, c.pool = gen, p
	p.mu.Lock()
	p.nextID++
	c.id = p.nextID
	p.lent[c] = struct{}{}
	p.mu.Unlock()
	return c, nil
}

// releaseSlot gives up a connection slot, letting the first waiter dial.
func (p *Pool) releaseSlot() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open--
	p.serveWaitersLocked()
}

// serveWaitersLocked hands idle connections, then free slots, to waiters.
func (p *Pool) serveWaitersLocked() {
	for len(p.waiters) > 0 && !p.paused && !p.closed {
		w := p.waiters[0]
		if n := len(p.idle); n > 0 {
			c := p.idle[n-1]
			p.idle = p.idle[:n-1]
			p.lent[c] = struct{}{}
			w.ch <- grant{conn: c}
		} else if p.open < p.cfg.Size {
			p.open++
			w.ch <- grant{}
		} else {
			return
		}
		p.removeWaiterLocked(0)
	}
}

// Release returns a lent connection that is idle on the server
// (ReadyForQuery 'I'). Broken, old and pre-RECONNECT connections are closed.
func (p *Pool) Release(c *Conn) {
	if q := c.quota; q != nil {
		c.quota = nil
		q.give()
	}
	p.mu.Lock()
	delete(p.lent, c)
	retire := c.broken || c.interrupt.Load() || p.closed || c.generation != p.generation ||
		(p.cfg.Lifetime > 0 && time.Since(c.created) > p.cfg.Lifetime)
	if retire {
		p.open--
		p.serveWaitersLocked()
		p.mu.Unlock()
		c.Close()
		return
	}
	c.lastUsed = time.Now()
	c.prepared = len(c.Prepared)
	if len(p.waiters) > 0 && !p.paused {
		w := p.waiters[0]
		p.removeWaiterLocked(0)
		p.lent[c] = struct{}{}
		w.ch <- grant{conn: c}
		p.mu.Unlock()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// Pause stops lending connections and waits, up to ctx, until every lent
// one is back: afterwards no server connection is in use (PgBouncer PAUSE).
func (p *Pool) Pause(ctx context.Context) error {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	for {
		p.mu.Lock()
		busy := len(p.lent)
		p.mu.Unlock()
		if busy == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pool %s: %d connections still in use: %w", p.cfg.Name, busy, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Resume lends connections again after Pause.
func (p *Pool) Resume() {
	p.mu.Lock()
	p.paused = false
	p.serveWaitersLocked()
	p.mu.Unlock()
}

// Reconnect closes idle connections now and lent ones when they come back,
// so the pool reconnects (e.g. after a server restart or a DSN change).
func (p *Pool) Reconnect() {
	p.mu.Lock()
	p.generation++
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	p.serveWaitersLocked()
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

// Kill pauses the pool, closes its idle connections now and interrupts
// the lent ones, which close when they come back (PgBouncer KILL): clients
// queue until Resume.
func (p *Pool) Kill() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	p.Reconnect()
	p.Interrupt()
}

// Closed reports whether Close was called.
func (p *Pool) Closed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Close closes idle connections now and lent ones as they come back.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	p.closed = true
	close(p.stop)
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}
