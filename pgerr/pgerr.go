// Package pgerr is the error a client sees on the wire and the SQLSTATE
// codes shardgate raises itself, shared by routing, execution and the
// coming resharding code without their depending on each other (as
// CockroachDB's pgerror and pgcode are).
package pgerr

import "encoding/json"

// Error is a refusal or failure with the SQLSTATE the client sees; the
// proxy writes it as an ErrorResponse.
type Error struct {
	Code     string
	Message  string
	Detail   string
	Hint     string
	Where    string // context, as Postgres's CONTEXT line
	Position int32  // 1-based character position in the query, 0 if none
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// MarshalJSON keeps SQLSTATE fields stable in lower case (shardgate route
// --json).
func (e *Error) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Code     string `json:"code"`
		Message  string `json:"message"`
		Position int32  `json:"position,omitempty"`
	}{e.Code, e.Message, e.Position})
}

// SQLSTATEs shardgate raises itself, by Postgres's names.
const (
	CodeFeatureNotSupported = "0A000"
	CodeSyntaxError         = "42601"
	CodeInvalidText         = "22P02"
	CodeOutOfRange          = "22003"
	CodeUndefinedParameter  = "42P02"
	CodeUndefinedTable      = "42P01"
	CodeProtocolViolation   = "08P01"
	// CodeStatementTooComplex refuses text too long or too deeply nested
	// for the parser to take safely.
	CodeStatementTooComplex = "54001"
	// CodeCharacterNotInRepertoire is for bytes that are not text in the
	// database encoding.
	CodeCharacterNotInRepertoire   = "22021"
	CodeConnectionFailure          = "08006"
	CodeQueryCanceled              = "57014"
	CodeTooManyConnections         = "53300"
	CodeProgramLimitExceeded       = "54000"
	CodeInFailedTransaction        = "25P02"
	CodeActiveTransaction          = "25001"
	CodeIdleInTransactionTimeout   = "25P03"
	CodeIdleSessionTimeout         = "57P05"
	CodeAdminShutdown              = "57P01"
	CodeInvalidCatalogName         = "3D000"
	CodeInvalidAuthorization       = "28000"
	CodeInvalidPassword            = "28P01"
	CodeDuplicatePreparedStatement = "42P05"
	CodeInvalidSQLStatementName    = "26000"
	CodeIOError                    = "58030"
	CodeNotNullViolation           = "23502"
	CodeBadCopyFileFormat          = "22P04"
	CodeNullValueNotAllowed        = "22004"
	CodeInvalidParameterValue      = "22023"
)
