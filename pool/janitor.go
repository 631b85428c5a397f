package pool

import (
	"context"
	"time"
)

// janitorInterval is how often idle connections are retired and MinSize
// topped up; PgBouncer's janitor runs on a similar period.
const janitorInterval = time.Second

func (p *Pool) janitor() {
	t := time.NewTicker(janitorInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.retire()
			p.fill()
		}
	}
}

// retire closes idle connections past IdleTimeout (keeping MinSize) or past
// Lifetime.
func (p *Pool) retire() {
	p.mu.Lock()
	var doomed []*Conn
	keep := p.idle[:0]
	for i, c := range p.idle {
		tooOld := p.cfg.Lifetime > 0 && time.Since(c.created) > p.cfg.Lifetime
		tooIdle := p.cfg.IdleTimeout > 0 && time.Since(c.lastUsed) > p.cfg.IdleTimeout &&
			p.open-len(doomed) > p.cfg.MinSize
		if tooOld || tooIdle {
			doomed = append(doomed, c)
			continue
		}
		keep = append(keep, p.idle[i])
	}
	p.idle = keep
	p.open -= len(doomed)
	p.mu.Unlock()
	for _, c := range doomed {
		c.Close()
	}
}

// fill opens connections up to MinSize, one per tick, in the background.
func (p *Pool) fill() {
	p.mu.Lock()
	if p.closed || p.paused || p.open >= p.cfg.MinSize {
		p.mu.Unlock()
		return
	}
	p.open++
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p.dial(ctx)
	if err != nil {
		return // dial gave the slot back; the next tick tries again
	}
	p.Release(c)
}
