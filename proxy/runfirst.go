package proxy

import (
	"errors"
	"strconv"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardgate/shardgate/merge"
	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/router"
)

// A run-first query (router.RunFirstSpec) runs its cross-shard subqueries
// first, each on its own shards, then the query itself with their results
// in place as constants, routed by its own shard keys and run as any
// cross-shard read. Outside a transaction block only, like a gather: the
// subqueries and the query see separate snapshots. A subquery that fails
// alone, as one referring to the query's own columns does, leaves the
// query to the gather its plan carries.

var errRunFirstTooLarge = &pgerr.Error{
	Code:    "54000",
	Message: "the rows of this query's subqueries across shards exceed max_intermediate_result_size",
	Hint:    "shardgate runs such subqueries first and puts their results into the query: narrow them, or raise max_intermediate_result_size.",
}

// runFirstHeld is the memory (heldRowCost) a run-first's subqueries may
// hold: some 30 MB for the 1 MiB of values text MaxRunFirstValues allows.
const runFirstHeld = 32 << 20

// errValuesTooLong: a subquery's values would make the query's text
// longer than MaxRunFirstValues; gathering is cheaper.
var errValuesTooLong = errors.New("shardgate: a run-first's values exceed MaxRunFirstValues")

// runFirstSettings makes floats' text exact, every digit, so the values
// read back as themselves; SET LOCAL ends with the query's implicit
// transaction. The other settings stay the client's: the subquery
// computes under them as it would in place (a date cast to text), and the
// query reads the values back under them (withSettings).
const runFirstSettings = "SET LOCAL extra_float_digits = 3; "

func (c *client) runFirst(plan router.Plan, u unit) error {
	if c.inTransactionBlock() {
		return c.refuse(errGatherInTransaction)
	}
	spec := plan.RunFirst
	// Subqueries holding more than runFirstHeld leave the query to the
	// gather, as do values past MaxRunFirstValues of text; within them,
	// the config's bound is the client's error.
	budget := c.gatherBudget()
	capped := budget.Load() > runFirstHeld
	if capped {
		budget.Store(runFirstHeld)
	}
	results := make([]router.RunFirstResult, len(spec.Subqueries))
	for i, q := range spec.Subqueries {
		res, errMsg, err := c.runSubquery(q, budget)
		switch {
		case errors.Is(err, errGatherTooLarge) && capped, errors.Is(err, errValuesTooLong):
			return c.gather(plan, u)
		case errors.Is(err, errGatherTooLarge):
			return c.refuse(errRunFirstTooLarge)
		case err != nil:
			return c.serverLost(err)
		case errMsg != nil && fallsBack(errorCode(errMsg)):
			// The subquery needs the query around it (or fails for a
			// reason Postgres, evaluating it lazily, might never reach):
			// the gather answers as one Postgres would.
			return c.gather(plan, u)
		case errMsg != nil:
			c.out = append(c.out, errMsg...)
			c.out = appendReadyForQuery(c.out, c.status())
			return c.flush()
		case res == nil:
			return c.gather(plan, u) // a column type no cast reads back
		}
		results[i] = *res
	}
	var params [][]byte
	var formats []int16
	if u.query == nil {
		params, formats = c.ext.params, c.ext.formats
	}
	outer, sql := c.srv.router.RouteRunFirst(spec, results, params, formats)
	run, ok := c.outerScatter(outer, sql)
	if !ok {
		return c.gather(plan, u) // routing the values did not go as planned
	}
	return c.scatter(run, u)
}

// fallsBack reports the SQLSTATEs for which a subquery that failed on its
// own leaves the query to the gather: an error of the SQL (a column or
// table of the query around it, 42703 or 42P01; a division by zero that
// Postgres, evaluating the subquery only once a row needs it, may never
// reach), not of the server, the session or the client's cancel.
func fallsBack(code string) bool {
	if len(code) < 2 {
		return false
	}
	switch code[:2] {
	case "08", "25", "40", "53", "54", "55", "57", "58", "F0", "XX":
		return false
	}
	return true
}

// outerScatter makes the query's own plan a cross-shard read with its
// text in place of the client's: on its shards and merged, or on its one
// shard passed through.
func (c *client) outerScatter(outer router.Plan, sql string) (router.Plan, bool) {
	switch {
	case outer.Err != nil || outer.Gather != nil || outer.Split || outer.Broadcast:
		return outer, false
	case outer.Target == router.TargetMulti && outer.Scatter != nil:
		spec := *outer.Scatter
		if spec.SQL == "" {
			spec.SQL = sql
		}
		outer.Scatter = &spec
		return outer, true
	case outer.Target == router.TargetAny:
		outer.Shard = c.srv.anyShard()
	case outer.Target != router.TargetShard:
		return outer, false
	}
	outer.Target, outer.Shards = router.TargetMulti, router.ShardSet(1)<<outer.Shard
	outer.Scatter = &router.ScatterSpec{SQL: sql, Spec: merge.Spec{Limit: -1}}
	return outer, true
}

