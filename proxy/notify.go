package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/shardgate/shardgate/pool"
)

// A session that said LISTEN gets notifications while it is idle, the
// moment its server sends them, as a direct connection does; drivers wait
// for them without sending anything (pgx's WaitForNotification). So while
// a listening client is idle, a goroutine relays what the listening
// server connection says unasked. It owns that connection's reads and the
// client's writes until the client speaks again; then the loop wakes it
// and waits for it to let go before touching either.

// relayNotifications starts that goroutine, if the client listens, and
// returns the function that stops it.
func (c *client) relayNotifications() (stop func()) {
	if !c.listening {
		return func() {}
	}
	s, ok := c.tx.sessionConns[c.listenShard]
	if !ok || s.sc.Broken() {
		return func() {}
	}
	sc := s.sc
	sc.Unbounded()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			// Outside the client's own recover (client.serve): a bug here
			// ends this client, never the process.
			if r := recover(); r != nil {
				c.log().Error("notification relay panicked", "panic", r)
				sc.MarkBroken()
				c.conn.Close()
			}
		}()
		if err := c.relayUnasked(sc); !errors.Is(err, os.ErrDeadlineExceeded) {
			// The server ended the session (its FATAL, if any, went
			// to the client): so does the client's, as in Postgres.
			sc.MarkBroken()
			c.conn.Close()
		}
	}()
	return func() {
		sc.Wake()
		<-done
		sc.Unbounded()
	}
}

// unasked reports whether a backend message type is one a server sends
// without being asked: a notice, a parameter change, a notification.
func unasked(typ byte) bool { return typ == 'N' || typ == 'S' || typ == 'A' }

// relayUnasked copies notifications, notices and parameter changes from
// an idle server connection to the client until a read fails, and returns
// that failure (os.ErrDeadlineExceeded when woken). Anything
// else (a FATAL, or bytes out of turn) is an error after it is relayed.
func (c *client) relayUnasked(sc *pool.Conn) error {
	for {
		hdr, err := sc.Reader.Peek(5)
		if err != nil {
			return err
		}
		n := int(binary.BigEndian.Uint32(hdr[1:])) + 1
		typ := hdr[0]
		switch {
		case n < 5:
			return errors.New("invalid server message length")
		case n > sc.Reader.Size():
			// Too big to hold whole: copied through, so a wake midway
			// would cut it; the connection cannot be trusted after.
			if _, err := io.CopyN(c.conn, sc.Reader, int64(n)); err != nil {
				return fmt.Errorf("relaying a large server message: %v", err)
			}
			if !unasked(typ) {
				return errors.New("server ended the idle session")
			}
			continue
		}
		msg, err := sc.Reader.Peek(n)
		if err != nil {
			return err
		}
		if _, err := c.conn.Write(msg); err != nil {
			return err
		}
		sc.Reader.Discard(n)
		if !unasked(typ) {
			return errors.New("server ended the idle session")
		}
	}
}
