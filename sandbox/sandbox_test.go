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

// TestAddShard adds a shard to a running sandbox through one Cluster and
// stops it through another loaded before the addition, as `dev add-shard`
// and a running `dev` do; Start must then bring the new shard back.
func TestAddShard(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	opts := Options{
		Dir: t.TempDir(), Shards: 1, Replicas: 1, Schema: Schema, Fast: true,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	loadedBefore, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	sh, err := c.AddShard(ctx, "s9")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("AddShard (Fast, 1 replica) took %v", time.Since(began))
	if len(sh.Replicas) != 1 || c.Shard("s9") != sh || len(c.Shards) != 2 {
		t.Fatalf("AddShard gave %d replicas; cluster has %d shards", len(sh.Replicas), len(c.Shards))
	}
	p, r := sh.Primary, sh.Replicas[0]
	if got := query(ctx, t, p, "SELECT to_regclass('public.users') IS NULL AND current_setting('fsync') = 'off'"); got != "t" {
		t.Errorf("%s: want database app without the schema, and Fast settings (fsync off)", p.Name)
	}
	query(ctx, t, p, "CREATE TABLE t AS SELECT 42 AS id")
	waitFor(ctx, t, r, "SELECT to_regclass('public.t') IS NOT NULL", "t")
	if got := query(ctx, t, r, "SELECT count(*) FROM t WHERE id = 42"); got != "1" {
		t.Errorf("%s: the row written on %s: count %s, want 1", r.Name, p.Name, got)
	}
	if _, err := c.AddShard(ctx, "s9"); err == nil || !strings.Contains(err.Error(), "shard s9 exists") {
		t.Errorf("second AddShard s9: %v, want an error saying it exists", err)
	}

	saved, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := saved.Shard("s9"); got == nil || got.Primary.Port != p.Port || got.Replicas[0].Port != r.Port || !saved.Fast {
		t.Fatalf("sandbox.json: s9 = %+v, fast %v", got, saved.Fast)
	}

	if err := loadedBefore.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, s := range c.servers() {
		if c.Running(ctx, s) {
			t.Errorf("%s still runs after Stop of a Cluster loaded before AddShard", s.Name)
		}
	}
	again, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { again.Stop() })
	if got := query(ctx, t, again.Shard("s9").Replicas[0], "SELECT count(*) FROM t WHERE id = 42"); got != "1" {
		t.Errorf("s9's replica after restart: count %s, want 1", got)
	}
	if err := again.Stop(); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls sql on s until it returns want, for up to 5s.
func waitFor(ctx context.Context, t *testing.T, s *Server, sql, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for query(ctx, t, s, sql) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not return %s within 5s", s.Name, sql, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
