package proxy_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/shardgate/shardgate/metrics"
	"github.com/shardgate/shardgate/proxy"
	"github.com/shardgate/shardgate/topology"
)

// series sums the values of metric name over the series whose labels
// include want: counters, gauges, and histograms' sample counts.
func series(t *testing.T, srv *proxy.Server, name string, want map[string]string) float64 {
	t.Helper()
	families, err := srv.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabels(m, want) {
				sum += value(m)
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range m.GetLabel() {
			found = found || (l.GetName() == k && l.GetValue() == v)
		}
		if !found {
			return false
		}
	}
	return true
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// serveMetrics serves srv's metrics on a free port until the test ends.
func serveMetrics(t *testing.T, srv *proxy.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { metrics.Serve(t.Context(), ln, srv.MetricsHandler()); close(done) }()
	t.Cleanup(func() { <-done })
	return "http://" + ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestMetrics runs known numbers of statements, errors, refusals and
// scatter queries through a proxy and checks each is counted exactly, on
// the shard and role it ran on, and that /metrics serves the histograms.
func TestMetrics(t *testing.T) {
	srv, addr, stop, err := startServer(func(c *topology.Config) { c.Consistency = "primary" })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	base := serveMetrics(t, srv)
	dsn := "postgres://postgres@" + addr + "/app?sslmode=disable"
	keys := keysBy(t, 41_000_000, 10)
	simple := dial(t, dsn, pgx.QueryExecModeSimpleProtocol, nil)
	cached := dial(t, dsn, pgx.QueryExecModeCacheStatement, nil)
	for _, conn := range []*pgx.Conn{simple, cached} { // connect-time and prepare traffic first
		if _, err := conn.Exec(t.Context(), "SELECT count(*) FROM users WHERE id = $1", keys[0][0]); err != nil {
			t.Fatal(err)
		}
	}
	if got := series(t, srv, "shardgate_client_connections", nil); got != 2 {
		t.Errorf("shardgate_client_connections = %v with 2 clients connected", got)
	}

	perShard := func(name string, labels map[string]string) [2]float64 {
		var out [2]float64
		for i, shard := range []string{"s0", "s1"} {
			l := map[string]string{"shard": shard}
			for k, v := range labels {
				l[k] = v
			}
			out[i] = series(t, srv, name, l)
		}
		return out
	}
	primary := map[string]string{"role": "primary"}
	queriesBefore := perShard("shardgate_queries_total", primary)
	histBefore := perShard("shardgate_query_duration_seconds", primary)
	xactsBefore := perShard("shardgate_transactions_total", primary)
	const perConn = 25 // statements per shard per connection
	for shard, ks := range keys {
		for i := range perConn {
			for _, conn := range []*pgx.Conn{simple, cached} {
				if _, err := conn.Exec(t.Context(), "SELECT count(*) FROM users WHERE id = $1", ks[i%len(ks)]); err != nil {
					t.Fatalf("shard %d: %v", shard, err)
				}
			}
		}
	}
	queries := perShard("shardgate_queries_total", primary)
	hist := perShard("shardgate_query_duration_seconds", primary)
	xacts := perShard("shardgate_transactions_total", primary)
	for i := range 2 {
		if d := queries[i] - queriesBefore[i]; d != 2*perConn {
			t.Errorf("s%d: %v statements counted in shardgate_queries_total, sent %d", i, d, 2*perConn)
		}
		if d := hist[i] - histBefore[i]; d != 2*perConn {
			t.Errorf("s%d: %v observations in shardgate_query_duration_seconds, sent %d", i, d, 2*perConn)
		}
		if d := xacts[i] - xactsBefore[i]; d != 2*perConn {
			t.Errorf("s%d: %v transactions counted, ran %d", i, d, 2*perConn)
		}
	}

	t.Run("errors by class", func(t *testing.T) {
		serverErrs := series(t, srv, "shardgate_errors_total", map[string]string{"class": "22", "shard": "s1", "role": "primary"})
		proxyErrs := series(t, srv, "shardgate_errors_total", map[string]string{"class": "0A", "role": "proxy"})
		for range 7 {
			if _, err := simple.Exec(t.Context(), "SELECT 1/0 FROM users WHERE id = $1", keys[1][0]); sqlState(err) != "22012" {
				t.Fatalf("division by zero gave %v", err)
			}
		}
		for range 3 {
			if _, err := cached.Exec(t.Context(), "UPDATE users SET name = 'x'"); sqlState(err) != "0A000" {
				t.Fatalf("keyless UPDATE gave %v", err)
			}
		}
		if d := series(t, srv, "shardgate_errors_total", map[string]string{"class": "22", "shard": "s1", "role": "primary"}) - serverErrs; d != 7 {
			t.Errorf("%v class-22 errors counted on s1, want 7", d)
		}
		if d := series(t, srv, "shardgate_errors_total", map[string]string{"class": "0A", "role": "proxy"}) - proxyErrs; d != 3 {
			t.Errorf("%v proxy refusals counted, want 3", d)
		}
	})

	t.Run("scatter", func(t *testing.T) {
		scatter := series(t, srv, "shardgate_scatter_queries_total", nil)
		before := perShard("shardgate_queries_total", primary)
		for range 4 {
			if _, err := simple.Exec(t.Context(), "SELECT count(*) FROM users"); err != nil {
				t.Fatal(err)
			}
		}
		if d := series(t, srv, "shardgate_scatter_queries_total", nil) - scatter; d != 4 {
			t.Errorf("%v scatter queries counted, ran 4", d)
		}
		after := perShard("shardgate_queries_total", primary)
		for i := range 2 {
			if d := after[i] - before[i]; d != 4 {
				t.Errorf("s%d ran %v parts of 4 scatter queries", i, d)
			}
		}
	})

	t.Run("state", func(t *testing.T) {
		for _, name := range []string{"s0/primary", "s1/primary"} {
			if n := series(t, srv, "shardgate_pool_connections", map[string]string{"server": name, "state": "idle"}); n < 1 {
				t.Errorf("%s: %v idle connections after the load", name, n)
			}
		}
		if n := series(t, srv, "shardgate_plan_cache_hits_total", nil); n < 2*perConn {
			t.Errorf("plan cache hits %v after repeating one statement", n)
		}
		if n := series(t, srv, "shardgate_client_bytes_received_total", nil); n < 100 {
			t.Errorf("client bytes received %v", n)
		}
	})

	t.Run("http", func(t *testing.T) {
		code, body := get(t, base+"/metrics")
		for _, want := range []string{
			`shardgate_query_duration_seconds_bucket{role="primary",shard="s0",le="0.0001"}`,
			`shardgate_query_duration_seconds_bucket{role="primary",shard="s1",le="10"}`,
			`shardgate_pool_wait_duration_seconds_count{role="primary",shard="s0"}`,
			`shardgate_replica_lag_seconds{server="s0/replica0",shard="s0"}`,
			`shardgate_server_up{role="replica",server="s1/replica0",shard="s1"}`,
			"go_goroutines", "process_resident_memory_bytes",
		} {
			if code != http.StatusOK || !strings.Contains(body, want) {
				t.Errorf("/metrics (%d) lacks %s", code, want)
			}
		}
		if code, _ := get(t, base+"/debug/pprof/"); code != http.StatusNotFound {
			t.Errorf("/debug/pprof/ answered %d without pprof: true", code)
		}
	})
}

// TestMetricsFromStart scrapes a proxy that has served nothing: every
// series family it describes already has a series, and the ban and error
// counters exist at zero for every server and for every error class of
// every shard and role, so rate() sees their first event.
func TestMetricsFromStart(t *testing.T) {
	srv, _, stop, err := startServer(func(*topology.Config) {})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	base := serveMetrics(t, srv)
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d", code)
	}
	scraped := parseExposition(t, body)
	for _, name := range describedFamilies(srv) {
		if len(scraped[name]) == 0 {
			t.Errorf("%s has no series before its first event", name)
		}
	}
	zero := func(name string, labels map[string]string) {
		t.Helper()
		for _, s := range scraped[name] {
			if maps.Equal(s.labels, labels) {
				if s.value != 0 {
					t.Errorf("%s%v = %v on a fresh proxy", name, labels, s.value)
				}
				return
			}
		}
		t.Errorf("/metrics lacks %s%v", name, labels)
	}
	for _, shard := range []string{"s0", "s1"} {
		for server, role := range map[string]string{shard + "/primary": "primary", shard + "/replica0": "replica"} {
			zero("shardgate_server_bans_total", map[string]string{"shard": shard, "role": role, "server": server})
			for _, class := range metrics.ErrorClasses() {
				zero("shardgate_errors_total", map[string]string{"shard": shard, "role": role, "class": class})
			}
		}
	}
	for _, class := range metrics.ErrorClasses() {
		zero("shardgate_errors_total", map[string]string{"shard": "", "role": "proxy", "class": class})
	}

	// A server a reload adds (here a second replica entry for s0) gets its
	// ban counter at zero as well.
	cfg, err := topology.ParseConfig("sandbox.yaml", cluster.ConfigYAML("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Shards[0].Replicas = append(cfg.Shards[0].Replicas, cfg.Shards[0].Replicas[0])
	if err := srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	_, body = get(t, base+"/metrics")
	scraped = parseExposition(t, body)
	zero("shardgate_server_bans_total", map[string]string{"shard": "s0", "role": "replica", "server": "s0/replica1"})
}

// describedFamilies names every shardgate series family srv's registry
// describes, whether or not it has series: Gather leaves out families
// without any, which is what TestMetricsFromStart looks for.
func describedFamilies(srv *proxy.Server) []string {
	ch := make(chan *prometheus.Desc)
	go func() { srv.Metrics().Registry().Describe(ch); close(ch) }()
	fqName := regexp.MustCompile(`fqName: "(shardgate_[a-z_]+)"`)
	var names []string
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			names = append(names, m[1])
		}
	}
	return names
}

type sample struct {
	labels map[string]string
	value  float64
}

// parseExposition reads the text exposition format's samples by family:
// a histogram's _bucket, _sum and _count count as its family.
func parseExposition(t *testing.T, body string) map[string][]sample {
	t.Helper()
	line := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
	label := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
	out := map[string][]sample{}
	for _, l := range strings.Split(body, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("unparsable exposition line %q", l)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("exposition line %q: %v", l, err)
		}
		s := sample{labels: map[string]string{}, value: v}
		for _, kv := range label.FindAllStringSubmatch(m[2], -1) {
			if kv[1] != "le" {
				s.labels[kv[1]] = kv[2]
			}
		}
		name := m[1]
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			name = strings.TrimSuffix(name, suffix)
		}
		out[name] = append(out[name], s)
	}
	return out
}

