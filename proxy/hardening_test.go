package proxy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

// rawConn is a client that writes protocol bytes as it likes: the
// attacker's view of the proxy.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	fe   *pgproto3.Frontend
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{t: t, conn: conn, fe: pgproto3.NewFrontend(conn, conn)}
}

func (r *rawConn) write(b []byte) {
	r.t.Helper()
	if _, err := r.conn.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// startup logs in as postgres (trust) and reads up to ReadyForQuery.
func (r *rawConn) startup() {
	r.t.Helper()
	r.fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "postgres", "database": "app"}})
	if err := r.fe.Flush(); err != nil {
		r.t.Fatal(err)
	}
	for {
		msg := r.receive()
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			return
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			r.t.Fatalf("startup: %s %s", e.Code, e.Message)
		}
	}
}

func (r *rawConn) receive() pgproto3.BackendMessage {
	r.t.Helper()
	r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	msg, err := r.fe.Receive()
	if err != nil {
		r.t.Fatalf("receive: %v", err)
	}
	return msg
}

// expectError reads until an ErrorResponse and checks its SQLSTATE and
// that its message mentions want.
func (r *rawConn) expectError(code, want string) {
	r.t.Helper()
	for {
		if e, ok := r.receive().(*pgproto3.ErrorResponse); ok {
			if e.Code != code || !strings.Contains(e.Message, want) {
				r.t.Fatalf("got %s %q, want %s mentioning %q", e.Code, e.Message, code, want)
			}
			return
		}
	}
}

// expectClosed waits up to within for the proxy to close the connection,
// reading (and discarding) whatever it sends first.
func (r *rawConn) expectClosed(within time.Duration) {
	r.t.Helper()
	r.conn.SetReadDeadline(time.Now().Add(within))
	// A close with the client's bytes unread is a reset: closed too.
	if _, err := io.Copy(io.Discard, r.conn); isTimeout(err) {
		r.t.Fatalf("connection still open after %s", within)
	}
}

// header is a typed message header claiming a body of n bytes.
func header(typ byte, n int) []byte {
	return binary.BigEndian.AppendUint32([]byte{typ}, uint32(n+4))
}

// assertUsable runs a query on a well-behaved client: a probe must not
// affect anyone else.
func assertUsable(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	var one int
	if err := conn.QueryRow(t.Context(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("a well-behaved client failed after the probe: %v", err)
	}
}

// TestHostileInput sends what an attacker or a broken driver might, each on
// a connection of its own: each gets a clean error or a clean close, and a
// well-behaved client beside them keeps working.
func TestHostileInput(t *testing.T) {
	dsn := proxyWith(t, func(c *topology.Config) { c.Pool.ClientLoginTimeout = topology.Duration(2 * time.Second) })
	addr := strings.TrimSuffix(strings.TrimPrefix(dsn, "postgres://postgres@"), "/app?sslmode=disable")
	good, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close(context.Background())

	startupWith := func(length uint32) []byte { return binary.BigEndian.AppendUint32(nil, length) }
	probes := []struct {
		name  string
		login bool // log in first
		send  []byte
		code  string // "" : a close is enough
		want  string
	}{
		{"negative length", true, []byte{'Q', 0xff, 0xff, 0xff, 0xf0}, "", ""},
		{"length under 4", true, []byte{'Q', 0, 0, 0, 3}, "", ""},
		{"unknown message type", true, append(header('z', 1), 0), "08P01", "invalid frontend message type"},
		{"Sync with a body", true, append(header('S', 6000), make([]byte, 6000)...), "08P01", "invalid message length"},
		{"startup length 3", false, startupWith(3), "", ""},
		{"startup over 10000 bytes", false, startupWith(1 << 30), "", ""},
		{"garbage", false, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "", ""},
		{"unsupported protocol", false, []byte{0, 0, 0, 8, 0, 9, 0, 0}, "0A000", "unsupported frontend protocol"},
	}
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			r := dialRaw(t, addr)
			if p.login {
				r.startup()
			}
			r.write(p.send)
			if p.code != "" {
				r.expectError(p.code, p.want)
			}
			r.expectClosed(5 * time.Second)
			assertUsable(t, good)
		})
	}
	t.Run("SSL and GSS probes", func(t *testing.T) {
		r := dialRaw(t, addr)
		for _, code := range []uint32{80877103, 80877104} {
			r.write(binary.BigEndian.AppendUint32([]byte{0, 0, 0, 8}, code))
			var answer [1]byte
			r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(r.conn, answer[:]); err != nil || answer[0] != 'N' {
				t.Fatalf("request %d: answer %q, %v; want 'N'", code, answer[0], err)
			}
		}
		r.startup() // the connection goes on in plaintext
		assertUsable(t, good)
	})
}

