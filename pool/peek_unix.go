//go:build unix

package pool

import (
	"crypto/tls"
	"syscall"
)

// Pending reports whether the server has said something not yet read. A
// server says nothing unasked to an idle session but to end it (a FATAL
// such as pg_terminate_backend's or idle_session_timeout's, then EOF), so
// on an idle connection bytes waiting mean it is dead; during COPY FROM
// they mean the server failed it. It peeks without blocking or consuming,
// and costs one system call.
func (c *Conn) Pending() bool {
	if c.Reader.Buffered() > 0 {
		return true
	}
	nc := c.Conn
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	pending := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		// Data or EOF (0 bytes, no error) or a socket error: not idle.
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		pending = err != syscall.EAGAIN && err != syscall.EWOULDBLOCK && err != syscall.EINTR
		return true // never wait for readability
	})
	return pending || err != nil
}
