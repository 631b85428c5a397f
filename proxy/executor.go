package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
)

// The executor holds the decisions of a statement or transaction that
// spans shards (all or none, prepare then commit, summed tags) apart from
// the sockets, as Vitess's engine primitives run against a VCursor: the
// shards are reached only through shardConn, so fan-out, broadcast and
// two-phase commit are tested with fake shards (executor_test.go).

// shardConn is one shard's server connection as the executor sees it.
type shardConn interface {
	// exchange sends req and reads the answer up to ReadyForQuery; with
	// synced, the answer to a leading settings query is skipped first.
	exchange(req []byte, synced bool) shardAnswer
	// markBroken keeps the connection out of the pool: its state is unknown.
	markBroken()
}

// serverConn is a pool.Conn as a shardConn. A pointer conversion, so
// passing one as a shardConn allocates nothing.
type serverConn pool.Conn

func asShard(sc *pool.Conn) *serverConn { return (*serverConn)(sc) }

func (s *serverConn) exchange(req []byte, synced bool) shardAnswer {
	return readAnswer((*pool.Conn)(s), req, synced)
}

func (s *serverConn) markBroken() { (*pool.Conn)(s).MarkBroken() }

// shardConns views conns as shardConns.
func shardConns(conns []*pool.Conn) []shardConn {
	out := make([]shardConn, len(conns))
	for i, sc := range conns {
		out[i] = asShard(sc)
	}
	return out
}

// decisionRecorder durably records that a prepared transaction commits,
// before any shard is told to (decisionLog).
type decisionRecorder interface {
	commit(gid string) error
}

// executor runs what spans shards through shardConns.
type executor struct {
	twoPhase  bool // two_phase_commit
	decisions decisionRecorder
	log       *slog.Logger
	conn      uint64 // the client's id, for logs
}

// executor is the client's view of the shards under the current config.
// It takes the server's logger, not c.log(), which would allocate on every
// statement for a line only a failure writes.
func (c *client) executor() executor {
	return executor{twoPhase: c.srv.rt.Load().cfg.TwoPhaseCommit, decisions: c.srv.decisions, log: c.srv.log, conn: c.id}
}

// write runs reqs[i] on conns[i], each already in its own transaction
// (the request begins it), then commits them all or none. It returns the
// answers, or the ErrorResponse the client should see, or the I/O error of
// a shard that was lost (after rolling back the others).
func (e executor) write(conns []shardConn, reqs []request) (answers []shardAnswer, errMsg []byte, lost error) {
	answers = make([]shardAnswer, len(conns))
	parallel(len(conns), func(i int) {
		answers[i] = conns[i].exchange(reqs[i].bytes, reqs[i].synced)
		if answers[i].err != nil {
			conns[i].markBroken()
		}
	})
	failed := firstFailure(answers)
	if failed != nil && failed.err != nil {
		e.settle(conns, true)
		return nil, nil, failed.err
	}
	errMsg = e.settle(conns, failed != nil)
	if failed != nil {
		errMsg = failed.errMsg
	}
	if errMsg != nil {
		return nil, errMsg, nil
	}
	return answers, nil, nil
}

// settle ends the transaction open on every conn and returns the error the
// client should see, if any. rollback (or a failure on any shard) rolls
// back everywhere. With two_phase_commit and several shards, every shard
// prepares, the decision is logged durably, and only then do they commit:
// after a crash Recover finishes what the log decided.
func (e executor) settle(conns []shardConn, rollback bool) []byte {
	if rollback {
		parallel(len(conns), func(i int) { simple(conns[i], "ROLLBACK") })
		return nil
	}
	if len(conns) == 1 || !e.twoPhase {
		return firstMessage(each(conns, func(int) string { return "COMMIT" }))
	}
	var b [8]byte
	rand.Read(b[:])
	gid := gidPrefix + hex.EncodeToString(b[:])
	prepared := each(conns, func(int) string { return "PREPARE TRANSACTION '" + gid + "'" })
	failed := firstMessage(prepared)
	if failed == nil {
		if err := e.decisions.commit(gid); err != nil {
			failed = appendError(nil, &pgerr.Error{Code: pgerr.CodeIOError, Message: "shardgate: cannot log the commit decision: " + err.Error()})
		}
	}
	if failed != nil {
		each(conns, func(i int) string {
			// A failed PREPARE has already ended its transaction; this
			// ROLLBACK only warns.
			if prepared[i] != nil {
				return "ROLLBACK"
			}
			return "ROLLBACK PREPARED '" + gid + "'"
		})
		return failed
	}
	if msg := firstMessage(each(conns, func(int) string { return "COMMIT PREPARED '" + gid + "'" })); msg != nil {
		e.log.Error("commit decided but not finished on every shard; recovery will finish it", "conn", e.conn, "gid", gid)
		return appendError(nil, &pgerr.Error{Code: pgerr.CodeConnectionFailure, Message: fmt.Sprintf("shardgate: transaction %s is committed but a shard did not confirm; it finishes when that shard is reachable", gid)})
	}
	return nil
}

// each runs the statement sql(i) on every conns[i] at once and returns
// each one's ErrorResponse (nil when it succeeded).
func each(conns []shardConn, sql func(i int) string) [][]byte {
	msgs := make([][]byte, len(conns))
	parallel(len(conns), func(i int) { msgs[i] = simple(conns[i], sql(i)) })
	return msgs
}

func firstMessage(msgs [][]byte) []byte {
	for _, m := range msgs {
		if m != nil {
			return m
		}
	}
	return nil
}

// simple runs one statement and returns its ErrorResponse, if any; an I/O
// failure marks the connection broken.
func simple(sc shardConn, sql string) []byte {
	a := sc.exchange(appendMessage(nil, 'Q', append([]byte(sql), 0)), false)
	if a.err != nil {
		sc.markBroken()
		return appendError(nil, &pgerr.Error{Code: pgerr.CodeConnectionFailure, Message: "shardgate: " + a.err.Error()})
	}
	return a.errMsg
}

// sumWrites is the shards' answers to one write as one: the row counts
// summed into one command tag ("UPDATE 5", "INSERT 0 5": the count is the
// last word) and the RETURNING rows gathered.
func sumWrites(answers []shardAnswer) shardAnswer {
	verb, total := "", 0
	var all shardAnswer
	for _, a := range answers {
		if i := strings.LastIndexByte(a.tag, ' '); i > 0 {
			n, _ := strconv.Atoi(a.tag[i+1:])
			verb, total = a.tag[:i], total+n
		}
		all.rows = append(all.rows, a.rows...)
		if a.desc != nil {
			all.desc = a.desc
		}
	}
	all.tag = fmt.Sprintf("%s %d", verb, total)
	return all
}
