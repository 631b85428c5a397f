// Package pool lends server connections for one (shard, role). It knows
// nothing of SQL: the proxy decides what to send and when a connection is
// free again.
package pool

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Conn is one authenticated server connection, taken over from pgconn after
// startup so the proxy can relay raw protocol bytes without decoding them.
type Conn struct {
	net.Conn
	Reader *bufio.Reader

	PID        uint32
	SecretKey  []byte
	Params     map[string]string // ParameterStatus values reported at startup
	ServerAddr string            // host:port, for cancel requests

	// Prepared holds the server-side prepared statement names this
	// connection has, so the proxy can Parse lazily on first use, each with
	// the Batch that last used it, so the least recently used can go.
	Prepared map[string]uint64
	Batch    uint64
	// Settings are the session settings (parameter name → the SET that
	// applied it) in effect beyond the server's defaults, so the proxy can
	// bring the connection in line with each client it serves.
	Settings map[string]string

	pool       *Pool  // that dialled it, for RecordQuery and RecordError
	quota      *Quota // the lender's quota (AcquireUnder), until Release
	broken     bool
	armed      bool        // a query_timeout deadline is set
	interrupt  atomic.Bool // Interrupt was called: fail every read and write
	created    time.Time
	lastUsed   time.Time // when it last came back to the pool
	generation uint64
	id         uint64 // unique in its pool
	prepared   int    // len(Prepared) when it last came back, for SHOW SERVERS
}

// MarkBroken makes Release close the connection instead of reusing it:
// after an I/O error its protocol state is unknown.
func (c *Conn) MarkBroken() { c.broken = true }

// Broken reports whether MarkBroken was called.
func (c *Conn) Broken() bool { return c.broken }

// ReadBufferSize is the read buffer each server connection holds.
const ReadBufferSize = 16 << 10

func dial(ctx context.Context, cfg *pgconn.Config) (*Conn, error) {
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// A write slow enough during startup (over 15 ms, e.g. on a loaded
	// machine) starts pgconn's background reader, which stops only after
	// its next read: taken over as is, the connection would lose the first
	// answer it gets to that goroutine, and its client would wait forever.
	if err := pc.SyncConn(ctx); err != nil {
		pc.Close(ctx)
		return nil, fmt.Errorf("take over server connection: %w", err)
	}
	hc, err := pc.Hijack()
	if err != nil {
		pc.Close(ctx)
		return nil, fmt.Errorf("take over server connection: %w", err)
	}
	c := &Conn{
		Conn:       hc.Conn,
		PID:        hc.PID,
		SecretKey:  hc.SecretKey,
		Params:     hc.ParameterStatuses,
		ServerAddr: net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)),
		Prepared:   make(map[string]uint64),
		Settings:   make(map[string]string),
		created:    time.Now(),
		lastUsed:   time.Now(),
	}
	// Reads go through c so their errors say why (ErrQueryTimeout,
	// ErrInterrupted).
	c.Reader = bufio.NewReaderSize(c, ReadBufferSize)
	return c, nil
}

// ErrQueryTimeout: the server did not answer within query_timeout of the
// proxy's last write to it.
var ErrQueryTimeout = errors.New("query_timeout expired")

// ErrInterrupted: the connection was interrupted (Interrupt) because its
// server stopped answering health checks.
var ErrInterrupted = errors.New("server stopped answering health checks")

// Write sends b to the server and, with query_timeout set, gives the server
// that long to answer: the deadline bounds every read until the next write.
func (c *Conn) Write(b []byte) (int, error) {
	if c.interrupt.Load() {
		return 0, ErrInterrupted
	}
	if c.pool != nil {
		if qt := time.Duration(c.pool.queryTimeout.Load()); qt > 0 {
			c.Conn.SetDeadline(time.Now().Add(qt))
			c.armed = true
		} else if c.armed {
			c.Conn.SetDeadline(time.Time{})
			c.armed = false
		}
		if c.interrupt.Load() {
			// Interrupt ran between the check above and the new deadline,
			// which replaced its own: restore it.
			c.Conn.SetDeadline(time.Unix(1, 0))
		}
	}
	n, err := c.Conn.Write(b)
	return n, c.cause(err)
}

// Read reads from the server, saying why when it fails on a deadline.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	return n, c.cause(err)
}

func (c *Conn) cause(err error) error {
	switch {
	case err == nil:
		return nil
	case c.interrupt.Load():
		return fmt.Errorf("%w (%v)", ErrInterrupted, err)
	case c.armed && errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w after %s", ErrQueryTimeout, time.Duration(c.pool.queryTimeout.Load()))
	}
	return err
}

// Interrupt fails the connection's reads and writes now, from any
// goroutine: a client waiting on a server that stopped answering gets an
// error (or a retry elsewhere) instead of waiting out the stall. The
// connection is closed when it comes back.
func (c *Conn) Interrupt() {
	c.interrupt.Store(true)
	c.Conn.SetDeadline(time.Unix(1, 0))
}

// check asks a connection that sat idle whether it still works, with an
// empty query (as PgBouncer's default server_check_query does), waiting
// at most timeout for the answer.
func (c *Conn) check(timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	c.armed = false
	if _, err := c.Conn.Write([]byte{'Q', 0, 0, 0, 5, 0}); err != nil {
		return err
	}
	for {
		typ, err := c.Reader.ReadByte()
		if err != nil {
			return err
		}
		var n [4]byte
		if _, err := io.ReadFull(c.Reader, n[:]); err != nil {
			return err
		}
		size := int(binary.BigEndian.Uint32(n[:])) - 4
		if size < 0 || size > 1<<20 {
			return fmt.Errorf("check: invalid message length %d", size+4)
		}
		body := make([]byte, size)
		if _, err := io.ReadFull(c.Reader, body); err != nil {
			return err
		}
		switch {
		case typ == 'Z' && size == 1 && body[0] == 'I':
			return nil
		case typ == 'Z':
			return fmt.Errorf("check: server in transaction state %q", body)
		case typ == 'E':
			return errors.New("check: the empty query failed")
		}
	}
}

// Unbounded lifts the deadline of a connection no exchange is using, so a
// wait for what its server says unasked (a listening session's
// notifications) has no time limit; Wake ends such a wait. A deadline
// Interrupt set stays.
func (c *Conn) Unbounded() {
	c.armed = false
	c.Conn.SetReadDeadline(time.Time{})
	if c.interrupt.Load() {
		c.Conn.SetDeadline(time.Unix(1, 0))
	}
}

// Wake fails a read blocked on the connection now, from any goroutine,
// without consuming what it had read: the bytes stay in Reader.
func (c *Conn) Wake() { c.Conn.SetReadDeadline(time.Unix(1, 0)) }
