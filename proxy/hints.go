package proxy

import (
	"strings"

	"github.com/shardgate/shardgate/router"
)

// hint is the routing hint in force: the transaction's (SET LOCAL
// shardgate.*), else the session's.
func (c *client) hint() *router.Hint {
	if c.sess.txHint != nil {
		return c.sess.txHint
	}
	return c.sess.sessionHint
}

// applyHintSet keeps SET [LOCAL] shardgate.<name>; the router validated it.
// SET LOCAL outside a transaction does nothing, as in Postgres.
func (c *client) applyHintSet(h *router.HintSetting) {
	if h.Local {
		if c.tx.state == txIdle {
			return
		}
		base := c.sess.txHint
		if base == nil {
			base = c.sess.sessionHint
		}
		c.sess.txHint, _ = c.srv.router.ParseSessionHint(base, h.Name, h.Value)
		return
	}
	c.sess.sessionHint, _ = c.srv.router.ParseSessionHint(c.sess.sessionHint, h.Name, h.Value)
	if h.Name == "session" {
		c.inheritToken()
	}
}

// explain answers EXPLAIN (SHARDGATE) <statement> with the plan the proxy
// would run, as one row.
func (c *client) explain(inner *router.Analysis, params [][]byte) error {
	ex := c.srv.router.ExplainAnalysis(inner, params, nil, c.hint())
	var keys []string
	for _, k := range ex.Keys {
		keys = append(keys, k.Table+" key "+k.Value+" hash "+k.Hash+" range "+k.Range+" shard "+k.Shard)
	}
	errText := ""
	if ex.Error != nil {
		errText = ex.Error.Code + ": " + ex.Error.Message
	}
	c.appendTable([]string{"shards", "role", "target", "keys", "reason", "error", "plan"},
		[][]string{{strings.Join(ex.Shards, ","), ex.Role, ex.Target, strings.Join(keys, "; "), ex.Reason, errText, ex.Plan.String()}})
	c.out = appendCommandComplete(c.out, "EXPLAIN")
	c.out = appendReadyForQuery(c.out, c.status())
	return c.flush()
}
