// Package topology loads and validates the shardgate config, maps the 64-bit
// keyspace onto shards, and defines the public hashing contract that turns a
// shard-key value into a keyspace id. It knows nothing of sockets or SQL.
package topology

import (
	"errors"
	"fmt"
	"slices"
)

// Shard is one shard of the topology.
type Shard struct {
	Index    int // position in Topology.Shards
	Name     string
	Primary  string // postgres:// URL
	Replicas []string
}

// Table is a sharded table. Name is the unqualified table name as
// PostgreSQL sees it after case folding.
type Table struct {
	Name, ShardKey string
	KeyType        KeyType
}

// OwnedRange is a key range and the shard that owns it.
type OwnedRange struct {
	Range KeyRange
	Shard int // index into Topology.Shards
}

// Topology is an immutable snapshot of data placement, built by New from a
// config. It is shared between goroutines without locking, so nothing may
// modify it after New returns; a config change builds a new Topology.
type Topology struct {
	Shards    []Shard
	Ranges    []OwnedRange     // sorted by Start, tiling the keyspace
	Tables    map[string]Table // sharded tables by name
	Reference map[string]bool  // reference tables by name
	// Default is the index in Shards of the default shard, where tables
	// the config does not name live; -1 when there is none.
	Default int
}

// DefaultShard returns the index of the default shard, if there is one.
func (t *Topology) DefaultShard() (int, bool) { return t.Default, t.Default >= 0 }

// New builds a Topology from cfg, validating the parts it uses (shards,
// keyspace, tables); a config from ParseConfig always passes. Nothing in the
// result aliases cfg. A table with an empty KeyType gets bigint.
func New(cfg *Config) (*Topology, error) {
	if cfg == nil {
		return nil, errors.New("topology: nil config")
	}
	p := &problems{}
	ranges := cfg.checkLayout(p)
	if err := p.err(); err != nil {
		return nil, fmt.Errorf("topology: invalid config: %w", err)
	}
	t := &Topology{
		Shards:    make([]Shard, len(cfg.Shards)),
		Ranges:    ranges,
		Tables:    make(map[string]Table, len(cfg.Tables)),
		Reference: make(map[string]bool, len(cfg.ReferenceTables)),
		Default:   -1,
	}
	for i, s := range cfg.Shards {
		t.Shards[i] = Shard{Index: i, Name: s.Name, Primary: s.Primary, Replicas: slices.Clone(s.Replicas)}
	}
	for name, tc := range cfg.Tables {
		kt := tc.KeyType
		if kt == "" {
			kt = KeyBigint
		}
		t.Tables[name] = Table{Name: name, ShardKey: tc.ShardKey, KeyType: kt}
	}
	for _, name := range cfg.ReferenceTables {
		t.Reference[name] = true
	}
	if cfg.DefaultShard != "" {
		t.Default, _ = t.ShardIndex(cfg.DefaultShard)
	}
	return t, nil
}

// Placement is where one key lives: its keyspace id and the range, and so
// the shard, owning it.
type Placement struct {
	ID uint64
	OwnedRange
}

// Place returns where the key written as text lives (see KeyspaceID).
func (t *Topology) Place(kt KeyType, text string) (Placement, error) {
	id, err := KeyspaceID(kt, text)
	if err != nil {
		return Placement{}, err
	}
	return Placement{ID: id, OwnedRange: t.Lookup(id)}, nil
}

// PlaceBinary returns where the key given as a binary bind parameter lives.
func (t *Topology) PlaceBinary(kt KeyType, b []byte) (Placement, error) {
	id, err := KeyspaceIDBinary(kt, b)
	if err != nil {
		return Placement{}, err
	}
	return Placement{ID: id, OwnedRange: t.Lookup(id)}, nil
}

// Lookup returns the range holding keyspace id h. It does not allocate, as
// it runs once per routed key.
func (t *Topology) Lookup(h uint64) OwnedRange {
	// Find the last range starting at or below h. Ranges[0] starts at 0
	// and the ranges tile the keyspace, so it always exists and holds h.
	lo, hi := 0, len(t.Ranges)
	for hi-lo > 1 {
		mid := int(uint(lo+hi) >> 1)
		if t.Ranges[mid].Range.Start <= h {
			lo = mid
		} else {
			hi = mid
		}
	}
	return t.Ranges[lo]
}

// ShardIndex returns the index in Shards of the shard called name.
func (t *Topology) ShardIndex(name string) (int, bool) {
	for i, s := range t.Shards {
		if s.Name == name {
			return i, true
		}
	}
	return 0, false
}
