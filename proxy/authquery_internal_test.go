package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardgate/shardgate/backend"
	"github.com/shardgate/shardgate/metrics"
	"github.com/shardgate/shardgate/topology"
)

// Blackhole is, for the external tests, a server that hangs: it accepts
// connections and never answers.
func Blackhole(t *testing.T) string {
	addr, _ := countingBlackhole(t)
	return addr
}

// countingBlackhole accepts connections, counts them and never answers.
func countingBlackhole(t *testing.T) (addr string, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int32)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), accepted
}

// TestAuthQuerySharesAndBounds: logins of one user share one run of the
// query; logins of many users hold at most authQueryConns connections; and
// every lookup ends with its caller's context.
func TestAuthQuerySharesAndBounds(t *testing.T) {
	addr, accepted := countingBlackhole(t)
	cfg, err := topology.ParseConfig("t.yaml", []byte(`database: app
shards:
  - {name: s0, primary: "postgres://u@`+addr+`/app?sslmode=disable"}
keyspace:
  - {range: "-", shard: s0}
auth:
  type: md5
  query: SELECT usename, passwd FROM pg_shadow WHERE usename = $1
pool:
  server_connect_timeout: 10s
`))
	if err != nil {
		t.Fatal(err)
	}
	set, err := backend.New(cfg, nil, backend.Deps{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics.New()})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	q := newAuthQuery(cfg)
	// lookups runs concurrent lookups of users on the hung server and
	// returns how many connections it had accepted while they waited.
	lookups := func(users ...string) int32 {
		t.Helper()
		before := accepted.Load()
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		var wg sync.WaitGroup
		for _, u := range users {
			wg.Go(func() {
				if res := q.lookup(ctx, set, u); !errors.Is(res.err, context.DeadlineExceeded) {
					t.Errorf("lookup of %s on a hung server: got %+v, want the caller's deadline", u, res)
				}
			})
		}
		time.Sleep(200 * time.Millisecond)
		opened := accepted.Load() - before
		wg.Wait()
		// Runs whose logins all gave up are cancelled: forgotten at once,
		// and their connections closed soon after.
		q.mu.Lock()
		calls := len(q.calls)
		q.mu.Unlock()
		if calls != 0 {
			t.Fatalf("%d runs still shared after their logins gave up", calls)
		}
		drained(t, q)
		return opened
	}
	if n := lookups("bob", "bob", "bob", "bob", "bob", "bob", "bob", "bob"); n != 1 {
		t.Fatalf("8 concurrent logins of one user opened %d connections, want 1", n)
	}
	if n := lookups("u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"); n != authQueryConns {
		t.Fatalf("8 concurrent logins of 8 users opened %d connections, want %d", n, authQueryConns)
	}
}

// drained waits until q's cancelled runs have closed their connections.
func drained(t *testing.T, q *authQuery) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); len(q.slots) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connection slots still held 5s after their logins gave up", len(q.slots))
		}
	}
}
