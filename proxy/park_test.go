package proxy_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/topology"
)

// Parked clients (proxy/park.go): idle clients that wait without a
// goroutine or a read buffer, on an epoll instance, until they speak.

// parked is the shardgate_parked_clients gauge.
func parked(t *testing.T, srv *proxy.Server) int {
	t.Helper()
	return int(series(t, srv, "shardgate_parked_clients", nil))
}

// waitParked waits up to within for the gauge to reach want.
func waitParked(t *testing.T, srv *proxy.Server, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for parked(t, srv) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d clients parked after %s, want %d", parked(t, srv), within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// parkServer starts a proxy for one test, with the config edited.
func parkServer(t *testing.T, edit func(*topology.Config)) (*proxy.Server, string) {
	t.Helper()
	srv, addr, stop, err := startServer(edit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return srv, addr
}

// idleConn is a client of the raw protocol that costs this process little
// memory (no driver buffers): it writes messages and reads them with a
// small buffer only when asked.
type idleConn struct{ net.Conn }

var startupMsg = func() []byte {
	b, err := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": "postgres", "database": "app"}}).Encode(nil)
	if err != nil {
		panic(err)
	}
	return b
}()

// loginIdle connects to addr and logs in, up to ReadyForQuery.
func loginIdle(addr string) (idleConn, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return idleConn{}, err
	}
	c := idleConn{conn}
	if _, err := c.Write(startupMsg); err != nil {
		conn.Close()
		return idleConn{}, err
	}
	if _, err := c.readUntilReady(); err != nil {
		conn.Close()
		return idleConn{}, err
	}
	return c, nil
}

// readUntilReady reads backend messages up to ReadyForQuery, within 10 s,
// and returns the first column of the last DataRow; an ErrorResponse is
// an error.
func (c idleConn) readUntilReady() (string, error) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var hdr [5]byte
	var value string
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return "", err
		}
		body := make([]byte, int(binary.BigEndian.Uint32(hdr[1:]))-4)
		if _, err := io.ReadFull(c, body); err != nil {
			return "", err
		}
		switch hdr[0] {
		case 'D':
			var row pgproto3.DataRow
			if err := row.Decode(body); err != nil {
				return "", err
			}
			value = string(row.Values[0])
		case 'E':
			var e pgproto3.ErrorResponse
			e.Decode(body)
			return "", fmt.Errorf("%s: %s", e.Code, e.Message)
		case 'Z':
			return value, nil
		}
	}
}

// query runs sql with the simple protocol and returns the first column
// of its last row.
func (c idleConn) query(sql string) (string, error) {
	msg := binary.BigEndian.AppendUint32([]byte{'Q'}, uint32(4+len(sql)+1))
	msg = append(append(msg, sql...), 0)
	if _, err := c.Write(msg); err != nil {
		return "", err
	}
	return c.readUntilReady()
}