// TestClaimedLengthCostsNothing: headers that claim 1 GB and send a few
// bytes cost the proxy only what arrived, before login (where they are
// refused at once) and after it (where max_packet_size allows 1 GB).
func TestClaimedLengthCostsNothing(t *testing.T) {
	_, addr, stop, err := startServer(func(c *topology.Config) {
		c.Auth = topology.AuthConfig{Type: "scram-sha-256", Users: []topology.UserConfig{{Name: "app", Password: "s3cret"}}}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	const claim = 1<<30 - 8
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	for range 4 {
		// During authentication: the proxy asked for SASL; the answer
		// claims 1 GB.
		r := dialRaw(t, addr)
		r.fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "app", "database": "app"}})
		r.fe.Flush()
		if _, ok := r.receive().(*pgproto3.AuthenticationSASL); !ok {
			t.Fatal("want a SASL request")
		}
		r.write(append(header('p', claim), "SCRAM"...))
		r.expectError("08P01", "during authentication")
		r.expectClosed(5 * time.Second)
	}
	good, err := pgx.Connect(t.Context(), "postgres://app:s3cret@"+addr+"/app?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close(context.Background())
	cfg := good.Config()
	for range 4 {
		// After login: a query claiming 1 GB that sends 64 KiB and stalls.
		conn, err := pgx.ConnectConfig(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		raw := conn.PgConn().Conn()
		if _, err := raw.Write(append(header('Q', claim), bytes.Repeat([]byte{'x'}, 64<<10)...)); err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
	}
	// The proxy reads what arrived within milliseconds; allocating the
	// claimed size would show at once.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		var now runtime.MemStats
		runtime.ReadMemStats(&now)
		if grew := now.TotalAlloc - before.TotalAlloc; grew > 256<<20 {
			t.Fatalf("8 connections claiming 1 GB each made the process allocate %d MB", grew>>20)
		}
		time.Sleep(50 * time.Millisecond)
	}
	assertUsable(t, good)
}

// TestMaxPacketSize: a message over max_packet_size ends its connection
// with 08P01 naming the limit, as does an extended-protocol batch that
// grows past it before Sync; messages under it pass.
func TestMaxPacketSize(t *testing.T) {
	dsn := proxyWith(t, func(c *topology.Config) { c.Pool.MaxPacketSize = 64 << 10 })
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT length('"+strings.Repeat("x", 60<<10)+"')").Scan(&n); err != nil || n != 60<<10 {
		t.Fatalf("60 KiB query under a 64 KiB limit: %d, %v", n, err)
	}
	err = conn.QueryRow(ctx, "SELECT length('"+strings.Repeat("x", 100<<10)+"')").Scan(&n)
	if sqlState(err) != "08P01" || !strings.Contains(err.Error(), "max_packet_size") {
		t.Fatalf("100 KiB query over a 64 KiB limit: %v, want 08P01 naming max_packet_size", err)
	}

	addr := strings.TrimSuffix(strings.TrimPrefix(dsn, "postgres://postgres@"), "/app?sslmode=disable")
	r := dialRaw(t, addr)
	r.startup()
	parse := &pgproto3.Parse{Query: "SELECT '" + strings.Repeat("y", 20<<10) + "'"}
	for range 4 {
		r.fe.Send(parse)
	}
	r.fe.Flush()
	r.expectError("54000", "before Sync exceed max_packet_size")
	r.expectClosed(5 * time.Second)
}

