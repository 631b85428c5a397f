package metrics

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestClass(t *testing.T) {
	for code, want := range map[string]string{"23505": "23", "0A000": "0A", "": "unknown", "XX": "unknown"} {
		if got := Class(code); got != want {
			t.Errorf("Class(%q) = %q, want %q", code, got, want)
		}
	}
}

// TestRecordingDoesNotAllocate: the per-statement path runs once per client
// round trip, so it must not put work on the garbage collector.
func TestRecordingDoesNotAllocate(t *testing.T) {
	s := New().Server("s0", "primary", "s0/primary")
	if n := testing.AllocsPerRun(1000, func() { recordStatement(s) }); n != 0 {
		t.Errorf("%v allocations per statement recorded", n)
	}
}

func recordStatement(s *Server) {
	s.Wait(3 * time.Microsecond)
	s.Query(180*time.Microsecond, 60, 120)
	s.Xact(200 * time.Microsecond)
}

// TestMetricsHandler: the text exposition carries the histogram buckets, with the
// 200 ms target as a boundary, and pprof only when asked for.
func TestMetricsHandler(t *testing.T) {
	m := New()
	recordStatement(m.Server("s0", "replica", "s0/replica0"))
	m.ProxyError("0A000")
	for _, pprof := range []bool{false, true} {
		srv := httptest.NewServer(m.Handler(pprof, nil))
		body := fetch(t, srv.URL+"/metrics")
		for _, want := range []string{
			`shardgate_query_duration_seconds_bucket{role="replica",shard="s0",le="0.0002"} 1`,
			`shardgate_query_duration_seconds_bucket{role="replica",shard="s0",le="0.2"} 1`,
			`shardgate_queries_total{role="replica",shard="s0"} 1`,
			`shardgate_server_bytes_received_total{role="replica",shard="s0"} 120`,
			`shardgate_errors_total{class="0A",role="proxy",shard=""} 1`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		resp, err := srv.Client().Get(srv.URL + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.StatusCode == 200; got != pprof {
			t.Errorf("pprof %v: /debug/pprof/ answered %d", pprof, resp.StatusCode)
		}
		srv.Close()
	}
}

func fetch(t *testing.T, url string) string {
	t.Helper()
	_, body := probe(t, url)
	return body
}

// BenchmarkRecordStatement is what metrics add to one client round trip:
// a pool wait, a query and a transaction observed.
func BenchmarkRecordStatement(b *testing.B) {
	s := New().Server("s0", "primary", "s0/primary")
	b.ReportAllocs()
	for b.Loop() {
		recordStatement(s)
	}
}

// BenchmarkRecordStatementParallel is the same from every core at once,
// as many clients record into one shard's series.
func BenchmarkRecordStatementParallel(b *testing.B) {
	s := New().Server("s0", "primary", "s0/primary")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			recordStatement(s)
		}
	})
}

// TestMetricSeriesFromStart: binding a server creates its ban counter and its
// shard and role's error counters at zero, one per class, and a new
// registry has the proxy's own error counters; an event then adds to the
// series that was already there.
func TestMetricSeriesFromStart(t *testing.T) {
	m := New()
	servers := [][2]string{{"primary", "s0/primary"}, {"replica", "s0/replica0"}, {"replica", "s0/replica1"}}
	for _, s := range servers {
		m.Server("s0", s[0], s[1])
	}
	classes := ErrorClasses()
	for _, code := range []string{"23505", "40001", "57014", "08006", "0A000", "42601", "XX000", ""} {
		if !slices.Contains(classes, Class(code)) {
			t.Errorf("ErrorClasses lacks the class of %q", code)
		}
	}
	srv := httptest.NewServer(m.Handler(false, nil))
	defer srv.Close()
	body := fetch(t, srv.URL+"/metrics")
	var want []string
	for _, s := range servers {
		want = append(want, fmt.Sprintf(`shardgate_server_bans_total{role=%q,server=%q,shard="s0"} 0`, s[0], s[1]))
	}
	for _, class := range classes {
		for _, labels := range []string{`role="primary",shard="s0"`, `role="replica",shard="s0"`, `role="proxy",shard=""`} {
			want = append(want, fmt.Sprintf(`shardgate_errors_total{class=%q,%s} 0`, class, labels))
		}
	}
	for _, line := range want {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("/metrics lacks %s", line)
		}
	}
	m.Ban("s0", "replica", "s0/replica1")
	if body := fetch(t, srv.URL+"/metrics"); !strings.Contains(body, `shardgate_server_bans_total{role="replica",server="s0/replica1",shard="s0"} 1`+"\n") {
		t.Errorf("a ban is not counted on its server's series")
	}
}

// TestHealthAndReadyProbes: /healthz is 200 whatever readiness says; /readyz is 200, or
// 503 with the reason while the proxy is not ready.
func TestHealthAndReadyProbes(t *testing.T) {
	var notReady error
	srv := httptest.NewServer(New().Handler(false, func() error { return notReady }))
	defer srv.Close()
	for _, reason := range []error{nil, errors.New("primary unreachable: s1"), nil} {
		notReady = reason
		code, body := probe(t, srv.URL+"/healthz")
		if code != http.StatusOK || body != "ok\n" {
			t.Errorf("/healthz answered %d %q", code, body)
		}
		code, body = probe(t, srv.URL+"/readyz")
		switch {
		case reason == nil && (code != http.StatusOK || body != "ready\n"):
			t.Errorf("ready: /readyz answered %d %q", code, body)
		case reason != nil && (code != http.StatusServiceUnavailable || body != reason.Error()+"\n"):
			t.Errorf("not ready (%v): /readyz answered %d %q", reason, code, body)
		}
	}
	// A nil readiness function (a listener without a proxy) is always ready.
	plain := httptest.NewServer(New().Handler(false, nil))
	defer plain.Close()
	if code, _ := probe(t, plain.URL+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz without a readiness function answered %d", code)
	}
}

func probe(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
