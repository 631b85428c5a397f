package proxy

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// epoller is the epoll instance parked clients' sockets wait on. One
// goroutine waits for it in Go's own poller, through the epoll
// descriptor (itself pollable): no thread blocks in epoll_wait.
type epoller struct {
	fd   int
	file *os.File // fd, registered with Go's poller
	rc   syscall.RawConn
}

func newEpoller() (*epoller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// Non-blocking, so that os.NewFile registers it with Go's poller.
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	file := os.NewFile(uintptr(fd), "parked-clients-epoll")
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, err
	}
	return &epoller{fd: fd, file: file, rc: rc}, nil
}

// arm has the poller report fd once (one-shot) when it is readable or
// its peer hangs up, as the client with id. The socket's registration
// stays after it fires, disarmed, so a client parking again re-arms it.
func (e *epoller) arm(fd int, id uint64) error {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	setEventID(&ev, id)
	err := syscall.EpollCtl(e.fd, syscall.EPOLL_CTL_ADD, fd, &ev)
	if errors.Is(err, syscall.EEXIST) {
		err = syscall.EpollCtl(e.fd, syscall.EPOLL_CTL_MOD, fd, &ev)
	}
	if err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// disarm removes fd from the poller.
func (e *epoller) disarm(fd int) {
	syscall.EpollCtl(e.fd, syscall.EPOLL_CTL_DEL, fd, nil)
}

// wait calls ready with the id of every socket the poller reports until
// the poller is closed, and returns why it stopped.
func (e *epoller) wait(ready func(id uint64)) error {
	events := make([]syscall.EpollEvent, 128)
	for {
		var n int
		var werr error
		// Go's poller calls back when the epoll descriptor is readable
		// (has events); epoll_wait does not block.
		err := e.rc.Read(func(uintptr) bool {
			n, werr = syscall.EpollWait(e.fd, events, 0)
			return n > 0 || (werr != nil && werr != syscall.EINTR)
		})
		if err != nil {
			return err
		}
		if werr != nil {
			return fmt.Errorf("epoll_wait: %w", werr)
		}
		for _, ev := range events[:n] {
			ready(eventID(&ev))
		}
	}
}

func (e *epoller) close() { e.file.Close() }

// setEventID and eventID keep a client id in the event's 64 bits of user
// data, which package syscall splits in two fields.
func setEventID(ev *syscall.EpollEvent, id uint64) {
	ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
}

func eventID(ev *syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
