//go:build !linux

package proxy

import "errors"

// epoller: without epoll, idle clients are not parked (park.go).
type epoller struct{}

func newEpoller() (*epoller, error) { return nil, errors.ErrUnsupported }

func (*epoller) arm(int, uint64) error      { return errors.ErrUnsupported }
func (*epoller) disarm(int)                 {}
func (*epoller) wait(func(id uint64)) error { return errors.ErrUnsupported }
func (*epoller) close()                     {}
