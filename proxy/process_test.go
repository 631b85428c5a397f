package proxy_test

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/topology"
)

// TestUnixSocketListener: with unix_socket_dir, a client reaches the proxy
// through DIR/.s.PGSQL.<port>, as psql -h DIR -p PORT would, while TCP
// keeps working; a stale socket file is replaced at start; the socket has
// unix_socket_mode; and the file is gone once the proxy stops.
func TestUnixSocketListener(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	path := proxy.UnixSocketPath(dir, port)
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close() // the file stays, as after a crash

	logs := &syncBuffer{}
	cfg, err := topology.ParseConfig("sandbox.yaml", cluster.ConfigYAML("127.0.0.1:"+strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.UnixSocketDir, cfg.UnixSocketMode = dir, 0o770
	srv, err := proxy.New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe(ctx) }()
	defer func() { cancel(); <-served }()

	conn := connectWhenUp(t, "host="+dir+" port="+strconv.Itoa(port)+" user=postgres dbname=app sslmode=disable", served)
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM users WHERE id = -424242").Scan(&n); err != nil || n != 0 {
		t.Fatalf("query over the Unix socket: %d, %v", n, err)
	}
	conn.Close(t.Context())
	tcp := connectWhenUp(t, "postgres://postgres@127.0.0.1:"+strconv.Itoa(port)+"/app?sslmode=disable", served)
	if err := tcp.Ping(t.Context()); err != nil {
		t.Fatalf("TCP beside the Unix socket: %v", err)
	}
	tcp.Close(t.Context())
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o770 {
		t.Fatalf("socket file: %v, %v; want a socket with mode 0770", fi.Mode(), err)
	}
	if !strings.Contains(logs.String(), "addr=unix:"+path) {
		t.Errorf("the login over the socket is not logged with its path:\n%s", logs)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("ListenAndServe: %v", err)
	}
	served <- nil // for the deferred receive
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file after stop: %v, want it removed", err)
	}
}

// TestConnectionLogging: log_connections and log_disconnections log each
// login and each end with its reason, and a RELOAD turns them off.
func TestConnectionLogging(t *testing.T) {
	logs := &syncBuffer{}
	srv, addr, stop, err := startLogged(cluster, func(*topology.Config) {}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs)
		}
	})
	dsn := "postgres://postgres@" + addr + "/app?sslmode=disable&application_name=connlog"
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	conn.Close(t.Context())
	dropped, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	dropped.PgConn().Conn().Close() // gone without a Terminate message
	login := regexp.MustCompile(`msg="client logged in" conn=\d+ user=postgres database=app addr=127\.0\.0\.1:\d+ tls=false`)
	closed := regexp.MustCompile(`msg="client disconnected" conn=\d+ user=postgres database=app addr=127\.0\.0\.1:\d+ duration=\S+ reason="client close request"`)
	eof := regexp.MustCompile(`msg="client disconnected" .* reason="client unexpected eof"`)
	waitFor(t, "two logins, a close and an unexpected EOF logged", func() bool {
		return len(login.FindAllString(logs.String(), -1)) == 2 && closed.MatchString(logs.String()) && eof.MatchString(logs.String())
	})

	cfg, err := topology.ParseConfig("sandbox.yaml", cluster.ConfigYAML("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.LogConnections, cfg.LogDisconnections = false, false
	if err := srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	before := logs.String()
	conn, err = pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	conn.Close(t.Context())
	time.Sleep(200 * time.Millisecond)
	if after := strings.TrimPrefix(logs.String(), before); strings.Contains(after, "client logged in") || strings.Contains(after, "client disconnected") {
		t.Errorf("connections logged after a RELOAD turned logging off:\n%s", after)
	}
}

// TestStatsPeriod: every stats_period, one line of PgBouncer's averages
// from the pools' counters; 0 logs none, and a RELOAD turns it on.
func TestStatsPeriod(t *testing.T) {
	logs := &syncBuffer{}
	srv, addr, stop, err := startLogged(cluster, func(c *topology.Config) { c.StatsPeriod = 0 }, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	conn, err := pgx.Connect(t.Context(), "postgres://postgres@"+addr+"/app?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	time.Sleep(300 * time.Millisecond)
	if strings.Contains(logs.String(), "stats:") {
		t.Fatalf("stats logged with stats_period 0:\n%s", logs)
	}
	cfg, err := topology.ParseConfig("sandbox.yaml", cluster.ConfigYAML("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.StatsPeriod = topology.Duration(200 * time.Millisecond)
	if err := srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`stats: (\d+) xacts/s, (\d+) queries/s, in (\d+) B/s, out (\d+) B/s, xact (\d+) us, query (\d+) us, wait (\d+) us`)
	busy := func(m []string) bool { return m[1] != "0" && m[2] != "0" && m[3] != "0" && m[4] != "0" && m[6] != "0" }
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := conn.Exec(t.Context(), "SELECT count(*) FROM users WHERE id = 1"); err != nil {
			t.Fatal(err)
		}
		matches := line.FindAllStringSubmatch(logs.String(), -1)
		if len(matches) > 0 && busy(matches[len(matches)-1]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stats line with traffic after a RELOAD set stats_period 200ms:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// connectWhenUp connects to dsn once the server listens, failing the test
// if serving ends first.
func connectWhenUp(t *testing.T, dsn string, served <-chan error) *pgx.Conn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := pgx.Connect(t.Context(), dsn)
		if err == nil {
			return conn
		}
		select {
		case serr := <-served:
			t.Fatalf("serving ended: %v (connect: %v)", serr, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("connect %s: %v", dsn, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDrainDoesNotWaitForLogins: a connection that has not finished its
// login holds no transaction, so a drain closes it rather than wait for
// client_login_timeout.
func TestDrainDoesNotWaitForLogins(t *testing.T) {
	srv, addr, stop, err := startServer(func(*topology.Config) {})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	raw, err := net.Dial("tcp", addr) // sends no startup packet
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	time.Sleep(100 * time.Millisecond) // accepted
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := srv.Drain(ctx); err != nil {
		t.Fatalf("drain with a login in progress: %v", err)
	}
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the login in progress is still open after the drain: %v", err)
	}
}
