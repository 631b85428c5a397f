package proxy

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardgate/shardgate/merge"
	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/router"
)

// Cross-shard SELECTs without aggregates or DISTINCT are streamed: each
// shard's answer is read by a goroutine of its own into a small bounded
// queue, and the client's rows come out of merge.Build's k-way merge
// (ORDER BY) or concatenation, through OFFSET/LIMIT, as they arrive. Memory stays at a
// few batches per shard however many rows there are, as in Vitess's
// streaming MergeSort. Aggregates and DISTINCT are gathered (scatter.go):
// their results are as large as their groups, not their inputs.

const (
	streamBatch = 256 // rows per hand-over from a shard's reader
	streamDepth = 4   // batches queued per shard
)

// shardStream is one shard's answer as it arrives: head first (the row
// description, or the error that came instead), then batches of rows,
// closed at the end; tail is the ErrorResponse or I/O error that ended
// the rows early, readable once batches is closed.
type shardStream struct {
	head    chan shardAnswer
	batches chan []merge.Row
	tail    shardAnswer
	cur     []merge.Row
}

// shardError is a shard's ErrorResponse met while streaming its rows;
// lostError, its connection failing.
type (
	shardError struct{ msg []byte }
	lostError  struct{ err error }
)

func (e shardError) Error() string { return "shard error" }
func (e lostError) Error() string  { return e.err.Error() }

// Next makes a shardStream a merge.Source.
func (s *shardStream) Next() (merge.Row, error) {
	for len(s.cur) == 0 {
		b, ok := <-s.batches
		if !ok {
			switch {
			case s.tail.err != nil:
				return nil, lostError{s.tail.err}
			case s.tail.errMsg != nil:
				return nil, shardError{s.tail.errMsg}
			}
			return nil, io.EOF
		}
		s.cur = b
	}
	r := s.cur[0]
	s.cur = s.cur[1:]
	return r, nil
}

// streamShard runs req on shard and feeds its answer into st until the
// answer ends or stop closes; a connection left mid-answer is closed.
func (s *Server) streamShard(c *client, shard int, req []byte, st *shardStream, stop <-chan struct{}) {
	defer close(st.batches)
	p, sc, err := s.rt.Load().acquirePrimary(c.ctx, shard)
	if err != nil {
		st.head <- shardAnswer{errMsg: appendError(nil, acquireError(err))}
		return
	}
	began := time.Now()
	c.target.add(sc)
	tail, complete := readStream(sc, withSettings(c, sc, nil, req), st, stop)
	c.target.remove(sc)
	if !complete {
		sc.MarkBroken()
	}
	p.RecordXact(time.Since(began))
	p.Release(sc)
	st.tail = tail
}

// readStream is streamShard's reading loop. It reports whether the answer
// was read through its ReadyForQuery, so the connection can be reused.
func readStream(sc *pool.Conn, req request, st *shardStream, stop <-chan struct{}) (tail shardAnswer, complete bool) {
	headSent, received := false, 0
	defer func(began time.Time) {
		sc.RecordQuery(len(req.bytes), received, time.Since(began))
		if !headSent {
			st.head <- tail
		}
	}(time.Now())
	if _, err := sc.Write(req.bytes); err != nil {
		return shardAnswer{err: err}, false
	}
	if err := skipSettingsAnswer(sc, req.synced); err != nil {
		return shardAnswer{err: err}, false
	}
	var batch []merge.Row
	for {
		typ, body, err := readMessage(sc.Reader, nil, maxServerMessage, "server messages")
		if err != nil {
			return shardAnswer{err: err}, false
		}
		received += 5 + len(body)
		switch typ {
		case 'T':
			desc := &pgproto3.RowDescription{}
			if err := desc.Decode(body); err != nil {
				return shardAnswer{err: err}, false
			}
			st.head <- shardAnswer{desc: desc}
			headSent = true
		case 'D':
			row, err := decodeRow(body)
			if err != nil {
				return shardAnswer{err: err}, false
			}
			if batch = append(batch, row); len(batch) == streamBatch {
				select {
				case st.batches <- batch:
				case <-stop:
					return tail, false
				}
				batch = nil
			}
		case 'E':
			if tail.errMsg == nil {
				tail.errMsg = appendMessage(nil, 'E', body)
				sc.RecordError(errorCode(tail.errMsg))
			}
		case 'Z':
			if len(batch) > 0 {
				select {
				case st.batches <- batch:
				case <-stop:
				}
			}
			return tail, true
		}
	}
}

