package proxy

import (
	"container/list"
	"sync"
	"time"
)

// Session tokens carry read-your-writes across connections: a client that
// sets shardgate.session shares its write positions with every client that
// sets the same token. The server keeps, per token, the highest WAL
// position written on each shard through it; a client setting the token
// inherits those positions (the max with its own), and each write a client
// with a token records is merged back.

const (
	tokenCapacity = 100_000          // tokens kept; the least recently used go first
	tokenTTL      = 10 * time.Minute // a token not written or set for this long is forgotten
)

// tokenStore is a bounded LRU map token -> per-shard WAL positions whose
// entries expire tokenTTL after their last use.
type tokenStore struct {
	mu       sync.Mutex
	capacity int
	ttl      time.Duration
	now      func() time.Time
	byToken  map[string]*list.Element
	lru      list.List // of *tokenEntry, most recently used first
}

type tokenEntry struct {
	token string
	lsns  []uint64 // by shard; rywNone: a write whose position is unknown
	used  time.Time
}

func newTokenStore(capacity int, ttl time.Duration) *tokenStore {
	return &tokenStore{capacity: capacity, ttl: ttl, now: time.Now, byToken: make(map[string]*list.Element)}
}

// record merges a write on shard at lsn into token's positions. A known
// position replaces an unknown one (rywNone), as a client's own next
// captured write does; otherwise the higher position wins.
func (s *tokenStore) record(token string, shard int, lsn uint64) {
	if lsn == 0 || shard < 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.expire(now)
	var e *tokenEntry
	if el, ok := s.byToken[token]; ok {
		e = el.Value.(*tokenEntry)
		s.lru.MoveToFront(el)
	} else {
		for s.lru.Len() >= s.capacity {
			s.remove(s.lru.Back())
		}
		e = &tokenEntry{token: token}
		s.byToken[token] = s.lru.PushFront(e)
	}
	e.used = now
	for len(e.lsns) <= shard {
		e.lsns = append(e.lsns, 0)
	}
	if old := e.lsns[shard]; old == rywNone || lsn == rywNone || lsn > old {
		e.lsns[shard] = lsn
	}
}

// merge raises into's positions to token's (max, rywNone highest) and
// returns the result; into may be nil. It refreshes the token.
func (s *tokenStore) merge(token string, into []uint64) []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.expire(now)
	el, ok := s.byToken[token]
	if !ok {
		return into
	}
	e := el.Value.(*tokenEntry)
	e.used = now
	s.lru.MoveToFront(el)
	for len(into) < len(e.lsns) {
		into = append(into, 0)
	}
	for i, l := range e.lsns {
		into[i] = max(into[i], l)
	}
	return into
}

// expire drops the entries unused for ttl: they sit at the back.
func (s *tokenStore) expire(now time.Time) {
	for el := s.lru.Back(); el != nil && now.Sub(el.Value.(*tokenEntry).used) > s.ttl; el = s.lru.Back() {
		s.remove(el)
	}
}

func (s *tokenStore) remove(el *list.Element) {
	delete(s.byToken, el.Value.(*tokenEntry).token)
	s.lru.Remove(el)
}

// len is the number of tokens kept.
func (s *tokenStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len()
}

// sessionToken is the client's shardgate.session, or "".
func (c *client) sessionToken() string {
	if c.sess.sessionHint == nil {
		return ""
	}
	return c.sess.sessionHint.Session
}

// inheritToken gives the client the write positions of its session token.
func (c *client) inheritToken() {
	token := c.sessionToken()
	if token == "" || c.srv.tokens == nil {
		return
	}
	if c.sess.ryw == nil {
		c.sess.ryw = make([]uint64, c.srv.rt.Load().backends.Shards())
	}
	c.sess.ryw = c.srv.tokens.merge(token, c.sess.ryw)
}

// shareWrite merges a write the client recorded into its session token's
// positions.
func (c *client) shareWrite(shard int, lsn uint64) {
	if token := c.sessionToken(); token != "" && c.srv.tokens != nil {
		c.srv.tokens.record(token, shard, lsn)
	}
}
