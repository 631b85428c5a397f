package proxy

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestTokenStore(t *testing.T) {
	now := time.Unix(1000, 0)
	s := newTokenStore(3, time.Minute)
	s.now = func() time.Time { return now }

	if got := s.merge("a", nil); got != nil {
		t.Fatalf("unknown token gave %v", got)
	}
	s.record("a", 1, 100)
	s.record("a", 1, 50) // lower: kept at 100
	s.record("a", 0, 7)
	if got := s.merge("a", []uint64{9, 0, 0}); !slices.Equal(got, []uint64{9, 100, 0}) {
		t.Fatalf("merge: %v", got)
	}
	// An unknown position wins over a known one and is replaced by the
	// next known one.
	s.record("a", 0, rywNone)
	if got := s.merge("a", nil); got[0] != rywNone {
		t.Fatalf("rywNone not kept: %v", got)
	}
	s.record("a", 0, 3)
	if got := s.merge("a", nil); got[0] != 3 {
		t.Fatalf("known position after rywNone: %v", got)
	}

	// Capacity: the least recently used token goes.
	s.record("b", 0, 1)
	s.record("c", 0, 1)
	s.merge("a", nil) // a is now the most recently used
	s.record("d", 0, 1)
	if s.len() != 3 || s.merge("b", nil) != nil || s.merge("a", nil) == nil {
		t.Fatalf("LRU eviction: len %d, b %v, a %v", s.len(), s.merge("b", nil), s.merge("a", nil))
	}

	// Expiry.
	now = now.Add(2 * time.Minute)
	if got := s.merge("a", nil); got != nil {
		t.Fatalf("expired token gave %v", got)
	}
	if s.len() != 0 {
		t.Fatalf("%d tokens left after expiry", s.len())
	}
}

func TestTokenStoreBounded(t *testing.T) {
	s := newTokenStore(1000, time.Minute)
	for i := range 5000 {
		s.record(fmt.Sprint("t", i), i%3, uint64(i+1))
	}
	if s.len() != 1000 {
		t.Fatalf("%d tokens kept, capacity 1000", s.len())
	}
}
