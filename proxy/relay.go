package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
)

// op is one message sent to a server (or answered in its place), in order,
// so the relay knows which response belongs to what.
type op struct {
	typ  byte // frontend message type: 'Q', 'P', 'B', 'D', 'E', 'C', 'S'
	drop bool // sent by the proxy itself: swallow its answer (errors still pass)
	// capture: the proxy's WAL position query; its value goes to
	// c.captured and nothing of its answer, errors included, reaches the client.
	capture bool

	// fake ops are answered by the proxy at their turn, without the server.
	fake byte         // '1' ParseComplete or '3' CloseComplete
	err  *pgerr.Error // an error Postgres would have raised here

	// Parse bookkeeping, applied when the Parse succeeds.
	prepared   *prepared
	clientName string // register (Parse) or forget (Close) this client name
	forget     bool
	closing    string // a server-side statement the proxy closes to make room
	// stmt: the shared server-side statement a Bind, Describe or EXECUTE
	// uses, so an error saying it went stale can name it.
	stmt string
}

// relayResult summarises one exchange.
type relayResult struct {
	status   byte // last ReadyForQuery status; 0 if none came (Flush)
	sawError bool
	// answered: something of the answer reached the client or its buffer.
	// A failed exchange that answered nothing changed nothing the client
	// can see, so a read may be retried on another server.
	answered bool
	flushed  bool // part of the answer was written to the client
	// stale: shared server-side statements the server found stale; the
	// caller closes them there so the next use prepares them afresh.
	// retry: all were stale for a reason a fresh Parse cures unseen.
	stale []string
	retry bool
	// skipping: the exchange ended (Flush, no Sync) after an error, so
	// the server ignores everything up to the next Sync.
	skipping bool
}

// terminal reports whether a backend message ends the answer to a frontend
// message of type sent.
func terminal(sent, got byte) bool {
	switch sent {
	case 'P':
		return got == '1'
	case 'B':
		return got == '2'
	case 'C':
		return got == '3'
	case 'D':
		return got == 'T' || got == 'n'
	case 'E':
		return got == 'C' || got == 'I' || got == 's'
	case 'S', 'Q':
		return got == 'Z'
	}
	return false
}

// send writes c.sout to the server and relays its answers to *sink until
// every op is answered. With stream set, *sink is c.out and is flushed to
// the client as it fills.
func (c *client) send(sc *pool.Conn, ops []op, sink *[]byte, stream bool) (res relayResult, err error) {
	return c.sendFrom(sc, ops, sink, stream, false)
}

// sendFrom is send to a server that may still be skipping to Sync after
// an error in an earlier flushed part of the batch (skipping): it answers
// nothing before the Sync, and res.skipping says whether it still skips.
func (c *client) sendFrom(sc *pool.Conn, ops []op, sink *[]byte, stream, skipping bool) (res relayResult, err error) {
	if _, err := sc.Write(c.sout); err != nil {
		sc.MarkBroken()
		return res, fmt.Errorf("write to server: %w", err)
	}
	c.target.set(sc)
	began, received := time.Now(), 0
	mark, flushed := len(*sink), false
	defer func() {
		c.target.set(nil)
		c.discard(sc)
		sc.RecordQuery(len(c.sout), received, time.Since(began))
		res.answered = flushed || len(*sink) != mark
		res.flushed = flushed
	}()
	errored := skipping
	defer func() { res.skipping = errored && res.status == 0 }()
	bound := "" // the statement of the last Bind: an Execute's error is its
	for i := 0; i < len(ops); {
		o := &ops[i]
		if o.fake != 0 || o.err != nil {
			if !errored {
				errored = c.answerFake(o, sink)
				res.sawError = res.sawError || errored
			}
			i++
			continue
		}
		if errored && o.typ != 'S' && o.typ != 'Q' {
			i++ // Postgres skips everything up to Sync after an error
			continue
		}
		typ, msg, err := c.next(sc)
		if err != nil {
			sc.MarkBroken()
			return res, fmt.Errorf("read from server: %w", err)
		}
		received += len(msg)
		switch typ {
		case 'N', 'S', 'A': // asynchronous: notice, parameter status, notification
			*sink = append(*sink, msg...)
			continue
		case 'G': // CopyInResponse: a one-shard COPY FROM STDIN
			if !stream || o.typ != 'Q' || o.drop {
				sc.MarkBroken()
				return res, errors.New("COPY FROM STDIN where the proxy expected none")
			}
			*sink = append(*sink, msg...)
			c.discard(sc) // what the server says next is unread
			flushed = true
			if err := c.flush(); err != nil {
				sc.MarkBroken()
				return res, fmt.Errorf("%w: %v", errClientWrite, err)
			}
			if err := c.copyThrough(sc); err != nil {
				sc.MarkBroken()
				return res, err
			}
			continue
		case 'E':
			if sev, text := fatalError(msg); sev != "" {
				// The server is closing this connection: the caller relays
				// the FATAL as it is and ends the client's session too.
				sc.MarkBroken()
				sc.RecordError(errorCode(msg))
				return res, &serverFatal{msg: bytes.Clone(msg), text: sev + " " + text}
			}
			if o.capture {
				continue
			}
			sc.RecordError(errorCode(msg))
			*sink = append(*sink, msg...)
			res.sawError = true
			res.noteStale(sc, msg, o, bound)
			// A simple query goes on to its ReadyForQuery, and so does a
			// Sync whose implicit COMMIT failed (a deferred constraint).
			if o.typ != 'Q' && o.typ != 'S' {
				errored = true
				i++
			}
			continue
		}
		if !o.drop {
			*sink = append(*sink, msg...)
		} else if o.capture && typ == 'D' {
			c.sess.captured = dataRowLSN(msg)
		}
		if typ == 'C' && len(c.sess.txSettings) > 0 {
			c.sess.rolledBack = bytes.HasPrefix(msg[5:], []byte("ROLLBACK"))
		}
		if terminal(o.typ, typ) {
			switch typ {
			case '2':
				bound = o.stmt
			case '1':
				c.parsed(sc, o)
			case '3':
				if o.closing != "" {
					delete(sc.Prepared, o.closing)
				}
			case 'Z':
				res.status, errored = msg[5], false
			}
			i++
		}
		if stream && len(*sink) >= flushThreshold {
			flushed = true
			if err := c.flush(); err != nil {
				sc.MarkBroken() // the rest of the answer is unread
				return res, fmt.Errorf("%w: %v", errClientWrite, err)
			}
		}
	}
	return res, nil
}

