package router

import (
	"fmt"
	"sync/atomic"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/topology"
)

// Analysis is the cached, value-independent result of parsing one SQL text.
type Analysis struct {
	Stmts []*Statement
	Err   *pgerr.Error // a syntax error, answered without asking a server
	Hint  *Hint        // from a /* shardgate: ... */ comment
}

// replays reports whether the analysis keeps values from the text (a SET's
// canonical SQL or hint value), which must come from the original, not the
// normalised, statement.
func (a *Analysis) replays() bool {
	for _, s := range a.Stmts {
		if s.FromText {
			return true
		}
	}
	return false
}

// Router routes statements against the current topology.
type Router struct {
	topo atomic.Pointer[topology.Topology]

	cache *planCache
	// bigParse lets one text over bigStatement bytes be parsed at a time:
	// pg_query's tree takes about 45 times the text's size in Go memory,
	// so a handful of clients each sending megabytes at once could
	// otherwise take gigabytes. Ordinary statements never wait on it.
	bigParse chan struct{}
}

// bigStatement is the size from which parses take turns (bigParse).
const bigStatement = 1 << 20

// New returns a router over t whose analysis cache holds up to cacheSize
// distinct statements.
func New(t *topology.Topology, cacheSize int) *Router {
	r := &Router{cache: newPlanCache(cacheSize), bigParse: make(chan struct{}, 1)}
	r.topo.Store(t)
	return r
}

// takeTurn waits for bigParse when a text of size bytes is big, and
// returns what gives the turn back.
func (r *Router) takeTurn(size int) (done func()) {
	if size <= bigStatement {
		return func() {}
	}
	r.bigParse <- struct{}{}
	return func() { <-r.bigParse }
}

// Topology is the snapshot routing uses now.
func (r *Router) Topology() *topology.Topology { return r.topo.Load() }

// SetTopology swaps the snapshot atomically; cached analyses name tables,
// so they are dropped.
func (r *Router) SetTopology(t *topology.Topology) {
	r.topo.Store(t)
	r.cache.clear()
}

// CacheStats reports the plan cache's size and hit ratio.
func (r *Router) CacheStats() CacheStats { return r.cache.stats() }

// Analyze parses sql once and caches the result. The []byte form lets the
// proxy look up wire bytes without copying them into a string.
func (r *Router) Analyze(sql []byte) (a *Analysis, hit bool) {
	defer r.takeTurn(len(sql))()
	if len(sql) > maxCachedKey {
		return analyzeText(r.topo.Load(), string(sql)), false
	}
	if a = r.cache.get(sql); a != nil {
		return a, true
	}
	text := string(sql)
	a = analyzeText(r.topo.Load(), text)
	r.cache.put(text, a)
	return a, false
}

// Scratch is one client's reusable buffers for AnalyzeSimple.
type Scratch struct{ n normalizer }

// notNormalizable marks a normalised text that does not parse (INTERVAL $1):
// such queries are analysed by their original text. It is never modified.
var notNormalizable = &Analysis{}

// AnalyzeSimple analyses a simple-protocol query. Constants are normalised
// away first, so queries that differ only in values share one cached
// analysis; the constants come back as text parameters for Route, valid
// until s is used again.
func (r *Router) AnalyzeSimple(sql []byte, s *Scratch) (a *Analysis, params [][]byte, hit bool) {
	if !s.n.normalize(sql) || len(s.n.params) == 0 || len(s.n.key) > maxCachedKey {
		// Nothing to normalise: the text is its own key. A key still huge
		// once normalised (an IN list of 100,000 values) is never cached,
		// so the text is parsed once, as sent; a huge text that was
		// mostly constants (a large literal) is not, and goes on below.
		a, hit = r.Analyze(sql)
		return a, nil, hit
	}
	a = r.cache.get(s.n.key)
	if hit = a != nil; !hit {
		a = analyzeText(r.topo.Load(), string(s.n.key))
		if a.Err != nil || a.replays() {
			a = notNormalizable
		}
		r.cache.put(string(s.n.key), a)
	}
	if a == notNormalizable {
		a, hit = r.Analyze(sql)
		return a, nil, hit
	}
	return a, s.n.params, hit
}

