package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shardgate/shardgate/reshard"
	"github.com/shardgate/shardgate/topology"
)

// The plan is printed and refused before any server is contacted: these
// configs name servers nobody listens on.
func TestReshardPreflightPlans(t *testing.T) {
	run := func(args ...string) (string, error) {
		root := rootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"reshard", "preflight", "-c", "../../testdata/config/valid.yaml"}, args...))
		err := root.ExecuteContext(t.Context())
		return out.String(), err
	}
	const s2, s3 = "s2=postgres://x@127.0.0.1:1/app", "s3=postgres://x@127.0.0.1:2/app"
	out, err := run("--range", "80-", "--at", "c0", "--to", s2, "--to", s3)
	if err == nil || !strings.Contains(out, "after : -80=s0 80-c0=s2 c0-=s3") || !strings.Contains(err.Error(), "connect to the primary of source shard s1") {
		t.Errorf("split: %v\n%s", err, out)
	}
	out, err = run("--range", "40-80", "--to", s2)
	if err == nil || !strings.Contains(err.Error(), "range 40-80 is not in the keyspace") || strings.Contains(out, "after") {
		t.Errorf("a range that does not exist: %v\n%s", err, out)
	}
	_, err = run("--range", "80-", "--at", "c0", "--to", s2)
	if err == nil || !strings.Contains(err.Error(), "two --to") {
		t.Errorf("a split with one target: %v", err)
	}
	_, err = run("--range", "80-", "--to", "s9")
	if err == nil || !strings.Contains(err.Error(), "no sandbox beside the config") {
		t.Errorf("a bare name outside a sandbox: %v", err)
	}
}

// RewriteLayout changes the shards and keyspace of a config file and
// nothing else: its comments and other settings stay.
func TestRewriteLayoutKeepsTheRest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shardgate.yaml")
	orig, err := os.ReadFile("../../testdata/config/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, orig, 0o640); err != nil {
		t.Fatal(err)
	}
	cfg, err := topology.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := reshard.Move(cfg, "80-", topology.ShardConfig{Name: "s2", Primary: "postgres://shardgate@127.0.0.1:7004/app"})
	if err != nil {
		t.Fatal(err)
	}
	next, err := p.Apply(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := reshard.RewriteLayout(path, reshard.LayoutOf(next)); err != nil {
		t.Fatal(err)
	}
	got, err := topology.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Shards[1].Name != "s2" || got.Keyspace[1].Shard != "s2" || got.Pool.Size != cfg.Pool.Size || len(got.Tables) != len(cfg.Tables) {
		t.Errorf("rewritten config: shards %v keyspace %v pool %d tables %d", got.Shards, got.Keyspace, got.Pool.Size, len(got.Tables))
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "# A two-shard setup") {
		t.Errorf("the comment at the top was lost:\n%s", data)
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want the file's 0640 kept", info.Mode().Perm())
	}
}

// A cutover without --proxy is refused before anything happens: a proxy
// left on the old layout would write where complete then deletes.
func TestReshardCutoverNeedsProxies(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "shardgate.yaml")
	orig, err := os.ReadFile("../../testdata/config/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := topology.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := reshard.Move(cfg, "80-", topology.ShardConfig{Name: "s2", Primary: "postgres://x@127.0.0.1:1/app"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := reshard.Begin(path, cfg, p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st.Phase = reshard.PhaseCopied
	if err := st.Save(); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, t.Context(), "reshard", "cutover", "-c", path)
	if err == nil || !strings.Contains(err.Error(), "--proxy") {
		t.Fatalf("cutover without --proxy: %v\n%s", err, out)
	}
}
