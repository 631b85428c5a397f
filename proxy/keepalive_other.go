//go:build !linux

package proxy

import (
	"errors"
	"net"
)

// setKeepAlive: whether accepted sockets inherit keepalive settings is not
// known here, so accept sets them on each connection.
func setKeepAlive(uintptr, net.KeepAliveConfig) error {
	return errors.ErrUnsupported
}