func analyzeText(t *topology.Topology, sql string) *Analysis {
	tree, perr := parse(sql)
	if perr != nil {
		return &Analysis{Err: perr}
	}
	hint, herr := commentHint(t, sql)
	if herr != nil {
		return &Analysis{Err: herr}
	}
	a := &Analysis{Stmts: make([]*Statement, 0, len(tree.Stmts)), Hint: hint}
	for _, raw := range tree.Stmts {
		st := analyze(t, raw.Stmt)
		// Only a statement of its own: not under EXPLAIN or COPY, not
		// beside others that would each need the rows' shards.
		if ins := raw.Stmt.GetInsertStmt(); ins != nil && len(tree.Stmts) == 1 {
			st.Split = splitRows(ins, st) != nil
		}
		a.Stmts = append(a.Stmts, st)
	}
	return a
}

// Route decides where an analysed message runs. params and formats are a
// Bind's parameter values and format codes (nil for a simple Query).
func (r *Router) Route(a *Analysis, params [][]byte, formats []int16) Plan {
	return route(r.topo.Load(), a, params, formats, nil, nil)
}

// RouteHinted is Route under a session or transaction hint (SET
// shardgate.shard_key and friends); a comment hint in the SQL wins.
func (r *Router) RouteHinted(a *Analysis, params [][]byte, formats []int16, h *Hint) Plan {
	return route(r.topo.Load(), a, params, formats, h, nil)
}

// Explain routes sql with text parameters and tells how, for humans and tools.
func (r *Router) Explain(sql string, params []string) Explanation {
	a, hit := r.Analyze([]byte(sql))
	var raw [][]byte
	for _, p := range params {
		raw = append(raw, []byte(p))
	}
	ex := r.ExplainAnalysis(a, raw, nil, nil)
	ex.CacheHit = hit
	return ex
}

// ExplainAnalysis explains how an analysed statement routes with these
// parameters and hint: the same plan Route gives, with its keys spelled out.
func (r *Router) ExplainAnalysis(a *Analysis, params [][]byte, formats []int16, h *Hint) Explanation {
	t := r.topo.Load()
	var hits []KeyHit
	plan := route(t, a, params, formats, h, &hits)
	ex := Explanation{Role: plan.Role.String(), Target: plan.Target.String(), Keys: hits, Reason: plan.Reason, Error: plan.Err,
		Shards: []string{}, Plan: planTree(t, plan)}
	switch plan.Target {
	case TargetShard:
		ex.Shards = append(ex.Shards, t.Shards[plan.Shard].Name)
	case TargetMulti:
		for _, i := range plan.Shards.Slice() {
			ex.Shards = append(ex.Shards, t.Shards[i].Name)
		}
	case TargetAll:
		for _, s := range t.Shards {
			ex.Shards = append(ex.Shards, s.Name)
		}
	case TargetAny:
		d, ok := t.DefaultShard()
		if !ok {
			d = 0
		}
		ex.Shards = append(ex.Shards, t.Shards[d].Name)
	}
	return ex
}

