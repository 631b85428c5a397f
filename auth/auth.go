// Package auth authenticates clients of the proxy, which plays the PostgreSQL
// server's side of the wire protocol v3 authentication exchanges: trust, md5
// and SCRAM-SHA-256, with channel binding (SCRAM-SHA-256-PLUS) over TLS.
//
// Servers are not authenticated here: the pool reaches them with the DSN's
// own credentials.
package auth

import (
	"encoding/binary"
	"fmt"

	"github.com/shardgate/shardgate/pgerr"
)

// SQLSTATEs used in *Error.
const (
	codeInvalidPassword      = pgerr.CodeInvalidPassword      // invalid_password
	codeInvalidAuthorization = pgerr.CodeInvalidAuthorization // invalid_authorization_specification
	codeProtocolViolation    = pgerr.CodeProtocolViolation    // protocol_violation
	codeFeatureNotSupported  = pgerr.CodeFeatureNotSupported  // feature_not_supported
)

// Methods, as named in the config.
const (
	methodTrust = "trust"
	methodMD5   = "md5"
	methodSCRAM = "scram-sha-256"
)

// Wire protocol v3 message types and authentication request codes.
const (
	msgTypePassword       = 'p' // PasswordMessage, SASLInitialResponse, SASLResponse
	msgTypeAuthentication = 'R'
	authCodeMD5Password   = 5
	authCodeSASL          = 10
	authCodeSASLContinue  = 11
	authCodeSASLFinal     = 12

	// Far above any legitimate password or SCRAM message; bounds what a
	// client can make the proxy hash before it has authenticated.
	maxPasswordMessageBodyLen = 8 << 10
)

// Conn is what authentication needs from a client connection.
type Conn interface {
	// ReadMessage returns the next typed frontend message ('p' for all password/SASL messages).
	ReadMessage() (typ byte, body []byte, err error)
	// WriteMessage sends one backend message now (flushed).
	WriteMessage(typ byte, body []byte) error
}

// Error is an authentication failure to report to the client as a FATAL
// ErrorResponse. Code is the SQLSTATE: 28P01 for a wrong password or an
// unknown user (same message for both, so user names can't be probed), 28000
// for a method the user's secret can't serve and for a failed or downgraded
// channel binding, 08P01 for protocol violations,
// 0A000 for SCRAM features the proxy does not support.
type Error struct {
	Code, Message string
}

func (e *Error) Error() string { return e.Message + " (SQLSTATE " + e.Code + ")" }

// passwordFailed is the one error for both a wrong password and an unknown
// user. The user name is not quoted Go-style, to match PostgreSQL's message.
func passwordFailed(user string) *Error {
	return &Error{codeInvalidPassword, `password authentication failed for user "` + user + `"`}
}

func protocolError(format string, args ...any) *Error {
	return &Error{codeProtocolViolation, fmt.Sprintf(format, args...)}
}

// Authenticate runs method's exchange for user over c against user's secret
// in store; see Exchange.
func Authenticate(c Conn, method, user string, store *Store, tlsServerEndPoint []byte) error {
	sec, known := store.Lookup(user)
	return Exchange(c, method, user, sec, known, tlsServerEndPoint)
}

// Exchange runs method's exchange for user over c against sec, the secret
// the caller found for user (known=false: none, and sec is ignored). It
// returns nil when the client proved it knows the secret (or method is
// "trust"), *Error otherwise (or an I/O error from c). It does not send
// AuthenticationOk.
//
// tlsServerEndPoint is the channel binding data of c's TLS connection (see
// TLSServerEndPoint), nil when c is not TLS: with it SCRAM also offers
// SCRAM-SHA-256-PLUS.
//
// For an unknown user the exchange still runs to the end against a fake
// secret (derived from the user name, so repeated probes see the same SCRAM
// salt) and then fails with 28P01, so neither the flow nor the message reveals
// whether the user exists.
func Exchange(c Conn, method, user string, sec Secret, known bool, tlsServerEndPoint []byte) error {
	switch method {
	case methodTrust:
		return nil
	case methodMD5, methodSCRAM:
	default:
		return &Error{codeInvalidAuthorization, fmt.Sprintf("unsupported authentication method %q", method)}
	}
	if !known {
		sec = fakeSecret(user)
	}
	if !sec.Serves(method) {
		return methodMismatch(method, user)
	}
	if method == methodMD5 {
		return md5Exchange(c, user, sec.md5, known)
	}
	return scramExchange(c, user, sec.scram, known, tlsServerEndPoint)
}

// methodMismatch refuses a user whose secret can't serve method. PostgreSQL
// and PgBouncer would switch md5 to SCRAM here; the proxy's contract is to
// refuse so the configuration is fixed.
func methodMismatch(method, user string) *Error {
	have := "an md5 hash"
	if method == methodMD5 {
		have = "a SCRAM-SHA-256 verifier"
	}
	return &Error{codeInvalidAuthorization, fmt.Sprintf(
		`%s authentication is not possible for user "%s": its secret is %s`, method, user, have)}
}

// authMessage builds an 'R' body: the int32 authentication code, then data.
func authMessage(code uint32, data ...[]byte) []byte {
	body := binary.BigEndian.AppendUint32(nil, code)
	for _, d := range data {
		body = append(body, d...)
	}
	return body
}

// readPassword reads the client's next message, which must be a 'p'.
func readPassword(c Conn) ([]byte, error) {
	typ, body, err := c.ReadMessage()
	if err != nil {
		return nil, err
	}
	if typ != msgTypePassword {
		return nil, protocolError("expected password response, got message type %q", typ)
	}
	if len(body) > maxPasswordMessageBodyLen {
		return nil, protocolError("password message too long (%d bytes)", len(body))
	}
	return body, nil
}
