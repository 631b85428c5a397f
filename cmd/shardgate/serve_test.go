package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/sandbox"
)

// TestServeSignals runs `shardgate serve` and drives it with the signals an
// operator sends: SIGHUP reloads the config, SIGTERM drains and exits.
func TestServeSignals(t *testing.T) {
	ctx := t.Context()
	cluster, err := sandbox.Start(ctx, sandbox.Options{Dir: t.TempDir(), Shards: 1, Replicas: sandbox.NoReplicas, Fast: true, Schema: sandbox.Schema})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	listen := freeAddr(t)
	path := filepath.Join(t.TempDir(), "shardgate.yaml")
	base := string(cluster.ConfigYAML(listen)) + "admin_users: [admin]\n"
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
	poolSize := func() string {
		res, err := admin.Exec(ctx, "SHOW CONFIG").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range res[0].Rows {
			if string(row[0]) == "default_pool_size" {
				return string(row[1])
			}
		}
		return ""
	}
	if got := poolSize(); got != "20" {
		t.Fatalf("pool_size %s before reload", got)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(base, "size: 20", "size: 3", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	for got := poolSize(); got != "3"; got = poolSize() {
		if time.Now().After(deadline) {
			t.Fatalf("pool_size %s after SIGHUP, want 3", got)
		}
		time.Sleep(50 * time.Millisecond)
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
