package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardgate/shardgate/copyfmt"
	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/router"
	"github.com/shardgate/shardgate/topology"
)

// COPY ... FROM STDIN across shards: every shard runs the client's COPY
// inside a transaction, and the proxy reads each row's shard key from the
// stream and forwards the row, unchanged, to the shard that owns it. Rows
// are batched per shard into CopyData messages of copyBatch bytes, so
// memory stays flat however long the stream. At CopyDone every shard must
// succeed, then all commit (in two phases with two_phase_commit); any bad
// row rolls every shard back, and its error names the client's line number,
// not the shard's.

const copyBatch = 64 << 10

// copyBranch is one shard's side of a split COPY.
type copyBranch struct {
	sc  *pool.Conn
	buf []byte // a CopyData message being filled: header, then rows
	// lines are the client line numbers of the rows sent here, as varint
	// deltas (about a byte per row), to translate the shard's error.
	lines    []byte
	lastLine int64
}

type copySplit struct {
	in       *router.CopyIn
	topo     *topology.Topology
	branches []copyBranch
	header   bool // the data starts with a header line
}

var errCopyExtended = &pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "COPY FROM through shardgate needs the simple query protocol"}

// copyIn runs a COPY FROM that several shards take; execute has refused
// one sent with the extended protocol.
func (c *client) copyIn(plan router.Plan, u unit) error {
	in := plan.CopyIn
	if c.inTransactionBlock() && !c.canSpread() {
		return c.refuse(&pgerr.Error{Code: pgerr.CodeFeatureNotSupported,
			Message: "COPY FROM across shards inside a transaction block needs two_phase_commit, and no savepoint in the transaction"})
	}
	opts, err := copyfmt.FromStmt(in.Stmt)
	if err != nil {
		return c.refuse(splitterError(err, in.Table))
	}
	shards := plan.Shards.Slice()
	var conns []*pool.Conn
	var starts [][]byte // inside a transaction block: what opens it on each shard
	if c.inTransactionBlock() {
		if conns, starts, err = c.copyBranches(shards); err != nil {
			return c.refuse(acquireError(err))
		}
	} else {
		var pools []*pool.Pool
		var aerr *pgerr.Error
		if conns, pools, aerr = c.acquireAll(c.srv.rt.Load(), shards); aerr != nil {
			return c.refuse(aerr)
		}
		defer releaseAll(pools, conns)
	}
	for _, sc := range conns { // a cancel request stops the COPY on every shard
		c.target.add(sc)
	}
	defer c.target.set(nil)
	var columns []string
	if in.Key != "" {
		if columns, err = c.copyColumns(conns[0], in); err != nil {
			return c.serverLost(err)
		}
	}
	started := make([]shardAnswer, len(conns))
	var response []byte
	c.parallel(conns, func(i int, sc *pool.Conn) {
		var start []byte
		if starts != nil {
			start = starts[i]
		}
		started[i] = c.startCopy(sc, u.query, start)
		if i == 0 {
			response = started[i].copyIn
		}
	})
	if failed := firstFailure(started); failed != nil {
		c.abandonCopy(conns, started, "")
		return c.answerFailure(failed)
	}
	var sp *copyfmt.Splitter
	if in.Key != "" {
		if sp, err = copyfmt.NewSplitter(opts, columns, slices.Index(columns, in.Key)); err != nil {
			c.abandonCopy(conns, started, "")
			return c.refuse(splitterError(err, in.Table))
		}
	}
	split := &copySplit{in: in, topo: c.srv.topo(), header: opts.Header || opts.HeaderMatch, branches: make([]copyBranch, len(conns))}
	for i, sc := range conns { // every shard, in shard order: branch i is shard i
		split.branches[i] = copyBranch{sc: sc, buf: append(make([]byte, 0, copyBatch+1024), 'd', 0, 0, 0, 0)}
	}
	if !c.deadline.IsZero() { // the client's idle timeout does not bound a long COPY
		c.clearReadDeadline()
	}
	c.out = appendMessage(c.out, 'G', response)
	if err := c.flush(); err != nil {
		c.abandonCopy(conns, nil, "client connection lost")
		return err
	}
	return c.streamCopyIn(split, sp, conns)
}

