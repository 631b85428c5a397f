package backend

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardgate/shardgate/metrics"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/topology"
)

// Deps is what a Set needs from the server that runs it.
type Deps struct {
	Log     *slog.Logger
	Metrics *metrics.Metrics // the pools' series and the ban counter
}

// Set is the nodes of one topology: a primary and its replicas per shard,
// with their pools and monitors. A server serves one Set at a time and
// swaps it as a whole (reload); a new Set takes over the nodes of the old
// one whose server is unchanged.
type Set struct {
	cfg  *topology.Config
	deps Deps

	primaries []*Node   // configured primary, by shard index; see Primary
	replicas  [][]*Node // by shard index, in config order
	// floors: by shard index, the position a replica must have replayed
	// before it serves any read (SetReadFloor); 0: none.
	floors []uint64

	// Shared with the Set this one replaces, so promotions stay serialised
	// and round-robin carries on across reloads.
	promoteMu   *sync.Mutex // serialises replica promotions
	nextAny     *atomic.Uint32
	nextReplica *atomic.Uint32
}

// errNoPrimary refuses work that needs a shard's primary while it is down.
type errNoPrimary struct{ shard string }

func (e errNoPrimary) Error() string {
	return "shard " + e.shard + " has no reachable primary"
}

// New gives cfg's servers a node each (pool and monitor), reusing (and
// resizing) those of old, which may be nil, whose DSN is unchanged. The
// monitors of new nodes start with Start once the Set is the server's.
func New(cfg *topology.Config, old *Set, deps Deps) (*Set, error) {
	s := &Set{cfg: cfg, deps: deps, promoteMu: new(sync.Mutex), nextAny: new(atomic.Uint32), nextReplica: new(atomic.Uint32)}
	if old != nil {
		s.promoteMu, s.nextAny, s.nextReplica = old.promoteMu, old.nextAny, old.nextReplica
	}
	if err := s.openPools(old); err != nil {
		return nil, err
	}
	s.floors = make([]uint64, len(s.primaries))
	if old != nil {
		// A floor outlives reloads while the shard keeps its primary.
		for i, n := range s.primaries {
			if i < len(old.primaries) && old.primaries[i] == n {
				s.floors[i] = old.floors[i]
			}
		}
	}
	return s, nil
}

// shardName is the shard part of the node's name ("s0" of "s0/replica1").
func (n *Node) shardName() string {
	name, _, _ := strings.Cut(n.name, "/")
	return name
}

// SetReadFloor makes shard's replicas serve reads only once they have
// replayed lsn: after a reshard switched the shard to new servers, a
// replica behind the switch point would miss writes made before it. Call
// it before the Set serves.
func (s *Set) SetReadFloor(shard int, lsn uint64) {
	s.floors[shard] = max(s.floors[shard], lsn)
}

// ReadFloor is shard's read floor (SetReadFloor); 0: none.
func (s *Set) ReadFloor(shard int) uint64 { return s.floors[shard] }

// openPools gives s a node per server, reusing old's where it can.
func (s *Set) openPools(old *Set) error {
	var oldNodes []*Node
	if old != nil && old.cfg.ServerTLS == s.cfg.ServerTLS {
		oldNodes = old.Nodes()
	}
	get := func(shard int, replica bool, name, dsn string) (*Node, error) {
		pc := poolConfig(s.cfg, shard, name, dsn)
		for _, n := range oldNodes {
			// A renamed shard gets new pools even on the same server: its
			// series and the nodes' names carry the shard's name.
			if n.shard == shard && n.replica == replica && n.dsn == pc.DSN && n.shardName() == s.cfg.Shards[shard].Name && !slices.Contains(s.Nodes(), n) {
				n.pool.Resize(pc)
				return n, nil
			}
		}
		pc.Observer = s.deps.Metrics.Server(s.cfg.Shards[shard].Name, roleName(replica), name)
		p, err := pool.New(pc)
		if err != nil {
			return nil, err
		}
		n := newNode(p, pc.DSN, shard, replica, name)
		n.owner.Store(s)
		return n, nil
	}
	s.replicas = make([][]*Node, len(s.cfg.Shards))
	for i, sh := range s.cfg.Shards {
		n, err := get(i, false, sh.Name+"/primary", sh.Primary)
		if err != nil {
			s.CloseExcept(old)
			return err
		}
		s.primaries = append(s.primaries, n)
		for j, dsn := range sh.Replicas {
			n, err := get(i, true, fmt.Sprintf("%s/replica%d", sh.Name, j), dsn)
			if err != nil {
				s.CloseExcept(old)
				return err
			}
			s.replicas[i] = append(s.replicas[i], n)
		}
	}
	return nil
}

