package reshard

import (
	"strconv"
	"strings"
	"testing"

	"github.com/shardgate/shardgate/topology"
)

const planConfig = `
database: app
shards:
  - {name: s0, primary: "postgres://u@127.0.0.1:1/app"}
  - {name: s1, primary: "postgres://u@127.0.0.1:2/app"}
keyspace:
  - {range: "-80", shard: s0}
  - {range: "80-", shard: s1}
tables:
  users: {shard_key: id}
`

func planCfg(t *testing.T) *topology.Config {
	t.Helper()
	cfg, err := topology.ParseConfig("plan.yaml", []byte(planConfig))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

var s2 = topology.ShardConfig{Name: "s2", Primary: "postgres://u@127.0.0.1:3/app"}

func keyspace(cfg *topology.Config) string {
	var parts []string
	for _, r := range cfg.Keyspace {
		parts = append(parts, r.Range+"="+r.Shard)
	}
	return strings.Join(parts, " ")
}

func TestSplitMovesTheUpperPart(t *testing.T) {
	cfg := planCfg(t)
	p, err := Split(cfg, "80-", "c0", s2)
	if err != nil {
		t.Fatal(err)
	}
	if p.Source != "s1" || p.Target.Name != "s2" || p.Moving.String() != "c0-" || p.From.String() != "80-" {
		t.Fatalf("plan %+v: want s1 → s2 moving c0-", p)
	}
	next, err := p.Apply(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keyspace(next), "-80=s0 80-c0=s1 c0-=s2"; got != want {
		t.Errorf("keyspace after split: %s, want %s", got, want)
	}
	if got := keyspace(cfg); got != "-80=s0 80-=s1" {
		t.Errorf("Apply changed the original config: %s", got)
	}
	for _, tt := range []struct {
		id    uint64
		moves bool
	}{{0x7fffffffffffffff, false}, {0x8000000000000000, false}, {0xbfffffffffffffff, false}, {0xc000000000000000, true}, {^uint64(0), true}} {
		if p.Moves(tt.id) != tt.moves {
			t.Errorf("Moves(%#x) = %v, want %v", tt.id, !tt.moves, tt.moves)
		}
	}
}

func TestMoveTakesTheWholeRange(t *testing.T) {
	cfg := planCfg(t)
	p, err := Move(cfg, "-80", s2)
	if err != nil {
		t.Fatal(err)
	}
	next, err := p.Apply(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keyspace(next), "-80=s2 80-=s1"; got != want {
		t.Errorf("keyspace after move: %s, want %s", got, want)
	}
	if len(next.Shards) != 2 || next.Shards[0].Name != "s1" || next.Shards[1].Name != "s2" {
		t.Errorf("shards after moving all of s0 away: %v, want s1 and s2", next.Shards)
	}
	if !p.Moves(0) || p.Moves(0x8000000000000000) {
		t.Errorf("a move of -80 must move exactly its keys")
	}
	// Every key of the moved range lands on the target in the new
	// topology, and no other key changes shard.
	before, _ := topology.New(cfg)
	after, _ := topology.New(next)
	for id := 1; id <= 2000; id++ {
		b, _ := before.Place(topology.KeyBigint, strconv.Itoa(id))
		a, _ := after.Place(topology.KeyBigint, strconv.Itoa(id))
		want := before.Shards[b.Shard].Name
		if p.Moves(b.ID) {
			want = "s2"
		}
		if got := after.Shards[a.Shard].Name; got != want {
			t.Fatalf("key %d: shard %s after the move, want %s", id, got, want)
		}
	}
}

func TestPlansRefused(t *testing.T) {
	cfg := planCfg(t)
	for _, tt := range []struct {
		name string
		plan func() (Plan, error)
		want string
	}{
		{"range not in keyspace", func() (Plan, error) { return Split(cfg, "40-80", "60", s2) }, "not in the keyspace"},
		{"bad range", func() (Plan, error) { return Move(cfg, "zz", s2) }, "range"},
		{"no primary", func() (Plan, error) { return Move(cfg, "80-", topology.ShardConfig{Name: "s9"}) }, "needs a primary"},
		{"same shard", func() (Plan, error) { return Move(cfg, "80-", topology.ShardConfig{Name: "s1", Primary: s2.Primary}) }, "already on shard s1"},
		{"target owns a range", func() (Plan, error) { return Move(cfg, "80-", topology.ShardConfig{Name: "s0", Primary: s2.Primary}) }, "already owns a range"},
		{"split point outside", func() (Plan, error) { return Split(cfg, "80-", "40", s2) }, "not inside"},
		{"split point at the start", func() (Plan, error) { return Split(cfg, "80-", "80", s2) }, "not inside"},
		{"bad split point", func() (Plan, error) { return Split(cfg, "80-", "xyz", s2) }, "split point"},
	} {
		_, err := tt.plan()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one saying %q", tt.name, err, tt.want)
		}
	}
}
