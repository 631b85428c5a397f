package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/sandbox"
)

// TestServeSignals runs `shardgate serve` and drives it with the signals an
// operator sends: SIGHUP reloads the config, workers included (as RELOAD
// and SET do), SIGTERM
// drains and exits. serve runs in this process, so it sets the test's
// GOMAXPROCS: put it back after.
func TestServeSignals(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(procs) })
	ctx := t.Context()
	cluster, err := sandbox.Start(ctx, sandbox.Options{Dir: t.TempDir(), Shards: 1, Replicas: sandbox.NoReplicas, Fast: true, Schema: sandbox.Schema})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	listen := freeAddr(t)
	path := filepath.Join(t.TempDir(), "shardgate.yaml")
	base := string(cluster.ConfigYAML(listen)) + "admin_users: [admin]\nworkers: 1\n"
	if err := os.WriteFile(path, []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := runCLI(t, context.Background(), "serve", "--config", path, "--log-level", "error")
		done <- err
	}()
	var admin *pgconn.PgConn
	deadline := time.Now().Add(20 * time.Second)
	for admin == nil {
		admin, err = pgconn.Connect(ctx, "postgres://admin@"+listen+"/shardgate?sslmode=disable")
		if err != nil && time.Now().After(deadline) {
			t.Fatalf("serve never accepted the admin: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer admin.Close(context.Background())
	show := func(key string) string {
		res, err := admin.Exec(ctx, "SHOW CONFIG").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range res[0].Rows {
			if string(row[0]) == key {
				return string(row[1])
			}
		}
		return ""
	}
	if got := show("default_pool_size"); got != "20" {
		t.Fatalf("pool_size %s before reload", got)
	}
	if got, n := show("workers"), runtime.GOMAXPROCS(0); got != "1" || n != 1 {
		t.Fatalf("workers: SHOW CONFIG %q, GOMAXPROCS %d; want 1 and 1", got, n)
	}
	next := strings.Replace(strings.Replace(base, "size: 20", "size: 3", 1), "workers: 1", "workers: 2", 1)
	if err := os.WriteFile(path, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	for got := show("default_pool_size"); got != "3"; got = show("default_pool_size") {
		if time.Now().After(deadline) {
			t.Fatalf("pool_size %s after SIGHUP, want 3", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The pool size shows once the proxy applied the config; the worker
	// count changes right after, in the same SIGHUP.
	for n := runtime.GOMAXPROCS(0); n != 2; n = runtime.GOMAXPROCS(0) {
		if time.Now().After(deadline) {
			t.Fatalf("GOMAXPROCS %d after SIGHUP, want 2", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := show("workers"); got != "2" {
		t.Fatalf("workers after SIGHUP: SHOW CONFIG %q, want 2", got)
	}
	// The console's RELOAD and SET apply workers too, before they answer.
	if err := os.WriteFile(path, []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "RELOAD").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Fatalf("GOMAXPROCS %d after RELOAD of workers: 1", n)
	}
	if _, err := admin.Exec(ctx, "SET workers = 2").ReadAll(); err != nil {
		t.Fatal(err)
	}
	if got, n := show("workers"), runtime.GOMAXPROCS(0); got != "2" || n != 2 {
		t.Fatalf("after SET workers = 2: SHOW CONFIG %q, GOMAXPROCS %d; want 2 and 2", got, n)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
}

// TestServeWarnsAboutExposedSecrets: serve warns, once, about a config file
// with passwords that others can read, and not once it is private. The TLS
// certificate is missing, so serve stops right after loading the config,
// before it starts anything that would go on logging.
func TestServeWarnsAboutExposedSecrets(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "shardgate.yaml")
	config := "listen: 127.0.0.1:0\ndatabase: app\nkeyspace: [{range: \"-\", shard: s0}]\n" +
		"shards: [{name: s0, primary: \"postgres://sg:Serve-Pw-5x@127.0.0.1:1/app\"}]\n" +
		"tls: {mode: require, cert: missing.crt, key: missing.key}\n"
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode     os.FileMode
		warnings int
	}{{0o644, 1}, {0o640, 1}, {0o600, 0}} {
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		out, err := runCLI(t, t.Context(), "serve", "--config", path)
		if err == nil || !strings.Contains(err.Error(), "missing.crt") {
			t.Fatalf("serve without its certificate: %v\n%s", err, out)
		}
		if n := strings.Count(out, "file holding secrets is readable by group or others"); n != tc.warnings || (n > 0 && !strings.Contains(out, path)) {
			t.Errorf("mode %v: %d warnings, want %d naming %s:\n%s", tc.mode, n, tc.warnings, path, out)
		}
		if strings.Contains(out, "Serve-Pw-5x") {
			t.Errorf("the DSN password reached the output:\n%s", out)
		}
	}
}

// TestServeShutdownSignals runs `shardgate serve` as a process of its own,
// with a Unix socket, a pidfile and a short stats_period, and stops it with
// each shutdown signal while a client is inside a transaction.
func TestServeShutdownSignals(t *testing.T) {
	ctx := t.Context()
	cluster, err := sandbox.Start(ctx, sandbox.Options{Dir: t.TempDir(), Shards: 1, Replicas: sandbox.NoReplicas, Fast: true, Schema: sandbox.Schema})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	shard, err := pgx.Connect(ctx, cluster.Shards[0].Primary.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer shard.Close(context.Background())
	rows := func(id int) int {
		var n int
		if err := shard.QueryRow(ctx, "SELECT count(*) FROM users WHERE id = $1", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Run("SIGINT lets the transaction commit then exits", func(t *testing.T) {
		p := startServe(t, cluster, "stats_period: 250ms\n")
		if pid, err := os.ReadFile(p.pidfile); err != nil || strings.TrimSpace(string(pid)) != strconv.Itoa(p.cmd.Process.Pid) {
			t.Fatalf("pidfile holds %q (%v), want %d", pid, err, p.cmd.Process.Pid)
		}
		if out, err := runCLI(t, ctx, "serve", "--config", p.config); err == nil || !strings.Contains(err.Error(), "which is running") {
			t.Fatalf("a second serve with the same pidfile: %v\n%s", err, out)
		}
		tx := p.beginInsert(t, 9101)
		busy := regexp.MustCompile(`stats: \d+ xacts/s, [1-9]\d* queries/s, in [1-9]\d* B/s`)
		for deadline := time.Now().Add(10 * time.Second); !busy.MatchString(p.logs.String()); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no stats line counting the transaction's statements:\n%s", p.logs)
			}
		}
		p.signal(t, syscall.SIGINT)
		p.waitRefusing(t)
		if _, err := tx.Exec(ctx, "INSERT INTO users (id, name) VALUES (9102, 'after SIGINT')"); err != nil {
			t.Fatalf("statement inside the transaction after SIGINT: %v", err)
		}
		if _, err := tx.Exec(ctx, "COMMIT"); err != nil {
			t.Fatalf("COMMIT after SIGINT: %v", err)
		}
		if err := p.wait(t, 20*time.Second); err != nil {
			t.Fatalf("serve after SIGINT: %v\n%s", err, p.logs)
		}
		if rows(9101) != 1 || rows(9102) != 1 {
			t.Errorf("rows of the transaction committed during the shutdown: %d and %d, want 1 and 1", rows(9101), rows(9102))
		}
		p.checkCleanedUp(t)
		for _, want := range []string{"safe shutdown", "client logged in", `reason="terminating connection: shardgate is shutting down"`} {
			if !strings.Contains(p.logs.String(), want) {
				t.Errorf("no %q in the log:\n%s", want, p.logs)
			}
		}
	})

	t.Run("a second SIGINT stops at once", func(t *testing.T) {
		p := startServe(t, cluster, "")
		tx := p.beginInsert(t, 9201)
		p.signal(t, syscall.SIGINT)
		p.waitRefusing(t)
		time.Sleep(300 * time.Millisecond)
		if p.exited() {
			t.Fatal("serve exited after the first SIGINT with a transaction open")
		}
		p.signal(t, syscall.SIGINT)
		if err := p.wait(t, 10*time.Second); err != nil {
			t.Fatalf("serve after a second SIGINT: %v\n%s", err, p.logs)
		}
		if _, err := tx.Exec(ctx, "COMMIT"); err == nil {
			t.Error("COMMIT succeeded after the proxy stopped")
		}
		if rows(9201) != 0 {
			t.Error("the interrupted transaction committed")
		}
		p.checkCleanedUp(t)
	})

	t.Run("SIGTERM closes the transaction after shutdown_timeout", func(t *testing.T) {
		p := startServe(t, cluster, "shutdown_timeout: 1s\n")
		tx := p.beginInsert(t, 9301)
		start := time.Now()
		p.signal(t, syscall.SIGTERM)
		if err := p.wait(t, 15*time.Second); err != nil {
			t.Fatalf("serve after SIGTERM: %v\n%s", err, p.logs)
		}
		if took := time.Since(start); took < time.Second {
			t.Errorf("serve exited %v after SIGTERM, before shutdown_timeout (1s)", took)
		}
		if _, err := tx.Exec(ctx, "COMMIT"); err == nil {
			t.Error("COMMIT succeeded after shutdown_timeout")
		}
		if rows(9301) != 0 {
			t.Error("the transaction cut off by shutdown_timeout committed")
		}
		if !strings.Contains(p.logs.String(), "drain timed out") {
			t.Errorf("no drain timeout logged:\n%s", p.logs)
		}
		p.checkCleanedUp(t)
	})
}

// servedProcess is `shardgate serve` running as a child process.
type servedProcess struct {
	cmd                   *exec.Cmd
	logs                  *syncBuffer
	done                  chan error
	config, pidfile, sock string
	listen                string
}

// startServe starts serve over cluster, with a Unix socket and a pidfile in
// a directory of its own and the extra YAML, and waits until a client
// gets through the socket.
func startServe(t *testing.T, cluster *sandbox.Cluster, extra string) *servedProcess {
	t.Helper()
	dir := t.TempDir()
	listen := freeAddr(t)
	_, port, _ := net.SplitHostPort(listen)
	p := &servedProcess{logs: &syncBuffer{}, done: make(chan error, 1), config: filepath.Join(dir, "shardgate.yaml"),
		pidfile: filepath.Join(dir, "shardgate.pid"), sock: filepath.Join(dir, ".s.PGSQL."+port), listen: listen}
	yaml := string(cluster.ConfigYAML(listen)) + "unix_socket_dir: " + dir + "\npidfile: " + p.pidfile + "\n" + extra
	if err := os.WriteFile(p.config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(os.Args[0], "serve", "--config", p.config)
	p.cmd.Env = append(os.Environ(), "SHARDGATE_TEST_MAIN=1")
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if !p.exited() {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		conn, err := p.connect(t)
		if err == nil {
			conn.Close(context.Background())
			return p
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("serve never accepted a client on its Unix socket: %v\n%s", err, p.logs)
		}
	}
}

// connect opens a client connection over the Unix socket, as
// `psql -h DIR -p PORT` does.
func (p *servedProcess) connect(t *testing.T) (*pgx.Conn, error) {
	_, port, _ := net.SplitHostPort(p.listen)
	return pgx.Connect(t.Context(), "host="+filepath.Dir(p.sock)+" port="+port+" user=postgres dbname=app sslmode=disable")
}

// beginInsert opens a client inside a transaction that has written row id.
func (p *servedProcess) beginInsert(t *testing.T, id int) *pgx.Conn {
	t.Helper()
	conn, err := p.connect(t)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	for _, sql := range []string{"BEGIN", "INSERT INTO users (id, name) VALUES (" + strconv.Itoa(id) + ", 'in a transaction')"} {
		if _, err := conn.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	return conn
}

func (p *servedProcess) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// waitRefusing waits until new connections are refused, over TCP and the
// socket, while the process still runs.
func (p *servedProcess) waitRefusing(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		conn, tcpErr := net.DialTimeout("tcp", p.listen, time.Second)
		if tcpErr == nil {
			conn.Close()
		}
		_, sockErr := os.Lstat(p.sock)
		if tcpErr != nil && os.IsNotExist(sockErr) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still accepting connections (tcp: %v, socket: %v)\n%s", tcpErr, sockErr, p.logs)
		}
	}
	if p.exited() {
		t.Fatalf("serve exited with a client inside a transaction\n%s", p.logs)
	}
}

func (p *servedProcess) exited() bool {
	select {
	case err := <-p.done:
		p.done <- err // for the next look
		return true
	default:
		return false
	}
}

// wait returns the process's exit error (nil: status 0).
func (p *servedProcess) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(timeout):
		t.Fatalf("serve still running %v after the signal\n%s", timeout, p.logs)
		return nil
	}
}

// checkCleanedUp checks that the exited process removed its pidfile and
// its socket file.
func (p *servedProcess) checkCleanedUp(t *testing.T) {
	t.Helper()
	for _, path := range []string{p.pidfile, p.sock} {
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("%s after exit: %v, want it removed", path, err)
		}
	}
}

// TestPidfile: the pidfile gets this process's id; a file naming a live
// process refuses the start and is left alone; one naming a dead process,
// this very process (a restarted container) or nothing is replaced; the
// file is removed at exit only while it is still ours.
func TestPidfile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sg.pid")
	me := strconv.Itoa(os.Getpid()) + "\n"
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	for _, stale := range []string{strconv.Itoa(dead.Process.Pid), me, "not a pid", ""} {
		if err := os.WriteFile(path, []byte(stale), 0o644); err != nil {
			t.Fatal(err)
		}
		remove, err := writePidfile(path)
		if err != nil {
			t.Fatalf("over a pidfile holding %q: %v", stale, err)
		}
		if got, _ := os.ReadFile(path); string(got) != me {
			t.Errorf("pidfile holds %q, want %q", got, me)
		}
		remove()
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("pidfile after remove: %v", err)
		}
	}

	live := exec.Command("sleep", "30")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { live.Process.Kill(); live.Wait() }()
	other := strconv.Itoa(live.Process.Pid)
	if err := os.WriteFile(path, []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := writePidfile(path); err == nil || !strings.Contains(err.Error(), "names process "+other+", which is running") {
		t.Errorf("over a live process's pidfile: %v", err)
	}
	if got, _ := os.ReadFile(path); string(got) != other {
		t.Errorf("a live process's pidfile became %q", got)
	}

	os.Remove(path)
	remove, err := writePidfile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(other), 0o644); err != nil { // taken over meanwhile
		t.Fatal(err)
	}
	remove()
	if got, _ := os.ReadFile(path); string(got) != other {
		t.Errorf("remove took another process's pidfile: %q", got)
	}
}
