package router

import (
	"encoding/hex"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/topology"
)

type routeCase struct {
	SQL    string    `yaml:"sql"`
	Params []*string `yaml:"params"`
	Shards []string  `yaml:"shards"`
	Target string    `yaml:"target"`
	Role   string    `yaml:"role"`
	Error  string    `yaml:"error"`
	Split  bool      `yaml:"split"`
	// Gather: the query runs on one shard over copies of the rows it
	// reads (Plan.Gather).
	Gather bool `yaml:"gather"`
	// RunFirst: its subqueries run first, the gather only as a fallback
	// (Plan.RunFirst).
	RunFirst bool `yaml:"run_first"`
	// State is the session state the statement leaves (Plan.SessionState).
	State string `yaml:"state"`
	// Topology is "" for valid.yaml, or one of caseTopologies.
	Topology string `yaml:"topology"`
}

// caseTopologies are the other topologies cases may route over:
// valid.yaml with default_shard s1, and a one-shard topology without and
// with a default shard.
var caseTopologies = map[string]func(*topology.Config){
	"default-s1": func(c *topology.Config) { c.DefaultShard = "s1" },
	"one": func(c *topology.Config) {
		c.Shards = c.Shards[:1]
		c.Keyspace = []topology.RangeConfig{{Range: "-", Shard: "s0"}}
	},
	"one-default": func(c *topology.Config) {
		c.Shards = c.Shards[:1]
		c.Keyspace = []topology.RangeConfig{{Range: "-", Shard: "s0"}}
		c.DefaultShard = "s0"
	},
}

// caseRouters is a router per topology the cases name.
type caseRouters map[string]*Router

