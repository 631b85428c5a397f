package proxy

import (
	"errors"
	"strings"
)

// Ready reports whether the server should be sent new clients, for the
// metrics listener's /readyz: it is accepting clients, not draining or
// shutting down, and every shard's primary (the promoted replica after a
// failover) passed its last health check. Until a primary's first check
// has answered it counts as unreachable. The error is the one line a
// probe shows.
func (s *Server) Ready() error {
	s.lifeMu.Lock()
	listening := len(s.listeners) > 0
	s.lifeMu.Unlock()
	switch {
	case s.stopping.Load():
		return errors.New("shutting down")
	case s.draining.Load():
		return errors.New("draining")
	case !listening:
		return errors.New("not accepting clients yet")
	}
	rt := s.rt.Load()
	var down []string
	for i, sh := range rt.cfg.Shards {
		if !rt.backends.Primary(i).Healthy() {
			down = append(down, sh.Name)
		}
	}
	if len(down) > 0 {
		return errors.New("primary unreachable: " + strings.Join(down, ", "))
	}
	return nil
}
