package proxy

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/topology"
)

// TestStatsWindowAverages: a period's line is per second over the time
// that really passed, averages are per transaction and per query, and a
// pool a RELOAD replaced counts from zero rather than going negative.
func TestStatsWindowAverages(t *testing.T) {
	kept, replaced, fresh := &pool.Pool{}, &pool.Pool{}, &pool.Pool{}
	start := time.Unix(1000, 0)
	w := statsWindow{last: start, prev: map[*pool.Pool]pool.Stats{
		kept:     {Xacts: 10, Queries: 30, Received: 1000, Sent: 5000, XactTime: time.Second, QueryTime: time.Second, WaitTime: time.Second},
		replaced: {Xacts: 1000, Queries: 1000, Received: 1 << 20, Sent: 1 << 20, XactTime: time.Hour, QueryTime: time.Hour},
	}}
	got := w.advance(start.Add(2*time.Second), map[*pool.Pool]pool.Stats{
		kept:  {Xacts: 30, Queries: 70, Received: 3000, Sent: 9000, XactTime: time.Second + 40*time.Millisecond, QueryTime: time.Second + 20*time.Millisecond, WaitTime: time.Second + 10*time.Millisecond},
		fresh: {Xacts: 20, Queries: 40, Received: 1000, Sent: 1000, XactTime: 40 * time.Millisecond, QueryTime: 60 * time.Millisecond},
	})
	// 40 xacts, 80 queries, 3000 B in, 5000 B out over 2s; 80ms of
	// transactions, 80ms of queries, 10ms of waiting.
	want := "stats: 20 xacts/s, 40 queries/s, in 1500 B/s, out 2500 B/s, xact 2000 us, query 1000 us, wait 5000 us"
	if got.String() != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if w.last != start.Add(2*time.Second) || len(w.prev) != 2 {
		t.Errorf("the next period starts at %v with %d pools", w.last, len(w.prev))
	}
	idle := w.advance(w.last.Add(time.Second), w.prev)
	if idle.String() != "stats: 0 xacts/s, 0 queries/s, in 0 B/s, out 0 B/s, xact 0 us, query 0 us, wait 0 us" {
		t.Errorf("a period without traffic: %s", idle)
	}
}

// TestUnixSocketInUse: a socket some process answers on is not taken
// over, nor is a file that is not a socket.
func TestUnixSocketInUse(t *testing.T) {
	dir := t.TempDir()
	cfg := &topology.Config{UnixSocketDir: dir, UnixSocketMode: 0o777}
	live, err := net.Listen("unix", UnixSocketPath(dir, 7001))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if _, err := listenUnix(cfg, 7001); err == nil || !strings.Contains(err.Error(), "is in use") {
		t.Errorf("listening over a live socket: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".s.PGSQL.7002"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenUnix(cfg, 7002); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("listening over a regular file: %v", err)
	}
	cfg.UnixSocketGroup = "no-such-group-sg"
	if _, err := listenUnix(cfg, 7003); err == nil || !strings.Contains(err.Error(), "unix_socket_group") {
		t.Errorf("unknown group: %v", err)
	}
	if _, err := os.Lstat(UnixSocketPath(dir, 7003)); !os.IsNotExist(err) {
		t.Errorf("the socket of a failed listen stays: %v", err)
	}
}