// streamCopyIn relays the client's rows until CopyDone or CopyFail.
func (c *client) streamCopyIn(split *copySplit, sp *copyfmt.Splitter, conns []*pool.Conn) error {
	for {
		typ, body, err := c.readMessage()
		if err != nil {
			c.abandonCopy(conns, nil, "client connection lost")
			return err
		}
		switch typ {
		case 'd':
			if e := split.feed(sp, body); e != nil {
				return c.copyRefused(conns, e)
			}
			if err := split.flushFull(); err != nil {
				return c.copyLost(conns, err)
			}
		case 'c':
			if sp != nil {
				if e := split.drain(sp, true); e != nil {
					return c.copyRefused(conns, e)
				}
			}
			return c.finishCopyIn(split, conns)
		case 'f':
			msg, _, _ := cstring(body)
			c.abandonCopy(conns, nil, string(msg))
			return c.refuse(&pgerr.Error{Code: pgerr.CodeQueryCanceled, Message: "COPY from stdin failed: " + string(msg)})
		case 'H', 'S':
			// Ignored during COPY, as Postgres does.
		default:
			c.abandonCopy(conns, nil, "protocol violation")
			return c.refuse(&pgerr.Error{Code: pgerr.CodeProtocolViolation, Message: fmt.Sprintf("unexpected message type 0x%02X during COPY from stdin", typ)})
		}
	}
}

// feed takes one CopyData payload. A reference table needs no splitting:
// every shard gets every byte.
func (s *copySplit) feed(sp *copyfmt.Splitter, data []byte) *pgerr.Error {
	if sp == nil {
		for i := range s.branches {
			s.branches[i].buf = append(s.branches[i].buf, data...)
		}
		return nil
	}
	sp.Write(data)
	return s.drain(sp, false)
}

// drain routes every complete row buffered in sp; at the end it also takes
// a last row without a newline.
func (s *copySplit) drain(sp *copyfmt.Splitter, end bool) *pgerr.Error {
	for {
		row, ok, err := sp.Next()
		if !ok && err == nil && end {
			row, ok, err = sp.End()
			end = false
		}
		if err != nil {
			return s.rowError(err)
		}
		if !ok {
			return nil
		}
		if e := s.route(row); e != nil {
			return e
		}
	}
}

// route appends a row to the batch of the shard owning it (of every shard,
// for the header line).
func (s *copySplit) route(row copyfmt.Row) *pgerr.Error {
	if row.Header {
		for i := range s.branches {
			s.branches[i].buf = append(s.branches[i].buf, row.Raw...)
		}
		return nil
	}
	if row.Null {
		return &pgerr.Error{Code: pgerr.CodeNotNullViolation, Message: fmt.Sprintf("null value in column %q of relation %q violates not-null constraint", s.in.Key, s.in.Table),
			Detail: "shardgate routes every row by its shard key.", Where: s.where(row.Line, row.Key)}
	}
	at, err := s.topo.Place(s.in.KeyType, string(row.Key))
	if err != nil {
		return &pgerr.Error{Code: pgerr.CodeInvalidText, Message: err.Error(), Where: s.where(row.Line, row.Key)}
	}
	b := &s.branches[at.Shard]
	b.buf = append(b.buf, row.Raw...)
	b.lines = binary.AppendUvarint(b.lines, uint64(row.Line-b.lastLine))
	b.lastLine = row.Line
	return nil
}

func (s *copySplit) where(line int64, key []byte) string {
	return fmt.Sprintf("COPY %s, line %d, column %s: %q", s.in.Table, line, s.in.Key, key)
}

func (s *copySplit) rowError(err error) *pgerr.Error { return splitterError(err, s.in.Table) }