// TestDashboardSeries: every shardgate series the Grafana dashboard queries
// is one the proxy exports before any traffic, so neither a renamed metric
// nor one that waits for its first event leaves a panel empty.
func TestDashboardSeries(t *testing.T) {
	srv, _, stop, err := startServer(func(*topology.Config) {})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	families, err := srv.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range families {
		exported[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				exported[f.GetName()+suffix] = true
			}
		}
	}
	dashboard, err := os.ReadFile("../deploy/grafana/shardgate.json")
	if err != nil {
		t.Fatal(err)
	}
	// Prometheus's job names are the operator's: the dashboard selects
	// through its $job variable, whose values have shardgate series.
	if job := regexp.MustCompile(`job=~?\\"[^$]`).Find(dashboard); job != nil {
		t.Errorf("the dashboard names a job: %s", job)
	}
	used := regexp.MustCompile(`shardgate_[a-z_]+`).FindAllString(string(dashboard), -1)
	if len(used) < 20 {
		t.Fatalf("the dashboard queries only %d shardgate series", len(used))
	}
	for _, name := range used {
		if !exported[name] {
			t.Errorf("the dashboard queries %s, which the proxy does not export", name)
		}
	}
}

// TestPprof: pprof: true serves Go's profiles on the metrics listener.
func TestPprof(t *testing.T) {
	srv, _, stop, err := startServer(func(c *topology.Config) { c.MetricsListen, c.PProf = "127.0.0.1:0", true })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	base := serveMetrics(t, srv)
	if code, body := get(t, base+"/debug/pprof/heap?debug=1"); code != http.StatusOK || !strings.Contains(body, "heap profile") {
		t.Errorf("/debug/pprof/heap: %d %.200s", code, body)
	}
}

