package router

import (
	"sync"
	"sync/atomic"
)

// planCache holds analyses by SQL text (or normalised text). Eviction is
// approximately least-recently-used, as in Redis: a hit only stamps its
// entry with a clock (no write lock on the hot path), and a full cache
// evicts the stalest of a few sampled entries.
//
// It is bounded by bytes as well as entries: an analysis grows with its
// text (a 100,000-value IN list keeps 100,000 key references), and one
// distinct huge statement after another would otherwise pin gigabytes.
// Texts over maxCachedKey are never cached: they are rarely sent twice,
// and analysing one costs little more than the parse the server spends on
// it anyway.
type planCache struct {
	mu       sync.RWMutex
	entries  map[string]*cacheEntry
	capacity int
	bytes    int // keys' total length

	clock, hits, misses atomic.Int64
}

type cacheEntry struct {
	a    *Analysis
	used atomic.Int64
}

const (
	// maxCachedKey is the longest text the cache keeps: ORM statements
	// with IN lists of a few thousand values still fit.
	maxCachedKey = 32 << 10
	// cacheBytes bounds the keys' total length; the analyses they hold
	// take a few times as much.
	cacheBytes = 16 << 20
)

// evictionSample is how many entries a full cache compares to find a
// stale one: Redis found 5-10 close to true LRU.
const evictionSample = 8

func newPlanCache(capacity int) *planCache {
	if capacity < 1 {
		capacity = 1
	}
	return &planCache{entries: make(map[string]*cacheEntry), capacity: capacity}
}

// get looks up key without copying it; the []byte-to-string conversion in
// a map index does not allocate.
func (c *planCache) get(key []byte) *Analysis {
	c.mu.RLock()
	e := c.entries[string(key)]
	c.mu.RUnlock()
	if e == nil {
		c.misses.Add(1)
		return nil
	}
	c.hits.Add(1)
	e.used.Store(c.clock.Add(1))
	return e.a
}

func (c *planCache) put(key string, a *Analysis) {
	if len(key) > maxCachedKey {
		return
	}
	e := &cacheEntry{a: a}
	e.used.Store(c.clock.Add(1))
	c.mu.Lock()
	if _, ok := c.entries[key]; !ok {
		for len(c.entries) > 0 && (len(c.entries) >= c.capacity || c.bytes+len(key) > cacheBytes) {
			c.evictLocked()
		}
		c.bytes += len(key)
	}
	c.entries[key] = e
	c.mu.Unlock()
}

func (c *planCache) evictLocked() {
	victim, oldest, n := "", int64(-1), 0
	for k, e := range c.entries { // map order is random: a random sample
		if used := e.used.Load(); oldest < 0 || used < oldest {
			victim, oldest = k, used
		}
		if n++; n == evictionSample {
			break
		}
	}
	delete(c.entries, victim)
	c.bytes -= len(victim)
}

func (c *planCache) clear() {
	c.mu.Lock()
	clear(c.entries)
	c.bytes = 0
	c.mu.Unlock()
}

// CacheStats describes the plan cache, for the admin console.
type CacheStats struct {
	Size, Capacity int
	Bytes          int // the cached texts' total length
	Hits, Misses   int64
}

// HitRatio is hits over lookups, 0 before any lookup.
func (s CacheStats) HitRatio() float64 {
	if s.Hits+s.Misses == 0 {
		return 0
	}
	return float64(s.Hits) / float64(s.Hits+s.Misses)
}

func (c *planCache) stats() CacheStats {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return CacheStats{Size: len(c.entries), Capacity: c.capacity, Bytes: c.bytes, Hits: c.hits.Load(), Misses: c.misses.Load()}
}