// TestBuffersShrink: a connection that sent one large query does not keep
// its size once the query is answered.
func TestBuffersShrink(t *testing.T) {
	addr := strings.TrimSuffix(strings.TrimPrefix(proxyDSN, "postgres://postgres@"), "/app?sslmode=disable")
	// A raw client: pgx would keep its own 32 MB write buffer in this
	// process's heap.
	r := dialRaw(t, addr)
	r.startup()
	query := func(sql string) string {
		msg := header('Q', len(sql)+1)
		msg = append(append(msg, sql...), 0)
		r.write(msg)
		var value string
		for {
			switch m := r.receive().(type) {
			case *pgproto3.DataRow:
				value = string(m.Values[0])
			case *pgproto3.ErrorResponse:
				t.Fatalf("%s: %s", m.Code, m.Message)
			case *pgproto3.ReadyForQuery:
				return value
			}
		}
	}
	query("SELECT 1")
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	const size = 32 << 20
	if got := query("SELECT length('" + strings.Repeat("z", size) + "')"); got != "33554432" {
		t.Fatalf("32 MB query answered %q", got)
	}
	// The proxy lets its buffers go before reading the client's next
	// message, just after it answered.
	query("SELECT 1")
	after := heap()
	for deadline := time.Now().Add(2 * time.Second); after > before+size/4 && time.Now().Before(deadline); after = heap() {
		time.Sleep(50 * time.Millisecond)
	}
	if after > before+size/4 {
		t.Fatalf("heap grew by %d MB after a 32 MB query and stayed", (after-before)>>20)
	}
}

