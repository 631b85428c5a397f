// Package backend holds the servers behind the proxy: every server
// (primary or replica) of a topology is a Node with a pool and a monitor
// that probes it every health_check_interval on a dedicated connection. A
// Set is the nodes of one topology, the unit swapped on reload; it knows
// which node takes a shard's writes (promoting a replica the primary was
// failed over to) and which replica should serve a read. What a client
// remembers of its own writes (read-your-writes) stays with the client.
package backend

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardgate/shardgate/pool"
)

// Node is one server of a shard and what the monitor knows of it.
type Node struct {
	pool    *pool.Pool
	dsn     string
	shard   int
	replica bool
	name    string // "s0/primary", "s0/replica1"
	// owner is the Set now serving the node: its config and its view of
	// the shard's primary. A node kept across a reload answers to the new
	// Set once that one starts (Set.Start).
	owner atomic.Pointer[Set]

	healthy     atomic.Bool
	lsn         atomic.Uint64 // primary: current WAL position; replica: replay position
	lagBytes    atomic.Int64
	lagMicros   atomic.Int64
	outstanding atomic.Int32 // connections lent to clients by the proxy
	// bannedUntil is when the node's ban expires (UnixNano); 0: not banned.
	// Only the monitor lifts a ban, after a probe that began past it succeeds.
	bannedUntil atomic.Int64
	// promoted: a replica that now takes its shard's writes in place of
	// the configured primary (Set.Primary).
	promoted   atomic.Bool
	splitBrain atomic.Bool // a replaced primary is up and not in recovery (logged once)
	// wanted is the highest position a read needed this replica to have
	// replayed; while lsn is below it the monitor polls (replay.go).
	wanted   atomic.Uint64
	wantedAt atomic.Int64  // when wanted last rose (UnixNano)
	poke     chan struct{} // wakes the monitor when wanted rises

	stop      chan struct{}
	done      chan struct{}
	stopOnce  sync.Once
	startOnce sync.Once
}

func newNode(p *pool.Pool, dsn string, shard int, replica bool, name string) *Node {
	return &Node{pool: p, dsn: dsn, shard: shard, replica: replica, name: name,
		poke: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// Pool is the node's server connections.
func (n *Node) Pool() *pool.Pool { return n.pool }

// DSN is the server's address as the pool dials it.
func (n *Node) DSN() string { return n.dsn }

// Shard is the index of the node's shard.
func (n *Node) Shard() int { return n.shard }

// Name is the node's name in logs and metrics: "s0/primary", "s0/replica1".
func (n *Node) Name() string { return n.name }

// Replica reports whether the node is configured as a replica.
func (n *Node) Replica() bool { return n.replica }

// Healthy reports whether the node's last probe succeeded.
func (n *Node) Healthy() bool { return n.healthy.Load() }

// LSN is the node's WAL position as of its last probe: the current one on
// a primary, the replay position on a replica.
func (n *Node) LSN() uint64 { return n.lsn.Load() }

// LagBytes is how much WAL the replica had yet to replay at its last probe.
func (n *Node) LagBytes() int64 { return n.lagBytes.Load() }

// LagSeconds is the replica's replay lag at its last probe.
func (n *Node) LagSeconds() float64 { return float64(n.lagMicros.Load()) / 1e6 }

// BannedUntil is when the node's ban expires; zero when not banned (a past
// time while it waits for a good probe).
func (n *Node) BannedUntil() time.Time {
	until := n.bannedUntil.Load()
	if until == 0 {
		return time.Time{}
	}
	return time.Unix(0, until)
}

// Role is the node's configured role, as metrics and logs label it: a
// promoted replica stays "replica".
func (n *Node) Role() string { return roleName(n.replica) }

func roleName(replica bool) string {
	if replica {
		return "replica"
	}
	return "primary"
}

// Banned reports whether the node is banned.
func (n *Node) Banned() bool { return n.bannedUntil.Load() != 0 }

// Down reports whether the node is banned and its last probe failed: a
// ban for one broken connection alone does not make a primary down.
func (n *Node) Down() bool { return n.Banned() && !n.healthy.Load() }

// Ban keeps new reads off the node for ban_time and until a probe succeeds
// after that, and closes its idle connections, which a failure of the
// server has most likely broken too.
func (n *Node) Ban(reason error) {
	set := n.owner.Load()
	until := time.Now().Add(time.Duration(set.cfg.BanTime)).UnixNano()
	for {
		old := n.bannedUntil.Load()
		if old >= until {
			return
		}
		if n.bannedUntil.CompareAndSwap(old, until) {
			if old == 0 {
				set.deps.Metrics.Ban(set.cfg.Shards[n.shard].Name, n.Role(), n.name)
				set.deps.Log.Warn("server banned", "server", n.name, "until", time.Unix(0, until).Format(time.RFC3339Nano), "reason", reason)
			}
			break
		}
	}
	n.pool.Reconnect()
}

// Lend acquires a connection of the node for a client, within quota q
// (nil: none), and counts it outstanding (what replica choice balances)
// until Returned.
func (n *Node) Lend(ctx context.Context, q *pool.Quota) (*pool.Conn, error) {
	n.outstanding.Add(1)
	sc, err := n.pool.AcquireUnder(ctx, q)
	if err != nil {
		n.outstanding.Add(-1)
		return nil, err
	}
	return sc, nil
}

// Returned ends a loan that Lend counted.
func (n *Node) Returned() { n.outstanding.Add(-1) }
