package proxy

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardgate/shardgate/merge"
	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/router"
)

// A gathered query (router.GatherSpec) runs on one shard of its plan, the
// coordinator, inside a transaction the proxy rolls back at the end: the
// coordinator copies its own rows of each sharded table the query reads
// into a temporary table (ON COMMIT DROP), the proxy relays every other
// shard's rows into it as COPY data, and the client's query, rewritten to
// read the copies, runs there and streams back. The proxy holds one COPY
// message at a time, so a gather of any size costs it little memory; the
// bytes relayed are bounded by max_intermediate_result_size.

// writeBatch is how many bytes of many small messages the proxy batches
// per write: COPY data relayed to a gather's coordinator, rows of a merged
// answer to the client.
const writeBatch = 64 << 10

var errGatherInTransaction = &pgerr.Error{
	Code:    pgerr.CodeFeatureNotSupported,
	Message: "shardgate runs this query by copying rows between shards, which it does only outside a transaction block",
}

var errPullTooLarge = &pgerr.Error{
	Code:    "54000",
	Message: "the rows this query copies between shards exceed max_intermediate_result_size",
	Hint:    "shardgate copies the tables such a query reads to one shard to run it there: narrow the query, or raise max_intermediate_result_size.",
}

func (c *client) gather(plan router.Plan, u unit) error {
	if c.inTransactionBlock() {
		return c.refuse(errGatherInTransaction)
	}
	c.srv.metrics.ScatterQueries.Inc()
	shards := plan.Shards.Slice()
	p, cc, err := c.srv.rt.Load().acquirePrimary(c.ctx, shards[0])
	if err != nil {
		return c.refuse(acquireError(err))
	}
	began := time.Now()
	c.target.add(cc)
	g := &gathering{c: c, cc: cc, spec: plan.Gather, budget: c.gatherBudget()}
	err = g.run(shards, u)
	c.target.remove(cc)
	if !g.clean {
		cc.MarkBroken()
	}
	p.RecordXact(time.Since(began))
	p.Release(cc)
	return err
}

// gathering is one gathered query in progress on the coordinator cc.
type gathering struct {
	c      *client
	cc     *pool.Conn
	spec   *router.GatherSpec
	budget *atomic.Int64
	buf    []byte
	// clean: cc is between transactions and may go back to the pool.
	clean bool
}

// run pulls the rows, answers the client and ends the transaction. The
// error it returns is the client's connection failing.
func (g *gathering) run(shards []int, u unit) error {
	c := g.c
	r := withSettings(c, g.cc, nil, appendMessage(nil, 'Q', append([]byte(g.setupSQL()), 0)))
	ans := readAnswer(g.cc, r.bytes, r.synced)
	if ans.err != nil {
		return c.serverLost(ans.err)
	}
	if ans.errMsg != nil {
		return g.fail(ans.errMsg)
	}
	for _, shard := range shards[1:] {
		errMsg, err := g.pullShard(shard)
		if err != nil {
			return c.serverLost(err)
		}
		if errMsg != nil {
			return g.fail(errMsg)
		}
	}
	lost, err := g.answer(u)
	if err != nil || lost {
		return err
	}
	return g.end()
}

// setupSQL opens the transaction and fills the coordinator's copies with
// its own rows.
func (g *gathering) setupSQL() string {
	var b strings.Builder
	b.WriteString("BEGIN")
	for _, t := range g.spec.Tables {
		fmt.Fprintf(&b, "; CREATE TEMPORARY TABLE pg_temp.%s (LIKE %s) ON COMMIT DROP; INSERT INTO pg_temp.%[1]s %[3]s",
			t.Temp, t.Table.QuotedName(), pulledRows(t))
	}
	return b.String()
}

// pulledRows is the query of t's rows a shard copies.
func pulledRows(t router.PulledTable) string {
	if t.Select != "" {
		return t.Select
	}
	return "SELECT * FROM " + t.Table.QuotedName()
}

// fail answers the client with errMsg and rolls the coordinator back.
func (g *gathering) fail(errMsg []byte) error {
	c := g.c
	c.out = append(c.out, errMsg...)
	c.out = appendReadyForQuery(c.out, c.status())
	if err := c.flush(); err != nil {
		return err
	}
	return g.end()
}

