package topology

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func TestNewFromValidConfig(t *testing.T) {
	cfg, err := LoadConfig("../testdata/config/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	topo, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.Shards) != 2 || topo.Shards[1].Index != 1 || topo.Shards[1].Name != "s1" ||
		topo.Shards[1].Primary != "postgres://shardgate@127.0.0.1:7002/app" ||
		len(topo.Shards[1].Replicas) != 1 || topo.Shards[1].Replicas[0] != "postgres://shardgate@127.0.0.1:7003/app" {
		t.Errorf("shards %+v", topo.Shards)
	}
	want := []OwnedRange{
		{Range: KeyRange{End: 1 << 63}, Shard: 0},
		{Range: KeyRange{Start: 1 << 63, EndMax: true}, Shard: 1},
	}
	if len(topo.Ranges) != 2 || topo.Ranges[0] != want[0] || topo.Ranges[1] != want[1] {
		t.Errorf("ranges %+v, want %+v", topo.Ranges, want)
	}
	if got := topo.Tables["posts"]; got != (Table{Name: "posts", ShardKey: "user_id", KeyType: KeyBigint}) {
		t.Errorf("posts %+v", got)
	}
	if len(topo.Tables) != 3 || !topo.Reference["countries"] || len(topo.Reference) != 1 {
		t.Errorf("tables %+v, reference %+v", topo.Tables, topo.Reference)
	}
	for _, tt := range []struct {
		name string
		idx  int
		ok   bool
	}{{"s0", 0, true}, {"s1", 1, true}, {"s2", 0, false}, {"", 0, false}} {
		if idx, ok := topo.ShardIndex(tt.name); idx != tt.idx || ok != tt.ok {
			t.Errorf("ShardIndex(%q) = %d, %v, want %d, %v", tt.name, idx, ok, tt.idx, tt.ok)
		}
	}

	// The snapshot must not change when the config it came from does.
	cfg.Shards[0].Replicas[0] = "changed"
	if topo.Shards[0].Replicas[0] == "changed" {
		t.Error("Topology aliases Config replicas")
	}
}

func fourRanges(t *testing.T) *Topology {
	t.Helper()
	topo, err := New(&Config{
		Shards: []ShardConfig{
			{Name: "a", Primary: "postgres://h:1/x"},
			{Name: "b", Primary: "postgres://h:2/x"},
			{Name: "c", Primary: "postgres://h:3/x"},
			{Name: "d", Primary: "postgres://h:4/x"},
		},
		// Out of order on purpose: New sorts.
		Keyspace: []RangeConfig{
			{Range: "c0-", Shard: "d"},
			{Range: "40-80", Shard: "b"},
			{Range: "-40", Shard: "a"},
			{Range: "80-c0", Shard: "c"},
		},
		Tables: map[string]TableConfig{"users": {ShardKey: "id"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

func TestLookup(t *testing.T) {
	topo := fourRanges(t)
	tests := []struct {
		h     uint64
		shard int
		rng   string
	}{
		{0, 0, "-40"},
		{1, 0, "-40"},
		{0x3fffffffffffffff, 0, "-40"},
		{0x4000000000000000, 1, "40-80"},
		{0x7fffffffffffffff, 1, "40-80"},
		{0x8000000000000000, 2, "80-c0"},
		{0xbfffffffffffffff, 2, "80-c0"},
		{0xc000000000000000, 3, "c0-"},
		{^uint64(0), 3, "c0-"},
		{0xa2c396223f8bdbdf, 2, "80-c0"}, // bigint 42
	}
	for _, tt := range tests {
		got := topo.Lookup(tt.h)
		if got.Shard != tt.shard || got.Range.String() != tt.rng {
			t.Errorf("Lookup(%#016x) = shard %d range %s, want shard %d range %s", tt.h, got.Shard, got.Range, tt.shard, tt.rng)
		}
	}
	// Against a linear scan, for hashes spread over the keyspace.
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		h := r.Uint64()
		got := topo.Lookup(h)
		if !got.Range.Contains(h) {
			t.Fatalf("Lookup(%#016x) = %s, which does not contain it", h, got.Range)
		}
	}
}

func TestLookupSingleRange(t *testing.T) {
	topo, err := New(&Config{
		Shards:   []ShardConfig{{Name: "only", Primary: "postgres://h:1/x"}},
		Keyspace: []RangeConfig{{Range: "-", Shard: "only"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []uint64{0, 1 << 63, ^uint64(0)} {
		if got := topo.Lookup(h); got.Shard != 0 || !got.Range.EndMax {
			t.Errorf("Lookup(%#x) = %+v", h, got)
		}
	}
}

func TestLookupNoAlloc(t *testing.T) {
	topo := fourRanges(t)
	var h uint64
	if n := testing.AllocsPerRun(100, func() { h += 0x1234567890abcdef; topo.Lookup(h) }); n != 0 {
		t.Errorf("Lookup: %v allocs per run, want 0", n)
	}
}

func TestNewDefaultsKeyType(t *testing.T) {
	if kt := fourRanges(t).Tables["users"].KeyType; kt != KeyBigint {
		t.Errorf("key type %q, want bigint", kt)
	}
}

func TestNewRejectsInvalid(t *testing.T) {
	tests := []struct {
		name string
		cfg  *Config
		want string
	}{
		{"nil", nil, "nil config"},
		{"gap", &Config{
			Shards:   []ShardConfig{{Name: "a", Primary: "postgres://h:1/x"}},
			Keyspace: []RangeConfig{{Range: "-80", Shard: "a"}},
		}, `keyspace[0].range: gap after "-80": no range covers 80-`},
		{"unknown shard", &Config{
			Shards:   []ShardConfig{{Name: "a", Primary: "postgres://h:1/x"}},
			Keyspace: []RangeConfig{{Range: "-", Shard: "b"}},
		}, `keyspace[0].shard: unknown shard "b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestNewDefaultShard: default_shard resolves to its shard's index, and a
// topology without one says so (-1), so no shard is taken for the default
// by accident.
func TestNewDefaultShard(t *testing.T) {
	cfg, err := LoadConfig("../testdata/config/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	topo, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if i, ok := topo.DefaultShard(); ok || i != -1 {
		t.Errorf("no default_shard: got %d, %v", i, ok)
	}
	cfg.DefaultShard = "s1"
	if topo, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	if i, ok := topo.DefaultShard(); !ok || i != 1 {
		t.Errorf("default_shard s1: got %d, %v", i, ok)
	}
	cfg.DefaultShard = "nope"
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), `default_shard: unknown shard "nope"`) {
		t.Errorf("unknown default_shard: %v", err)
	}
}