// TestLoginTimeout: a client that stops half way through its startup
// packet, or its TLS handshake, is closed after client_login_timeout.
func TestLoginTimeout(t *testing.T) {
	certPath, keyPath, _ := writeTestCert(t)
	_, addr, stop, err := startServer(func(c *topology.Config) {
		c.Pool.ClientLoginTimeout = topology.Duration(300 * time.Millisecond)
		c.TLS = topology.TLSConfig{Mode: "allow", Cert: certPath, Key: keyPath}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	r := dialRaw(t, addr)
	r.write([]byte{0, 0, 0, 40, 0, 3, 0, 0, 'u', 's'}) // half a startup packet
	began := time.Now()
	r.expectError("57014", "client_login_timeout")
	r.expectClosed(2 * time.Second)
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("closed after %s, want about 300ms", took)
	}

	tlsConn := dialRaw(t, addr)
	tlsConn.write([]byte{0, 0, 0, 8, 4, 210, 22, 47}) // SSLRequest
	var answer [1]byte
	if _, err := io.ReadFull(tlsConn.conn, answer[:]); err != nil || answer[0] != 'S' {
		t.Fatalf("SSLRequest answered %q, %v", answer[0], err)
	}
	tlsConn.expectClosed(2 * time.Second) // no ClientHello ever comes
}

// TestSlowlorisCannotLockOut: with max_client_conn 20, 200 connections
// that never finish their startup packet neither count against the limit
// nor keep real clients from logging in; past 20 of them the oldest are
// closed.
func TestSlowlorisCannotLockOut(t *testing.T) {
	srv, addr, stop, err := startServer(func(c *topology.Config) { c.Pool.MaxClientConn = 20 })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	dsn := "postgres://postgres@" + addr + "/app?sslmode=disable"
	var stalled []*rawConn
	for range 200 {
		r := dialRaw(t, addr)
		r.write([]byte{0, 0, 0, 40})
		stalled = append(stalled, r)
	}
	if n := series(t, srv, "shardgate_client_logins", nil); n < 1 || n > 20 {
		t.Fatalf("%v connections logging in, want between 1 and max_client_conn (20)", n)
	}
	for i := range 10 {
		conn, err := pgx.Connect(t.Context(), dsn)
		if err != nil {
			t.Fatalf("client %d behind 200 stalled logins: %v", i, err)
		}
		assertUsable(t, conn)
		conn.Close(context.Background())
	}
	closed := 0
	for _, r := range stalled {
		r.conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := r.conn.Read(make([]byte, 1)); !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			closed++
		}
	}
	if closed < 180 {
		t.Fatalf("%d of 200 stalled logins closed, want all but the newest 20", closed)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestQueryTimeout: a server that takes longer than query_timeout to
// answer costs the client query_timeout, not the wait; the client gets
// 57014 and its connection stays usable, and the server is not banned.
func TestQueryTimeout(t *testing.T) {
	srv, addr, stop, err := startServer(func(c *topology.Config) { c.Pool.QueryTimeout = topology.Duration(300 * time.Millisecond) })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, "postgres://postgres@"+addr+"/app?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	began := time.Now()
	_, err = conn.Exec(ctx, "SELECT pg_sleep(3)")
	if sqlState(err) != "57014" || !strings.Contains(err.Error(), "query_timeout") {
		t.Fatalf("pg_sleep(3) under query_timeout 300ms: %v, want 57014", err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("the client waited %s", took)
	}
	assertUsable(t, conn)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_sleep(0.1)").Scan(&n); err != nil || n != 1 {
		t.Fatalf("a query under the timeout: %v", err)
	}
	if banned := series(t, srv, "shardgate_server_banned", nil); banned != 0 {
		t.Fatalf("%v servers banned after a query timeout; a slow query says nothing of a server's health", banned)
	}
}

// TestFrozenServer: a server that stops (SIGSTOP) with queries in flight
// costs those clients the health check's time, not the stall: a read in
// flight on a frozen replica is retried on the primary, and a transaction
// waiting on a frozen primary fails with 08006 and leaves its client usable.
func TestFrozenServer(t *testing.T) {
	ctx := t.Context()
	hc := ownCluster(t, 2, 1)
	addr := serveOver(t, hc, func(cfg *topology.Config) {
		cfg.Consistency = "eventual"
		cfg.HealthCheckInterval = topology.Duration(100 * time.Millisecond)
		cfg.HealthCheckTimeout = topology.Duration(time.Second)
		cfg.BanTime = topology.Duration(time.Second)
	})
	dsn := "postgres://postgres@" + addr + "/app?sslmode=disable"
	sh := hc.Shards[shardOf(t, 1)] // the shared cluster's key ranges are the same
	if _, err := dialPlain(t, sh.Primary.DSN("app")).Exec(ctx, "INSERT INTO users (id, name) VALUES (1, 'one') ON CONFLICT (id) DO NOTHING"); err != nil {
		t.Fatal(err)
	}
	client := dialPlain(t, dsn)
	waitReplicaRow(t, client, 1) // a replica without the row would answer no rows before the freeze
	const stall = 10 * time.Second

	// freezeDuring runs query on client, freezes server once the query is
	// under way, and returns the time the query took after the freeze,
	// what thaws the server (which also thaws after stall, or when the test
	// ends), and the query's error.
	freezeDuring := func(server *sandbox.Server, query func() error) (time.Duration, func(), error) {
		done := make(chan error, 1)
		go func() { done <- query() }()
		time.Sleep(150 * time.Millisecond)
		thaw, err := server.Freeze()
		if err != nil {
			t.Fatal(err)
		}
		frozeAt := time.Now()
		var once sync.Once
		thawOnce := func() { once.Do(func() { thaw() }) }
		t.Cleanup(thawOnce)
		time.AfterFunc(stall, thawOnce)
		select {
		case err := <-done:
			return time.Since(frozeAt), thawOnce, err
		case <-time.After(stall + 5*time.Second):
			t.Fatalf("the query did not end %s after the freeze", stall+5*time.Second)
		}
		return 0, nil, nil
	}

	var port int
	took, thaw, err := freezeDuring(sh.Replicas[0], func() error {
		return client.QueryRow(ctx, "SELECT inet_server_port() FROM users, pg_sleep(0.5) WHERE id = $1", 1).Scan(&port)
	})
	thaw()
	if err != nil || port != sh.Primary.Port {
		t.Fatalf("read in flight on a frozen replica: port %d, %v; want it retried on the primary (port %d)", port, err, sh.Primary.Port)
	}
	if took > stall/2 {
		t.Fatalf("read in flight on a frozen replica took %s after the freeze; the stall was %s", took, stall)
	}
	t.Logf("read in flight on a frozen replica: answered by the primary %s after the freeze", took.Round(time.Millisecond))

	tx, err := client.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, tx, "UPDATE users SET name = 'uno' WHERE id = 1")
	took, thaw, err = freezeDuring(sh.Primary, func() error {
		_, err := tx.Exec(ctx, "SELECT pg_sleep(0.5)")
		return err
	})
	if sqlState(err) != "08006" || took > stall/2 {
		t.Fatalf("transaction on a frozen primary: %v after %s, want 08006 well within the %s stall", err, took, stall)
	}
	// While that shard is down, transactions any shard can run go to the
	// other one.
	for range 4 {
		var one int
		err := pgx.BeginFunc(ctx, client, func(tx pgx.Tx) error { return tx.QueryRow(ctx, "SELECT 1").Scan(&one) })
		if err != nil {
			t.Fatalf("a transaction for any shard while one primary is down: %v", err)
		}
	}
	thaw()
	// Once the primary is back, the same client writes again; the lost
	// transaction's update is gone.
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := client.Exec(ctx, "UPDATE users SET name = name || '' WHERE id = $1", 1)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client cannot write after the primary thawed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("ROLLBACK after the lost transaction: %v", err)
	}
	var name string
	if err := dialPlain(t, sh.Primary.DSN("app")).QueryRow(ctx, "SELECT name FROM users WHERE id = 1").Scan(&name); err != nil || name != "one" {
		t.Fatalf("row after the lost transaction: %q, %v; want its update rolled back", name, err)
	}
}

