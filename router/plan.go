// Package router turns SQL text and bind parameters into a Plan: which
// shards a statement runs on, with which role, and why. Routing depends only
// on SQL, parameters and topology, never on connections, so every decision
// is a pure function that tests can table-drive.
package router

import (
	"fmt"

	"github.com/shardgate/shardgate/pgerr"
)

// Role says which server of a shard may run a statement.
type Role uint8

const (
	RolePrimary Role = iota
	// RoleReplica marks a statement as replica-eligible: it provably only reads.
	RoleReplica
)

func (r Role) String() string {
	if r == RoleReplica {
		return "replica"
	}
	return "primary"
}

// Target says how many shards a plan touches.
type Target uint8

const (
	// TargetShard runs on exactly Plan.Shard.
	TargetShard Target = iota
	// TargetAny runs on any single shard: every shard answers the same
	// (catalog queries, reference-table reads, SELECT 1).
	TargetAny
	// TargetAll runs on every shard: DDL and reference-table writes.
	TargetAll
	// TargetNone needs no shard by itself: transaction control that the
	// proxy may answer or defer until a statement picks a shard.
	TargetNone
	// TargetError is refused; Plan.Err says why.
	TargetError
	// TargetMulti needs Plan.Shards, several of them: a merged SELECT
	// (Plan.Scatter), a split INSERT (Plan.Split), or else refused with
	// Plan.Err.
	TargetMulti
)

var targetNames = [...]string{"shard", "any", "all", "none", "error", "multi"}

func (t Target) String() string { return targetNames[t] }

// TxOp is the transaction-control effect of a statement.
type TxOp uint8

const (
	TxNone TxOp = iota
	TxBegin
	TxCommit
	TxRollback
	// TxOther is SAVEPOINT, RELEASE, ROLLBACK TO, SET TRANSACTION and the like:
	// meaningful only on the connection that holds the transaction.
	TxOther
)

// Plan is the router's answer for one client message (a simple Query or a
// Bind of a prepared statement).
type Plan struct {
	Target  Target
	Shard   int      // valid when Target == TargetShard
	Shards  ShardSet // valid when Target == TargetMulti
	Role    Role
	Tx      TxOp         // TargetNone: the transaction-control effect
	Tag     string       // TargetNone: the command tag, for answers the proxy gives itself
	Set     *Setting     // TargetNone: a session setting for the proxy to track
	Sets    []*Setting   // session settings among a query's several statements
	HintSet *HintSetting // TargetNone: SET shardgate.*, for the proxy to keep
	Explain *Analysis    // TargetNone: EXPLAIN (SHARDGATE) of this, for the proxy to answer
	Scatter *ScatterSpec // TargetMulti without Err: how to run and merge it
	Gather  *GatherSpec  // TargetMulti without Err: how to pull its rows to one shard and run it there
	// RunFirst (with Gather): run these subqueries first, then the query
	// with their results in place; Gather if a subquery cannot run alone.
	RunFirst *RunFirstSpec
	CopyIn   *CopyIn // TargetAll: COPY ... FROM STDIN, split by the proxy
	// Broadcast: a write that every shard of Shards runs on its own rows:
	// a reference-table write (TargetAll), or a TargetMulti UPDATE/DELETE
	// whose Err says why it is refused unless the config allows it.
	Broadcast bool
	// Split: a multi-row INSERT ... VALUES whose rows are on several
	// shards; Router.SplitInsert writes one INSERT per shard. Err still
	// refuses it, for a proxy that does not split.
	Split bool
	// DDLTables: for DDL, the tables it names (Statement.DDLTables).
	DDLTables []string
	// Missing: refused for naming a table the config does not name (and
	// there is no default shard); the proxy answers 42P01 instead when no
	// such relation exists.
	Missing *Relation
	// SessionState: what of the session the statement leaves on its
	// server past the transaction (Statement.SessionState); a pooling
	// proxy keeps that server for the client from then on.
	SessionState string
	DDL          bool // a statement changes the schema (Statement.DDL)
	Reason       string
	Err          *pgerr.Error
}

func errorf(code, format string, args ...any) *pgerr.Error {
	return &pgerr.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func refuse(format string, args ...any) Plan {
	err := errorf(pgerr.CodeFeatureNotSupported, format, args...)
	return Plan{Target: TargetError, Err: err, Reason: err.Message}
}

// KeyHit explains how one shard-key value was routed.
type KeyHit struct {
	Table string `json:"table"`
	Value string `json:"value"`
	Hash  string `json:"hash"`
	Range string `json:"range"`
	Shard string `json:"shard"`
}

// Explanation is what `shardgate route` prints: the plan the proxy would run.
type Explanation struct {
	Shards   []string     `json:"shards"`
	Role     string       `json:"role"`
	Target   string       `json:"target"`
	Keys     []KeyHit     `json:"keys,omitempty"`
	Reason   string       `json:"reason"`
	Error    *pgerr.Error `json:"error,omitempty"`
	CacheHit bool         `json:"cache_hit"`
	// Plan is the operator tree of a cross-shard read (explain.go).
	Plan *PlanNode `json:"plan,omitempty"`
}
