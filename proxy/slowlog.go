package proxy

import (
	"bytes"
	"strings"
	"time"

	"github.com/shardgate/shardgate/router"
)

// maxLoggedQuery bounds the query text of a slow-query line.
const maxLoggedQuery = 1000

// logIfSlow logs a client request that took log_min_duration or longer,
// with where it ran and why, like Postgres's log_min_duration_statement.
// The query is logged with its constants replaced by placeholders, so a
// password in a literal never reaches the log.
func (c *client) logIfSlow(began time.Time, plan router.Plan, u unit) {
	took := time.Since(began)
	if min := time.Duration(c.srv.rt.Load().cfg.LogMinDuration); min <= 0 || took < min {
		return
	}
	c.srv.metrics.SlowQueries.Inc()
	role := "primary"
	if c.tx.ranOnReplica {
		role = "replica"
	}
	c.log().Warn("slow query",
		"duration_ms", float64(took.Microseconds())/1000,
		"target", plan.Target.String(),
		"shards", c.shardNames(plan),
		"role", role,
		"reason", plan.Reason,
		"query", c.loggedQuery(u))
}

func (c *client) shardNames(plan router.Plan) string {
	t := c.srv.topo()
	switch plan.Target {
	case router.TargetShard:
		return t.Shards[plan.Shard].Name
	case router.TargetAny:
		return t.Shards[c.tx.heldShard].Name
	}
	var names []string
	for _, i := range plan.Shards.Slice() {
		names = append(names, t.Shards[i].Name)
	}
	return strings.Join(names, ",")
}

func (c *client) loggedQuery(u unit) string {
	sql := u.query
	if sql == nil {
		_, _, sql, _ = c.boundStatement()
	}
	sql = bytes.TrimSuffix(sql, []byte{0})
	text := router.Redact(sql)
	if len(text) > maxLoggedQuery {
		text = text[:maxLoggedQuery] + "..."
	}
	return text
}