// TestIntermediateResultLimit: a cross-shard query gathered in the proxy
// to be merged (here DISTINCT) may hold max_intermediate_result_size of
// rows; past it the client gets 54000 and its connection stays usable.
func TestIntermediateResultLimit(t *testing.T) {
	ctx := t.Context()
	keys := keysOnShards(t, 42_000_000, 400)
	setup := connect(t, pgx.QueryExecModeCacheStatement)
	for _, k := range keys {
		if _, err := setup.Exec(ctx, "INSERT INTO users (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING", k, "gather-"+strings.Repeat("x", 100)+string(rune('a'+k%26))); err != nil {
			t.Fatal(err)
		}
	}
	dsn := proxyWith(t, func(c *topology.Config) { c.MaxIntermediateResultSize = 4 << 10 })
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "SELECT DISTINCT name || id FROM users WHERE name LIKE 'gather-%'")
	if sqlState(err) != "54000" || !strings.Contains(err.Error(), "max_intermediate_result_size") {
		t.Fatalf("DISTINCT over 40 KB of rows with a 4 KB limit: %v, want 54000", err)
	}
	rows, err := conn.Query(ctx, "SELECT DISTINCT length(name) FROM users WHERE name LIKE 'gather-%'")
	if err != nil {
		t.Fatal(err)
	}
	lengths, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil || len(lengths) != 1 || lengths[0] != 108 {
		t.Fatalf("a small DISTINCT after the refusal: %v, %v; want [108]", lengths, err)
	}
}