// streamScatter answers a cross-shard SELECT without aggregates or DISTINCT
// by streaming it; see the top of this file.
func (c *client) streamScatter(spec *router.ScatterSpec, shards []int, req []byte, u unit) error {
	stop := make(chan struct{})
	streams := make([]*shardStream, len(shards))
	done := make(chan struct{}, len(shards))
	for i, shard := range shards {
		st := &shardStream{head: make(chan shardAnswer, 1), batches: make(chan []merge.Row, streamDepth)}
		streams[i] = st
		go func() {
			c.srv.streamShard(c, shard, req, st, stop)
			done <- struct{}{}
		}()
	}
	defer func() {
		close(stop)
		for range shards {
			<-done
		}
	}()
	desc, failed := c.streamHeads(streams)
	if failed != nil {
		return failed()
	}
	sources := make([]merge.Source, len(streams))
	for i, st := range streams {
		sources[i] = st
	}
	res, err := merge.Build(&spec.Spec, columns(desc), sources)
	if err != nil {
		return c.refuse(&pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "shardgate cannot merge this result: " + err.Error()})
	}
	desc, src := describe(desc, res), res.Rows
	if u.query != nil {
		c.out, _ = desc.Encode(c.out)
		err := c.relayRows(src)
		c.out = appendReadyForQuery(c.out, 'I')
		return errors.Join(err, c.flush())
	}
	var streamErr error
	c.answerBatch(func() { c.out, _ = desc.Encode(c.out) }, func(*prepared) bool {
		streamErr = c.relayRows(src)
		return streamErr == nil
	})
	return errors.Join(streamErr, c.flush())
}

// streamHeads waits for every shard's row description. A shard that
// answered with an error instead fails the query before any row is sent:
// failed writes that answer.
func (c *client) streamHeads(streams []*shardStream) (desc *pgproto3.RowDescription, failed func() error) {
	heads := make([]shardAnswer, len(streams))
	for i, st := range streams {
		heads[i] = <-st.head
	}
	for _, h := range heads {
		switch {
		case h.err != nil:
			return nil, func() error { return c.serverLost(h.err) }
		case h.errMsg != nil:
			return nil, func() error {
				c.out = append(c.out, h.errMsg...)
				c.out = appendReadyForQuery(c.out, c.status())
				return c.flush()
			}
		case h.desc == nil:
			return nil, func() error {
				return c.refuse(&pgerr.Error{Code: pgerr.CodeProtocolViolation, Message: "shardgate: a shard sent no row description"})
			}
		}
	}
	return heads[0].desc, nil
}

// relayRows writes src's rows to the client as DataRows, flushing as the
// buffer fills, then the SELECT tag; or, when a shard fails midway, the
// error after the rows already sent, as Postgres would. The error it
// returns is the client's connection failing.
func (c *client) relayRows(src merge.Source) error {
	n := 0
	for {
		row, err := src.Next()
		if err == io.EOF {
			c.out = appendCommandComplete(c.out, "SELECT "+strconv.Itoa(n))
			return nil
		}
		if err != nil {
			c.out = append(c.out, c.streamFailure(err)...)
			return nil
		}
		dr := pgproto3.DataRow{Values: row}
		c.out, _ = dr.Encode(c.out)
		n++
		if len(c.out) >= flushThreshold {
			if err := c.flush(); err != nil {
				return fmt.Errorf("%w: %v", errClientWrite, err)
			}
		}
	}
}

// streamFailure is the ErrorResponse for a stream that failed midway.
func (c *client) streamFailure(err error) []byte {
	var se shardError
	var lost lostError
	switch {
	case errors.As(err, &se):
		return se.msg
	case errors.As(err, &lost):
		c.srv.metrics.ProxyError(pgerr.CodeConnectionFailure)
		return appendError(nil, &pgerr.Error{Code: pgerr.CodeConnectionFailure, Message: "shardgate: server connection lost: " + err.Error()})
	}
	c.srv.metrics.ProxyError(pgerr.CodeFeatureNotSupported) // a shard's rows out of the merge's order
	return appendError(nil, &pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "shardgate cannot merge this result: " + err.Error()})
}
