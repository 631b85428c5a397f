package backend

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shardgate/shardgate/metrics"
	"github.com/shardgate/shardgate/topology"
)

// Nothing listens on port 1: pools open without connecting, and anything
// that does connect fails at once.
const (
	dsnA = "postgres://u@127.0.0.1:1/a"
	dsnB = "postgres://u@127.0.0.1:1/b"
	dsnC = "postgres://u@127.0.0.1:1/c"
	dsnD = "postgres://u@127.0.0.1:1/d"
)

func testConfig(shards ...topology.ShardConfig) *topology.Config {
	return &topology.Config{
		Shards:              shards,
		Pool:                topology.PoolConfig{Size: 2, ServerConnectTimeout: topology.Duration(time.Second)},
		BanTime:             topology.Duration(time.Minute),
		HealthCheckInterval: topology.Duration(20 * time.Millisecond),
		HealthCheckTimeout:  topology.Duration(time.Second),
	}
}

func testDeps() Deps {
	return Deps{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics.New()}
}

// newTestSet is a Set whose monitors never run: tests set the nodes' health
// as a probe would.
func newTestSet(t *testing.T, cfg *topology.Config, old *Set) *Set {
	t.Helper()
	s, err := New(cfg, old, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.CloseExcept(old) })
	for _, n := range s.Nodes() {
		n.healthy.Store(true)
	}
	return s
}

// down marks n as a failed probe leaves it.
func down(n *Node) {
	n.healthy.Store(false)
	n.bannedUntil.Store(time.Now().Add(time.Minute).UnixNano())
}

func TestPrimaryFollowsPromotion(t *testing.T) {
	s := newTestSet(t, testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnB, dsnC}}), nil)
	prim, r0, r1 := s.primaries[0], s.replicas[0][0], s.replicas[0][1]
	if s.Primary(0) != prim {
		t.Fatalf("Primary = %s, want the configured primary", s.Primary(0).Name())
	}
	if p, err := s.PrimaryPool(0); err != nil || p != prim.Pool() {
		t.Fatalf("PrimaryPool = %v, %v, want the primary's pool", p, err)
	}
	if s.promote(r0, prim) {
		t.Fatal("promoted a replica over a primary that is up")
	}
	prim.bannedUntil.Store(time.Now().Add(time.Minute).UnixNano())
	if s.promote(r0, prim) {
		t.Fatal("promoted over a primary banned for one broken connection while its probe succeeds")
	}
	if !prim.Banned() || prim.Down() {
		t.Fatalf("banned and healthy: Banned %v Down %v, want true false", prim.Banned(), prim.Down())
	}
	down(prim)
	if _, err := s.PrimaryPool(0); err == nil || err.Error() != "shard s0 has no reachable primary" {
		t.Fatalf("PrimaryPool with the primary down: %v", err)
	}
	down(r1) // r1 must not keep its ban once promoted
	r1.healthy.Store(true)
	if !s.promote(r1, prim) {
		t.Fatal("no promotion over a down primary")
	}
	if s.Primary(0) != r1 || !r1.promoted.Load() || r1.Banned() {
		t.Fatalf("after promotion: Primary %s, promoted %v, banned %v", s.Primary(0).Name(), r1.promoted.Load(), r1.Banned())
	}
	if p, err := s.PrimaryPool(0); err != nil || p != r1.Pool() {
		t.Fatalf("PrimaryPool after promotion = %v, %v, want the promoted replica's pool", p, err)
	}
	if s.promote(r0, prim) {
		t.Fatal("a second replica promoted over a primary already replaced")
	}
	if r1.Role() != "replica" || prim.Role() != "primary" {
		t.Fatalf("configured roles changed: %s %s", r1.Role(), prim.Role())
	}
}

func TestAnyShardPassesOverDownPrimaries(t *testing.T) {
	s := newTestSet(t, testConfig(
		topology.ShardConfig{Name: "s0", Primary: dsnA},
		topology.ShardConfig{Name: "s1", Primary: dsnB},
		topology.ShardConfig{Name: "s2", Primary: dsnC},
	), nil)
	seen := map[int]int{}
	for range 30 {
		seen[s.AnyShard()]++
	}
	if len(seen) != 3 || seen[0] != 10 {
		t.Fatalf("spread over up primaries: %v, want 10 each", seen)
	}
	down(s.primaries[0])
	down(s.primaries[2])
	for range 10 {
		if got := s.AnyShard(); got != 1 {
			t.Fatalf("AnyShard = %d with only s1's primary up", got)
		}
	}
	down(s.primaries[1])
	seen = map[int]int{}
	for range 30 {
		seen[s.AnyShard()]++
	}
	if len(seen) != 3 {
		t.Fatalf("every primary down: %v, want still spread", seen)
	}
}

