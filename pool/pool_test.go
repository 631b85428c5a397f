package pool

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/sandbox"
)

var (
	dsn    string
	server *sandbox.Server // the primary behind dsn, for tests that freeze it
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, remove, err := sandbox.StartTemp(ctx, "shardgate-pool-test-", sandbox.Options{Shards: 1, Replicas: sandbox.NoReplicas, Fast: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer remove()
	dsn, server = c.Shards[0].Primary.DSN("app"), c.Shards[0].Primary
	return m.Run()
}

func newPool(t *testing.T, size int, wait time.Duration) *Pool {
	t.Helper()
	p, err := New(Config{Name: "test", DSN: dsn, Size: size, WaitTimeout: wait})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestReuseAndLimit(t *testing.T) {
	p := newPool(t, 2, 200*time.Millisecond)
	ctx := t.Context()
	a, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a.PID == b.PID || a.PID == 0 {
		t.Fatalf("two lent connections share backend pid %d", a.PID)
	}
	if got := p.Stats(); got.Open != 2 || got.Idle != 0 {
		t.Fatalf("stats %+v", got)
	}
	began := time.Now()
	_, err = p.Acquire(ctx)
	if !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("third acquire on a full pool: %v, want ErrWaitTimeout", err)
	}
	if waited := time.Since(began); waited < 150*time.Millisecond {
		t.Fatalf("gave up after %s, before the wait timeout", waited)
	}
	p.Release(b)
	c, err := p.Acquire(ctx)
	if err != nil || c != b {
		t.Fatalf("after release, want the released connection back: %v", err)
	}
	if got := p.Stats(); got.Open != 2 || got.Waiting != 0 {
		t.Fatalf("stats %+v", got)
	}
	p.Release(a)
	p.Release(c)
}

// TestWaitersAreServedInOrder: clients queue FIFO, as in PgBouncer.
func TestWaitersAreServedInOrder(t *testing.T) {
	p := newPool(t, 1, 5*time.Second)
	ctx := t.Context()
	held, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 3)
	for i := 0; i < 3; i++ {
		go func() {
			c, err := p.Acquire(ctx)
			if err != nil {
				t.Error(err)
				order <- -1
				return
			}
			order <- i
			time.Sleep(10 * time.Millisecond)
			p.Release(c)
		}()
		waitFor(t, func() bool { return p.Stats().Waiting == i+1 })
	}
	p.Release(held)
	for want := 0; want < 3; want++ {
		if got := <-order; got != want {
			t.Fatalf("waiter %d served in position %d", got, want)
		}
	}
}

// TestBrokenConnectionFreesItsSlot: a connection marked broken is closed,
// and a waiter gets to dial a fresh one.
func TestBrokenConnectionFreesItsSlot(t *testing.T) {
	p := newPool(t, 1, 5*time.Second)
	ctx := t.Context()
	c, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Conn, 1)
	go func() {
		fresh, err := p.Acquire(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- fresh
	}()
	waitFor(t, func() bool { return p.Stats().Waiting == 1 })
	c.MarkBroken()
	p.Release(c)
	fresh := <-got
	if fresh == nil || fresh.PID == c.PID {
		t.Fatal("waiter did not get a new connection")
	}
	if _, err := c.Write([]byte{'X', 0, 0, 0, 4}); err == nil {
		t.Fatal("broken connection was not closed")
	}
	p.Release(fresh)
	if s := p.Stats(); s.Open != 1 || s.Idle != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestAcquireHonoursContext(t *testing.T) {
	p := newPool(t, 1, time.Minute)
	c, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := p.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's deadline", err)
	}
	if s := p.Stats(); s.Waiting != 0 {
		t.Fatalf("cancelled waiter still queued: %+v", s)
	}
	p.Release(c)
}

func TestConnectFailure(t *testing.T) {
	p, err := New(Config{Name: "nowhere", DSN: "postgres://postgres@127.0.0.1:1/app", Size: 1, WaitTimeout: time.Second, ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Acquire(t.Context()); err == nil {
		t.Fatal("acquire from an unreachable server succeeded")
	}
	if s := p.Stats(); s.Open != 0 {
		t.Fatalf("failed dial kept its slot: %+v", s)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func newPoolCfg(t *testing.T, cfg Config) *Pool {
	t.Helper()
	cfg.Name, cfg.DSN = "test", dsn
	if cfg.WaitTimeout == 0 {
		cfg.WaitTimeout = 5 * time.Second
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// TestReserve: a client that waited ReserveTimeout on a full pool gets one
// of the reserve connections.
func TestReserve(t *testing.T) {
	p := newPoolCfg(t, Config{Size: 1, ReserveSize: 1, ReserveTimeout: 100 * time.Millisecond})
	a, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	b, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(began); waited < 100*time.Millisecond || waited > 3*time.Second {
		t.Fatalf("reserve connection after %s, want after the 100ms reserve timeout", waited)
	}
	if s := p.Stats(); s.Open != 2 {
		t.Fatalf("stats %+v", s)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := p.Acquire(ctx); err == nil {
		t.Fatal("a third connection beyond size+reserve")
	}
	p.Release(a)
	p.Release(b)
}

func TestPauseResume(t *testing.T) {
	p := newPoolCfg(t, Config{Size: 2})
	c, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	paused := make(chan error, 1)
	go func() { paused <- p.Pause(t.Context()) }()
	select {
	case <-paused:
		t.Fatal("Pause returned while a connection was lent")
	case <-time.After(100 * time.Millisecond):
	}
	p.Release(c)
	if err := <-paused; err != nil {
		t.Fatal(err)
	}
	got := make(chan *Conn, 1)
	go func() {
		c, _ := p.Acquire(t.Context())
		got <- c
	}()
	select {
	case <-got:
		t.Fatal("Acquire succeeded on a paused pool")
	case <-time.After(100 * time.Millisecond):
	}
	p.Resume()
	if c := <-got; c == nil {
		t.Fatal("waiter not served after Resume")
	} else {
		p.Release(c)
	}
}

func TestReconnectRetiresConnections(t *testing.T) {
	p := newPoolCfg(t, Config{Size: 2})
	a, _ := p.Acquire(t.Context())
	b, _ := p.Acquire(t.Context())
	p.Release(a)
	p.Reconnect()
	p.Release(b) // lent during RECONNECT: closed on return
	if s := p.Stats(); s.Open != 0 || s.Idle != 0 {
		t.Fatalf("after reconnect: %+v", s)
	}
	c, err := p.Acquire(t.Context())
	if err != nil || c.PID == a.PID || c.PID == b.PID {
		t.Fatalf("after reconnect a new connection is dialled: %v", err)
	}
	p.Release(c)
}

func TestJanitorRetiresIdleAndFillsMinSize(t *testing.T) {
	p := newPoolCfg(t, Config{Size: 4, MinSize: 1, IdleTimeout: 200 * time.Millisecond})
	waitFor(t, func() bool { return p.Stats().Open == 1 }) // min_size opened in the background
	var lent []*Conn
	for i := 0; i < 3; i++ {
		c, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		lent = append(lent, c)
	}
	for _, c := range lent {
		p.Release(c)
	}
	// While all three were lent, the janitor may have opened one more to
	// keep min_size idle.
	if s := p.Stats(); s.Open != 3 && s.Open != 4 {
		t.Fatalf("stats %+v", s)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Open != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("idle connections not retired down to min_size: %+v", p.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCheckBeforeReuse: a connection the server closed while idle is
// detected before it is lent, and replaced.
func TestCheckBeforeReuse(t *testing.T) {
	assertTerminatedNotLent(t, newPoolCfg(t, Config{Size: 1, CheckDelay: time.Millisecond}))
}

// TestTerminatedIdleNotLent: without a check delay, a connection whose
// backend was terminated while idle (its FATAL waits unread) is still not
// lent: that FATAL would reach a client that had nothing to do with it.
func TestTerminatedIdleNotLent(t *testing.T) {
	assertTerminatedNotLent(t, newPoolCfg(t, Config{Size: 1, CheckDelay: time.Hour}))
}

// assertTerminatedNotLent terminates the backend of p's one idle
// connection and checks that the next acquire gets a working new one.
func assertTerminatedNotLent(t *testing.T, p *Pool) {
	t.Helper()
	c, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if c.Pending() {
		t.Fatal("a working idle connection reported stale")
	}
	p.Release(c)
	admin, err := pgconn.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(t.Context(), fmt.Sprintf("SELECT pg_terminate_backend(%d)", c.PID)).ReadAll(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	fresh, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if fresh.PID == c.PID {
		t.Fatal("lent the terminated connection")
	}
	if err := fresh.check(time.Second); err != nil {
		t.Fatalf("replacement connection does not work: %v", err)
	}
	p.Release(fresh)
}

// TestCheckOfFrozenServer: when a server stops answering, the first idle
// connection whose check times out fails the acquire with a ConnectError
// (the caller can go elsewhere) and the other idle connections are
// dropped, instead of being checked one after another.
func TestCheckOfFrozenServer(t *testing.T) {
	p := newPoolCfg(t, Config{Size: 4, CheckDelay: time.Millisecond, ConnectTimeout: 500 * time.Millisecond})
	var conns []*Conn
	for range 4 {
		c, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		p.Release(c)
	}
	time.Sleep(10 * time.Millisecond)
	thaw, err := server.Freeze()
	if err != nil {
		t.Fatal(err)
	}
	defer thaw()
	began := time.Now()
	_, err = p.Acquire(t.Context())
	var ce *ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("acquire from a frozen server: %v, want a ConnectError", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("acquire took %s: idle connections were checked one by one", took)
	}
	if st := p.Stats(); st.Idle != 0 {
		t.Fatalf("%d idle connections kept to a server that does not answer", st.Idle)
	}
	thaw()
	c, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatalf("after the server thawed: %v", err)
	}
	p.Release(c)
}

func TestLifetime(t *testing.T) {
	p := newPoolCfg(t, Config{Size: 1, Lifetime: 50 * time.Millisecond})
	c, _ := p.Acquire(t.Context())
	time.Sleep(100 * time.Millisecond)
	p.Release(c)
	if s := p.Stats(); s.Open != 0 {
		t.Fatalf("connection past its lifetime kept: %+v", s)
	}
}

// TestWaitAllocatesNothing: a client that queues for a busy pool and is
// handed a connection allocates nothing (no waiter, channel or timer per
// wait): with more clients than connections this happens on every
// transaction.
func TestWaitAllocatesNothing(t *testing.T) {
	p := newPool(t, 1, time.Minute)
	c, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	handBack := make(chan *Conn)
	go func() {
		for c := range handBack {
			for !p.hasWaiter() {
				runtime.Gosched()
			}
			p.Release(c)
		}
	}()
	defer close(handBack)
	waited := 0
	allocs := testing.AllocsPerRun(200, func() {
		handBack <- c
		c, err = p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		waited++
	})
	p.Release(c)
	if allocs != 0 {
		t.Fatalf("a wait for a connection allocates %.1f objects; want 0", allocs)
	}
	if s := p.Stats(); s.Waiting != 0 || s.Active != 0 {
		t.Fatalf("after %d waits: %+v", waited, s)
	}
}

func (p *Pool) hasWaiter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.waiters) > 0
}

// TestWaitersTimeOutTogether: one timer serves the whole line, and every
// waiter past its deadline gets ErrWaitTimeout from it.
func TestWaitersTimeOutTogether(t *testing.T) {
	p := newPool(t, 1, 150*time.Millisecond)
	c, err := p.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release(c)
	const n = 5
	errs := make(chan error, n)
	began := time.Now()
	for range n {
		go func() {
			_, err := p.Acquire(t.Context())
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; !errors.Is(err, ErrWaitTimeout) {
			t.Fatalf("waiter got %v; want ErrWaitTimeout", err)
		}
	}
	if took := time.Since(began); took < 150*time.Millisecond || took > 5*time.Second {
		t.Fatalf("waiters timed out after %s; want about 150ms", took)
	}
	if s := p.Stats(); s.Waiting != 0 {
		t.Fatalf("timed-out waiters still queued: %+v", s)
	}
}

func BenchmarkAcquireRelease(b *testing.B) {
	p, err := New(Config{Name: "bench", DSN: dsn, Size: 1, WaitTimeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	b.ReportAllocs()
	for b.Loop() {
		c, err := p.Acquire(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		p.Release(c)
	}
}

// slowStartConn returns from its first write (the startup message) late,
// as a goroutine descheduled on a loaded machine does: pgconn starts its
// background reader when a write during startup takes over 15 ms, and the
// server's answer arrives meanwhile.
type slowStartConn struct {
	net.Conn
	writes *atomic.Int32
}

func (c slowStartConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if c.writes.Add(1) == 1 {
		time.Sleep(40 * time.Millisecond)
	}
	return n, err
}

// TestDialAfterSlowStartup: a connection whose startup had a slow write
// still gets the answer to its first query (pgconn's background reader
// must not survive the takeover and read it).
func TestDialAfterSlowStartup(t *testing.T) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return slowStartConn{conn, new(atomic.Int32)}, nil
	}
	c, err := dial(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{'Q', 0, 0, 0, 5, 0}); err != nil { // an empty query
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		typ, err := c.Reader.ReadByte()
		if err != nil {
			t.Fatalf("first answer of a connection after a slow startup: %v", err)
		}
		var n [4]byte
		if _, err := io.ReadFull(c.Reader, n[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Reader.Discard(int(binary.BigEndian.Uint32(n[:])) - 4); err != nil {
			t.Fatal(err)
		}
		if typ == 'Z' {
			return
		}
	}
}
