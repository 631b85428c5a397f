package router

import (
	"testing"
	"unicode/utf8"

	"github.com/shardgate/shardgate/pgerr"
)

// FuzzRoute: any SQL text and parameters route without panicking, through
// both the simple-query and the Bind paths, and a plan is either routable
// or carries an error. A plan to split an INSERT splits onto its shards,
// from the client's own text.
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
		p := r.Route(a, params, nil)
		checkPlan(t, p)
		checkSplitPlan(t, r, p, sql, nil, nil)
		var formats []int16
		if binary {
			formats = []int16{1}
		}
		b, _ := r.Analyze([]byte(sql))
		bound := [][]byte{[]byte(param), nil}
		p = r.Route(b, bound, formats)
		checkPlan(t, p)
		checkSplitPlan(t, r, p, sql, bound, formats)
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
		plans := 0
		for _, set := range []bool{p.Err != nil, p.Scatter != nil, p.Gather != nil} {
			if set {
				plans++
			}
		}
		if plans != 1 {
			t.Fatalf("multi-shard plan needs exactly one of an error, a merge and a gather: %+v", p)
		}
	case TargetShard:
		if p.Shard < 0 || p.Shard > 1 {
			t.Fatalf("shard %d out of range", p.Shard)
		}
	}
}

// checkSplitPlan: a split plan is a refused multi-shard plan whose parts
// cover its shards. Only what routing does not read may still fail: a
// parameter no key uses, or text that is not UTF-8 (a normalised analysis
// never sees the bad literal).
func checkSplitPlan(t *testing.T, r *Router, p Plan, sql string, params [][]byte, formats []int16) {
	if !p.Split {
		return
	}
	if p.Target != TargetMulti || p.Err == nil {
		t.Fatalf("split plan must be a refused multi-shard plan: %+v", p)
	}
	got, err := splitShards(r, sql, params, formats)
	if err != nil && (err.Code == pgerr.CodeUndefinedParameter || err.Code == pgerr.CodeCharacterNotInRepertoire && !utf8.ValidString(sql)) {
		return
	}
	if err != nil || got != p.Shards {
		t.Fatalf("SplitInsert: shards %v (%v), plan has %v", got.Slice(), err, p.Shards.Slice())
	}
}
