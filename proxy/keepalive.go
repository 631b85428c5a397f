package proxy

import (
	"context"
	"net"
	"syscall"
	"time"
)

// keepAliveListener is a TCP listener whose socket carries the keepalive
// settings in applied: on Linux an accepted socket inherits them (and its
// keepalive timer starts at accept), which saves four system calls on
// every new client connection. After a reload that changes them, accept
// applies the new ones per connection.
type keepAliveListener struct {
	net.Listener
	applied net.KeepAliveConfig
}

// listenTCP listens on addr with the keepalive settings ka set on the
// listening socket where the OS passes them on to accepted sockets, and
// leaves them to accept otherwise. Go's own default keepalive is off
// either way: it would set its 15 s values on every connection first.
func listenTCP(ctx context.Context, addr string, ka net.KeepAliveConfig) (net.Listener, error) {
	inherited := false
	lc := net.ListenConfig{
		KeepAlive: -1,
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = setKeepAlive(fd, ka) }); err != nil {
				return err
			}
			inherited = serr == nil
			return nil // not inheriting only costs the per-connection calls
		},
	}
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil || !inherited {
		return ln, err
	}
	return &keepAliveListener{Listener: ln, applied: ka}, nil
}

// applyKeepAlive gives a new client connection the keepalive settings ka
// unless its listener's socket passed them on already.
func applyKeepAlive(ln net.Listener, conn net.Conn, ka net.KeepAliveConfig) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return
	}
	if kl, ok := ln.(*keepAliveListener); ok && kl.applied == ka {
		return
	}
	tc.SetKeepAliveConfig(ka)
}

// keepAliveSeconds is d as Go's SetKeepAliveConfig sets it: zero is its
// 15 s default, negative leaves the OS default (-1), and fractions round up.
func keepAliveSeconds(d time.Duration) int {
	switch {
	case d == 0:
		return 15
	case d < 0:
		return -1
	}
	return int((d + time.Second - 1) / time.Second)
}