// end rolls back the coordinator's transaction, which drops its copies.
func (g *gathering) end() error {
	ans := readAnswer(g.cc, appendMessage(nil, 'Q', []byte("ROLLBACK\x00")), false)
	g.clean = ans.err == nil && ans.errMsg == nil
	return nil
}

// pullShard copies shard's rows of every pulled table into the
// coordinator's copies, on one connection to shard. It returns the
// ErrorResponse to give the client if either side refused, or the
// coordinator's connection failing.
func (g *gathering) pullShard(shard int) ([]byte, error) {
	c := g.c
	p, sc, err := c.srv.rt.Load().acquirePrimary(c.ctx, shard)
	if err != nil {
		return appendError(nil, acquireError(err)), nil
	}
	c.target.add(sc)
	defer func() {
		c.target.remove(sc)
		p.Release(sc)
	}()
	for _, t := range g.spec.Tables {
		if errMsg, err := g.pull(sc, t); err != nil || errMsg != nil {
			return errMsg, err
		}
	}
	return nil, nil
}

// pull relays sc's rows of t into the coordinator's copy with COPY; sc is
// marked broken when it is left mid-answer.
func (g *gathering) pull(sc *pool.Conn, t router.PulledTable) ([]byte, error) {
	start := readCopyStart(g.cc, appendMessage(nil, 'Q', []byte("COPY pg_temp."+t.Temp+" FROM STDIN\x00")))
	if start.err != nil || start.errMsg != nil {
		return start.errMsg, start.err
	}
	srcErr, complete, err := g.relayCopy(sc, t)
	if !complete {
		sc.MarkBroken()
	}
	switch {
	case err != nil:
		return nil, err
	case srcErr != nil:
		return g.copyFail(srcErr)
	}
	return g.copyDone()
}

// relayCopy runs COPY t TO STDOUT on sc and writes its data to the
// coordinator, which is in COPY FROM STDIN. srcErr is the source's
// refusal (or the budget running out, or its connection failing), err
// the coordinator's connection failing; complete says sc was read to
// its ReadyForQuery.
func (g *gathering) relayCopy(sc *pool.Conn, t router.PulledTable) (srcErr []byte, complete bool, err error) {
	r := withSettings(g.c, sc, nil, appendMessage(nil, 'Q', []byte("COPY ("+pulledRows(t)+") TO STDOUT\x00")))
	if _, err := sc.Write(r.bytes); err != nil {
		return g.lostSource(err), false, nil
	}
	if err := skipSettingsAnswer(sc, r.synced); err != nil {
		return g.lostSource(err), false, nil
	}
	g.buf = g.buf[:0]
	var body []byte
	for {
		var typ byte
		typ, body, err = readMessage(sc.Reader, body[:0], maxServerMessage, "server messages")
		if err != nil {
			return g.lostSource(err), false, nil
		}
		switch typ {
		case 'd':
			if g.budget.Add(-int64(len(body))) < 0 {
				return appendError(nil, errPullTooLarge), false, nil
			}
			g.buf = appendMessage(g.buf, 'd', body)
			if len(g.buf) >= writeBatch {
				if _, err := g.cc.Write(g.buf); err != nil {
					return nil, false, err
				}
				g.buf = g.buf[:0]
			}
		case 'E':
			if srcErr == nil {
				srcErr = appendMessage(nil, 'E', body)
			}
		case 'Z':
			if len(g.buf) > 0 && srcErr == nil {
				_, err = g.cc.Write(g.buf)
			}
			g.buf = shrink(g.buf[:0])
			return srcErr, true, err
		}
	}
}

func (g *gathering) lostSource(err error) []byte {
	g.c.srv.metrics.ProxyError(pgerr.CodeConnectionFailure)
	return appendError(nil, &pgerr.Error{Code: pgerr.CodeConnectionFailure, Message: "shardgate: server connection lost: " + clientText(err)})
}

// copyDone ends the coordinator's COPY and reads its answer.
func (g *gathering) copyDone() ([]byte, error) {
	ans := readAnswer(g.cc, appendEmpty(nil, 'c'), false)
	return ans.errMsg, ans.err
}

