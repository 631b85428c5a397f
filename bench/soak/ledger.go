package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// shardSet is the shards a request touched, one bit per shard index.
type shardSet uint64

func oneShard(i int) shardSet { return 1 << i }

func (s shardSet) String() string {
	if s == allShards {
		return "all shards"
	}
	var names []string
	for i := range 64 {
		if s&oneShard(i) != 0 {
			names = append(names, "s"+strconv.Itoa(i))
		}
	}
	return strings.Join(names, ",")
}

// allShards is what cross-shard requests and logins touch.
const allShards = ^shardSet(0)

// fault is an injected failure of one server of one shard, from the moment
// the harness starts it until the server is back (end zero until then).
type fault struct {
	name       string
	shard      int
	start, end time.Time
}

// errClass is what a well-behaved request's error was, as the verdict
// needs it: whether a server fault explains it.
type errClass struct {
	name        string
	connFailure bool // a fault of a server the request used may cause it
}

var (
	classTimeout  = errClass{name: "timeout (no answer within -op-timeout)"}
	classLockout  = errClass{name: "lockout: 53300 at login (max_client_conn reached)"}
	classLostConn = errClass{name: "connection lost (EOF, reset)", connFailure: true}
)

// errWrongResult is a request that succeeded with an answer it should not have.
type errWrongResult struct{ msg string }

func (e errWrongResult) Error() string { return "wrong result: " + e.msg }

// classify sorts a well-behaved request's error. Connection-failure
// SQLSTATEs (class 08, 57P01-57P03 shutdown, 53300 waiting for a server)
// and failed logins can follow a server fault; a 53300 at login can only
// be the client limit: legitimate clients locked out.
func classify(err error) errClass {
	var (
		pgErr    *pgconn.PgError
		connErr  *pgconn.ConnectError
		wrongRes errWrongResult
	)
	switch {
	case errors.As(err, &wrongRes):
		return errClass{name: "wrong result"}
	case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
		return classTimeout
	case errors.As(err, &connErr) && errors.As(err, &pgErr) && pgErr.Code == "53300":
		return classLockout
	case errors.As(err, &connErr) && errors.As(err, &pgErr):
		return errClass{name: "login refused: " + pgErr.Code, connFailure: true}
	case errors.As(err, &connErr):
		return errClass{name: "login failed (no answer)", connFailure: true}
	case errors.As(err, &pgErr):
		return errClass{name: "SQLSTATE " + pgErr.Code, connFailure: connFailureCode(pgErr.Code)}
	case lostConnection(err):
		return classLostConn
	}
	return errClass{name: "other: " + firstLine(err.Error(), 80)}
}

func connFailureCode(code string) bool {
	return strings.HasPrefix(code, "08") || slices.Contains([]string{"57P01", "57P02", "57P03", "53300"}, code)
}

func lostConnection(err error) bool {
	for _, target := range []error{io.EOF, io.ErrUnexpectedEOF, net.ErrClosed, pgconn.ErrConnClosed,
		syscall.ECONNRESET, syscall.EPIPE, syscall.ECONNREFUSED} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func firstLine(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

// ledger counts the well-behaved requests and their errors, and keeps the
// faults that excuse some of them.
type ledger struct {
	grace time.Duration

	mu       sync.Mutex
	faults   []*fault
	ops      map[string]int64
	errs     map[errKey]int64
	examples []string // the first errors no fault excuses
	maxLat   time.Duration
}

type errKey struct {
	class  string
	excuse string // noExcuse: the error fails the soak
}

const maxExamples = 8

func newLedger(grace time.Duration) *ledger {
	return &ledger{grace: grace, ops: map[string]int64{}, errs: map[errKey]int64{}}
}

// beginFault opens a fault window; the returned function closes it once the
// server is back.
func (l *ledger) beginFault(name string, shard int) (end func()) {
	f := &fault{name: name, shard: shard, start: time.Now()}
	l.mu.Lock()
	l.faults = append(l.faults, f)
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		f.end = time.Now()
		l.mu.Unlock()
	}
}

// record counts one request: op started at began on shards, err its
// outcome.
func (l *ledger) record(op string, shards shardSet, began time.Time, err error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ops[op]++
	l.maxLat = max(l.maxLat, now.Sub(began))
	if err == nil {
		return
	}
	c := classify(err)
	excuse := noExcuse
	if c.connFailure {
		excuse = l.excuse(shards, err.Error(), began, now)
	}
	l.errs[errKey{c.name, excuse}]++
	if excuse == noExcuse && len(l.examples) < maxExamples {
		l.examples = append(l.examples, fmt.Sprintf("%s %s (%s): %s", now.Format("15:04:05.000"), op, shards, firstLine(err.Error(), 200)))
	}
}

// Why a connection failure is put down to a fault.
const (
	noExcuse     = ""
	ownShard     = "yes: its shard's fault"
	namedInError = "yes: names the faulted shard"
)

// excuse finds a fault whose window (extended by the grace period)
// overlaps [from, to] and that hit one of shards or, for a request whose
// key is on another shard, that the error message names (the proxy sends a
// statement's Describe or Close to one shard whatever its parameters).
func (l *ledger) excuse(shards shardSet, msg string, from, to time.Time) string {
	excuse := noExcuse
	for _, f := range l.faults {
		if to.Before(f.start) || (!f.end.IsZero() && from.After(f.end.Add(l.grace))) {
			continue
		}
		if shards&oneShard(f.shard) != 0 {
			return ownShard
		}
		if namesShard(msg, f.shard) {
			excuse = namedInError
		}
	}
	return excuse
}

// namesShard reports whether msg mentions the shard as the proxy names
// it: "s0" in "pool s0/primary" or "shard s0".
func namesShard(msg string, shard int) bool {
	name := "s" + strconv.Itoa(shard)
	for i := strings.Index(msg, name); i >= 0; {
		end := i + len(name)
		before := i == 0 || !isWordByte(msg[i-1])
		after := end == len(msg) || !isWordByte(msg[end])
		if before && after {
			return true
		}
		j := strings.Index(msg[end:], name)
		if j < 0 {
			break
		}
		i = end + j
	}
	return false
}

func isWordByte(b byte) bool {
	return b == '_' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
}

// totals are the ledger's counts for the summary.
type totals struct {
	ops                 map[string]int64
	errs                map[errKey]int64
	tolerated, failures int64
	examples            []string
	faults              []fault
	maxLat              time.Duration
}

func (l *ledger) totals() totals {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := totals{ops: map[string]int64{}, errs: map[errKey]int64{}, examples: slices.Clone(l.examples), maxLat: l.maxLat}
	for k, v := range l.ops {
		t.ops[k] = v
	}
	for k, v := range l.errs {
		t.errs[k] = v
		if k.excuse != noExcuse {
			t.tolerated += v
		} else {
			t.failures += v
		}
	}
	for _, f := range l.faults {
		t.faults = append(t.faults, *f)
	}
	return t
}
