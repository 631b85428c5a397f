package router

import (
	"strconv"
	"testing"
)

func inListSQL(n int) []byte {
	sql := []byte("SELECT * FROM users WHERE id IN (")
	for i := range n {
		if i > 0 {
			sql = append(sql, ',')
		}
		sql = strconv.AppendInt(sql, int64(i+1), 10)
	}
	return append(sql, ')')
}

// BenchmarkRouteInList100k routes a 100,000-value IN list on the shard key
// as a simple query: what an ORM's bulk lookup costs the proxy, to compare
// with the parse alone (BenchmarkParseInList100k).
func BenchmarkRouteInList100k(b *testing.B) {
	r := testRouter(b)
	sql := inListSQL(100_000)
	var s Scratch
	b.ReportAllocs()
	for b.Loop() {
		a, params, _ := r.AnalyzeSimple(sql, &s)
		if p := r.Route(a, params, nil); p.Target != TargetMulti {
			b.Fatal(p.Target, p.Err)
		}
	}
}

func BenchmarkParseInList100k(b *testing.B) {
	sql := string(inListSQL(100_000))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parse(sql); err != nil {
			b.Fatal(err)
		}
	}
}
