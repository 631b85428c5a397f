package sandbox

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestKeyRanges(t *testing.T) {
	for n, want := range map[int][]string{
		1: {"-"},
		2: {"-80", "80-"},
		3: {"-55", "55-aa", "aa-"},
		4: {"-40", "40-80", "80-c0", "c0-"},
	} {
		if got := keyRanges(n); !slices.Equal(got, want) {
			t.Errorf("keyRanges(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestSandbox(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	if _, err := os.Stat(filepath.Join(findBinDir(), "pg_ctl")); err != nil {
		t.Fatal("PostgreSQL binaries not found: run .ci/run or install postgresql-15")
	}
	schema := Schema
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	opts := Options{
		Dir:    t.TempDir(),
		Shards: 2, Replicas: 1,
		Schema: schema,
		Fast:   true,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	}

	began := time.Now()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start (fresh, Fast, 2x1) took %v", time.Since(began))
	t.Cleanup(func() { c.Stop() })

	if len(c.Shards) != 2 || len(c.Shards[0].Replicas) != 1 || len(c.Shards[1].Replicas) != 1 {
		t.Fatalf("got %d shards, want 2 with 1 replica each", len(c.Shards))
	}
	for i, sh := range c.Shards {
		p, r := sh.Primary, sh.Replicas[0]
		if got := query(ctx, t, p, "SELECT to_regclass('public.users') IS NOT NULL"); got != "t" {
			t.Errorf("%s: table users missing", p.Name)
		}
		if got := query(ctx, t, r, "SELECT pg_is_in_recovery()"); got != "t" {
			t.Errorf("%s: pg_is_in_recovery() = %s", r.Name, got)
		}
		query(ctx, t, p, fmt.Sprintf("INSERT INTO users (id, name) VALUES (%d, 'user%d')", i+1, i+1))
		countSQL := fmt.Sprintf("SELECT count(*) FROM users WHERE id = %d", i+1)
		deadline := time.Now().Add(5 * time.Second)
		for query(ctx, t, r, countSQL) != "1" {
			if time.Now().After(deadline) {
				t.Fatalf("%s: row inserted on %s did not arrive within 5s", r.Name, p.Name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	yaml := string(c.ConfigYAML("127.0.0.1:6432"))
	for _, s := range c.servers() {
		if !strings.Contains(yaml, fmt.Sprintf("127.0.0.1:%d/app", s.Port)) {
			t.Errorf("ConfigYAML lacks %s's port %d:\n%s", s.Name, s.Port, yaml)
		}
	}
	if !strings.Contains(yaml, `{range: "-80", shard: s0}`) || !strings.Contains(yaml, `{range: "80-", shard: s1}`) {
		t.Errorf("ConfigYAML keyspace:\n%s", yaml)
	}

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}

	opts.Shards = 3 // ignored on reuse
	began = time.Now()
	again, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start (reuse) took %v", time.Since(began))
	t.Cleanup(func() { again.Stop() })
	if got, want := ports(again), ports(c); !slices.Equal(got, want) {
		t.Errorf("reuse ports = %v, want %v", got, want)
	}
	for i, sh := range again.Shards {
		for _, s := range append([]*Server{sh.Primary}, sh.Replicas...) {
			if got := query(ctx, t, s, fmt.Sprintf("SELECT name FROM users WHERE id = %d", i+1)); got != fmt.Sprintf("user%d", i+1) {
				t.Errorf("%s after restart: user %d = %q", s.Name, i+1, got)
			}
		}
	}
	if err := again.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := again.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func ports(c *Cluster) []int {
	var ps []int
	for _, s := range c.servers() {
		ps = append(ps, s.Port)
	}
	return ps
}

// query runs sql in database app and returns the first column of the first
// row, or "" if there is none.
func query(ctx context.Context, t *testing.T, s *Server, sql string) string {
	t.Helper()
	conn, err := pgconn.Connect(ctx, s.DSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		t.Fatalf("%s: %s: %v", s.Name, sql, err)
	}
	if len(results) == 0 || len(results[0].Rows) == 0 {
		return ""
	}
	return string(results[0].Rows[0][0])
}
