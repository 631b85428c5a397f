package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
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
	s := New().Server("s0", "primary")
	if n := testing.AllocsPerRun(1000, func() { recordStatement(s) }); n != 0 {
		t.Errorf("%v allocations per statement recorded", n)
	}
}

func recordStatement(s *Server) {
	s.Wait(3 * time.Microsecond)
	s.Query(180*time.Microsecond, 60, 120)
	s.Xact(200 * time.Microsecond)
}

// TestHandler: the text exposition carries the histogram buckets, with the
// 200 ms target as a boundary, and pprof only when asked for.
func TestHandler(t *testing.T) {
	m := New()
	recordStatement(m.Server("s0", "replica"))
	m.ProxyError("0A000")
	for _, pprof := range []bool{false, true} {
		srv := httptest.NewServer(m.Handler(pprof))
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
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// BenchmarkRecordStatement is what metrics add to one client round trip:
// a pool wait, a query and a transaction observed.
func BenchmarkRecordStatement(b *testing.B) {
	s := New().Server("s0", "primary")
	b.ReportAllocs()
	for b.Loop() {
		recordStatement(s)
	}
}

// BenchmarkRecordStatementParallel is the same from every core at once,
// as many clients record into one shard's series.
func BenchmarkRecordStatementParallel(b *testing.B) {
	s := New().Server("s0", "primary")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			recordStatement(s)
		}
	})
}
