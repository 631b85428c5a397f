package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardgate/shardgate/topology"
)

func runCLI(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := rootCmd()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func TestRouteJSON(t *testing.T) {
	out, err := runCLI(t, t.Context(), "route", "--config", "../../testdata/config/valid.yaml", "--json", "SELECT * FROM users WHERE id = 42")
	if err != nil {
		t.Fatal(err, out)
	}
	var plan struct {
		Shards []string `json:"shards"`
		Role   string   `json:"role"`
		Reason string   `json:"reason"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(plan.Shards) != 1 || plan.Shards[0] != "s1" || plan.Role != "replica" || plan.Reason == "" {
		t.Fatalf("plan: %+v", plan)
	}
}

func TestRouteRefusalExitsNonZero(t *testing.T) {
	out, err := runCLI(t, t.Context(), "route", "-c", "../../testdata/config/valid.yaml", "DELETE FROM users")
	if _, ok := err.(exitError); !ok || !strings.Contains(out, "0A000") {
		t.Fatalf("err %v, output %q", err, out)
	}
}

func TestCheck(t *testing.T) {
	const valid = "../../testdata/config/valid.yaml"
	for _, args := range [][]string{{"check", "--config", valid}, {"check", valid}} {
		out, err := runCLI(t, t.Context(), args...)
		if err != nil || !strings.Contains(out, "ok: 2 shards") || !strings.Contains(out, "80-") {
			t.Fatalf("%q: %v\n%s", args, err, out)
		}
	}
	_, err := runCLI(t, t.Context(), "check", "--config", "../../testdata/config/missing.yaml")
	if err == nil {
		t.Fatal("check of a missing file succeeded")
	}
	out, err := runCLI(t, t.Context(), "check", "--config", valid, "other.yaml")
	if err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Fatalf("a config given both ways: %v\n%s", err, out)
	}
}

func TestVersion(t *testing.T) {
	out, err := runCLI(t, t.Context(), "version")
	if err != nil || !strings.HasPrefix(out, "shardgate ") {
		t.Fatalf("version: %v %q", err, out)
	}
	flag, err := runCLI(t, t.Context(), "--version")
	if err != nil || flag != out {
		t.Fatalf("--version: %v %q, want %q", err, flag, out)
	}
}

// TestVersionNamesTheRevision builds the binary as `make build` does and
// checks that it names the commit it was built from.
func TestVersionNamesTheRevision(t *testing.T) {
	rev, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		t.Fatalf("this test needs the git checkout: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "shardgate")
	if out, err := exec.Command("go", "build", "-buildvcs=auto", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.Contains(string(out), strings.TrimSpace(string(rev))) {
		t.Fatalf("version %q (%v) does not name revision %s", out, err, rev)
	}
}

// TestDev runs `shardgate dev` as a user would: it must print a ready line,
// serve psql through the proxy, and stop every server when cancelled.
func TestDev(t *testing.T) {
	dir := t.TempDir()
	listen, metricsAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		root := rootCmd()
		root.SetOut(out)
		root.SetErr(io.Discard)
		root.SetArgs([]string{"dev", "--dir", dir, "--listen", listen, "--metrics-listen", metricsAddr, "--log-level", "warn"})
		done <- root.ExecuteContext(ctx)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "ready") {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no ready line after 60s: %q", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	dsn := "postgresql://postgres@" + listen + "/app"
	if !strings.Contains(out.String(), dsn) {
		t.Errorf("ready line %q does not give the DSN %s", out.String(), dsn)
	}
	// One psql session for both: read-your-writes holds within a
	// connection; a second connection may read a replica still replaying.
	b, err := exec.Command("psql", "-X", "-At", dsn, "-c", "INSERT INTO users (id, name) VALUES (7, 'seven')", "-c", "SELECT name FROM users WHERE id = 7").CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, b)
	}
	if got := strings.TrimSpace(string(b)); got != "INSERT 0 1\nseven" {
		t.Fatalf("psql printed %q, want the insert tag and the row read back", got)
	}
	if b, err := exec.Command("psql", "-X", "-At", "postgresql://postgres@"+listen+"/shardgate", "-c", "SHOW POOLS").CombinedOutput(); err != nil {
		t.Errorf("admin console as postgres: %v\n%s", err, b)
	}
	// add-shard from another command while dev runs: dev must stop the new
	// servers too.
	added, err := runCLI(t, ctx, "dev", "add-shard", "--dir", dir, "--name", "s2", "--log-level", "warn")
	if err != nil || !strings.Contains(added, "  - name: s2\n") {
		t.Fatalf("add-shard: %v\n%s", err, added)
	}
	addedHosts := regexp.MustCompile(`(?m)^(?:primary|replica): postgres://postgres@([^/]+)/app`).FindAllStringSubmatch(added, -1)
	if len(addedHosts) != 2 {
		t.Fatalf("add-shard printed %d DSNs, want a primary and a replica:\n%s", len(addedHosts), added)
	}
	if out, err := runCLI(t, ctx, "dev", "add-shard", "--dir", dir, "--name", "s2"); err == nil || !strings.Contains(err.Error(), "shard s2 exists") {
		t.Errorf("add-shard s2 again: %v\n%s", err, out)
	}
	// dev turns on metrics and pprof.
	if body := httpGet(t, "http://"+metricsAddr+"/metrics"); !strings.Contains(body, `shardgate_queries_total{role="primary",shard="s0"}`) &&
		!strings.Contains(body, `shardgate_queries_total{role="primary",shard="s1"}`) {
		t.Errorf("/metrics has no primary query count:\n%s", body)
	}
	if body := httpGet(t, "http://"+metricsAddr+"/debug/pprof/"); !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ does not list profiles:\n%s", body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop within 30s")
	}
	if b, err := exec.Command("psql", "-X", "-At", dsn, "-c", "SELECT 1").CombinedOutput(); err == nil {
		t.Fatalf("proxy still answers after stop: %s", b)
	}
	cfg, err := topology.LoadConfig(filepath.Join(dir, "shardgate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range cfg.Shards {
		for _, dsn := range append([]string{sh.Primary}, sh.Replicas...) {
			u, _ := url.Parse(dsn)
			assertClosed(t, u.Host)
		}
	}
	for _, m := range addedHosts {
		assertClosed(t, m[1])
	}
}

func assertClosed(t *testing.T, hostPort string) {
	t.Helper()
	if conn, err := net.DialTimeout("tcp", hostPort, time.Second); err == nil {
		conn.Close()
		t.Errorf("server %s still listening after dev stopped", hostPort)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(body)
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestLogFormats: log_format json gives one JSON object per line, text
// gives key=value pairs, and the level filters.
func TestLogFormats(t *testing.T) {
	var buf strings.Builder
	log, err := newLogger(&buf, "json", "warn")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "conn", 7)
	var line map[string]any
	if err := json.Unmarshal([]byte(buf.String()), &line); err != nil || line["msg"] != "shown" || line["conn"] != 7.0 {
		t.Errorf("json log %q: %v", buf.String(), err)
	}
	buf.Reset()
	if log, err = newLogger(&buf, "text", "debug"); err != nil {
		t.Fatal(err)
	}
	log.Debug("shown", "conn", 7)
	if !strings.Contains(buf.String(), "level=DEBUG msg=shown conn=7") {
		t.Errorf("text log %q", buf.String())
	}
	if _, err := newLogger(&buf, "xml", "info"); err == nil {
		t.Error("log format xml accepted")
	}
}
