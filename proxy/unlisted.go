package proxy

import (
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/router"
)

// refusal is the error a refused plan answers with. A statement refused
// for naming a table the config does not name (with no default shard)
// answers as Postgres would, 42P01, when one shard says no such relation
// exists for the client's settings (search_path): the refusal is the
// error path, so the extra round trip costs ordinary statements nothing.
// A relation that exists keeps the refusal, which says how to configure
// it.
func (c *client) refusal(plan router.Plan) *pgerr.Error {
	if plan.Missing == nil {
		return plan.Err
	}
	exists, err := c.relationExists(plan.Missing)
	if err != nil {
		c.log().Info("could not check whether a relation exists", "relation", plan.Missing.String(), "err", err)
		return plan.Err
	}
	if exists {
		return plan.Err
	}
	return &pgerr.Error{Code: pgerr.CodeUndefinedTable, Message: fmt.Sprintf("relation %q does not exist", plan.Missing.String())}
}

// relationExists asks the any shard whether rel names a relation, on the
// client's session connection when it has one there and is not using it
// (so its temporary tables count), else on a pool connection.
func (c *client) relationExists(rel *router.Relation) (bool, error) {
	shard := c.srv.anyShard()
	sc := c.sessionConn(shard)
	if c.tx.held != nil || sc == nil {
		p, err := c.srv.rt.Load().primaryPool(shard)
		if err != nil {
			return false, err
		}
		if sc, err = p.Acquire(c.ctx); err != nil {
			return false, err
		}
		defer p.Release(sc)
	}
	return relationExistsOn(c, sc, rel)
}

func relationExistsOn(c *client, sc *pool.Conn, rel *router.Relation) (bool, error) {
	name := pgx.Identifier{rel.Name}
	if rel.Schema != "" {
		name = pgx.Identifier{rel.Schema, rel.Name}
	}
	q := "SELECT to_regclass(" + quoteLiteral(name.Sanitize()) + ") IS NOT NULL"
	req := withSettings(c, sc, nil, appendMessage(nil, 'Q', append([]byte(q), 0)))
	a := readAnswer(sc, req.bytes, req.synced)
	switch {
	case a.err != nil:
		sc.MarkBroken()
		return false, a.err
	case a.errMsg != nil || len(a.rows) != 1 || len(a.rows[0]) != 1:
		return false, fmt.Errorf("to_regclass(%s) gave no answer", name.Sanitize())
	}
	return string(a.rows[0][0]) == "t", nil
}
