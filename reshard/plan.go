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

// Plan is one reshard: the keys of Moving leave shard Source for Target. A
// split moves the upper part of an existing range, a move all of it. Like
// Vitess, shardgate moves keys only onto a new shard (one the config does
// not have yet), so the target's rows are exactly the moved ones and
// verifying them is a comparison, not a search.
type Plan struct {
	Source string
	Target topology.ShardConfig
	From   topology.KeyRange // the keyspace entry that changes
	Moving topology.KeyRange // the keys that move: all of From, or its upper part
}

// Split plans moving the keys of rangeSpec from at upwards to the new shard to;
// the keys below at stay where they are. at is a keyspace bound in the
// notation of ranges ("c0" is 0xc000000000000000).
func Split(cfg *topology.Config, rangeSpec, at string, to topology.ShardConfig) (Plan, error) {
	p, err := plan(cfg, rangeSpec, to)
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
	p.Moving = topology.KeyRange{Start: bound.Start, End: p.From.End, EndMax: p.From.EndMax}
	return p, nil
}

// Move plans moving every key of rangeSpec to the new shard to.
func Move(cfg *topology.Config, rangeSpec string, to topology.ShardConfig) (Plan, error) {
	p, err := plan(cfg, rangeSpec, to)
	if err != nil {
		return Plan{}, err
	}
	p.Moving = p.From
	return p, nil
}

func plan(cfg *topology.Config, rangeSpec string, to topology.ShardConfig) (Plan, error) {
	from, err := topology.ParseKeyRange(rangeSpec)
	if err != nil {
		return Plan{}, fmt.Errorf("range %q: %w", rangeSpec, err)
	}
	i, err := entryOf(cfg, from)
	if err != nil {
		return Plan{}, err
	}
	source := cfg.Keyspace[i].Shard
	switch {
	case to.Name == source:
		return Plan{}, fmt.Errorf("range %s is already on shard %s", from, to.Name)
	case slices.ContainsFunc(cfg.Shards, func(s topology.ShardConfig) bool { return s.Name == to.Name }):
		return Plan{}, fmt.Errorf("shard %s already owns a range: keys move only onto a new shard", to.Name)
	case to.Primary == "":
		return Plan{}, fmt.Errorf("new shard %s needs a primary DSN", to.Name)
	}
	return Plan{Source: source, Target: to, From: from}, nil
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

// Apply returns a copy of cfg with the keyspace after the reshard, checked
// as the proxy would check it. cfg is not changed.
func (p Plan) Apply(cfg *topology.Config) (*topology.Config, error) {
	i, err := entryOf(cfg, p.From)
	if err != nil {
		return nil, err
	}
	next := *cfg
	next.Shards = append(slices.Clone(cfg.Shards), p.Target)
	next.Keyspace = slices.Clone(cfg.Keyspace)
	moved := topology.RangeConfig{Range: p.Moving.String(), Shard: p.Target.Name}
	if p.Moving == p.From {
		next.Keyspace[i] = moved
	} else {
		kept := topology.RangeConfig{Range: topology.KeyRange{Start: p.From.Start, End: p.Moving.Start}.String(), Shard: p.Source}
		next.Keyspace = slices.Replace(next.Keyspace, i, i+1, kept, moved)
	}
	// A source left without a range leaves the layout, as Vitess retires
	// the shards it split; its rows stay on the server until complete.
	if !slices.ContainsFunc(next.Keyspace, func(r topology.RangeConfig) bool { return r.Shard == p.Source }) {
		next.Shards = slices.DeleteFunc(next.Shards, func(s topology.ShardConfig) bool { return s.Name == p.Source })
	}
	if _, err := topology.New(&next); err != nil {
		return nil, errors.Join(errors.New("the keyspace after the reshard is invalid"), err)
	}
	return &next, nil
}

// Moves reports whether the key with keyspace id id is one that moves.
// Row filtering during the copy and the change stream asks this of every
// row's topology.KeyspaceID, the function the proxy routes by.
func (p Plan) Moves(id uint64) bool { return p.Moving.Contains(id) }
