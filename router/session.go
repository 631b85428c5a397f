package router

import (
	pg "github.com/pganalyze/pg_query_go/v5"

	"github.com/shardgate/shardgate/topology"
)

// cursorOptHold is CURSOR_OPT_HOLD of Postgres's parsenodes.h: DECLARE ...
// WITH HOLD, a cursor that outlives its transaction.
const cursorOptHold = 0x0020

// Session state a statement leaves on its server connection past the end of
// its transaction. Transaction pooling would hand that connection to other
// clients, so the proxy pins it to the client (Plan.SessionState).
const (
	stateListen     = "LISTEN"
	stateTempTable  = "temporary tables"
	stateHoldCursor = "cursors WITH HOLD"
	stateLock       = "session advisory locks"
)

// sessionLocks take advisory locks held until the session unlocks them.
var sessionLocks = map[string]bool{
	"pg_advisory_lock": true, "pg_try_advisory_lock": true,
	"pg_advisory_lock_shared": true, "pg_try_advisory_lock_shared": true,
}

// onOneShard classifies a statement that names no table and must run on
// one shard to mean anything: LISTEN and NOTIFY (they meet only on one
// server), DO and CALL (their bodies are opaque). It runs on the default
// shard, or the only one; a sharded topology without a default shard has
// no shard to give it.
func onOneShard(t *topology.Topology, node *pg.Node, reason string) *Statement {
	if _, ok := t.DefaultShard(); ok {
		return &Statement{Class: ClassDefault, Role: RolePrimary, Reason: reason + ": the default shard"}
	}
	if len(t.Shards) == 1 {
		return &Statement{Class: ClassAny, Role: RolePrimary, Reason: reason + ": the only shard"}
	}
	return refused("%s needs one shard to run on, and there are several: set default_shard to name it", statementName(node))
}

// analyzeSession classifies the statements that work on a session's own
// objects (notifications, procedures, cursors), or returns nil.
func analyzeSession(t *topology.Topology, node *pg.Node) *Statement {
	switch {
	case node.GetListenStmt() != nil:
		st := onOneShard(t, node, "LISTEN")
		st.SessionState = stateListen
		return st
	case node.GetUnlistenStmt() != nil, node.GetNotifyStmt() != nil:
		return onOneShard(t, node, "notifications")
	case node.GetDoStmt() != nil:
		return onOneShard(t, node, "DO block")
	case node.GetCallStmt() != nil:
		return onOneShard(t, node, "CALL")
	case node.GetDeclareCursorStmt() != nil:
		return analyzeDeclare(t, node.GetDeclareCursorStmt())
	case node.GetFetchStmt() != nil, node.GetClosePortalStmt() != nil:
		// The cursor lives where its transaction (or pinned session) is.
		return &Statement{Class: ClassAny, Role: RolePrimary, Reason: "a cursor's FETCH, MOVE or CLOSE runs where the cursor is"}
	}
	return nil
}

// analyzeDeclare routes a cursor as its query: it reads one shard's rows.
func analyzeDeclare(t *topology.Topology, d *pg.DeclareCursorStmt) *Statement {
	st := analyze(t, d.Query)
	switch st.Class {
	case ClassRefuse:
		return st
	case ClassKeyed, ClassAny, ClassDefault:
	default:
		return refused("DECLARE of a query that needs every shard is not supported: a cursor reads one shard")
	}
	st.Role, st.Scatter, st.Split, st.Broadcastable = RolePrimary, nil, false, false
	st.Reason = "cursor: " + st.Reason
	if d.Options&cursorOptHold != 0 {
		st.SessionState = stateHoldCursor
	}
	return st
}

// tempRelation reports whether a DDL statement creates a temporary
// relation that outlives its transaction (not ON COMMIT DROP).
func tempRelation(node *pg.Node) bool {
	switch {
	case node.GetCreateStmt() != nil:
		c := node.GetCreateStmt()
		return c.Relation.GetRelpersistence() == "t" && c.Oncommit != pg.OnCommitAction_ONCOMMIT_DROP
	case node.GetCreateTableAsStmt() != nil:
		in := node.GetCreateTableAsStmt().Into
		return in.GetRel().GetRelpersistence() == "t" && in.GetOnCommit() != pg.OnCommitAction_ONCOMMIT_DROP
	case node.GetViewStmt() != nil:
		return node.GetViewStmt().View.GetRelpersistence() == "t"
	case node.GetCreateSeqStmt() != nil:
		return node.GetCreateSeqStmt().Sequence.GetRelpersistence() == "t"
	}
	return false
}
