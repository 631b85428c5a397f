package proxy

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardgate/shardgate/backend"
	"github.com/shardgate/shardgate/pool"
)

// adminState is what the console's commands change beyond the config:
// SUSPEND's gate, DISABLE's flag, the pools a RELOAD retired (for
// WAIT_CLOSE) and the snapshots SHOW STATS averages over. Its zero value
// is ready.
type adminState struct {
	disabled atomic.Bool // DISABLE: new clients of the database are refused
	// busy counts clients between reading a request and finishing it;
	// SUSPEND waits for it to reach 0 once the gate is shut.
	busy atomic.Int64

	// suspended is non-nil while suspended; RESUME closes it. Every
	// request reads it, so without a lock; mu orders its writers.
	suspended atomic.Pointer[chan struct{}]

	mu      sync.Mutex
	retired []*pool.Pool // pools replaced by a reload, until their lent connections are back
	periods map[*pool.Pool]*statsPeriod
	logins  atomic.Int64 // successful client logins, for total_client_login_count
}

// enter admits a request past SUSPEND: it waits while the proxy is
// suspended, and counts the client busy until leave.
func (a *adminState) enter(ctx context.Context) error {
	for {
		// Busy first, then the gate: SUSPEND shuts the gate first, then
		// waits for busy, so one of the two always sees the other.
		a.busy.Add(1)
		gate := a.suspended.Load()
		if gate == nil {
			return nil
		}
		a.busy.Add(-1)
		select {
		case <-*gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (a *adminState) leave() { a.busy.Add(-1) }

// suspend shuts the gate and waits, up to ctx, until no request is under
// way: every answer has been written out.
func (a *adminState) suspend(ctx context.Context) error {
	a.mu.Lock()
	if a.suspended.Load() == nil {
		gate := make(chan struct{})
		a.suspended.Store(&gate)
	}
	a.mu.Unlock()
	for a.busy.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// resume opens the gate; it reports whether it was shut.
func (a *adminState) resume() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	gate := a.suspended.Swap(nil)
	if gate == nil {
		return false
	}
	close(*gate)
	return true
}

func (a *adminState) isSuspended() bool { return a.suspended.Load() != nil }

// retire records the pools of old that next does not keep: their lent
// connections close as they come back, and WAIT_CLOSE waits for them.
func (a *adminState) retire(old, next *backend.Set) {
	kept := next.Nodes()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, n := range old.Nodes() {
		if !slices.Contains(kept, n) {
			a.retired = append(a.retired, n.Pool())
		}
	}
}

// closing counts the server connections that close when they come back:
// those of pools a reload retired, and those RECONNECT or KILL marked in
// the running pools.
func (a *adminState) closing(current *backend.Set) int {
	a.mu.Lock()
	a.retired = slices.DeleteFunc(a.retired, func(p *pool.Pool) bool { return p.Stats().Active == 0 })
	n := 0
	for _, p := range a.retired {
		n += p.Stats().Active
	}
	a.mu.Unlock()
	for _, node := range current.Nodes() {
		n += node.Pool().Stats().CloseNeeded
	}
	return n
}

// statsPeriod holds two snapshots of a pool's counters: the averages of
// SHOW STATS are over the last completed period between them, as
// PgBouncer's are over its last stats_period.
type statsPeriod struct {
	older, newer pool.Stats
	olderAt      time.Time
	newerAt      time.Time
}

// statsPeriodLength is PgBouncer's default stats_period.
const statsPeriodLength = 60 * time.Second

// averages returns the pool's counters now, and the counters and length
// of the last completed period (zero before one has completed).
func (a *adminState) averages(p *pool.Pool, now time.Time) (cur, delta pool.Stats, period time.Duration) {
	cur = p.Stats()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.periods == nil {
		a.periods = make(map[*pool.Pool]*statsPeriod)
	}
	sp := a.periods[p]
	switch {
	case sp == nil:
		// A pool seen first: forget those a reload replaced.
		for old := range a.periods {
			if old.Closed() {
				delete(a.periods, old)
			}
		}
		a.periods[p] = &statsPeriod{older: cur, newer: cur, olderAt: now, newerAt: now}
		return cur, pool.Stats{}, 0
	case now.Sub(sp.newerAt) >= statsPeriodLength:
		sp.older, sp.olderAt = sp.newer, sp.newerAt
		sp.newer, sp.newerAt = cur, now
	}
	period = sp.newerAt.Sub(sp.olderAt)
	return cur, pool.Stats{
		Xacts: sp.newer.Xacts - sp.older.Xacts, Queries: sp.newer.Queries - sp.older.Queries,
		Received: sp.newer.Received - sp.older.Received, Sent: sp.newer.Sent - sp.older.Sent,
		Assignments: sp.newer.Assignments - sp.older.Assignments,
		XactTime:    sp.newer.XactTime - sp.older.XactTime, QueryTime: sp.newer.QueryTime - sp.older.QueryTime,
		WaitTime: sp.newer.WaitTime - sp.older.WaitTime,
	}, period
}