// loginIdleT is loginIdle that fails t and closes the client when t ends.
func loginIdleT(t *testing.T, addr string) idleConn {
	t.Helper()
	c, err := loginIdle(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectFatal reads the ErrorResponse a client is closed with and checks
// its SQLSTATE and message, then that the connection closes.
func (c idleConn) expectFatal(t *testing.T, code, mentions string, within time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	fe := pgproto3.NewFrontend(c, c)
	msg, err := fe.Receive()
	if err != nil {
		t.Fatalf("waiting for %s: %v", code, err)
	}
	e, ok := msg.(*pgproto3.ErrorResponse)
	if !ok || e.Severity != "FATAL" || e.Code != code || !strings.Contains(e.Message, mentions) {
		t.Fatalf("got %#v, want FATAL %s mentioning %q", msg, code, mentions)
	}
	if _, err := fe.Receive(); err == nil {
		t.Fatal("connection still open after the FATAL")
	}
}

// TestParkedClientsWake: clients idle for over a second are parked, and
// parked clients answer queries (simple and extended protocol, a named
// prepared statement from before parking) and park again. A LISTENing
// client is not parked and still gets its notifications.
func TestParkedClientsWake(t *testing.T) {
	// LISTEN needs the one shard it runs on named.
	srv, addr := parkServer(t, func(c *topology.Config) { c.DefaultShard = c.Shards[1].Name })
	ctx := t.Context()
	dsn := "postgres://postgres@" + addr + "/app?sslmode=disable"
	simple := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	extended := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
	listener := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	if _, err := listener.Exec(ctx, "LISTEN parked_test"); err != nil {
		t.Fatal(err)
	}
	const stmt = "SELECT $1::int + 1"
	if _, err := extended.Prepare(ctx, "plus_one", stmt); err != nil {
		t.Fatal(err)
	}
	check := func(round int) {
		t.Helper()
		var got int
		if err := simple.QueryRow(ctx, "SELECT 40 + "+strconv.Itoa(round)).Scan(&got); err != nil || got != 40+round {
			t.Fatalf("round %d, simple protocol: %d, %v", round, got, err)
		}
		if err := extended.QueryRow(ctx, "plus_one", round).Scan(&got); err != nil || got != round+1 {
			t.Fatalf("round %d, prepared statement: %d, %v", round, got, err)
		}
		if err := extended.QueryRow(ctx, "SELECT $1::text || 'x'", "y").Scan(new(string)); err != nil {
			t.Fatalf("round %d, extended protocol: %v", round, err)
		}
	}
	check(0)
	if n := parked(t, srv); n != 0 {
		t.Fatalf("%d clients parked right after their queries", n)
	}
	for round := 1; round <= 2; round++ {
		waitParked(t, srv, 2, 3*time.Second)
		time.Sleep(600 * time.Millisecond) // a sweep more: the listener stays
		if n := parked(t, srv); n != 2 {
			t.Fatalf("%d clients parked, want 2: a LISTENing client must not park", n)
		}
		check(round)
		if n := parked(t, srv); n != 0 {
			t.Fatalf("round %d: %d clients still parked after they all ran queries", round, n)
		}
	}
	if _, err := simple.Exec(ctx, "NOTIFY parked_test, 'hello'"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if n, err := listener.WaitForNotification(wctx); err != nil || n.Payload != "hello" {
		t.Fatalf("notification to the listening client: %v, %v", n, err)
	}
}

// TestParkAtLogin: with over 256 clients logged in, a new client parks as
// soon as it has logged in; all of them answer afterwards.
func TestParkAtLogin(t *testing.T) {
	srv, addr := parkServer(t, func(*topology.Config) {})
	const n = 300
	conns := make([]idleConn, n)
	for i := range conns {
		conns[i] = loginIdleT(t, addr)
	}
	waitParked(t, srv, n, 5*time.Second)
	// Parked within less than the second a client must otherwise be
	// idle: only parking at login explains it.
	last := loginIdleT(t, addr)
	waitParked(t, srv, n+1, 800*time.Millisecond)
	conns = append(conns, last)
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	for i, c := range conns {
		wg.Go(func() {
			want := strconv.Itoa(i * 3)
			if got, err := c.query(fmt.Sprintf("SELECT %d * 3", i)); err != nil || got != want {
				errs <- fmt.Errorf("client %d: %q, %v, want %s", i, got, err, want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestParkedIdleTimeout: client_idle_timeout closes a parked client on
// time, with the message it closes any idle client with.
func TestParkedIdleTimeout(t *testing.T) {
	const timeout = 3 * time.Second
	srv, addr := parkServer(t, func(c *topology.Config) { c.Pool.ClientIdleTimeout = topology.Duration(timeout) })
	c := loginIdleT(t, addr)
	start := time.Now()
	waitParked(t, srv, 1, 2*time.Second)
	c.expectFatal(t, "57P05", "client_idle_timeout", 2*timeout)
	if took := time.Since(start); took < timeout-100*time.Millisecond || took > timeout+time.Second {
		t.Errorf("closed after %s idle, want about %s", took, timeout)
	}
	waitParked(t, srv, 0, time.Second)
}

// TestParkedDrain: a drain closes parked clients with the message it
// closes idle clients with, and ends; a shutdown closes them too.
func TestParkedDrain(t *testing.T) {
	srv, addr := parkServer(t, func(*topology.Config) {})
	a, b := loginIdleT(t, addr), loginIdleT(t, addr)
	waitParked(t, srv, 2, 3*time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := srv.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []idleConn{a, b} {
		c.expectFatal(t, "57P01", "shutting down", 5*time.Second)
	}

	srv, addr, stop, err := startServer(func(*topology.Config) {})
	if err != nil {
		t.Fatal(err)
	}
	c := loginIdleT(t, addr)
	waitParked(t, srv, 1, 3*time.Second)
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return with a client parked")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("parked client after shutdown: %v, want closed", err)
	}
}

// TestParkedAdmin: SHOW MEM counts parked clients; SUSPEND holds a parked
// client's query until RESUME; KILL closes parked clients.
func TestParkedAdmin(t *testing.T) {
	srv, addr := parkServer(t, func(c *topology.Config) { c.AdminUsers = []string{"admin"} })
	admin := adminConn(t, addr)
	c := loginIdleT(t, addr)
	waitParked(t, srv, 1, 3*time.Second)
	var parkedRow map[string]string
	for _, r := range adminRows(t, admin, "SHOW MEM") {
		if r["name"] == "parked_client" {
			parkedRow = r
		}
	}
	if parkedRow["used"] != "1" || parkedRow["memtotal"] == "0" {
		t.Fatalf("SHOW MEM parked_client row: %v", parkedRow)
	}

	adminRows(t, admin, "SUSPEND")
	answered := make(chan error, 1)
	go func() {
		got, err := c.query("SELECT 'after resume'")
		if err == nil && got != "after resume" {
			err = fmt.Errorf("answered %q", got)
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("a parked client's query ran while suspended: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	adminRows(t, admin, "RESUME")
	if err := <-answered; err != nil {
		t.Fatal(err)
	}

	waitParked(t, srv, 1, 3*time.Second)
	adminRows(t, admin, "KILL app")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("parked client after KILL: %v, want closed", err)
	}
	waitParked(t, srv, 0, time.Second)
	adminRows(t, admin, "RESUME")
}

// TestIdleClientMemory: an idle client costs the proxy little memory once
// parked: no goroutine stack, no read buffer. Main (without parking)
// measured about 13.8 KB a client here.
func TestIdleClientMemory(t *testing.T) {
	srv, addr := parkServer(t, func(*topology.Config) {})
	loginIdleT(t, addr).Close() // the server parameters, fetched once
	const n = 2000
	conns := make([]idleConn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	waitParked(t, srv, 0, 2*time.Second)
	before := heapAndStacks()
	for range n {
		c, err := loginIdle(addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitParked(t, srv, n, 10*time.Second)
	after := heapAndStacks()
	per := (int64(after) - int64(before)) / n
	t.Logf("%d bytes a parked client (heap and stacks, this test's own sockets included)", per)
	const budget = 3 << 10
	if per > budget {
		t.Errorf("an idle client costs %d bytes, want at most %d", per, budget)
	}
	// All of them still answer.
	for i, c := range conns[:50] {
		if got, err := c.query("SELECT 1"); err != nil || got != "1" {
			t.Fatalf("client %d after parking: %q, %v", i, got, err)
		}
	}
}

// heapAndStacks is the memory in use for the heap and goroutine stacks,
// after a collection.
func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC() // the first frees the stacks of goroutines gone since
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}
