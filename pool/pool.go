package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Config sizes one pool.
type Config struct {
	Name           string // "s0/primary", for errors and logs
	DSN            string
	Size           int
	WaitTimeout    time.Duration // how long Acquire queues for a busy pool
	ConnectTimeout time.Duration
}

// ErrWaitTimeout is returned when no connection frees up within WaitTimeout.
var ErrWaitTimeout = errors.New("timed out waiting for a server connection")

// Pool is a bounded set of server connections with a FIFO wait queue, like
// a PgBouncer pool: connections are opened on demand up to Size and reused
// most-recently-released first, so idle ones age out together.
type Pool struct {
	cfg     Config
	connCfg *pgconn.Config

	mu      sync.Mutex
	idle    []*Conn
	open    int          // connections idle, lent, or being dialled
	waiters []chan *Conn // nil sent on a channel grants a dial slot
	closed  bool
}

// New validates cfg; connections are opened lazily.
func New(cfg Config) (*Pool, error) {
	connCfg, err := pgconn.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("pool %s: %w", cfg.Name, err)
	}
	if cfg.ConnectTimeout > 0 {
		connCfg.ConnectTimeout = cfg.ConnectTimeout
	}
	if cfg.Size < 1 {
		cfg.Size = 1
	}
	return &Pool{cfg: cfg, connCfg: connCfg}, nil
}

// Name identifies the pool in errors.
func (p *Pool) Name() string { return p.cfg.Name }

// Acquire lends a connection, dialling one if the pool is below its size,
// else waiting in line up to WaitTimeout.
func (p *Pool) Acquire(ctx context.Context) (*Conn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("pool %s is closed", p.cfg.Name)
	}
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	if p.open < p.cfg.Size {
		p.open++
		p.mu.Unlock()
		return p.dial(ctx)
	}
	w := make(chan *Conn, 1)
	p.waiters = append(p.waiters, w)
	p.mu.Unlock()
	return p.wait(ctx, w)
}

func (p *Pool) wait(ctx context.Context, w chan *Conn) (*Conn, error) {
	timer := time.NewTimer(p.cfg.WaitTimeout)
	defer timer.Stop()
	select {
	case c := <-w:
		if c == nil {
			return p.dial(ctx)
		}
		return c, nil
	case <-timer.C:
	case <-ctx.Done():
	}
	p.mu.Lock()
	queued := p.dequeue(w)
	p.mu.Unlock()
	if !queued {
		// Release handed us something just as we gave up: pass it on.
		if c := <-w; c != nil {
			p.Release(c)
		} else {
			p.releaseSlot()
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("pool %s: %w after %s (all %d connections busy)", p.cfg.Name, ErrWaitTimeout, p.cfg.WaitTimeout, p.cfg.Size)
}

func (p *Pool) dequeue(w chan *Conn) bool {
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			return true
		}
	}
	return false
}

func (p *Pool) dial(ctx context.Context) (*Conn, error) {
	c, err := dial(ctx, p.connCfg)
	if err != nil {
		p.releaseSlot()
		return nil, fmt.Errorf("pool %s: connect: %w", p.cfg.Name, err)
	}
	return c, nil
}

// releaseSlot gives up a connection slot, letting the first waiter dial.
func (p *Pool) releaseSlot() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.waiters) > 0 && !p.closed {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		w <- nil
		return
	}
	p.open--
}

// Release returns a connection that is idle on the server (ReadyForQuery
// 'I'), or closes it if it was marked broken.
func (p *Pool) Release(c *Conn) {
	if c.broken {
		c.Close()
		p.releaseSlot()
		return
	}
	p.mu.Lock()
	if p.closed {
		p.open--
		p.mu.Unlock()
		c.Close()
		return
	}
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		w <- c
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// Stats is a point-in-time view for the admin console and tests.
type Stats struct {
	Open, Idle, Waiting int
}

func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Open: p.open, Idle: len(p.idle), Waiting: len(p.waiters)}
}

// Close closes idle connections now and lent ones as they come back.
func (p *Pool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	p.closed = true
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}