// splitterError turns the splitter's error into the one Postgres gives.
func splitterError(err error, table string) *pgerr.Error {
	var e *copyfmt.Error
	if errors.As(err, &e) {
		return &pgerr.Error{Code: e.Code, Message: e.Message, Detail: e.Detail, Hint: e.Hint, Where: e.Context(table)}
	}
	return &pgerr.Error{Code: pgerr.CodeBadCopyFileFormat, Message: err.Error()}
}

// flushFull sends every batch that reached copyBatch bytes.
func (s *copySplit) flushFull() error {
	for i := range s.branches {
		if b := &s.branches[i]; len(b.buf) >= copyBatch {
			if err := b.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *copyBranch) flush() error {
	if len(b.buf) == 5 {
		return nil
	}
	binary.BigEndian.PutUint32(b.buf[1:], uint32(len(b.buf)-1))
	_, err := b.sc.Write(b.buf)
	b.buf = b.buf[:5]
	return err
}

// shardLine translates a line number in a shard's error into the client's.
func (s *copySplit) shardLine(b *copyBranch, line int) int64 {
	if s.in.Key == "" {
		return int64(line)
	}
	row := line - 1
	if s.header {
		if row == 0 {
			return 1
		}
		row--
	}
	client, rest := int64(0), b.lines
	for i := 0; i <= row; i++ {
		d, n := binary.Uvarint(rest)
		if n <= 0 {
			return 0
		}
		client, rest = client+int64(d), rest[n:]
	}
	return client
}

// finishCopyIn ends the COPY on every shard and commits, or rolls every
// shard back and reports the bad row with the smallest client line.
func (c *client) finishCopyIn(split *copySplit, conns []*pool.Conn) error {
	answers := make([]shardAnswer, len(conns))
	c.parallel(conns, func(i int, sc *pool.Conn) {
		b := &split.branches[i]
		if err := b.flush(); err != nil {
			answers[i].err = err
			return
		}
		answers[i] = readAnswer(sc, appendEmpty(nil, 'c'), false)
	})
	var failed *shardAnswer
	bestLine := int64(0)
	for i := range answers {
		a := &answers[i]
		if a.err != nil {
			conns[i].MarkBroken()
			c.settleCopy(conns, true)
			return c.serverLost(a.err)
		}
		if a.errMsg == nil {
			continue
		}
		msg, line := split.translate(&split.branches[i], a.errMsg)
		if failed == nil || (line > 0 && (bestLine == 0 || line < bestLine)) {
			a.errMsg, failed, bestLine = msg, a, line
		}
	}
	if failed != nil {
		c.settleCopy(conns, true)
		return c.answerFailure(failed)
	}
	if msg := c.settleCopy(conns, false); msg != nil {
		return c.answerFailure(&shardAnswer{errMsg: msg})
	}
	total := 0
	for _, a := range answers {
		n, _ := strconv.Atoi(a.tag[len("COPY "):])
		total += n
	}
	if split.in.Key == "" {
		total /= len(answers) // a reference table: every shard took every row
	}
	c.out = appendCommandComplete(c.out, "COPY "+strconv.Itoa(total))
	c.out = appendReadyForQuery(c.out, c.status())
	return c.flush()
}

var copyLine = regexp.MustCompile(`, line (\d+)`)

// translate rewrites the line number in a shard's COPY error context.
func (s *copySplit) translate(b *copyBranch, errMsg []byte) ([]byte, int64) {
	var e pgproto3.ErrorResponse
	if len(errMsg) < 5 || e.Decode(errMsg[5:]) != nil {
		return errMsg, 0
	}
	m := copyLine.FindStringSubmatchIndex(e.Where)
	if m == nil {
		return errMsg, 0
	}
	n, _ := strconv.Atoi(e.Where[m[2]:m[3]])
	line := s.shardLine(b, n)
	if line == 0 {
		return errMsg, 0
	}
	e.Where = e.Where[:m[2]] + strconv.FormatInt(line, 10) + e.Where[m[3]:]
	out, err := e.Encode(nil)
	if err != nil {
		return errMsg, 0
	}
	return out, line
}

// copyRefused ends a COPY the proxy itself found a bad row in.
func (c *client) copyRefused(conns []*pool.Conn, e *pgerr.Error) error {
	c.abandonCopy(conns, nil, e.Message)
	return c.refuse(e)
}

func (c *client) copyLost(conns []*pool.Conn, err error) error {
	c.abandonCopy(conns, nil, "a shard connection failed")
	return c.serverLost(err)
}

// abandonCopy fails the COPY on every shard that started it and rolls all
// of them back. started, when given, says which shards did start.
func (c *client) abandonCopy(conns []*pool.Conn, started []shardAnswer, why string) {
	c.parallel(conns, func(i int, sc *pool.Conn) {
		if started != nil && started[i].copyIn == nil {
			return
		}
		a := readAnswer(sc, appendMessage(nil, 'f', append([]byte("shardgate: "+why), 0)), false)
		if a.err != nil {
			sc.MarkBroken()
		}
	})
	c.settleCopy(conns, true)
}

// settleCopy ends what a COPY opened: its own transaction on every shard,
// committed or rolled back; or, inside the client's transaction block,
// nothing on success and the whole transaction on failure.
func (c *client) settleCopy(conns []*pool.Conn, rollback bool) []byte {
	if !c.inTransactionBlock() {
		return c.settle(conns, rollback)
	}
	if rollback {
		c.abort()
	}
	return nil
}

// copyBranches is the transaction's connection to each shard a COPY
// inside a transaction block writes to, and what opens the transaction
// on the shards it had not reached.
func (c *client) copyBranches(shards []int) ([]*pool.Conn, [][]byte, error) {
	conns := make([]*pool.Conn, len(shards))
	starts := make([][]byte, len(shards))
	for i, shard := range shards {
		sc, start, err := c.branchOf(shard)
		if err != nil {
			return nil, nil, err
		}
		conns[i], starts[i] = sc, append([]byte{}, start...) // not nil: no BEGIN of its own
	}
	c.tx.state, c.tx.srvStatus, c.tx.pending = txActive, 'T', c.tx.pending[:0]
	return conns, starts, nil
}

func (c *client) answerFailure(a *shardAnswer) error {
	if a.err != nil {
		return c.serverLost(a.err)
	}
	c.out = append(c.out, a.errMsg...)
	c.out = appendReadyForQuery(c.out, c.status())
	return c.flush()
}

// startCopy brings sc to the client's settings, opens its transaction
// (BEGIN; inside a client's transaction block, start, which is empty on a
// shard the transaction already reached) and starts the COPY, which must
// answer CopyInResponse.
func (c *client) startCopy(sc *pool.Conn, query, start []byte) shardAnswer {
	if start == nil {
		start = []byte("BEGIN")
	}
	if r := withSettings(c, sc, start, nil); r.synced {
		a := readAnswer(sc, r.bytes, false) // read, not skipped: a failure here stops the COPY
		if a.err != nil || a.errMsg != nil {
			return a
		}
	}
	return readCopyStart(sc, appendMessage(nil, 'Q', query))
}

// copyColumns lists the COPY's columns: the statement's list, or the
// table's columns in order, as the catalog has them. None (no such table)
// lets the COPY itself fail with Postgres's error.
func (c *client) copyColumns(sc *pool.Conn, in *router.CopyIn) ([]string, error) {
	if len(in.Columns) > 0 {
		return in.Columns, nil
	}
	rel := pgx.Identifier{in.Table}
	if in.Schema != "" {
		rel = pgx.Identifier{in.Schema, in.Table}
	}
	q := "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(" + quoteLiteral(rel.Sanitize()) + ") AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
	req := withSettings(c, sc, nil, appendMessage(nil, 'Q', append([]byte(q), 0)))
	a := readAnswer(sc, req.bytes, req.synced)
	if a.err != nil {
		sc.MarkBroken()
		return nil, a.err
	}
	columns := make([]string, len(a.rows))
	for i, r := range a.rows {
		columns[i] = string(r[0])
	}
	return columns, nil
}

// acquireAll takes a primary connection of each shard, and says from which
// pools for releaseAll.
func (c *client) acquireAll(rt *config, shards []int) ([]*pool.Conn, []*pool.Pool, *pgerr.Error) {
	conns := make([]*pool.Conn, len(shards))
	pools := make([]*pool.Pool, len(shards))
	for i, shard := range shards {
		p, sc, err := rt.acquirePrimary(c.ctx, shard)
		if err != nil {
			releaseAll(pools, conns)
			return nil, nil, acquireError(err)
		}
		conns[i], pools[i] = sc, p
	}
	return conns, pools, nil
}

// readCopyStart sends a COPY FROM STDIN and reads up to its
// CopyInResponse, or through the error that refused it.
func readCopyStart(sc *pool.Conn, req []byte) (ans shardAnswer) {
	if _, err := sc.Write(req); err != nil {
		sc.MarkBroken()
		return shardAnswer{err: err}
	}
	for {
		typ, body, err := readMessage(sc.Reader, nil, maxServerMessage, "server messages")
		if err != nil {
			sc.MarkBroken()
			return shardAnswer{err: err}
		}
		switch typ {
		case 'G':
			ans.copyIn = body
			return ans
		case 'E':
			if ans.errMsg == nil {
				ans.errMsg = appendMessage(nil, 'E', body)
			}
		case 'Z':
			if ans.errMsg == nil {
				ans.errMsg = appendError(nil, &pgerr.Error{Code: pgerr.CodeProtocolViolation, Message: "shardgate: the shard did not start the COPY"})
			}
			return ans
		}
	}
}

// copyThrough relays a client's COPY FROM STDIN to the one server running
// it, unparsed (after the server's CopyInResponse reached the client),
// until CopyDone or CopyFail, or until the server speaks: it failed the
// COPY (a bad row), and its error and ReadyForQuery go to the client now,
// as from Postgres, which then ignores the rest of the client's data.
// CopyData is batched up to copyBatch bytes, or until the client has sent
// nothing more yet.
func (c *client) copyThrough(sc *pool.Conn) error {
	if !c.deadline.IsZero() { // the client's idle timeout does not bound a long COPY
		c.clearReadDeadline()
	}
	c.sout = c.sout[:0]
	for {
		typ, body, err := c.readMessage()
		if err != nil {
			return fmt.Errorf("client connection lost during COPY: %w", err)
		}
		switch typ {
		case 'd', 'c', 'f':
			c.sout = appendMessage(c.sout, typ, body)
		case 'H', 'S':
			continue // ignored during COPY, as Postgres does
		default:
			c.sout = appendMessage(c.sout, 'f', []byte(fmt.Sprintf("unexpected message type 0x%02X during COPY from stdin\x00", typ)))
		}
		done := typ != 'd'
		if done || len(c.sout) >= copyBatch || c.rd.Buffered() == 0 {
			if _, err := sc.Write(c.sout); err != nil {
				return fmt.Errorf("write to server: %w", err)
			}
			c.sout = c.sout[:0]
			if !done {
				if failed, err := c.copyServerSays(sc); failed || err != nil {
					return err
				}
			}
		}
		if done {
			return nil
		}
	}
}

// copyServerSays relays what the server sent during a COPY FROM without
// being asked: notices, parameter changes and notifications go to the
// client now; anything else (its error) ends the relay of the client's
// data and stays unread for the caller.
func (c *client) copyServerSays(sc *pool.Conn) (failed bool, err error) {
	for sc.Pending() {
		hdr, err := sc.Reader.Peek(1)
		if err != nil {
			return false, fmt.Errorf("read from server: %w", err)
		}
		if !unasked(hdr[0]) {
			return true, nil
		}
		_, msg, err := c.next(sc)
		if err != nil {
			return false, fmt.Errorf("read from server: %w", err)
		}
		c.out = append(c.out, msg...)
		c.discard(sc)
		if err := c.flush(); err != nil {
			return false, fmt.Errorf("%w: %v", errClientWrite, err)
		}
	}
	return false, nil
}