// copyFail aborts the coordinator's COPY; the client gets errMsg, the
// reason, rather than the coordinator's echo of it.
func (g *gathering) copyFail(errMsg []byte) ([]byte, error) {
	ans := readAnswer(g.cc, appendMessage(nil, 'f', []byte("shardgate: the source shard failed\x00")), false)
	return errMsg, ans.err
}

// answer runs the client's query on the coordinator and streams its rows
// to the client; lost says the coordinator's connection failed midway.
func (g *gathering) answer(u unit) (lost bool, err error) {
	c := g.c
	req, perr := g.request(u)
	if perr != nil {
		return false, g.fail(appendError(nil, perr))
	}
	if _, err := g.cc.Write(req); err != nil {
		return true, c.serverLost(err)
	}
	src := &connRows{sc: g.cc}
	desc, errMsg, err := src.head()
	switch {
	case err != nil:
		return true, c.serverLost(err)
	case errMsg != nil:
		return false, g.fail(errMsg)
	}
	if u.query != nil {
		c.out, _ = desc.Encode(c.out)
		err = c.relayRows(src)
		c.out = appendReadyForQuery(c.out, c.status())
	} else {
		c.answerBatch(func() { c.out, _ = desc.Encode(c.out) }, func(*prepared) bool {
			err = c.relayRows(src)
			return err == nil && src.err == nil && src.lost == nil
		})
	}
	// After a lost connection the client saw its error; the coordinator,
	// mid-answer, is not reused.
	return src.lost != nil, errors.Join(err, c.flush())
}

// request is the client's query over the copies: a simple Query, or an
// unnamed extended batch with the client's parameters and result formats.
func (g *gathering) request(u unit) ([]byte, *pgerr.Error) {
	if u.query != nil {
		return appendMessage(nil, 'Q', append([]byte(g.spec.SQL), 0)), nil
	}
	prep, bind, _, oids := g.c.boundStatement()
	if prep == nil {
		return nil, &pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "a cross-shard query must be bound in the same batch"}
	}
	out := appendMessage(nil, 'P', append(append(append([]byte{0}, g.spec.SQL...), 0), oids...))
	out = appendMessage(out, 'B', append([]byte{0, 0}, bind...))
	out = appendMessage(out, 'D', []byte{'P', 0})
	out = appendMessage(out, 'E', []byte{0, 0, 0, 0, 0})
	return appendEmpty(out, 'S'), nil
}

// connRows reads one query's answer from sc as a merge.Source: head
// first, then rows to io.EOF at its ReadyForQuery, or the server's error
// (shardError) once the answer is read through.
type connRows struct {
	sc   *pool.Conn
	err  []byte // the ErrorResponse that ended the rows
	lost error  // the connection failing
	done bool
}

// head reads up to the RowDescription, or the answer's error through its
// ReadyForQuery.
func (r *connRows) head() (*pgproto3.RowDescription, []byte, error) {
	for {
		typ, body, err := readMessage(r.sc.Reader, nil, maxServerMessage, "server messages")
		if err != nil {
			return nil, nil, err
		}
		switch typ {
		case 'T':
			desc := &pgproto3.RowDescription{}
			if err := desc.Decode(body); err != nil {
				return nil, nil, err
			}
			return desc, nil, nil
		case 'E':
			if r.err == nil {
				r.err = appendMessage(nil, 'E', body)
			}
		case 'Z':
			r.done = true
			if r.err == nil {
				r.err = appendError(nil, &pgerr.Error{Code: pgerr.CodeProtocolViolation, Message: "shardgate: the coordinator shard sent no row description"})
			}
			return nil, r.err, nil
		}
	}
}

// Next makes connRows a merge.Source.
func (r *connRows) Next() (merge.Row, error) {
	for !r.done {
		typ, body, err := readMessage(r.sc.Reader, nil, maxServerMessage, "server messages")
		if err != nil {
			r.done, r.lost = true, err
			return nil, lostError{err}
		}
		switch typ {
		case 'D':
			return decodeRow(body)
		case 'E':
			if r.err == nil {
				r.err = appendMessage(nil, 'E', body)
			}
		case 'Z':
			r.done = true
		}
	}
	if r.err != nil {
		return nil, shardError{r.err}
	}
	return nil, io.EOF
}
