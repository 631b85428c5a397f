package router

import (
	"fmt"
	"strings"
	"testing"
)

// TestHugeStatementsAreNotCached: a 100,000-value IN list is analysed and
// routed, then nothing of it stays behind in the cache.
func TestHugeStatementsAreNotCached(t *testing.T) {
	r := testRouter(t)
	var s Scratch
	for i := range 3 {
		sql := inListSQL(100_000 + i) // a distinct statement each time
		a, params, _ := r.AnalyzeSimple(sql, &s)
		if p := r.Route(a, params, nil); p.Target != TargetMulti || p.Scatter == nil {
			t.Fatalf("plan %s %v", p.Target, p.Err)
		}
	}
	if st := r.CacheStats(); st.Size != 0 || st.Bytes != 0 {
		t.Fatalf("cache holds %d entries, %d bytes", st.Size, st.Bytes)
	}
}

// TestCacheIsBoundedByBytes: many distinct statements just under the
// size limit evict each other long before the entry limit.
func TestCacheIsBoundedByBytes(t *testing.T) {
	r := New(testRouter(t).Topology(), 100_000)
	pad := strings.Repeat(" ", maxCachedKey-100)
	for i := range 2 * cacheBytes / maxCachedKey {
		a, _ := r.Analyze(fmt.Appendf(nil, "SELECT %d%s", i, pad))
		if a.Err != nil {
			t.Fatal(a.Err)
		}
	}
	st := r.CacheStats()
	if st.Bytes > cacheBytes || st.Size > cacheBytes/(maxCachedKey-100) || st.Size < cacheBytes/maxCachedKey/2 {
		t.Fatalf("cache holds %d entries, %d bytes (budget %d)", st.Size, st.Bytes, cacheBytes)
	}
	r.SetTopology(r.Topology())
	if st := r.CacheStats(); st.Bytes != 0 || st.Size != 0 {
		t.Fatalf("cleared cache holds %d entries, %d bytes", st.Size, st.Bytes)
	}
}
