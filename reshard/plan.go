// Package reshard moves key ranges between shards. This file decides what
// a reshard changes in the keyspace; preflight.go checks, before anything
// is touched, that the servers can take it.
package reshard

import (
	"errors"
	"fmt"
	"slices"

	"github.com/shardgate/shardgate/topology"
)

// Plan is one reshard: every key of the source shard's range From leaves it
// for new shards, one Part each. As in Vitess, the source shard leaves the
// layout at cutover: it still holds the moved rows until complete, and a
// scatter query that reached it would see them twice. Keys move only onto
// new shards (ones the config does not have yet), so a target's rows are
// exactly its part's and verifying them is a comparison, not a search.
type Plan struct {
	Source string
	From   topology.KeyRange // the source's only keyspace entry
	Parts  []Part            // tile From in key order
}

// Part is the keys of Range going to Target.
type Part struct {
	Range  topology.KeyRange
	Target topology.ShardConfig
}

// Split plans moving the keys of rangeSpec below at to lower and the rest
// to upper. at is a keyspace bound in the notation of ranges ("c0" is
// 0xc000000000000000).
func Split(cfg *topology.Config, rangeSpec, at string, lower, upper topology.ShardConfig) (Plan, error) {
	p, err := plan(cfg, rangeSpec, lower, upper)
	if err != nil {
		return Plan{}, err
	}
	bound, err := topology.ParseKeyRange(at + "-")
	if err != nil {
		return Plan{}, fmt.Errorf("split point %q: %w", at, err)
	}
	if !p.From.Contains(bound.Start) || bound.Start == p.From.Start {
		return Plan{}, fmt.Errorf("split point %s is not inside range %s", at, p.From)
	}
	p.Parts = []Part{
		{Range: topology.KeyRange{Start: p.From.Start, End: bound.Start}, Target: lower},
		{Range: topology.KeyRange{Start: bound.Start, End: p.From.End, EndMax: p.From.EndMax}, Target: upper},
	}
	return p, nil
}

// Move plans moving every key of rangeSpec to the new shard to.
func Move(cfg *topology.Config, rangeSpec string, to topology.ShardConfig) (Plan, error) {
	p, err := plan(cfg, rangeSpec, to)
	if err != nil {
		return Plan{}, err
	}
	p.Parts = []Part{{Range: p.From, Target: to}}
	return p, nil
}

func plan(cfg *topology.Config, rangeSpec string, targets ...topology.ShardConfig) (Plan, error) {
	from, err := topology.ParseKeyRange(rangeSpec)
	if err != nil {
		return Plan{}, fmt.Errorf("range %q: %w", rangeSpec, err)
	}
	i, err := entryOf(cfg, from)
	if err != nil {
		return Plan{}, err
	}
	source := cfg.Keyspace[i].Shard
	for j, r := range cfg.Keyspace {
		if j != i && r.Shard == source {
			return Plan{}, fmt.Errorf("shard %s also owns range %s: a reshard moves all of a shard's keys, so that the copy it keeps until complete is never queried (reshard one shard per range)", source, r.Range)
		}
	}
	seen := map[string]bool{}
	for _, to := range targets {
		switch {
		case to.Name == "":
			return Plan{}, errors.New("a target shard needs a name")
		case to.Name == source:
			return Plan{}, fmt.Errorf("range %s is already on shard %s", from, to.Name)
		case slices.ContainsFunc(cfg.Shards, func(s topology.ShardConfig) bool { return s.Name == to.Name }):
			return Plan{}, fmt.Errorf("shard %s is already in the config: keys move only onto a new shard", to.Name)
		case seen[to.Name]:
			return Plan{}, fmt.Errorf("shard %s is named twice: each part of a split needs its own new shard", to.Name)
		case to.Primary == "":
			return Plan{}, fmt.Errorf("new shard %s needs a primary DSN", to.Name)
		}
		seen[to.Name] = true
	}
	return Plan{Source: source, From: from}, nil
}

// entryOf finds the keyspace entry that is exactly r.
func entryOf(cfg *topology.Config, r topology.KeyRange) (int, error) {
	var ranges []string
	for i, e := range cfg.Keyspace {
		got, err := topology.ParseKeyRange(e.Range)
		if err != nil {
			return 0, err
		}
		if got == r {
			return i, nil
		}
		ranges = append(ranges, got.String())
	}
	return 0, fmt.Errorf("range %s is not in the keyspace (its ranges: %v)", r, ranges)
}

// Apply returns a copy of cfg with the layout after the reshard, checked as
// the proxy would check it; cfg is not changed. The first target takes the
// source's place in the shard list and the others are appended, so every
// other shard keeps its position: running proxies switch without
// renumbering what their clients hold.
func (p Plan) Apply(cfg *topology.Config) (*topology.Config, error) {
	i, err := entryOf(cfg, p.From)
	if err != nil {
		return nil, err
	}
	pos := slices.IndexFunc(cfg.Shards, func(s topology.ShardConfig) bool { return s.Name == p.Source })
	if pos < 0 {
		return nil, fmt.Errorf("source shard %s is not in the config", p.Source)
	}
	next := *cfg
	next.Shards = slices.Clone(cfg.Shards)
	next.Shards[pos] = p.Parts[0].Target
	var moved []topology.RangeConfig
	for j, part := range p.Parts {
		if j > 0 {
			next.Shards = append(next.Shards, part.Target)
		}
		moved = append(moved, topology.RangeConfig{Range: part.Range.String(), Shard: part.Target.Name})
	}
	next.Keyspace = slices.Replace(slices.Clone(cfg.Keyspace), i, i+1, moved...)
	if _, err := topology.New(&next); err != nil {
		return nil, errors.Join(errors.New("the keyspace after the reshard is invalid"), err)
	}
	return &next, nil
}
