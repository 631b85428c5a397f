package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardgate/shardgate/sandbox"
	"github.com/shardgate/shardgate/topology"
)

// devProc is `shardgate dev` run as a process of its own, as a user runs
// it, so that it can be sent signals.
type devProc struct {
	cmd      *exec.Cmd
	out, log *syncBuffer
	exited   chan error
}

// startDev starts `shardgate dev --dir dir args...` and waits for its ready
// line.
func startDev(t *testing.T, dir string, args ...string) *devProc {
	t.Helper()
	p := &devProc{out: &syncBuffer{}, log: &syncBuffer{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(os.Args[0], append([]string{"dev", "--dir", dir}, args...)...)
	p.cmd.Env = append(os.Environ(), "SHARDGATE_TEST_MAIN=1")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Signal(syscall.SIGTERM)
			<-p.exited
		}
	})
	deadline := time.After(2 * time.Minute)
	for !strings.Contains(p.out.String(), "ready") {
		select {
		case err := <-p.exited:
			t.Fatalf("dev exited before ready: %v\n%s", err, p.log)
		case <-deadline:
			t.Fatalf("no ready line after 2m:\n%s", p.log)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return p
}

// stop sends sig and waits for dev to exit, which must be cleanly.
func (p *devProc) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("dev exited with %v after %v:\n%s", err, sig, p.log)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("dev did not exit within 90s of %v:\n%s", sig, p.log)
	}
}

// postmasters reads the pids of the sandbox's running servers from their
// data directories.
func postmasters(t *testing.T, dir string) []int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		line, _, _ := strings.Cut(string(data), "\n")
		pid, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		pids = append(pids, pid)
	}
	return pids
}

// alive tells whether process pid runs. An exited postmaster is the
// child of whoever reaps orphans here, so it may linger as a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
	}
	// pid (comm) state ...; comm may hold spaces and parentheses.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

// assertGone fails unless every process in pids has exited, allowing the
// moment between a postmaster removing its pid file and exiting.
func assertGone(t *testing.T, pids []int, after string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("postmaster %d still runs %s", pid, after)
		}
	}
}

func psql(dsn string, sql ...string) (string, error) {
	args := []string{"-X", "-At", "-v", "ON_ERROR_STOP=1", dsn}
	for _, s := range sql {
		args = append(args, "-c", s)
	}
	b, err := exec.Command("psql", args...).CombinedOutput()
	return strings.TrimSpace(string(b)), err
}

// TestDevSignals: SIGHUP (a closed terminal), SIGTERM and SIGINT each stop
// dev cleanly, the signal logged, and every postmaster of the sandbox with it.
func TestDevSignals(t *testing.T) {
	dir := t.TempDir()
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT} {
		listen := freeAddr(t)
		p := startDev(t, dir, "--shards", "1", "--replicas", "1", "--listen", listen, "--metrics-listen", "")
		pids := postmasters(t, dir)
		if len(pids) != 2 {
			t.Fatalf("%d postmaster.pid files, want a primary's and a replica's", len(pids))
		}
		if out, err := psql("postgresql://postgres@"+listen+"/app", "SELECT 1"); err != nil || out != "1" {
			t.Fatalf("proxy: %v %s", err, out)
		}
		p.stop(t, sig)
		if name := signalName(sig); !strings.Contains(p.log.String(), "signal="+name) {
			t.Errorf("log does not name %s:\n%s", name, p.log)
		}
		assertGone(t, pids, "after "+signalName(sig))
	}
}

// TestDevDirLock: a second dev on the same --dir fails at once, naming the
// first one's pid, even though it would fail anyway on the metrics port
// the first one holds; the first one's servers and proxy keep working.
func TestDevDirLock(t *testing.T) {
	dir := t.TempDir()
	listen, metrics := freeAddr(t), freeAddr(t)
	first := startDev(t, dir, "--shards", "1", "--replicas", "0", "--listen", listen, "--metrics-listen", metrics)
	pids := postmasters(t, dir)

	began := time.Now()
	out, err := runCLI(t, t.Context(), "dev", "--dir", dir, "--listen", freeAddr(t), "--metrics-listen", metrics)
	want := fmt.Sprintf("sandbox %s is in use by shardgate dev (pid %d); stop it or use --dir", dir, first.cmd.Process.Pid)
	if err == nil || err.Error() != want {
		t.Fatalf("second dev: %v, want %q\n%s", err, want, out)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("second dev took %v to fail", d)
	}
	for _, pid := range pids {
		if !alive(pid) {
			t.Errorf("postmaster %d of the first dev stopped", pid)
		}
	}
	if out, err := psql("postgresql://postgres@"+listen+"/app", "INSERT INTO users (id, name) VALUES (1, 'one')", "SELECT name FROM users WHERE id = 1"); err != nil || out != "INSERT 0 1\none" {
		t.Errorf("first dev's proxy after the second dev failed: %v\n%s", err, out)
	}
	first.stop(t, syscall.SIGTERM)
	assertGone(t, pids, "after the first dev stopped")

	// With no dev running, add-shard stops the servers it started.
	out, err = runCLI(t, t.Context(), "dev", "add-shard", "--dir", dir, "--name", "s1", "--log-level", "warn")
	if err != nil || !strings.Contains(out, "servers stopped") {
		t.Fatalf("add-shard without dev: %v\n%s", err, out)
	}
	if got := postmasters(t, dir); len(got) != 0 {
		t.Errorf("add-shard without dev left servers %v", got)
	}
}