func route(t *topology.Topology, a *Analysis, params [][]byte, formats []int16, session *Hint, hits *[]KeyHit) Plan {
	if a.Err != nil {
		return Plan{Target: TargetError, Err: a.Err, Reason: "syntax error"}
	}
	if len(a.Stmts) == 1 {
		switch s := a.Stmts[0]; s.Class {
		case ClassHint:
			if s.Hint.Local && s.Hint.Name == "session" {
				err := &pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "SET LOCAL shardgate.session is not supported: use SET shardgate.session"}
				return Plan{Target: TargetError, Err: err, Reason: err.Message}
			}
			if s.Hint.Value != "" {
				if err := (&Hint{}).set(t, s.Hint.Name, s.Hint.Value); err != nil {
					return Plan{Target: TargetError, Err: err, Reason: err.Message}
				}
			} else if err := (&Hint{}).set(t, s.Hint.Name, ""); err != nil {
				return Plan{Target: TargetError, Err: err, Reason: err.Message}
			}
			return Plan{Target: TargetNone, Tag: s.Tag, HintSet: s.Hint, Reason: s.Reason, Role: RolePrimary}
		case ClassCopyIn:
			shards := ShardSet(1)<<len(t.Shards) - 1
			if s.CopyIn.Default {
				d, ok := t.DefaultShard()
				if !ok {
					return refuse("the topology changed while the statement was routed: send it again")
				}
				shards = 1 << d
			}
			if shards.Count() == 1 {
				// Nothing to split: the server gets the client's bytes
				// as they are, in any format, inside a transaction too.
				return Plan{Target: TargetShard, Shard: shards.First(), CopyIn: s.CopyIn, Role: RolePrimary, Reason: s.Reason + " (one shard: relayed as sent)"}
			}
			return Plan{Target: TargetAll, Shards: shards, CopyIn: s.CopyIn, Role: RolePrimary, Reason: s.Reason}
		case ClassTx, ClassSet, ClassExplain:
			return Plan{Target: TargetNone, Tx: s.Tx, Tag: s.Tag, Set: s.Set, HintSet: s.Hint, Explain: s.Inner, Reason: s.Reason, Role: RolePrimary}
		}
	}
	plan := routeStatements(t, a, params, formats, hits)
	if a.Hint != nil {
		return applyHint(t, plan, a.Hint, true, a.keyType())
	}
	return applyHint(t, plan, session, false, a.keyType())
}

// keyType is the key type hints are read as: the first sharded table's.
func (a *Analysis) keyType() topology.KeyType {
	for _, s := range a.Stmts {
		if s.KeyType != "" {
			return s.KeyType
		}
	}
	return topology.KeyBigint
}