// Start makes s the Set its nodes answer to and starts the health checks
// of those not yet checked.
func (s *Set) Start() {
	for _, n := range s.Nodes() {
		n.owner.Store(s)
		n.start()
	}
}

// CloseExcept closes the nodes of s that keep, which may be nil, does not
// share: after a swap, the old Set's servers the new one dropped (their
// lent connections close as they come back).
func (s *Set) CloseExcept(keep *Set) {
	var kept []*Node
	if keep != nil {
		kept = keep.Nodes()
	}
	for _, n := range s.Nodes() {
		if !slices.Contains(kept, n) {
			n.close()
		}
	}
}

// Close stops every node of s.
func (s *Set) Close() { s.CloseExcept(nil) }

// Nodes lists every server of s: primaries, then replicas.
func (s *Set) Nodes() []*Node {
	out := slices.Clone(s.primaries)
	for _, reps := range s.replicas {
		out = append(out, reps...)
	}
	return out
}

// Shards is the number of shards.
func (s *Set) Shards() int { return len(s.primaries) }

// Replicas are shard's replicas, in config order.
func (s *Set) Replicas(shard int) []*Node { return s.replicas[shard] }

// Primary is the node that takes shard's writes: its configured primary,
// or the replica promoted in its place (see Node.probe).
func (s *Set) Primary(shard int) *Node {
	for _, r := range s.replicas[shard] {
		if r.promoted.Load() {
			return r
		}
	}
	return s.primaries[shard]
}

// PrimaryPool is the pool for anything that needs shard's primary. While
// that primary is down (banned after a failed probe) it refuses at once (errNoPrimary, 08006) rather
// than let the client wait server_connect_timeout.
func (s *Set) PrimaryPool(shard int) (*pool.Pool, error) {
	n := s.Primary(shard)
	if n.Down() {
		return nil, errNoPrimary{s.cfg.Shards[shard].Name}
	}
	return n.pool, nil
}

// AnyShard spreads statements any shard can answer across shards, passing
// over shards whose primary is down while another's is up.
func (s *Set) AnyShard() int {
	n := len(s.primaries)
	first := int(s.nextAny.Add(1) % uint32(n))
	for i := range n {
		if shard := (first + i) % n; !s.Primary(shard).Down() {
			return shard
		}
	}
	return first
}

// poolConfig configures the pool of one server of shard: the shard's own
// sizes (PoolSizes) over the global ones.
func poolConfig(cfg *topology.Config, shard int, name, dsn string) pool.Config {
	pc := cfg.Pool
	size, minSize, reserve := cfg.PoolSizes(shard)
	return pool.Config{
		Name:           name,
		DSN:            withServerTLS(dsn, cfg.ServerTLS),
		Size:           size,
		MinSize:        minSize,
		ReserveSize:    reserve,
		ReserveTimeout: time.Duration(pc.ReserveTimeout),
		WaitTimeout:    time.Duration(pc.QueryWaitTimeout),
		ConnectTimeout: time.Duration(pc.ServerConnectTimeout),
		IdleTimeout:    time.Duration(pc.ServerIdleTimeout),
		Lifetime:       time.Duration(pc.ServerLifetime),
		CheckDelay:     time.Duration(pc.ServerCheckDelay),
		QueryTimeout:   time.Duration(pc.QueryTimeout),
		KeepAlive:      KeepAlive(pc),
	}
}

// KeepAlive is the TCP keepalive setting for client and server sockets.
func KeepAlive(pc topology.PoolConfig) net.KeepAliveConfig {
	count := pc.TCPKeepCount
	if count == 0 {
		count = -1 // the OS default
	}
	return net.KeepAliveConfig{Enable: pc.TCPKeepalive, Idle: time.Duration(pc.TCPKeepIdle), Interval: time.Duration(pc.TCPKeepInterval), Count: count}
}

// withServerTLS applies server_tls to a DSN as libpq parameters, so pgconn
// negotiates and verifies exactly as libpq would.
func withServerTLS(dsn string, st topology.ServerTLSConfig) string {
	if st.Mode == "" {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn // validated already; pool.New reports anything left
	}
	q := u.Query()
	q.Set("sslmode", st.Mode)
	if st.CA != "" {
		q.Set("sslrootcert", st.CA)
	}
	u.RawQuery = q.Encode()
	return u.String()
}
