package proxy

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/shardgate/shardgate/copyfmt"
	"github.com/shardgate/shardgate/router"
	"github.com/shardgate/shardgate/topology"
)

// Every way a key reaches shardgate must place it where the hashing
// contract (README, topology/hash.go) says, or live traffic, COPY and
// resharding would disagree about where a row lives. This feeds the same
// keys through each path: SQL literal, text bind, binary bind of each
// integer width, COPY text and CSV rows, comment and session hints.

const keyspaceConfig = `
database: app
shards:
  - {name: s0, primary: "postgres://u@127.0.0.1:1/app"}
  - {name: s1, primary: "postgres://u@127.0.0.1:2/app"}
  - {name: s2, primary: "postgres://u@127.0.0.1:3/app"}
  - {name: s3, primary: "postgres://u@127.0.0.1:4/app"}
keyspace:
  - {range: "-40", shard: s0}
  - {range: "40-90", shard: s1}
  - {range: "90-c8", shard: s2}
  - {range: "c8-", shard: s3}
tables:
  users:   {shard_key: id}
  mids:    {shard_key: id, key_type: int}
  smalls:  {shard_key: id, key_type: smallint}
  docs:    {shard_key: id, key_type: text}
  devices: {shard_key: id, key_type: uuid}
`

// keyCase is one key value and how each path spells it.
type keyCase struct {
	table string
	kt    topology.KeyType
	text  string   // text form: text bind, hints
	sql   string   // SQL literal
	copy  string   // COPY text field ("" means text)
	csv   string   // COPY CSV field ("" means text)
	bins  [][]byte // binary bind encodings
}

func keyCases() []keyCase {
	var cases []keyCase
	ints := []struct {
		table string
		kt    topology.KeyType
		vals  []int64
	}{
		{"users", topology.KeyBigint, []int64{0, 1, -1, 42, 1 << 40, -(1 << 40), 9223372036854775807}},
		{"mids", topology.KeyInt, []int64{2, -7, 2147483647, -2147483648}},
		{"smalls", topology.KeySmallint, []int64{3, -32768, 32767}},
	}
	for _, g := range ints {
		vals := g.vals
		for i := int64(5); i < 40; i++ {
			vals = append(vals, i*7919)
		}
		for _, v := range vals {
			if g.kt == topology.KeySmallint && (v < -32768 || v > 32767) {
				continue
			}
			if g.kt == topology.KeyInt && (v < -1<<31 || v >= 1<<31) {
				continue
			}
			s := strconv.FormatInt(v, 10)
			c := keyCase{table: g.table, kt: g.kt, text: s, sql: s}
			c.bins = append(c.bins, binary.BigEndian.AppendUint64(nil, uint64(v)))
			if v >= -1<<31 && v < 1<<31 {
				c.bins = append(c.bins, binary.BigEndian.AppendUint32(nil, uint32(int32(v))))
			}
			if v >= -1<<15 && v < 1<<15 {
				c.bins = append(c.bins, binary.BigEndian.AppendUint16(nil, uint16(int16(v))))
			}
			cases = append(cases, c)
		}
	}
	for _, s := range []string{"alice", "bob", "日本", "a b", "", "it's", "tab\there", strings.Repeat("long", 40)} {
		c := keyCase{table: "docs", kt: topology.KeyText, text: s, sql: "'" + strings.ReplaceAll(s, "'", "''") + "'", bins: [][]byte{[]byte(s)}}
		c.copy = strings.ReplaceAll(s, "\t", `\t`)
		c.csv = `"` + s + `"`
		if s == "" {
			c.copy = "" // an empty field in text COPY is the empty string
		}
		cases = append(cases, c)
	}
	for _, s := range []string{"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "A0EEBC999C0B4EF8BB6D6BB9BD380A11", "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}", "00000000-0000-0000-0000-000000000001", "ffffffff-ffff-ffff-ffff-ffffffffffff"} {
		raw, err := hex.DecodeString(strings.NewReplacer("-", "", "{", "", "}", "").Replace(s))
		if err != nil {
			panic(err)
		}
		cases = append(cases, keyCase{table: "devices", kt: topology.KeyUUID, text: s, sql: "'" + s + "'", bins: [][]byte{raw}})
	}
	return cases
}

