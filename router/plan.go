// Package router turns SQL text and bind parameters into a Plan: which
// shards a statement runs on, with which role, and why. Routing depends only
// on SQL, parameters and topology, never on connections, so every decision
// is a pure function that tests can table-drive.
package router

import (
	"encoding/json"
	"fmt"
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
	HintSet *HintSetting // TargetNone: SET shardgate.*, for the proxy to keep
	Explain *Analysis    // TargetNone: EXPLAIN (SHARDGATE) of this, for the proxy to answer
	Scatter *ScatterSpec // TargetMulti without Err: how to run and merge it
	CopyIn  *CopyIn      // TargetAll: COPY ... FROM STDIN, split by the proxy
	// Broadcast: a write that every shard of Shards runs on its own rows:
	// a reference-table write (TargetAll), or a TargetMulti UPDATE/DELETE
	// whose Err says why it is refused unless the config allows it.
	Broadcast bool
	// Split: a multi-row INSERT ... VALUES whose rows are on several
	// shards; Router.SplitInsert writes one INSERT per shard. Err still
	// refuses it, for a proxy that does not split.
	Split  bool
	Reason string
	Err    *Error
}

// Error is a refusal with the SQLSTATE the client sees.
type Error struct {
	Code     string
	Message  string
	Detail   string
	Hint     string
	Where    string // context, as Postgres's CONTEXT line
	Position int32  // 1-based character position in the query, 0 if none
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// SQLSTATEs the router produces.
const (
	CodeFeatureNotSupported = "0A000"
	CodeSyntaxError         = "42601"
	CodeInvalidText         = "22P02"
	CodeOutOfRange          = "22003"
	CodeUndefinedParameter  = "42P02"
	CodeProtocolViolation   = "08P01"
	// CodeStatementTooComplex refuses text too long or too deeply nested
	// for the parser to take safely.
	CodeStatementTooComplex = "54001"
)

func refuse(format string, args ...any) Plan {
	err := errorf(CodeFeatureNotSupported, format, args...)
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
	Shards   []string `json:"shards"`
	Role     string   `json:"role"`
	Target   string   `json:"target"`
	Keys     []KeyHit `json:"keys,omitempty"`
	Reason   string   `json:"reason"`
	Error    *Error   `json:"error,omitempty"`
	CacheHit bool     `json:"cache_hit"`
}

// MarshalJSON keeps SQLSTATE fields stable in lower case.
func (e *Error) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Code     string `json:"code"`
		Message  string `json:"message"`
		Position int32  `json:"position,omitempty"`
	}{e.Code, e.Message, e.Position})
}
