package router

import (
	"encoding/binary"
	"testing"
)

// BenchmarkRouteBind is the router's share of every prepared point select
// (what pgx and most drivers send): Parse looks the statement up in the plan
// cache, Bind routes it by a binary int8 parameter. bench/perfcheck budgets
// it, so keep its name and shape stable.
func BenchmarkRouteBind(b *testing.B) {
	r := testRouter(b)
	sql := []byte("SELECT id, name FROM users WHERE id = $1")
	params := [][]byte{binary.BigEndian.AppendUint64(nil, 42)}
	formats := []int16{1}
	r.Analyze(sql) // the first Parse fills the cache; the loop measures hits
	b.ReportAllocs()
	for b.Loop() {
		a, hit := r.Analyze(sql)
		if !hit {
			b.Fatal("plan cache miss")
		}
		if p := r.Route(a, params, formats); p.Target != TargetShard {
			b.Fatal(p.Err)
		}
	}
}
