package router

import (
	"fmt"
	"math/bits"
	"strings"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/topology"
)

// ShardSet is a set of shard indexes. Topologies have at most 64 shards
// (topology validation says so), which keeps routing allocation-free.
type ShardSet uint64

func (s ShardSet) Count() int { return bits.OnesCount64(uint64(s)) }

// First is the lowest shard in the set.
func (s ShardSet) First() int { return bits.TrailingZeros64(uint64(s)) }

func (s ShardSet) Slice() []int {
	var out []int
	for x := uint64(s); x != 0; x &= x - 1 {
		out = append(out, bits.TrailingZeros64(x))
	}
	return out
}

func (s ShardSet) names(t *topology.Topology) string {
	return strings.Join(s.nameList(t), ", ")
}

func (s ShardSet) nameList(t *topology.Topology) []string {
	var names []string
	for _, i := range s.Slice() {
		names = append(names, t.Shards[i].Name)
	}
	return names
}

// statementShards routes a keyed statement: each class's pins intersect
// (they hold at once), an INSERT's rows unite, and classes unite.
func statementShards(t *topology.Topology, s *Statement, params [][]byte, formats []int16, hits *[]KeyHit) (ShardSet, *pgerr.Error) {
	var all ShardSet
	for i := range s.Classes {
		c := &s.Classes[i]
		var set ShardSet
		for j, p := range c.Pins {
			ps, err := pinShards(t, c, p, params, formats, hits)
			if err != nil {
				return 0, err
			}
			switch {
			case j == 0 || c.Rows:
				set |= ps
			case set&ps != 0:
				set &= ps
			}
			// Contradictory pins (id = 1 AND id = 2 on other shards) match
			// nothing anywhere: the first pin's shards answer correctly.
		}
		all |= set
	}
	if s.NewKey != nil && all.Count() == 1 {
		moved, err := keyShard(t, s.Table, s.KeyType, *s.NewKey, params, formats, hits)
		if err != nil {
			return 0, err
		}
		if moved != all.First() {
			return 0, errorf(pgerr.CodeFeatureNotSupported, "UPDATE would move the row from shard %s to shard %s: delete it and insert it instead", t.Shards[all.First()].Name, t.Shards[moved].Name)
		}
	}
	return all, nil
}

func pinShards(t *topology.Topology, c *KeyClass, p KeyPin, params [][]byte, formats []int16, hits *[]KeyHit) (ShardSet, *pgerr.Error) {
	var set ShardSet
	for _, ref := range p.Refs {
		shard, err := keyShard(t, c.Table, c.KeyType, ref, params, formats, hits)
		if err != nil {
			return 0, err
		}
		set |= 1 << shard
	}
	if p.Array > 0 {
		if p.Array > len(params) {
			return 0, errorf(pgerr.CodeUndefinedParameter, "there is no parameter $%d", p.Array)
		}
		elems, binary, err := arrayElements(params[p.Array-1], paramFormat(formats, p.Array-1) == 1)
		if err != nil {
			return 0, &pgerr.Error{Code: pgerr.CodeInvalidText, Message: err.Error()}
		}
		for _, e := range elems {
			at, cerr := place(t, c.KeyType, e, binary)
			if cerr != nil {
				return 0, &pgerr.Error{Code: pgerr.CodeInvalidText, Message: cerr.Error()}
			}
			if hits != nil {
				*hits = append(*hits, hit(t, c.Table, fmt.Sprintf("$%d[]=%q", p.Array, e), at))
			}
			set |= 1 << at.Shard
		}
	}
	return set, nil
}

// keyShard is the shard owning one key value.
func keyShard(t *topology.Topology, table string, kt topology.KeyType, ref KeyRef, params [][]byte, formats []int16, hits *[]KeyHit) (int, *pgerr.Error) {
	var (
		at  topology.Placement
		err error
	)
	switch {
	case ref.Param == 0:
		at, err = t.Place(kt, ref.Literal)
	case ref.Param > len(params):
		return 0, errorf(pgerr.CodeUndefinedParameter, "there is no parameter $%d", ref.Param)
	case params[ref.Param-1] == nil:
		return 0, errorf(pgerr.CodeNullValueNotAllowed, "the shard key of %s is NULL", table)
	default:
		at, err = place(t, kt, params[ref.Param-1], paramFormat(formats, ref.Param-1) == 1)
	}
	if err != nil {
		return 0, &pgerr.Error{Code: pgerr.CodeInvalidText, Message: err.Error()}
	}
	if hits != nil {
		*hits = append(*hits, hit(t, table, keyText(ref, params), at))
	}
	return at.Shard, nil
}

func place(t *topology.Topology, kt topology.KeyType, v []byte, binary bool) (topology.Placement, error) {
	if binary {
		return t.PlaceBinary(kt, v)
	}
	return t.Place(kt, unsafeString(v))
}

func hit(t *topology.Topology, table, value string, at topology.Placement) KeyHit {
	return KeyHit{Table: table, Value: value, Hash: fmt.Sprintf("%016x", at.ID), Range: at.Range.String(), Shard: t.Shards[at.Shard].Name}
}