// TestDevConfigRespected: the config dev wrote at first start is used as
// the user edits it: a table and a pool size added, the listen address
// moved. An explicit --listen overrides the file without changing it, and
// the admin console opens as postgres.
func TestDevConfigRespected(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "shardgate.yaml")
	first := freeAddr(t)
	p := startDev(t, dir, "--shards", "1", "--replicas", "0", "--listen", first, "--metrics-listen", "")
	cluster, err := sandbox.Open(sandbox.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	direct := cluster.Shards[0].Primary.DSN("app")
	if out, err := psql(direct, "CREATE TABLE widgets (id bigint PRIMARY KEY)", "INSERT INTO widgets VALUES (5)"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	app := func(listen string) string { return "postgresql://postgres@" + listen + "/app" }
	if out, err := psql(app(first), "SELECT count(*) FROM widgets WHERE id = 5"); err == nil {
		t.Fatalf("widgets is in no config yet, but the proxy answered %q", out)
	}
	pools, err := psql("postgresql://postgres@"+first+"/shardgate", "SHOW POOLS")
	if err != nil || !strings.Contains(pools, "|transaction|") || !strings.Contains(pools, "|s0|primary|") {
		t.Errorf("admin console as postgres: SHOW POOLS: %v\n%s", err, pools)
	}
	p.stop(t, syscall.SIGTERM)

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	moved := freeAddr(t)
	edited := strings.NewReplacer(
		"listen: "+first+"\n", "listen: "+moved+"\n",
		"pool: {mode: transaction, size: 20}", "pool: {mode: transaction, size: 7}",
		"tables:\n", "tables:\n  widgets: {shard_key: id}  # mine\n",
	).Replace(string(data))
	if strings.Count(edited, "widgets") != 1 || !strings.Contains(edited, "size: 7") || !strings.Contains(edited, moved) {
		t.Fatalf("test cannot edit the generated config:\n%s", data)
	}
	if err := os.WriteFile(path, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	p = startDev(t, dir, "--metrics-listen", "")
	if out, err := psql(app(moved), "SELECT count(*) FROM widgets WHERE id = 5"); err != nil || out != "1" {
		t.Errorf("widgets after adding it to the config: %v\n%s", err, out)
	}
	if got := showConfig(t, moved, "default_pool_size"); got != "7" {
		t.Errorf("pool_size %q, want the file's 7", got)
	}
	p.stop(t, syscall.SIGTERM)

	override := freeAddr(t)
	p = startDev(t, dir, "--listen", override, "--metrics-listen", "")
	if got := showConfig(t, override, "listen_addr") + ":" + showConfig(t, override, "listen_port"); got != override {
		t.Errorf("listen %q, want --listen's %s", got, override)
	}
	p.stop(t, syscall.SIGTERM)
	if after, err := os.ReadFile(path); err != nil || string(after) != edited {
		t.Errorf("dev changed the config file: %v\n%s", err, after)
	}
}

func showConfig(t *testing.T, listen, key string) string {
	t.Helper()
	out, err := psql("postgresql://postgres@"+listen+"/shardgate", "SHOW CONFIG")
	if err != nil {
		t.Fatalf("SHOW CONFIG: %v\n%s", err, out)
	}
	for line := range strings.SplitSeq(out, "\n") {
		if k, rest, _ := strings.Cut(line, "|"); k == key {
			v, _, _ := strings.Cut(rest, "|")
			return v
		}
	}
	t.Fatalf("SHOW CONFIG has no %s:\n%s", key, out)
	return ""
}

// TestDevFixedPorts: --pg-port gives the servers consecutive ports, which
// the config names; a taken port is refused before any server starts.
func TestDevFixedPorts(t *testing.T) {
	dir := t.TempDir()
	base := freeRange(t, 2)
	p := startDev(t, dir, "--shards", "1", "--replicas", "1", "--pg-port", strconv.Itoa(base), "--listen", freeAddr(t), "--metrics-listen", "")
	cfg := load(t, filepath.Join(dir, "shardgate.yaml"))
	want := []string{fmt.Sprintf("127.0.0.1:%d/app", base), fmt.Sprintf("127.0.0.1:%d/app", base+1)}
	if len(cfg.Shards) != 1 || !strings.HasSuffix(cfg.Shards[0].Primary, want[0]) ||
		len(cfg.Shards[0].Replicas) != 1 || !strings.HasSuffix(cfg.Shards[0].Replicas[0], want[1]) {
		t.Errorf("config shards %+v, want ports %d and %d", cfg.Shards, base, base+1)
	}

	// The new replica's port is the first sandbox's primary's.
	other := t.TempDir()
	_, err := runCLI(t, t.Context(), "dev", "--dir", other, "--shards", "1", "--pg-port", strconv.Itoa(base-1), "--listen", freeAddr(t), "--metrics-listen", "")
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("port %d (", base)) || !strings.Contains(err.Error(), "in use by another process") ||
		!strings.Contains(err.Error(), "--pg-port") {
		t.Errorf("dev on taken ports: %v, want the port and the flag named", err)
	}
	if got := postmasters(t, other); len(got) != 0 {
		t.Errorf("dev on taken ports left servers %v", got)
	}
	p.stop(t, syscall.SIGTERM)
}

// freeRange finds n consecutive free loopback ports, and the one below
// them free too.
func freeRange(t *testing.T, n int) int {
	t.Helper()
	for base := 20001 + os.Getpid()%20000; base < 65000; base += 97 {
		free := true
		for p := base - 1; p < base+n && free; p++ {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if free = err == nil; free {
				l.Close()
			}
		}
		if free {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

// TestDevConfigFixesStalePorts: a sandbox made anew (new ports) beside a
// kept config: dev points the config's sandbox DSNs at the new ports, in
// place, and leaves every other byte alone. No server is needed.
func TestDevConfigFixesStalePorts(t *testing.T) {
	server := func(name string, port int) *sandbox.Server { return &sandbox.Server{Name: name, Port: port} }
	cluster := &sandbox.Cluster{Dir: t.TempDir(), Database: "app", Shards: []*sandbox.Shard{
		{Name: "s0", Primary: server("s0-primary", 6400), Replicas: []*sandbox.Server{server("s0-replica1", 6401)}},
		{Name: "s1", Primary: server("s1-primary", 6402), Replicas: []*sandbox.Server{server("s1-replica1", 6403)}},
	}}
	path := filepath.Join(cluster.Dir, "shardgate.yaml")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts := devOptions{listen: "127.0.0.1:7001", metricsListen: "127.0.0.1:7002"}

	cfg, err := devConfig(cluster, path, opts, log)
	if err != nil {
		t.Fatal(err)
	}
	want := []topology.RangeConfig{{Range: "-80", Shard: "s0"}, {Range: "80-", Shard: "s1"}}
	if !slices.Equal(cfg.Keyspace, want) || !slices.Equal(cfg.AdminUsers, []string{"postgres"}) || cfg.Listen != opts.listen || cfg.MetricsListen != opts.metricsListen {
		t.Fatalf("generated config: keyspace %v, admin_users %v, listen %s, metrics %s", cfg.Keyspace, cfg.AdminUsers, cfg.Listen, cfg.MetricsListen)
	}

	// s0's primary is stale, its replica deliberately on s1's replica, s1 on
	// another host, s9 not in the sandbox.
	kept := `# my sandbox
listen: 127.0.0.1:7001
database: app
shards:
  - {name: s0, primary: "postgres://postgres@127.0.0.1:5400/app", replicas: ["postgres://postgres@127.0.0.1:6403/app"]}
  - {name: s1, primary: "postgres://postgres@db.example:5401/app"}
  - {name: s9, primary: "postgres://postgres@localhost:5409/app"}
keyspace:
  - {range: "-80", shard: s0}
  - {range: "80-c0", shard: s1}
  - {range: "c0-", shard: s9}
tables:
  users: {shard_key: id}
`
	if err := os.WriteFile(path, []byte(kept), 0o644); err != nil {
		t.Fatal(err)
	}
	opts.listenSet, opts.listen = true, "127.0.0.1:7003"
	if cfg, err = devConfig(cluster, path, opts, log); err != nil {
		t.Fatal(err)
	}
	wantFile := strings.Replace(kept, "127.0.0.1:5400", "127.0.0.1:6400", 1)
	if got, _ := os.ReadFile(path); string(got) != wantFile {
		t.Errorf("config file:\n%s\nwant:\n%s", got, wantFile)
	}
	if cfg.Listen != "127.0.0.1:7003" || cfg.MetricsListen != "" || len(cfg.Tables) != 1 || len(cfg.Keyspace) != 3 {
		t.Errorf("config: listen %s (want --listen's), metrics %q (want the file's none), %d tables, %d ranges",
			cfg.Listen, cfg.MetricsListen, len(cfg.Tables), len(cfg.Keyspace))
	}
}

func load(t *testing.T, path string) *topology.Config {
	t.Helper()
	cfg, err := topology.LoadConfig(path)
	if err != nil {
		data, _ := os.ReadFile(path)
		t.Fatalf("%v\n%s", err, data)
	}
	return cfg
}