func routeStatements(t *topology.Topology, a *Analysis, params [][]byte, formats []int16, hits *[]KeyHit) Plan {
	plan := Plan{Target: TargetAny, Role: RoleReplica, Reason: "no statement needs a particular shard"}
	keyedFound, all := false, false
	var shards ShardSet
	var scatterErr *pgerr.Error
	every := ShardSet(1)<<len(t.Shards) - 1
	for _, s := range a.Stmts {
		switch s.Class {
		case ClassRefuse:
			return Plan{Target: TargetError, Err: s.Err, Reason: s.Reason, Missing: s.Missing}
		case ClassSet:
			if s.Set.Discard {
				return refuse("send DISCARD ALL as a statement of its own")
			}
			// It runs with the rest, and counts if their implicit
			// transaction commits: the proxy keeps it then.
			plan.Sets = append(plan.Sets, s.Set)
			continue
		case ClassHint, ClassExplain, ClassCopyIn:
			return refuse("send SET shardgate.*, COPY FROM and EXPLAIN (SHARDGATE) as a statement of their own")
		case ClassScatter:
			if p, bad := unlistedMix(t, s, every); bad {
				return p
			}
			shards |= every
			keyedFound, scatterErr, plan.Reason = true, s.Err, s.Reason
		case ClassTx:
			if len(a.Stmts) > 1 && s.Tx != TxBegin && s.Tx != TxCommit && s.Tx != TxRollback {
				plan.Role = RolePrimary
			}
			continue
		case ClassAll:
			if p, bad := unlistedMix(t, s, every); bad {
				return p
			}
			all = true
			plan.Reason = s.Reason
			plan.DDLTables = append(plan.DDLTables, s.DDLTables...)
		case ClassAny:
			if !keyedFound && !all {
				plan.Reason = s.Reason
			}
		case ClassKeyed:
			set, perr := statementShards(t, s, params, formats, hits)
			if perr != nil {
				return Plan{Target: TargetError, Err: perr, Reason: perr.Message}
			}
			if p, bad := unlistedMix(t, s, set); bad {
				return p
			}
			shards |= set
			keyedFound, plan.Reason = true, s.Reason
		case ClassDefault:
			d, ok := t.DefaultShard()
			if !ok {
				return refuse("the topology changed while the statement was routed: send it again")
			}
			shards |= 1 << d
			keyedFound, plan.Reason = true, s.Reason
			plan.DDLTables = append(plan.DDLTables, s.DDLTables...)
		}
		if s.Role == RolePrimary {
			plan.Role = RolePrimary
		}
		if s.SessionState != "" {
			plan.SessionState = s.SessionState
		}
		plan.DDL = plan.DDL || s.DDL
	}
	if all && len(t.Shards) == 1 {
		// Every shard is one shard: the statement runs there like any
		// other, inside a transaction block too.
		all, keyedFound, shards = false, true, every
		plan.Role = RolePrimary
	}
	switch {
	case all && keyedFound:
		return refuse("a query may not mix statements for every shard with single-shard statements")
	case all:
		plan.Target, plan.Role = TargetAll, RolePrimary
		plan.Broadcast = len(a.Stmts) == 1 && a.Stmts[0].Broadcastable // a reference-table write, not DDL
		plan.Shards = ShardSet(1)<<len(t.Shards) - 1
	case keyedFound && shards.Count() == 1:
		plan.Target, plan.Shard = TargetShard, shards.First()
	case keyedFound:
		plan.Target, plan.Shards = TargetMulti, shards
		plan.Err = errorf(pgerr.CodeFeatureNotSupported, "the query needs shards %s (cross-shard queries are not supported yet)", shards.names(t))
		if scatterErr != nil {
			plan.Err = scatterErr
		}
		if st := a.Stmts[0]; len(a.Stmts) == 1 && st.Broadcastable && (st.Class == ClassScatter || st.Class == ClassKeyed) {
			plan.Broadcast = true
			plan.Err = errorf(pgerr.CodeFeatureNotSupported, "the write needs shards %s: set allow_broadcast_writes to run it on each of them", shards.names(t))
		} else if len(a.Stmts) == 1 && st.Split {
			plan.Split = true
			plan.Reason = "the rows are on shards " + shards.names(t) + ": one INSERT per shard"
		} else if len(a.Stmts) == 1 && st.Gather != nil {
			plan.Gather, plan.Err = st.Gather, nil
			plan.Reason = "no merge of the shards' answers is this query's: copy " + st.Gather.tableNames() + " from shards " +
				shards.names(t) + " into " + t.Shards[shards.First()].Name + " and run it there"
			if st.RunFirst != nil {
				plan.RunFirst = st.RunFirst
				plan.Reason = "its subqueries on other shards' rows run first: the query runs with their results in place, where its own shard keys take it"
			}
		} else if len(a.Stmts) == 1 && st.Scatter != nil && len(st.Classes) > 1 {
			plan.Err = errorf(pgerr.CodeFeatureNotSupported, "the query joins sharded tables that are not tied by their shard keys across shards %s", shards.names(t))
		} else if len(a.Stmts) == 1 && st.Scatter != nil {
			if why := a.Stmts[0].Scatter.Refusal; why != "" {
				plan.Err = errorf(pgerr.CodeFeatureNotSupported, "shardgate cannot merge %s: the query needs shards %s", why, shards.names(t))
			} else {
				plan.Scatter, plan.Err = a.Stmts[0].Scatter, nil
				plan.Reason = "no single shard holds the rows: run on " + shards.names(t) + " and merge"
			}
		}
	}
	return plan
}

// unlistedMix refuses a statement naming both a table the config does not
// name, which lives on the default shard alone, and listed tables that
// need shards other than the default one.
func unlistedMix(t *topology.Topology, s *Statement, need ShardSet) (Plan, bool) {
	if s.Unlisted == "" {
		return Plan{}, false
	}
	d, ok := t.DefaultShard()
	if ok && need&^(1<<d) == 0 {
		return Plan{}, false
	}
	def := "none"
	if ok {
		def = t.Shards[d].Name
	}
	return refuse("table %q is not in shardgate's config and lives on the default shard (%s), but table %q needs shards %s: a statement may mix them only where they are all on the default shard", s.Unlisted, def, s.Listed, need.names(t)), true
}

func paramFormat(formats []int16, i int) int16 {
	switch len(formats) {
	case 0:
		return 0
	case 1:
		return formats[0]
	}
	if i < len(formats) {
		return formats[i]
	}
	return 0
}

func keyText(ref KeyRef, params [][]byte) string {
	if ref.Param == 0 {
		return ref.Literal
	}
	if ref.Param <= len(params) {
		return fmt.Sprintf("$%d=%q", ref.Param, params[ref.Param-1])
	}
	return fmt.Sprintf("$%d", ref.Param)
}