// runSubquery runs one subquery on its shards. res is nil for a value
// type whose text no cast reads back (record).
func (c *client) runSubquery(q router.RunFirstQuery, budget *atomic.Int64) (res *router.RunFirstResult, errMsg []byte, err error) {
	shards := q.Shards.Slice()
	if q.Any {
		shards = []int{c.srv.anyShard()}
	}
	sql := q.SQL
	if q.Merge != nil && q.Merge.SQL != "" {
		sql = q.Merge.SQL
	}
	req := appendMessage(nil, 'Q', append([]byte(runFirstSettings+sql), 0))
	answers := make([]shardAnswer, len(shards))
	parallel(len(shards), func(i int) { answers[i] = c.srv.askShard(c, shards[i], req, budget) })
	for _, a := range answers {
		switch {
		case a.err != nil:
			return nil, nil, a.err
		case a.errMsg != nil:
			return nil, a.errMsg, nil
		case a.desc == nil || len(a.desc.Fields) < 1:
			return nil, appendError(nil, &pgerr.Error{Code: pgerr.CodeProtocolViolation, Message: "shardgate: a subquery answered without a column"}), nil
		}
	}
	res = &router.RunFirstResult{}
	if q.Exists {
		for _, a := range answers {
			for _, row := range a.rows {
				res.Exists = res.Exists || string(row[0]) == "t"
			}
		}
		return res, nil, nil
	}
	desc, rows, ok := subqueryRows(q, answers)
	if !ok || router.Anonymous(desc.Fields[0].DataTypeOID) || (q.Scalar && len(rows) > 1) {
		// A merge it cannot do, a type no cast reads back, or a scalar
		// of several rows, which Postgres raises (21000) only if it gets
		// to evaluate it: the gather answers as Postgres would.
		return nil, nil, nil
	}
	seen := map[string]bool{}
	null := false
	text := 0
	for _, row := range rows {
		v := row[0]
		switch {
		case v == nil && !null:
			null = true
			res.Values = append(res.Values, nil)
		case v != nil && !seen[string(v)]:
			seen[string(v)] = true
			res.Values = append(res.Values, v)
			if text += len(v) + 3; text > router.MaxRunFirstValues {
				return nil, nil, errValuesTooLong
			}
		}
	}
	// Typed even when empty: = ANY('{}'::T[]) is false as IN (no rows)
	// is, and keeps the tested expression, whose $n the client binds.
	field := desc.Fields[0]
	name, errMsg, err := c.typeName(shards[0], field.DataTypeOID, field.TypeModifier)
	if err != nil || errMsg != nil {
		return nil, errMsg, err
	}
	res.Type = name
	return res, nil, nil
}

// subqueryRows is the subquery's answer from its shards' answers: merged
// as the subquery alone would be (q.Merge), or put together; ok is false
// for a merge that cannot be done.
func subqueryRows(q router.RunFirstQuery, answers []shardAnswer) (desc *pgproto3.RowDescription, rows []merge.Row, ok bool) {
	if q.Merge != nil {
		desc, rows, err := mergeAnswers(q.Merge, answers)
		return desc, rows, err == nil && len(desc.Fields) == 1
	}
	for _, a := range answers {
		rows = append(rows, a.rows...)
	}
	return answers[0].desc, rows, len(answers[0].desc.Fields) == 1
}

// typeName is the SQL name of a type to cast the values to: a built-in
// one's, or the shard's format_type of it with its modifier (bit(3)).
func (c *client) typeName(shard int, oid uint32, typmod int32) (string, []byte, error) {
	if name, ok := router.TypeName(oid); ok {
		return name, nil, nil
	}
	q := "SELECT pg_catalog.format_type(" + strconv.FormatUint(uint64(oid), 10) + ", " + strconv.FormatInt(int64(typmod), 10) + ")"
	ans := c.srv.askShard(c, shard, appendMessage(nil, 'Q', append([]byte(q), 0)), nil)
	switch {
	case ans.err != nil:
		return "", nil, ans.err
	case ans.errMsg != nil:
		return "", ans.errMsg, nil
	case len(ans.rows) != 1 || len(ans.rows[0]) != 1 || ans.rows[0][0] == nil:
		return "", appendError(nil, &pgerr.Error{Code: "42704", Message: "shardgate: no type with OID " + strconv.FormatUint(uint64(oid), 10)}), nil
	}
	return string(ans.rows[0][0]), nil, nil
}
