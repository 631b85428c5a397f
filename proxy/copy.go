package proxy

import (
	"fmt"
	"strconv"
	"time"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/router"
)

// copyOut gathers COPY ... TO STDOUT from several shards by streaming one
// shard's data after another to the client, so memory stays flat however
// many rows there are. The client sees one CopyOutResponse, one header
// line (CSV HEADER), every shard's rows, and one COPY tag with their sum.
func (c *client) copyOut(plan router.Plan, u unit) error {
	if u.query == nil {
		return c.refuse(&pgerr.Error{Code: pgerr.CodeFeatureNotSupported, Message: "COPY across shards needs the simple query protocol"})
	}
	rt := c.srv.rt.Load()
	total := 0
	started := false
	for _, shard := range plan.Shards.Slice() {
		p, sc, err := rt.acquirePrimary(c.ctx, shard)
		if err != nil {
			return c.copyFailed(appendError(nil, acquireError(err)))
		}
		req := withSettings(c, sc, nil, appendMessage(nil, 'Q', u.query))
		c.target.set(sc)
		n, errMsg, ioErr := c.streamCopy(sc, req.bytes, req.synced, started, plan.Scatter.CopyHeader)
		c.target.set(nil)
		if ioErr != nil {
			sc.MarkBroken()
		}
		p.Release(sc)
		switch {
		case ioErr != nil:
			return c.serverLost(ioErr)
		case errMsg != nil:
			return c.copyFailed(errMsg)
		}
		started, total = true, total+n
	}
	c.out = appendEmpty(c.out, 'c')
	c.out = appendCommandComplete(c.out, "COPY "+strconv.Itoa(total))
	c.out = appendReadyForQuery(c.out, 'I')
	return c.flush()
}

// copyFailed ends a gathered COPY with a shard's error; rows already sent
// stay sent, as when Postgres fails in the middle of a COPY.
func (c *client) copyFailed(errMsg []byte) error {
	c.out = append(c.out, errMsg...)
	c.out = appendReadyForQuery(c.out, 'I')
	return c.flush()
}

// streamCopy runs one shard's COPY and relays its data rows to the client:
// the CopyOutResponse only for the first shard, the header line only from
// the first shard. It returns the shard's row count.
func (c *client) streamCopy(sc *pool.Conn, req []byte, synced, started, header bool) (rows int, errMsg []byte, err error) {
	if _, err := sc.Write(req); err != nil {
		return 0, nil, err
	}
	received := 0
	defer func(began time.Time) { sc.RecordQuery(len(req), received, time.Since(began)) }(time.Now())
	skipHeader := header && started
	for {
		typ, body, err := readMessage(sc.Reader, c.scratch[:0], maxServerMessage, "server messages")
		if err != nil {
			return 0, nil, err
		}
		received += 5 + len(body)
		switch typ {
		case 'Z':
			if synced {
				synced = false
				continue
			}
			return rows, errMsg, nil
		case 'E':
			if errMsg == nil {
				errMsg = appendMessage(nil, 'E', body)
				sc.RecordError(errorCode(errMsg))
			}
		case 'H':
			if !started && !synced {
				c.out = appendMessage(c.out, 'H', body)
			}
		case 'd':
			if skipHeader {
				skipHeader = false
				continue
			}
			c.out = appendMessage(c.out, 'd', body)
			if len(c.out) >= flushThreshold {
				if err := c.flush(); err != nil {
					return 0, nil, fmt.Errorf("%w: %v", errClientWrite, err)
				}
			}
		case 'C':
			if !synced {
				fmt.Sscanf(string(body), "COPY %d", &rows)
			}
		}
	}
}
