package proxy

import (
	"errors"
	"io"
	"net"
	"time"
)

// log_connections and log_disconnections, as PgBouncer's: a line when a
// client has logged in and one when it leaves. They are read from the
// running config, not the client's, so that RELOAD turns them on and off
// for clients already connected.

// logLogin logs a client that has just logged in.
func (c *client) logLogin() {
	if !c.srv.rt.Load().cfg.LogConnections {
		return
	}
	info := c.shown.info.Load()
	c.log().Info("client logged in", "user", info.user, "database", info.database, "addr", clientAddr(c.raw), "tls", c.tls)
}

// logDisconnect logs the end of a logged-in client; err is what ended its
// session, nil for a Terminate message. It reports whether it logged.
func (c *client) logDisconnect(err error) bool {
	if !c.srv.rt.Load().cfg.LogDisconnections {
		return false
	}
	info := c.shown.info.Load()
	c.log().Info("client disconnected", "user", info.user, "database", info.database, "addr", clientAddr(c.raw),
		"duration", time.Since(info.connected).Round(time.Millisecond), "reason", disconnectReason(err))
	return true
}

// disconnectReason says why a session ended, in PgBouncer's words where
// it has some.
func disconnectReason(err error) string {
	switch {
	case err == nil:
		return "client close request"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "client unexpected eof"
	case errors.Is(err, net.ErrClosed):
		return "connection closed by shardgate"
	default:
		return err.Error()
	}
}

// clientAddr is a client's address for logs: host:port over TCP, the
// socket's path over a Unix socket, whose peers have no address.
func clientAddr(conn net.Conn) string {
	if _, ok := conn.LocalAddr().(*net.UnixAddr); ok {
		return "unix:" + conn.LocalAddr().String()
	}
	return conn.RemoteAddr().String()
}
