package pool

import (
	"errors"
	"testing"
	"time"
)

// TestQuota: a quota of 1 makes its second client wait for the first's
// connection while clients outside it get theirs; the wait ends at
// WaitTimeout, and a raised cap lets a waiter in at once.
func TestQuota(t *testing.T) {
	p := newPool(t, 3, 300*time.Millisecond)
	ctx := t.Context()
	q := NewQuota(1)
	a, err := p.AcquireUnder(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if _, err := p.AcquireUnder(ctx, q); !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("second connection under a quota of 1: %v, want ErrWaitTimeout", err)
	}
	if waited := time.Since(began); waited < 250*time.Millisecond || waited > 2*time.Second {
		t.Fatalf("waited %s, want about the 300ms wait timeout", waited)
	}
	other, err := p.Acquire(ctx)
	if err != nil {
		t.Fatalf("a client outside the quota: %v", err)
	}
	p.Release(other)

	got := make(chan *Conn, 1)
	go func() {
		c, err := p.AcquireUnder(ctx, q)
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case <-got:
		t.Fatal("the quota let a second connection out")
	default:
	}
	p.Release(a)
	b := <-got
	if b == nil || q.Held() != 1 {
		t.Fatalf("after the first came back: conn %v, held %d, want a connection and 1 held", b, q.Held())
	}

	go func() {
		c, err := p.AcquireUnder(ctx, q)
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	time.Sleep(50 * time.Millisecond)
	q.SetMax(2)
	select {
	case c := <-got:
		p.Release(c)
	case <-time.After(time.Second):
		t.Fatal("raising the cap left the waiter waiting")
	}
	p.Release(b)
	if q.Held() != 0 {
		t.Fatalf("held %d after every connection came back, want 0", q.Held())
	}
}