func TestNewReusesUnchangedServers(t *testing.T) {
	old := newTestSet(t, testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnB, dsnC}}), nil)
	old.nextAny.Store(41)
	cfg := testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnC, dsnD}})
	cfg.Pool.Size = 7
	s, err := New(cfg, old, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.primaries[0] != old.primaries[0] {
		t.Error("unchanged primary not reused")
	}
	if s.replicas[0][0] != old.replicas[0][1] {
		t.Error("unchanged replica not reused")
	}
	if s.replicas[0][0].Name() != "s0/replica1" {
		t.Errorf("a reused node keeps its name: %s", s.replicas[0][0].Name())
	}
	if s.replicas[0][1] == old.replicas[0][0] || s.replicas[0][1].DSN() != dsnD {
		t.Error("new replica not opened")
	}
	if s.nextAny != old.nextAny || s.nextAny.Load() != 41 || s.promoteMu != old.promoteMu {
		t.Error("round-robin and promotion lock not carried over")
	}
	if s.Primary(0).owner.Load() != old {
		t.Error("a reused node answers to the new Set before it starts")
	}

	dropped := old.replicas[0][0]
	old.CloseExcept(s)
	select {
	case <-dropped.done:
	default:
		t.Fatal("dropped node not closed")
	}
	for _, n := range s.Nodes() {
		select {
		case <-n.stop:
			t.Fatalf("%s closed with the old Set", n.Name())
		default:
		}
	}

	tls := testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnC, dsnD}})
	tls.ServerTLS.Mode = "require"
	s2, err := New(tls, s, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.CloseExcept(s)
	for _, n := range s2.Nodes() {
		if n == s.primaries[0] || !strings.Contains(n.DSN(), "sslmode=require") {
			t.Fatalf("server_tls change: %s (%s) reused or without sslmode", n.Name(), n.DSN())
		}
	}
}

// TestNewRenamedShardGetsNewNodes: a shard replaced at its index under a
// new name (a reshard) gets nodes of its own even on the same servers.
func TestNewRenamedShardGetsNewNodes(t *testing.T) {
	old := newTestSet(t, testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnB}}), nil)
	s, err := New(testConfig(topology.ShardConfig{Name: "s9", Primary: dsnA, Replicas: []string{dsnB}}), old, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	defer s.CloseExcept(old)
	if s.primaries[0] == old.primaries[0] || s.replicas[0][0] == old.replicas[0][0] {
		t.Fatal("a renamed shard reused the old shard's nodes")
	}
	if s.Primary(0).Name() != "s9/primary" {
		t.Fatalf("new primary named %s", s.Primary(0).Name())
	}
}

func TestNewClosesWhatItOpenedOnError(t *testing.T) {
	old := newTestSet(t, testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA}), nil)
	_, err := New(testConfig(
		topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnB}},
		topology.ShardConfig{Name: "s1", Primary: "postgres://u@127.0.0.1:notaport/x"},
	), old, testDeps())
	if err == nil {
		t.Fatal("New accepted a DSN pool.New rejects")
	}
	select {
	case <-old.primaries[0].stop:
		t.Fatal("a failed New closed a node of the old Set")
	default:
	}
}

func TestBan(t *testing.T) {
	s := newTestSet(t, testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA}), nil)
	n := s.primaries[0]
	if n.Banned() || !n.BannedUntil().IsZero() {
		t.Fatal("a new node is banned")
	}
	before := time.Now()
	n.Ban(errors.New("broken"))
	until := n.BannedUntil()
	if !n.Banned() || until.Before(before.Add(time.Minute)) || until.After(time.Now().Add(time.Minute)) {
		t.Fatalf("banned until %v, want ban_time (1m) from now", until)
	}
	if n.Down() {
		t.Fatal("a healthy node banned for one connection counts as down")
	}
	s.cfg.BanTime = topology.Duration(time.Second)
	n.Ban(errors.New("again"))
	if !n.BannedUntil().Equal(until) {
		t.Fatal("a shorter ban cut the longer one short")
	}
}

func TestLendCountsOutstanding(t *testing.T) {
	s := newTestSet(t, testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnB}}), nil)
	r := s.replicas[0][0]
	if _, err := r.Lend(t.Context(), nil); err == nil {
		t.Fatal("lent a connection to a server that is not there")
	}
	if got := r.outstanding.Load(); got != 0 {
		t.Fatalf("outstanding after a failed Lend = %d, want 0", got)
	}
	r.outstanding.Add(2)
	r.Returned()
	if got := r.outstanding.Load(); got != 1 {
		t.Fatalf("outstanding after Returned = %d, want 1", got)
	}
}

// TestMonitorBansUnreachable runs the monitors for real against servers
// that are not there: each node is banned and down after its first probe.
func TestMonitorBansUnreachable(t *testing.T) {
	s, err := New(testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnB}}), nil, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	deadline := time.Now().Add(5 * time.Second)
	for _, n := range s.Nodes() {
		for !n.Down() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if !n.Down() || n.Healthy() {
			t.Errorf("%s: down %v healthy %v after failed probes", n.Name(), n.Down(), n.Healthy())
		}
	}
	if _, err := s.PrimaryPool(0); err == nil {
		t.Error("PrimaryPool served a primary its monitor found unreachable")
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop the monitors")
	}
}
