package proxy_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/topology"
)

// readyzInterval is the health check interval of TestReadyz's proxy.
const readyzInterval = 100 * time.Millisecond

// TestReadyz: over its own two-shard sandbox, /readyz is 200 once both
// primaries answer their health checks; with s1's primary stopped it turns
// 503 within a few intervals, naming s1 and not s0, while /healthz stays
// 200; with it started again it turns 200; a draining proxy, and one
// whose Serve is closing down, is not ready.
func TestReadyz(t *testing.T) {
	c := ownCluster(t, 2, 0)
	srv, addr, stop, err := startServerOver(c, func(cfg *topology.Config) {
		cfg.HealthCheckInterval = topology.Duration(readyzInterval)
		cfg.HealthCheckTimeout = topology.Duration(time.Second)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	base := serveMetrics(t, srv)

	awaitReadyz(t, base, http.StatusOK, "ready", 10*time.Second)
	victim := c.Shards[1].Primary
	if err := c.StopServer(t.Context(), victim); err != nil {
		t.Fatal(err)
	}
	// Stopped, the server fails its next probe at once (connection refused).
	body := awaitReadyz(t, base, http.StatusServiceUnavailable, "s1", 10*readyzInterval+2*time.Second)
	if strings.Contains(body, "s0") {
		t.Errorf("/readyz blames s0, whose primary is up: %q", body)
	}
	if code, body := get(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz with a primary down: %d %q", code, body)
	}
	if err := c.StartServer(t.Context(), victim); err != nil {
		t.Fatal(err)
	}
	awaitReadyz(t, base, http.StatusOK, "ready", 10*readyzInterval+2*time.Second)

	// A client in a transaction keeps the drain going until it commits;
	// then Serve closes down.
	conn := dial(t, "postgres://postgres@"+addr+"/app?sslmode=disable", pgx.QueryExecModeSimpleProtocol, nil)
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), "SELECT count(*) FROM users WHERE id = 1"); err != nil {
		t.Fatal(err)
	}
	drained := make(chan error, 1)
	go func() { drained <- srv.Drain(t.Context()) }()
	awaitReadyz(t, base, http.StatusServiceUnavailable, "draining", 5*time.Second)
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz of a draining proxy: %d", code)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	awaitReadyz(t, base, http.StatusServiceUnavailable, "shutting down", 5*time.Second)
}

// awaitReadyz polls /readyz until it answers code with a body containing
// want, and fails the test if that takes longer than within; it returns
// the body.
func awaitReadyz(t *testing.T, base string, code int, want string, within time.Duration) string {
	t.Helper()
	began := time.Now()
	for {
		got, body := get(t, base+"/readyz")
		if got == code && strings.Contains(body, want) {
			t.Logf("/readyz %d %q after %v", got, strings.TrimSpace(body), time.Since(began).Round(time.Millisecond))
			return body
		}
		if time.Since(began) > within {
			t.Fatalf("/readyz still %d %q after %v, want %d %q", got, body, within, code, want)
		}
		time.Sleep(readyzInterval / 2)
	}
}
