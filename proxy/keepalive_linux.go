package proxy

import (
	"net"
	"syscall"
)

// setKeepAlive sets ka on a socket as net.TCPConn.SetKeepAliveConfig would.
func setKeepAlive(fd uintptr, ka net.KeepAliveConfig) error {
	s := int(fd)
	on := 0
	if ka.Enable {
		on = 1
	}
	if err := syscall.SetsockoptInt(s, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, on); err != nil || !ka.Enable {
		return err
	}
	count := ka.Count
	if count == 0 {
		count = 9 // Go's default, as SetKeepAliveConfig uses
	}
	for _, o := range []struct{ opt, v int }{
		{syscall.TCP_KEEPIDLE, keepAliveSeconds(ka.Idle)},
		{syscall.TCP_KEEPINTVL, keepAliveSeconds(ka.Interval)},
		{syscall.TCP_KEEPCNT, count},
	} {
		if o.v < 0 {
			continue
		}
		if err := syscall.SetsockoptInt(s, syscall.IPPROTO_TCP, o.opt, o.v); err != nil {
			return err
		}
	}
	return nil
}
