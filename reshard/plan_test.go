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

var (
	s2 = topology.ShardConfig{Name: "s2", Primary: "postgres://u@127.0.0.1:3/app"}
	s3 = topology.ShardConfig{Name: "s3", Primary: "postgres://u@127.0.0.1:4/app"}
)

func keyspace(cfg *topology.Config) string {
	var parts []string
	for _, r := range cfg.Keyspace {
		parts = append(parts, r.Range+"="+r.Shard)
	}
	return strings.Join(parts, " ")
}

func shardNames(cfg *topology.Config) string {
	var names []string
	for _, s := range cfg.Shards {
		names = append(names, s.Name)
	}
	return strings.Join(names, " ")
}

func TestSplitRetiresTheSource(t *testing.T) {
	cfg := planCfg(t)
	p, err := Split(cfg, "80-", "c0", s2, s3)
	if err != nil {
		t.Fatal(err)
	}
	if p.Source != "s1" || p.From.String() != "80-" || len(p.Parts) != 2 ||
		p.Parts[0].Range.String() != "80-c0" || p.Parts[0].Target.Name != "s2" ||
		p.Parts[1].Range.String() != "c0-" || p.Parts[1].Target.Name != "s3" {
		t.Fatalf("plan %+v: want s1's 80- to s2 (80-c0) and s3 (c0-)", p)
	}
	next, err := p.Apply(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keyspace(next), "-80=s0 80-c0=s2 c0-=s3"; got != want {
		t.Errorf("keyspace after split: %s, want %s", got, want)
	}
	// s2 takes s1's position: proxies switch without renumbering shards.
	if got, want := shardNames(next), "s0 s2 s3"; got != want {
		t.Errorf("shards after split: %s, want %s", got, want)
	}
	if got := keyspace(cfg); got != "-80=s0 80-=s1" || shardNames(cfg) != "s0 s1" {
		t.Errorf("Apply changed the original config: %s", got)
	}
	assertKeysFollowThePlan(t, cfg, next, p)
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
	if got, want := shardNames(next), "s2 s1"; got != want {
		t.Errorf("shards after the move: %s, want %s", got, want)
	}
	assertKeysFollowThePlan(t, cfg, next, p)
}

// assertKeysFollowThePlan: every key of a part lands on its target in the
// new topology, and no other key changes shard.
func assertKeysFollowThePlan(t *testing.T, cfg, next *topology.Config, p Plan) {
	t.Helper()
	before, _ := topology.New(cfg)
	after, _ := topology.New(next)
	for id := 1; id <= 2000; id++ {
		b, _ := before.Place(topology.KeyBigint, strconv.Itoa(id))
		a, _ := after.Place(topology.KeyBigint, strconv.Itoa(id))
		want := before.Shards[b.Shard].Name
		for _, part := range p.Parts {
			if part.Range.Contains(b.ID) {
				want = part.Target.Name
			}
		}
		if got := after.Shards[a.Shard].Name; got != want {
			t.Fatalf("key %d: shard %s after the reshard, want %s", id, got, want)
		}
	}
}

func TestPlansRefused(t *testing.T) {
	cfg := planCfg(t)
	multi := planCfg(t)
	multi.Keyspace = []topology.RangeConfig{{Range: "-80", Shard: "s0"}, {Range: "80-c0", Shard: "s1"}, {Range: "c0-", Shard: "s1"}}
	for _, tt := range []struct {
		name string
		plan func() (Plan, error)
		want string
	}{
		{"range not in keyspace", func() (Plan, error) { return Split(cfg, "40-80", "60", s2, s3) }, "not in the keyspace"},
		{"bad range", func() (Plan, error) { return Move(cfg, "zz", s2) }, "range"},
		{"no primary", func() (Plan, error) { return Move(cfg, "80-", topology.ShardConfig{Name: "s9"}) }, "needs a primary"},
		{"same shard", func() (Plan, error) { return Move(cfg, "80-", topology.ShardConfig{Name: "s1", Primary: s2.Primary}) }, "already on shard s1"},
		{"target in the config", func() (Plan, error) { return Move(cfg, "80-", topology.ShardConfig{Name: "s0", Primary: s2.Primary}) }, "already in the config"},
		{"one target for both halves", func() (Plan, error) { return Split(cfg, "80-", "c0", s2, s2) }, "named twice"},
		{"split point outside", func() (Plan, error) { return Split(cfg, "80-", "40", s2, s3) }, "not inside"},
		{"split point at the start", func() (Plan, error) { return Split(cfg, "80-", "80", s2, s3) }, "not inside"},
		{"bad split point", func() (Plan, error) { return Split(cfg, "80-", "xyz", s2, s3) }, "split point"},
		{"source keeps another range", func() (Plan, error) { return Move(multi, "80-c0", s2) }, "also owns range c0-"},
	} {
		_, err := tt.plan()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one saying %q", tt.name, err, tt.want)
		}
	}
}
