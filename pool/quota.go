package pool

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Quota caps how many connections of one pool a group of clients (a user
// with pool_size, as in PgBouncer's [users] section) holds at once. A
// client over it waits in the quota's own line, so it holds no place in
// the pool's line that another group's client could use.
type Quota struct {
	mu      sync.Mutex
	max     int // 0: no cap
	held    int
	waiters []chan struct{} // FIFO; a send grants a place
}

// NewQuota returns a quota of max connections; 0: no cap.
func NewQuota(max int) *Quota { return &Quota{max: max} }

// SetMax changes the cap (RELOAD); places it frees go to waiters now, and
// a lower cap takes effect as connections come back.
func (q *Quota) SetMax(max int) {
	q.mu.Lock()
	q.max = max
	q.serveLocked()
	q.mu.Unlock()
}

// Held is how many connections are held under the quota.
func (q *Quota) Held() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.held
}

func (q *Quota) roomLocked() bool { return q.max <= 0 || q.held < q.max }

func (q *Quota) serveLocked() {
	for len(q.waiters) > 0 && q.roomLocked() {
		q.held++
		q.waiters[0] <- struct{}{}
		q.waiters = q.waiters[1:]
	}
}

// take waits up to timeout for a place.
func (q *Quota) take(ctx context.Context, timeout time.Duration) bool {
	q.mu.Lock()
	if len(q.waiters) == 0 && q.roomLocked() {
		q.held++
		q.mu.Unlock()
		return true
	}
	ch := make(chan struct{}, 1)
	q.waiters = append(q.waiters, ch)
	q.mu.Unlock()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-ch:
		return true
	case <-timer.C:
	case <-ctx.Done():
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if i := slices.Index(q.waiters, ch); i >= 0 {
		q.waiters = slices.Delete(q.waiters, i, i+1)
		return false
	}
	return true // granted just as the wait ended: the caller gives it back if it must
}

func (q *Quota) give() {
	q.mu.Lock()
	q.held--
	q.serveLocked()
	q.mu.Unlock()
}

// AcquireUnder is Acquire within quota q (nil: none): the connection
// counts against q until Release. The wait for q and for the pool together
// last at most WaitTimeout.
func (p *Pool) AcquireUnder(ctx context.Context, q *Quota) (*Conn, error) {
	if q == nil {
		return p.Acquire(ctx)
	}
	began := time.Now()
	p.mu.Lock()
	timeout, name := p.cfg.WaitTimeout, p.cfg.Name
	p.mu.Unlock()
	if !q.take(ctx, timeout) {
		p.recordWait(time.Since(began))
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		q.mu.Lock()
		max := q.max
		q.mu.Unlock()
		return nil, fmt.Errorf("pool %s: %w after %s (the user's pool_size %d is in use)", name, ErrWaitTimeout, timeout, max)
	}
	c, _, err := p.acquire(ctx, time.Since(began))
	p.recordWait(time.Since(began))
	if err != nil {
		q.give()
		return nil, err
	}
	c.quota = q
	return c, nil
}
