// Package pool lends server connections for one (shard, role). It knows
// nothing of SQL: the proxy decides what to send and when a connection is
// free again.
package pool

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
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

	pool       *Pool // that dialled it, for RecordQuery and RecordError
	broken     bool
	created    time.Time
	lastUsed   time.Time // when it last came back to the pool
	generation uint64
}

// MarkBroken makes Release close the connection instead of reusing it:
// after an I/O error its protocol state is unknown.
func (c *Conn) MarkBroken() { c.broken = true }

// Broken reports whether MarkBroken was called.
func (c *Conn) Broken() bool { return c.broken }

const readBufferSize = 16 << 10

func dial(ctx context.Context, cfg *pgconn.Config) (*Conn, error) {
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	hc, err := pc.Hijack()
	if err != nil {
		pc.Close(ctx)
		return nil, fmt.Errorf("take over server connection: %w", err)
	}
	return &Conn{
		Conn:       hc.Conn,
		Reader:     bufio.NewReaderSize(hc.Conn, readBufferSize),
		PID:        hc.PID,
		SecretKey:  hc.SecretKey,
		Params:     hc.ParameterStatuses,
		ServerAddr: net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)),
		Prepared:   make(map[string]uint64),
		Settings:   make(map[string]string),
		created:    time.Now(),
		lastUsed:   time.Now(),
	}, nil
}

// check asks a connection that sat idle whether it still works, with an
// empty query (as PgBouncer's default server_check_query does).
func (c *Conn) check() bool {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte{'Q', 0, 0, 0, 5, 0}); err != nil {
		return false
	}
	for {
		typ, err := c.Reader.ReadByte()
		if err != nil {
			return false
		}
		var n [4]byte
		if _, err := io.ReadFull(c.Reader, n[:]); err != nil {
			return false
		}
		size := int(binary.BigEndian.Uint32(n[:])) - 4
		if size < 0 {
			return false
		}
		body := make([]byte, size)
		if _, err := io.ReadFull(c.Reader, body); err != nil {
			return false
		}
		switch typ {
		case 'Z':
			return size == 1 && body[0] == 'I'
		case 'E':
			return false
		}
	}
}
