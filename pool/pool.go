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
}

type waiter struct {
	ch    chan *Conn // nil sent on it grants a dial slot
	since time.Time
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
	began := time.Now()
	c, err := p.acquire(ctx, 0)
	p.recordWait(time.Since(began))
	return c, err
}

func (p *Pool) recordWait(waited time.Duration) {
	p.stats.waitNanos.Add(int64(waited))
	p.observer.Wait(waited)
}

// acquire lends a connection; spent is how much of WaitTimeout the caller
// already waited (AcquireUnder).
func (p *Pool) acquire(ctx context.Context, spent time.Duration) (*Conn, error) {
	c, err := p.lend(ctx, spent)
	if err == nil {
		p.stats.assignments.Add(1) // SHOW STATS' total_server_assignment_count
	}
	return c, err
}

func (p *Pool) lend(ctx context.Context, spent time.Duration) (*Conn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, fmt.Errorf("pool %s is closed", p.cfg.Name)
		}
		if p.paused || (len(p.idle) == 0 && p.open >= p.cfg.Size) {
			w := &waiter{ch: make(chan *Conn, 1), since: time.Now()}
			p.waiters = append(p.waiters, w)
			p.mu.Unlock()
			return p.wait(ctx, w, spent)
		}
		if n := len(p.idle); n > 0 {
			c := p.idle[n-1]
			p.idle = p.idle[:n-1]
			p.lent[c] = struct{}{}
			checkDelay, checkTime := p.cfg.CheckDelay, p.checkTimeLocked()
			p.mu.Unlock()
			if checkDelay <= 0 || time.Since(c.lastUsed) <= checkDelay {
				if c.Pending() {
					// Its server ended it while idle: the FATAL waiting
					// there belongs to no client, so none may read it.
					c.MarkBroken()
					p.Release(c)
					continue
				}
				return c, nil
			}
			err := c.check(checkTime)
			if err == nil {
				return c, nil
			}
			c.MarkBroken()
			p.Release(c)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// The server is up but not answering: checking its other
				// idle connections would cost this client as long again
				// each. Let the caller go elsewhere now.
				p.Reconnect()
				return nil, &ConnectError{Pool: p.cfg.Name, Err: fmt.Errorf("server did not answer a connection check: %w", err)}
			}
			continue // a dead idle connection (the server restarted): try the next
		}
		p.open++
		p.mu.Unlock()
		return p.dial(ctx)
	}
}

func (p *Pool) wait(ctx context.Context, w *waiter, spent time.Duration) (*Conn, error) {
	p.mu.Lock()
	timeout, reserveAfter := p.cfg.WaitTimeout, p.cfg.ReserveTimeout
	if p.cfg.ReserveSize == 0 {
		reserveAfter = 0
	}
	p.mu.Unlock()
	// A client that waited its quota still gets a moment in the line: the
	// connection it waits for may be coming back now.
	timer := time.NewTimer(max(timeout-spent, time.Millisecond))
	defer timer.Stop()
	var reserve <-chan time.Time
	if reserveAfter > 0 && reserveAfter < timeout {
		rt := time.NewTimer(max(reserveAfter-spent, 0))
		defer rt.Stop()
		reserve = rt.C
	}
	for {
		select {
		case c := <-w.ch:
			if c == nil {
				return p.dial(ctx)
			}
			return c, nil
		case <-reserve:
			reserve = nil
			if p.takeReserveSlot(w) {
				return p.dial(ctx)
			}
			continue
		case <-timer.C:
		case <-ctx.Done():
		}
		break
	}
	p.mu.Lock()
	queued := p.dequeueLocked(w)
	p.mu.Unlock()
	if !queued {
		// Release handed us something just as we gave up: pass it on.
		if c := <-w.ch; c != nil {
			p.Release(c)
		} else {
			p.releaseSlot()
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("pool %s: %w after %s (all %d connections busy)", p.cfg.Name, ErrWaitTimeout, timeout, p.cfg.Size)
}

// takeReserveSlot lets a client that waited ReserveTimeout open one of the
// reserve connections, if any is left.
func (p *Pool) takeReserveSlot(w *waiter) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused || p.open >= p.cfg.Size+p.cfg.ReserveSize || !p.dequeueLocked(w) {
		return false
	}
	p.open++
	return true
}

func (p *Pool) dequeueLocked(w *waiter) bool {
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			return true
		}
	}
	return false
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
			w.ch <- c
		} else if p.open < p.cfg.Size {
			p.open++
			w.ch <- nil
		} else {
			return
		}
		p.waiters = p.waiters[1:]
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
		p.waiters = p.waiters[1:]
		p.lent[c] = struct{}{}
		p.mu.Unlock()
		w.ch <- c
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
