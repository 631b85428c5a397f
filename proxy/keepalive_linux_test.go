package proxy

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// TestAcceptedSocketsInheritKeepAlive: the listening socket's keepalive
// settings reach accepted sockets without per-connection calls, and a
// reloaded configuration still reaches new ones.
func TestAcceptedSocketsInheritKeepAlive(t *testing.T) {
	configured := net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 3}
	ln, err := listenTCP(t.Context(), "127.0.0.1:0", configured)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, ok := ln.(*keepAliveListener); !ok {
		t.Fatalf("listener %T does not carry the keepalive settings", ln)
	}
	accept := func(ka net.KeepAliveConfig) [4]int {
		t.Helper()
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		conn, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		applyKeepAlive(ln, conn, ka)
		return keepAliveOf(t, conn)
	}
	if got, want := accept(configured), [4]int{1, 30, 10, 3}; got != want {
		t.Fatalf("accepted socket keepalive (on, idle, interval, count) = %v; want %v", got, want)
	}
	reloaded := net.KeepAliveConfig{Enable: true, Idle: 60 * time.Second, Interval: 5 * time.Second, Count: 4}
	if got, want := accept(reloaded), [4]int{1, 60, 5, 4}; got != want {
		t.Fatalf("after a reload, accepted socket keepalive = %v; want %v", got, want)
	}
}

func keepAliveOf(t *testing.T, conn net.Conn) (v [4]int) {
	t.Helper()
	rc, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	opts := [4][2]int{
		{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT},
	}
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		for i, o := range opts {
			if v[i], err = syscall.GetsockoptInt(int(fd), o[0], o[1]); err != nil {
				gerr = err
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}
