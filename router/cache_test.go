package router

import (
	"fmt"
	"strings"
	"testing"
	"time"
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

// TestBigParsesTakeTurns: while one text over bigStatement is being parsed,
// another waits its turn, and an ordinary statement does not.
func TestBigParsesTakeTurns(t *testing.T) {
	r := testRouter(t)
	big := []byte("SELECT * FROM users WHERE id IN (" + strings.Repeat("1,", bigStatement/2) + "1)")
	r.bigParse <- struct{}{} // a big parse under way
	done := make(chan *Analysis, 1)
	go func() { a, _ := r.Analyze(big); done <- a }()
	if a, _ := r.Analyze([]byte("SELECT * FROM users WHERE id = 1")); a.Err != nil {
		t.Fatal(a.Err)
	}
	select {
	case <-done:
		t.Fatal("a second big parse ran beside the first")
	case <-time.After(200 * time.Millisecond):
	}
	<-r.bigParse
	if a := <-done; a.Err != nil {
		t.Fatalf("the big statement, once its turn came: %v", a.Err)
	}
}
