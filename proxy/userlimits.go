package proxy

import (
	"sync"
	"sync/atomic"

	"github.com/shardgate/shardgate/backend"
	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/topology"
)

// Per-user pool settings (the config's users section, PgBouncer's
// [users]). A client finds its user's state once, at login; a user the
// section does not name gets none, so its clients pay nothing for the
// feature on any transaction.

// userRegistry is the named users' states. It outlives reloads: a user's
// client count and held connections carry over, and the limits change in
// place. A user dropped from the section keeps its state, without limits,
// so that the clients that logged in under it still count should it come
// back; a user added counts the clients that log in from then on.
type userRegistry struct {
	mu    sync.Mutex
	users map[string]*userState
}

// userState is one named user's limits and what its clients use of them.
type userState struct {
	// poolSize is read on every acquire of the user's clients, without mu.
	poolSize atomic.Int64

	mu       sync.Mutex
	named    bool // the users section names the user
	mode     string
	maxConns int
	conns    int                        // logged-in clients, refused ones until they close
	quotas   map[*pool.Pool]*pool.Quota // pool_size, per server pool
}

// apply takes a config's users section; set is its servers. Quotas of
// pools set no longer has are forgotten (their lent connections still give
// their place back, to nobody).
func (r *userRegistry) apply(users map[string]topology.UserPoolConfig, set *backend.Set) {
	live := make(map[*pool.Pool]bool)
	for _, n := range set.Nodes() {
		live[n.Pool()] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.users == nil {
		r.users = make(map[string]*userState, len(users))
	}
	for name, st := range r.users {
		if _, ok := users[name]; !ok {
			st.set(topology.UserPoolConfig{}, false, live)
		}
	}
	for name, u := range users {
		st := r.users[name]
		if st == nil {
			st = &userState{quotas: make(map[*pool.Pool]*pool.Quota)}
			r.users[name] = st
		}
		st.set(u, true, live)
	}
}

// lookup is user's state; nil: the users section does not name it.
func (r *userRegistry) lookup(user string) *userState {
	r.mu.Lock()
	st := r.users[user]
	r.mu.Unlock()
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.named {
		return nil
	}
	return st
}

func (st *userState) set(u topology.UserPoolConfig, named bool, live map[*pool.Pool]bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.named, st.mode, st.maxConns = named, u.PoolMode, u.MaxUserClientConnections
	st.poolSize.Store(int64(u.PoolSize))
	for p, q := range st.quotas {
		if live[p] {
			q.SetMax(u.PoolSize)
		} else {
			delete(st.quotas, p)
		}
	}
}

// enter counts a client of the user in and reports whether
// max_user_client_connections allows it; either way leave counts it out.
func (st *userState) enter() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.conns++
	return st.maxConns <= 0 || st.conns <= st.maxConns
}

func (st *userState) leave() {
	st.mu.Lock()
	st.conns--
	st.mu.Unlock()
}

// quota is the user's quota in p; nil without pool_size.
func (st *userState) quota(p *pool.Pool) *pool.Quota {
	n := int(st.poolSize.Load())
	if n <= 0 {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	q := st.quotas[p]
	if q == nil {
		q = pool.NewQuota(n)
		st.quotas[p] = q
	}
	return q
}

// enterUser applies the user's settings to a client logging in: the pool
// mode, and max_user_client_connections, which refuses it as PgBouncer does.
func (c *client) enterUser(user string) error {
	st := c.srv.users.lookup(user)
	if st == nil {
		return nil
	}
	c.user = st
	ok := st.enter()
	st.mu.Lock()
	mode, max := st.mode, st.maxConns
	st.mu.Unlock()
	if !ok {
		c.log().Info("refusing client: max_user_client_connections reached", "user", user, "max_user_client_connections", max)
		return c.fatal(pgerr.CodeTooManyConnections, "no more connections allowed (max_user_client_connections)")
	}
	if mode != "" {
		c.mode = mode
	}
	return nil
}

// lend acquires a connection of p for the client, within its user's
// pool_size.
func (c *client) lend(p *pool.Pool) (*pool.Conn, error) {
	if c.user == nil {
		return p.Acquire(c.ctx)
	}
	return p.AcquireUnder(c.ctx, c.user.quota(p))
}
