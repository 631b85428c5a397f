package router

import (
	"testing"
)

// FuzzRoute: any SQL text and parameters route without panicking, through
// both the simple-query and the Bind paths, and a plan is either routable
// or carries an error.
func FuzzRoute(f *testing.F) {
	for _, c := range loadCasesF(f) {
		p := ""
		if len(c.Params) > 0 && c.Params[0] != nil {
			p = *c.Params[0]
		}
		f.Add(c.SQL, p, false)
	}
	f.Add("SELECT * FROM users WHERE id = ANY($1)", "{1,2,\"3\"}", false)
	f.Add("SELECT * FROM users WHERE id = $1", "\x00\x00\x00\x00\x00\x00\x00\x2a", true)
	r := testRouter(f)
	f.Fuzz(func(t *testing.T, sql, param string, binary bool) {
		var s Scratch
		a, params, _ := r.AnalyzeSimple([]byte(sql), &s)
		checkPlan(t, r.Route(a, params, nil))
		var formats []int16
		if binary {
			formats = []int16{1}
		}
		b, _ := r.Analyze([]byte(sql))
		checkPlan(t, r.Route(b, [][]byte{[]byte(param), nil}, formats))
		r.Explain(sql, []string{param})
	})
}

func checkPlan(t *testing.T, p Plan) {
	switch p.Target {
	case TargetError:
		if p.Err == nil {
			t.Fatal("error plan without an error")
		}
	case TargetMulti:
		if (p.Err == nil) == (p.Scatter == nil) {
			t.Fatalf("multi-shard plan needs exactly one of an error and a merge: %+v", p)
		}
	case TargetShard:
		if p.Shard < 0 || p.Shard > 1 {
			t.Fatalf("shard %d out of range", p.Shard)
		}
	}
}