// noteStale records the shared statement an error says is stale: its plan
// now has another result type (0A000, which the client must see, as it
// holds the old row description) or a type it used is gone (XX000 "cache
// lookup failed for type", cured by preparing it again, as a direct
// session would have).
func (res *relayResult) noteStale(sc *pool.Conn, msg []byte, o *op, bound string) {
	name := o.stmt
	if o.typ == 'E' {
		name = bound
	}
	if _, shared := sc.Prepared[name]; !shared || name == "" {
		return
	}
	code, text := errorCode(msg), errorField(msg, 'M')
	switch {
	case code == "XX000" && strings.HasPrefix(text, "cache lookup failed for type"):
		res.retry = len(res.stale) == 0 || res.retry
	case code == pgerr.CodeFeatureNotSupported && strings.HasPrefix(text, "cached plan must not change result type"):
		res.retry = false
	default:
		return
	}
	res.stale = append(res.stale, name)
}

// answerFake emits what Postgres would have answered for an op the proxy
// handled itself, and reports whether it was an error.
func (c *client) answerFake(o *op, sink *[]byte) bool {
	if o.err != nil {
		*sink = appendError(*sink, o.err)
		return true
	}
	*sink = appendEmpty(*sink, o.fake)
	if o.fake == '1' {
		c.remember(o.clientName, o.prepared)
	} else if o.forget {
		delete(c.sess.stmts, o.clientName)
	}
	return false
}

// parsed records a successful Parse on both sides.
func (c *client) parsed(sc *pool.Conn, o *op) {
	if o.prepared == nil {
		return
	}
	sc.Prepared[o.prepared.serverName] = sc.Batch
	if o.clientName != "" {
		c.remember(o.clientName, o.prepared)
	}
}

// next reads one backend message. Messages that fit the reader's buffer are
// returned in place (zero copy) and discarded on the next call.
func (c *client) next(sc *pool.Conn) (byte, []byte, error) {
	c.discard(sc)
	r := sc.Reader
	hdr, err := r.Peek(5)
	if err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:])) + 1
	if n < 5 {
		return 0, nil, fmt.Errorf("invalid backend message length %d", n-1)
	}
	if n <= r.Size() {
		msg, err := r.Peek(n)
		if err != nil {
			return 0, nil, err
		}
		c.peeked = n
		return msg[0], msg, nil
	}
	if cap(c.scratch) < n {
		c.scratch = make([]byte, n)
	}
	msg := c.scratch[:n]
	if _, err := io.ReadFull(r, msg); err != nil {
		return 0, nil, err
	}
	return msg[0], msg, nil
}

func (c *client) discard(sc *pool.Conn) {
	if c.peeked > 0 {
		sc.Reader.Discard(c.peeked)
		c.peeked = 0
	}
}

// errorCode returns an ErrorResponse's SQLSTATE, "" if it has none.
func errorCode(msg []byte) string { return errorField(msg, 'C') }

// errorField returns one field of an ErrorResponse, "" if absent.
func errorField(msg []byte, field byte) string {
	for b := msg[5:]; len(b) > 1; {
		end := bytes.IndexByte(b[1:], 0)
		if end < 0 {
			break
		}
		if b[0] == field {
			return string(b[1 : 1+end])
		}
		b = b[2+end:]
	}
	return ""
}

// serverFatal: the server ended the connection with a FATAL or PANIC
// ErrorResponse (msg, whole). It says nothing of the server's health (a
// pg_terminate_backend, an idle_in_transaction_session_timeout), and the
// client's session on it is gone, as a direct client's would be.
type serverFatal struct {
	msg  []byte
	text string
}

func (e *serverFatal) Error() string { return errServerEnded.Error() + ": " + e.text }

func (e *serverFatal) Unwrap() error { return errServerEnded }

// errServerEnded: a server ended one connection on purpose, which says
// nothing of its health: no ban (its health checks tell if it went down).
var errServerEnded = errors.New("server ended the connection")

// fatalError returns the severity and "message (SQLSTATE code)" of an
// ErrorResponse whose severity is FATAL or PANIC; "" for other errors.
func fatalError(msg []byte) (string, string) {
	var sev, code, text string
	for b := msg[5:]; len(b) > 1; {
		end := bytes.IndexByte(b[1:], 0)
		if end < 0 {
			break
		}
		v := string(b[1 : 1+end])
		switch b[0] {
		case 'V':
			sev = v
		case 'S':
			if sev == "" {
				sev = v
			}
		case 'C':
			code = v
		case 'M':
			text = v
		}
		b = b[2+end:]
	}
	if sev != "FATAL" && sev != "PANIC" {
		return "", ""
	}
	return sev, fmt.Sprintf("%s (SQLSTATE %s)", text, code)
}
