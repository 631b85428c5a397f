package backend

import (
	"testing"
	"time"

	"github.com/shardgate/shardgate/topology"
)

// replicaState is what the monitor and the proxy's loans leave on a replica.
type replicaState struct {
	healthy, banned, promoted bool
	lagMicros, lagBytes       int64
	lsn                       uint64
	outstanding               int32
}

func (st replicaState) apply(n *Node) {
	n.healthy.Store(st.healthy)
	n.bannedUntil.Store(0)
	if st.banned {
		n.bannedUntil.Store(time.Now().Add(time.Minute).UnixNano())
	}
	n.promoted.Store(st.promoted)
	n.lagMicros.Store(st.lagMicros)
	n.lagBytes.Store(st.lagBytes)
	n.lsn.Store(st.lsn)
	n.outstanding.Store(st.outstanding)
	n.wanted.Store(0)
}

func TestPickRead(t *testing.T) {
	s := newTestSet(t, testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnB, dsnC, dsnD}}), nil)
	ok := replicaState{healthy: true, lsn: 100}
	busy := replicaState{healthy: true, lsn: 100, outstanding: 3}
	busier := replicaState{healthy: true, lsn: 100, outstanding: 5}
	fallback := ReadPolicy{PrimaryReads: "fallback"}
	for _, tc := range []struct {
		name   string
		reps   [3]replicaState
		need   uint64
		policy ReadPolicy
		want   int // replica index; -1: the primary
	}{
		{"least busy", [3]replicaState{busy, {healthy: true, lsn: 100, outstanding: 1}, busy}, 0, fallback, 1},
		{"unhealthy skipped", [3]replicaState{{lsn: 100}, busy, busier}, 0, fallback, 1},
		{"banned skipped", [3]replicaState{{healthy: true, banned: true, lsn: 100}, busy, {healthy: true, banned: true}}, 0, fallback, 1},
		{"promoted skipped", [3]replicaState{busy, {healthy: true, promoted: true, lsn: 100}, {healthy: true, promoted: true}}, 0, fallback, 0},
		{"over lag time", [3]replicaState{{healthy: true, lagMicros: 2e6}, busy, busier}, 0, ReadPolicy{MaxLag: time.Second}, 1},
		{"at lag time", [3]replicaState{{healthy: true, lagMicros: 1e6}, busy, busy}, 0, ReadPolicy{MaxLag: time.Second}, 0},
		{"over lag bytes", [3]replicaState{busy, {healthy: true, lagBytes: 1 << 20}, busier}, 0, ReadPolicy{MaxLagBytes: 1 << 10}, 0},
		{"no limit", [3]replicaState{busy, {healthy: true, lagBytes: 1 << 40, lagMicros: 1e12}, busy}, 0, fallback, 1},
		{"behind the need", [3]replicaState{{healthy: true, lsn: 99}, busy, {healthy: true, lsn: 50}}, 100, fallback, 1},
		{"all behind: primary", [3]replicaState{{healthy: true, lsn: 99}, {healthy: true, lsn: 98}, {healthy: true}}, 100, fallback, -1},
		{"unknown need: primary", [3]replicaState{ok, ok, ok}, UnknownLSN, fallback, -1},
		{"none usable: primary", [3]replicaState{{}, {healthy: true, banned: true}, {healthy: true, promoted: true}}, 0, fallback, -1},
		{"always: idle primary competes", [3]replicaState{busy, busy, busy}, 0, ReadPolicy{PrimaryReads: "always"}, -1},
	} {
		for i, st := range tc.reps {
			st.apply(s.replicas[0][i])
		}
		got, err := s.PickRead(0, tc.need, tc.policy)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		want := s.Primary(0)
		if tc.want >= 0 {
			want = s.replicas[0][tc.want]
		}
		if got == nil {
			got = s.Primary(0)
		}
		if got != want {
			t.Errorf("%s: picked %s, want %s", tc.name, got.Name(), want.Name())
		}
	}
}

// TestPickReadWantsReplay: a replica passed over for being behind a known
// need is asked to report its replay until it reaches it; an unknown need
// asks nothing.
func TestPickReadWantsReplay(t *testing.T) {
	s := newTestSet(t, testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnB, dsnC}}), nil)
	behind, ahead := s.replicas[0][0], s.replicas[0][1]
	replicaState{healthy: true, lsn: 10}.apply(behind)
	replicaState{healthy: true, lsn: 500}.apply(ahead)
	if n, err := s.PickRead(0, 400, ReadPolicy{}); n != ahead || err != nil {
		t.Fatalf("PickRead = %v, %v, want the replica past the need", n, err)
	}
	if got := behind.wanted.Load(); got != 400 {
		t.Fatalf("wanted = %d, want 400", got)
	}
	select {
	case <-behind.poke:
	default:
		t.Fatal("the monitor was not woken")
	}
	if ahead.wanted.Load() != 0 {
		t.Fatal("a replica past the need was asked to poll")
	}
	s.PickRead(0, 300, ReadPolicy{})
	if got := behind.wanted.Load(); got != 400 {
		t.Fatalf("a lower need lowered wanted to %d", got)
	}
	replicaState{healthy: true, lsn: 10}.apply(behind)
	s.PickRead(0, UnknownLSN, ReadPolicy{})
	if got := behind.wanted.Load(); got != 0 {
		t.Fatalf("an unknown need set wanted to %x", got)
	}
}