func (rs caseRouters) get(t testing.TB, name string) *Router {
	t.Helper()
	if r := rs[name]; r != nil {
		return r
	}
	cfg, err := topology.LoadConfig("../testdata/config/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	edit, ok := caseTopologies[name]
	if !ok && name != "" {
		t.Fatalf("unknown case topology %q", name)
	}
	if ok {
		edit(cfg)
	}
	topo, err := topology.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rs[name] = New(topo, 1000)
	return rs[name]
}

func testRouter(t testing.TB) *Router {
	t.Helper()
	cfg, err := topology.LoadConfig("../testdata/config/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	topo, err := topology.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return New(topo, 1000)
}

// TestRouteCases runs testdata/router/cases.yaml: every statement, with text
// or binary parameters, must route to the expected shards with the expected
// role, or be refused with the expected SQLSTATE.
func loadCases(t *testing.T) []routeCase { return loadCasesF(t) }

func loadCasesF(t testing.TB) []routeCase {
	t.Helper()
	data, err := os.ReadFile("../testdata/router/cases.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cases []routeCase
	if err := yaml.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 80 {
		t.Fatalf("only %d cases loaded", len(cases))
	}
	return cases
}

func TestRouteCases(t *testing.T) {
	routers := caseRouters{}
	for _, c := range loadCases(t) {
		r := routers.get(t, c.Topology)
		t.Run(c.Topology+" "+c.SQL, func(t *testing.T) {
			params, formats := encodeParams(t, c.Params)
			a, _ := r.Analyze([]byte(c.SQL))
			plan := r.Route(a, params, formats)
			if c.Error != "" {
				if plan.Err == nil || plan.Err.Code != c.Error || (plan.Target != TargetError && plan.Target != TargetMulti) {
					t.Fatalf("got %s plan (%v), want error %s", plan.Target, plan.Err, c.Error)
				}
				if plan.Err.Message == "" {
					t.Fatal("refusal without a message")
				}
				return
			}
			if plan.Target == TargetError {
				t.Fatalf("refused: %v", plan.Err)
			}
			if plan.Target == TargetMulti && plan.Scatter == nil && plan.Gather == nil && (plan.Err == nil || plan.Err.Code != pgerr.CodeFeatureNotSupported) {
				t.Fatalf("multi-shard plan without a merge, a gather or a refusal: %+v", plan)
			}
			if got := plan.Gather != nil; got != c.Gather {
				t.Errorf("gather %v, want %v (%s)", got, c.Gather, plan.Reason)
			}
			if got := plan.RunFirst != nil; got != c.RunFirst {
				t.Errorf("run first %v, want %v (%s)", got, c.RunFirst, plan.Reason)
			}
			if plan.Split != c.Split {
				t.Errorf("split %v, want %v", plan.Split, c.Split)
			}
			if plan.Split {
				if got, err := splitShards(r, c.SQL, params, formats); err != nil || got != plan.Shards {
					t.Errorf("SplitInsert: shards %v (%v), plan has %v", got.Slice(), err, plan.Shards.Slice())
				}
			}
			if plan.SessionState != c.State {
				t.Errorf("session state %q, want %q", plan.SessionState, c.State)
			}
			if c.Role != plan.Role.String() {
				t.Errorf("role %s, want %s", plan.Role, c.Role)
			}
			if c.Shards != nil {
				var got []string
				switch plan.Target {
				case TargetShard:
					got = []string{r.Topology().Shards[plan.Shard].Name}
				case TargetMulti:
					for _, i := range plan.Shards.Slice() {
						got = append(got, r.Topology().Shards[i].Name)
					}
				}
				if !slices.Equal(got, c.Shards) {
					t.Errorf("target %s %v, want shards %v", plan.Target, got, c.Shards)
				}
			} else if plan.Target.String() != c.Target {
				t.Errorf("target %s, want %s", plan.Target, c.Target)
			}
		})
	}
}

// encodeParams turns case parameters into Bind values: "binary:<hex>" is a
// binary-format value, null a NULL, anything else text.
func encodeParams(t *testing.T, in []*string) ([][]byte, []int16) {
	var params [][]byte
	var formats []int16
	for _, p := range in {
		switch {
		case p == nil:
			params, formats = append(params, nil), append(formats, 0)
		case strings.HasPrefix(*p, "binary:"):
			b, err := hex.DecodeString(strings.TrimPrefix(*p, "binary:"))
			if err != nil {
				t.Fatal(err)
			}
			params, formats = append(params, b), append(formats, 1)
		default:
			params, formats = append(params, []byte(*p)), append(formats, 0)
		}
	}
	return params, formats
}

// TestKeyFormsAgree checks that a key routes the same as a literal, a text
// parameter and binary parameters of each integer width.
func TestKeyFormsAgree(t *testing.T) {
	r := testRouter(t)
	literal := func(k string) Plan {
		a, _ := r.Analyze([]byte("SELECT * FROM users WHERE id = " + k))
		return r.Route(a, nil, nil)
	}
	bound, _ := r.Analyze([]byte("SELECT * FROM users WHERE id = $1"))
	for _, k := range []int64{0, 1, 3, 42, -7, 1 << 40, -1 << 62} {
		want := literal(itoa(k))
		forms := map[string]Plan{
			"text": r.Route(bound, [][]byte{[]byte(itoa(k))}, nil),
			"int8": r.Route(bound, [][]byte{be(k, 8)}, []int16{1}),
		}
		if k == int64(int32(k)) {
			forms["int4"] = r.Route(bound, [][]byte{be(k, 4)}, []int16{1})
		}
		for form, got := range forms {
			if got.Target != TargetShard || got.Shard != want.Shard {
				t.Errorf("key %d as %s: %+v, literal gave shard %d", k, form, got, want.Shard)
			}
		}
	}
}

func itoa(k int64) string { return strconv.FormatInt(k, 10) }

func be(k int64, width int) []byte {
	out := make([]byte, width)
	for i := width - 1; i >= 0; i-- {
		out[i] = byte(k)
		k >>= 8
	}
	return out
}

func TestExplain(t *testing.T) {
	r := testRouter(t)
	ex := r.Explain("SELECT * FROM users WHERE id = $1", []string{"42"})
	if !slices.Equal(ex.Shards, []string{"s1"}) || ex.Role != "replica" || len(ex.Keys) != 1 || ex.Keys[0].Range != "80-" || ex.Reason == "" {
		t.Fatalf("explain: %+v", ex)
	}
	if again := r.Explain("SELECT * FROM users WHERE id = $1", []string{"3"}); !again.CacheHit || again.Shards[0] != "s0" {
		t.Fatalf("second explain should hit the cache and route to s0: %+v", again)
	}
	if bad := r.Explain("DELETE FROM users", nil); bad.Error == nil || bad.Error.Code != "0A000" || bad.Target != "multi" || len(bad.Shards) != 2 {
		t.Fatalf("refusal: %+v", bad)
	}
}

func TestSettings(t *testing.T) {
	r := testRouter(t)
	cases := []struct {
		sql  string
		want Setting
	}{
		{"SET search_path = a, b", Setting{Name: "search_path", SQL: "SET search_path TO a, b"}},
		{"set TIME ZONE 'UTC'", Setting{Name: "timezone", SQL: `SET timezone TO "UTC"`}},
		{"SET statement_timeout TO DEFAULT", Setting{Name: "statement_timeout"}},
		{"RESET application_name", Setting{Name: "application_name"}},
		{"RESET ALL", Setting{ResetAll: true}},
		{"DISCARD ALL", Setting{ResetAll: true, Discard: true}},
	}
	for _, c := range cases {
		a, _ := r.Analyze([]byte(c.sql))
		plan := r.Route(a, nil, nil)
		if plan.Set == nil || *plan.Set != c.want {
			t.Errorf("%s: %+v, want %+v", c.sql, plan.Set, c.want)
		}
	}
}

func TestCacheIsBoundedAndKeepsHotEntries(t *testing.T) {
	r := testRouter(t)
	r.cache = newPlanCache(10)
	hot := []byte("SELECT * FROM users WHERE id = 3")
	r.Analyze(hot)
	for i := int64(0); i < 200; i++ {
		r.Analyze([]byte("SELECT * FROM posts WHERE user_id = " + itoa(i)))
		if _, hit := r.Analyze(hot); !hit && i > 0 {
			t.Fatalf("hot statement evicted after %d others", i)
		}
	}
	st := r.CacheStats()
	if st.Size > 10 || st.Capacity != 10 {
		t.Fatalf("cache holds %d entries, bound is 10", st.Size)
	}
	if st.Hits < 199 || st.Misses < 201 || st.HitRatio() <= 0.4 || st.HitRatio() >= 0.6 {
		t.Fatalf("stats %+v ratio %.2f", st, st.HitRatio())
	}
}