// contractShard is the documented contract, computed without topology's
// code: canonical bytes by hand, xxHash64 with seed 0, then the range
// whose start is the last at or below the hash (the ranges are in order).
func contractShard(t *testing.T, topo *topology.Topology, c keyCase) int {
	t.Helper()
	var canon []byte
	switch c.kt {
	case topology.KeyText:
		canon = []byte(c.text)
	case topology.KeyUUID:
		canon = c.bins[0]
	default:
		v, err := strconv.ParseInt(c.text, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		canon = binary.BigEndian.AppendUint64(nil, uint64(v))
	}
	h := xxhash.Sum64(canon)
	shard := -1
	for _, r := range topo.Ranges {
		if r.Range.Start <= h {
			shard = r.Shard
		}
	}
	return shard
}

func TestEveryPathPlacesKeysAlike(t *testing.T) {
	cfg, err := topology.ParseConfig("keyspace.yaml", []byte(keyspaceConfig))
	if err != nil {
		t.Fatal(err)
	}
	topo, err := topology.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := router.New(topo, 100)
	seen := make(map[int]bool)
	for _, c := range keyCases() {
		want := contractShard(t, topo, c)
		seen[want] = true
		got := func(path string, shard int) {
			t.Helper()
			if shard != want {
				t.Errorf("%s key %q by %s: shard %d, the contract says %d", c.kt, c.text, path, shard, want)
			}
		}
		got("SQL literal", routedShard(t, r, fmt.Sprintf("SELECT * FROM %s WHERE id = %s", c.table, c.sql), nil, nil))
		got("text bind", routedShard(t, r, "SELECT * FROM "+c.table+" WHERE id = $1", [][]byte{[]byte(c.text)}, nil))
		for _, b := range c.bins {
			got(fmt.Sprintf("%d-byte binary bind", len(b)), routedShard(t, r, "SELECT * FROM "+c.table+" WHERE id = $1", [][]byte{b}, []int16{1}))
		}
		hint := strings.NewReplacer(" ", "", "\t", "", "'", "", "*/", "").Replace(c.text)
		if hint == c.text && c.text != "" { // a comment hint cannot carry spaces, quotes or an empty value
			got("comment hint", routedShard(t, r, fmt.Sprintf("SELECT * FROM %s /* shardgate: shard_key=%s */", c.table, c.text), nil, nil))
		}
		if c.text != "" { // SET shardgate.shard_key = '' clears the hint
			got("session hint", sessionHintShard(t, r, c.table, c.text))
		}
		field := c.text
		if c.copy != "" || c.kt == topology.KeyText {
			field = c.copy
		}
		got("COPY text row", copiedShard(t, r, c.table, "", field+"\tx\n"))
		csv := c.text
		if c.csv != "" {
			csv = c.csv
		}
		got("COPY CSV row", copiedShard(t, r, c.table, " (FORMAT csv)", csv+",x\n"))
	}
	if len(seen) != len(topo.Shards) {
		t.Errorf("the keys reach %d of %d shards: add keys so every range is tried", len(seen), len(topo.Shards))
	}
}

func routedShard(t *testing.T, r *router.Router, sql string, params [][]byte, formats []int16) int {
	t.Helper()
	a, _ := r.Analyze([]byte(sql))
	p := r.Route(a, params, formats)
	if p.Target != router.TargetShard {
		t.Fatalf("%s %q: target %v (%v), want one shard", sql, params, p.Target, p.Err)
	}
	return p.Shard
}

func sessionHintShard(t *testing.T, r *router.Router, table, key string) int {
	t.Helper()
	h, err := r.ParseSessionHint(nil, "shard_key", key)
	if err != nil {
		t.Fatalf("SET shardgate.shard_key = %q: %v", key, err)
	}
	a, _ := r.Analyze([]byte("SELECT * FROM " + table))
	p := r.RouteHinted(a, nil, nil, h)
	if p.Target != router.TargetShard {
		t.Fatalf("session hint %q: target %v, want one shard", key, p.Target)
	}
	return p.Shard
}

// copiedShard splits one COPY row the way copyIn does and returns the
// shard whose batch received it.
func copiedShard(t *testing.T, r *router.Router, table, options, row string) int {
	t.Helper()
	a, _ := r.Analyze([]byte("COPY " + table + " (id, name) FROM STDIN" + options))
	p := r.Route(a, nil, nil)
	if p.CopyIn == nil {
		t.Fatalf("COPY %s: not a split COPY: %v", table, p.Err)
	}
	opts, err := copyfmt.FromStmt(p.CopyIn.Stmt)
	if err != nil {
		t.Fatal(err)
	}
	columns := []string{"id", "name"}
	sp, err := copyfmt.NewSplitter(opts, columns, slices.Index(columns, p.CopyIn.Key))
	if err != nil {
		t.Fatal(err)
	}
	split := &copySplit{in: p.CopyIn, topo: r.Topology(), branches: make([]copyBranch, len(r.Topology().Shards))}
	if e := split.feed(sp, []byte(row)); e != nil {
		t.Fatalf("COPY row %q: %v", row, e)
	}
	if e := split.drain(sp, true); e != nil {
		t.Fatalf("COPY row %q: %v", row, e)
	}
	shard := -1
	for i, b := range split.branches {
		if bytes.Equal(b.buf, []byte(row)) {
			shard = i
		} else if len(b.buf) != 0 {
			t.Fatalf("COPY row %q: shard %d got %q", row, i, b.buf)
		}
	}
	return shard
}