func TestPickReadNever(t *testing.T) {
	s := newTestSet(t, testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnB}}), nil)
	never := ReadPolicy{PrimaryReads: "never"}
	r := s.replicas[0][0]
	replicaState{healthy: true, banned: true}.apply(r)
	n, err := s.PickRead(0, 0, never)
	if n != nil || err == nil || err.Code != "08006" || err.Message != "shardgate: no usable replica for shard s0 (primary_reads: never)" {
		t.Fatalf("PickRead with no usable replica = %v, %v, want 08006", n, err)
	}
	// Read-your-writes may still fall back to the primary.
	replicaState{healthy: true, lsn: 5}.apply(r)
	if n, err := s.PickRead(0, 10, never); n != nil || err != nil {
		t.Fatalf("PickRead behind the need = %v, %v, want the primary", n, err)
	}
	// Without replicas at all, never refuses too.
	s2 := newTestSet(t, testConfig(topology.ShardConfig{Name: "solo", Primary: dsnC}), nil)
	if _, err := s2.PickRead(0, 0, never); err == nil || err.Code != "08006" {
		t.Fatalf("PickRead on a shard without replicas = %v, want 08006", err)
	}
}

func TestPickReadAlways(t *testing.T) {
	s := newTestSet(t, testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnB}}), nil)
	r := s.replicas[0][0]
	always := ReadPolicy{PrimaryReads: "always"}
	replicaState{healthy: true, outstanding: 1}.apply(r)
	if n, _ := s.PickRead(0, 0, always); n != nil {
		t.Fatal("a busier replica won over an idle primary")
	}
	s.primaries[0].bannedUntil.Store(time.Now().Add(time.Minute).UnixNano())
	if n, _ := s.PickRead(0, 0, always); n != r {
		t.Fatal("a banned primary competed for reads")
	}
	s.primaries[0].bannedUntil.Store(0)
	// Equally busy: the primary takes one read in len(replicas)+1.
	r.outstanding.Store(0)
	primary := 0
	for range 20 {
		if n, _ := s.PickRead(0, 0, always); n == nil {
			primary++
		}
	}
	if primary != 10 {
		t.Fatalf("primary took %d of 20 reads tied with one replica, want 10", primary)
	}
}

// TestPickReadWaits: a read behind a replica's replay waits up to ryw_wait
// for it, then goes to the primary.
func TestPickReadWaits(t *testing.T) {
	s := newTestSet(t, testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnB}}), nil)
	r := s.replicas[0][0]
	replicaState{healthy: true, lsn: 5}.apply(r)
	start := time.Now()
	if n, err := s.PickRead(0, 10, ReadPolicy{Wait: 30 * time.Millisecond}); n != nil || err != nil {
		t.Fatalf("PickRead past ryw_wait = %v, %v, want the primary", n, err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("gave up after %v, before ryw_wait", d)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		r.lsn.Store(10)
	}()
	if n, err := s.PickRead(0, 10, ReadPolicy{Wait: 5 * time.Second}); n != r || err != nil {
		t.Fatalf("PickRead while the replica catches up = %v, %v, want the replica", n, err)
	}
	start = time.Now()
	r.lsn.Store(5)
	if n, _ := s.PickRead(0, UnknownLSN, ReadPolicy{Wait: 5 * time.Second}); n != nil || time.Since(start) > time.Second {
		t.Fatal("an unknown need waited for a replica")
	}
}

func TestReadPolicyOf(t *testing.T) {
	cfg := &topology.Config{MaxReplicaLag: topology.Duration(3 * time.Second), MaxReplicaLagBytes: 1024, PrimaryReads: "never", RYWWait: topology.Duration(time.Millisecond)}
	want := ReadPolicy{MaxLag: 3 * time.Second, MaxLagBytes: 1024, PrimaryReads: "never", Wait: time.Millisecond}
	if got := ReadPolicyOf(cfg); got != want {
		t.Fatalf("ReadPolicyOf = %+v, want %+v", got, want)
	}
}

// TestPickReadSharesTies: equally busy replicas take turns.
func TestPickReadSharesTies(t *testing.T) {
	s := newTestSet(t, testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnB, dsnC, dsnD}}), nil)
	seen := map[*Node]int{}
	for range 30 {
		n, err := s.PickRead(0, 0, ReadPolicy{})
		if n == nil || err != nil {
			t.Fatalf("PickRead = %v, %v with every replica usable", n, err)
		}
		seen[n]++
	}
	for _, r := range s.replicas[0] {
		if seen[r] != 10 {
			t.Fatalf("%s took %d of 30 tied reads, want 10", r.Name(), seen[r])
		}
	}
}

// TestReadFloor: a replica below its shard's read floor serves no read,
// whatever the read needs; the floor outlives a reload that keeps the
// primary.
func TestReadFloor(t *testing.T) {
	cfg := testConfig(topology.ShardConfig{Name: "s0", Primary: dsnA, Replicas: []string{dsnB}})
	s := newTestSet(t, cfg, nil)
	s.SetReadFloor(0, 200)
	s.SetReadFloor(0, 150) // a lower floor does not lower it
	rep := s.replicas[0][0]
	policy := ReadPolicy{PrimaryReads: "fallback"}
	replicaState{healthy: true, lsn: 199}.apply(rep)
	if n, err := s.PickRead(0, 0, policy); n != nil || err != nil {
		t.Fatalf("replica below the floor picked: %v, %v", n, err)
	}
	replicaState{healthy: true, lsn: 200}.apply(rep)
	if n, err := s.PickRead(0, 0, policy); n != rep || err != nil {
		t.Fatalf("replica at the floor not picked: %v, %v", n, err)
	}
	reloaded := newTestSet(t, cfg, s)
	if reloaded.ReadFloor(0) != 200 {
		t.Fatalf("floor after a reload keeping the primary: %d", reloaded.ReadFloor(0))
	}
}