// syncBuffer is a log sink the proxy's goroutines may share.
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

func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(b.buf.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		out = append(out, m)
	}
	return out
}

// TestSlowQueryLog: a request slower than log_min_duration is logged once,
// as JSON, with its connection id, shard, role and route reason, and its
// constants (a password here) replaced by placeholders; faster ones are not.
func TestSlowQueryLog(t *testing.T) {
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	srv, addr, stop, err := startLogged(cluster, func(c *topology.Config) {
		c.Consistency = "primary"
		c.LogMinDuration = topology.Duration(150 * time.Millisecond)
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	conn := dial(t, "postgres://postgres@"+addr+"/app?sslmode=disable", pgx.QueryExecModeSimpleProtocol, nil)
	key := keysBy(t, 42_000_000, 1)[1][0]
	for range 5 {
		if _, err := conn.Exec(t.Context(), "SELECT count(*) FROM users WHERE id = $1", key); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(t.Context(), "SELECT pg_sleep(0.2), count(*) FROM users WHERE id = $1 AND name <> 'hunter2'", key); err != nil {
		t.Fatal(err)
	}
	var slow []map[string]any
	for _, l := range logs.lines(t) {
		if l["msg"] == "slow query" {
			slow = append(slow, l)
		}
	}
	// The first statement may be slow too: it waits for a server
	// connection to be opened. Later fast ones must not be logged.
	if len(slow) > 2 || len(slow) == 0 {
		t.Fatalf("%d slow-query lines, want the pg_sleep one: %v", len(slow), slow)
	}
	logged, l := len(slow), slow[len(slow)-1]
	if l["shards"] != "s1" || l["role"] != "primary" || l["target"] != "shard" || l["reason"] == "" || l["conn"] == nil {
		t.Errorf("slow-query line lacks where and why: %v", l)
	}
	if q, _ := l["query"].(string); !strings.Contains(q, "pg_sleep($1)") || strings.Contains(q, "hunter2") {
		t.Errorf("logged query %q: want constants replaced", q)
	}
	if n := series(t, srv, "shardgate_slow_queries_total", nil); n != float64(logged) {
		t.Errorf("shardgate_slow_queries_total = %v", n)
	}
}
