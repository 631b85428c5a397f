package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/shardgate/shardgate/backend"
	"github.com/shardgate/shardgate/topology"
)

// Lifecycle, as PgBouncer operators know it: RELOAD (SIGHUP) applies a new
// config without dropping clients; a drain (SIGINT without a deadline,
// SIGTERM within shutdown_timeout) stops accepting and lets transactions
// finish; Shutdown (a second signal, SHUTDOWN) stops now.

// SetConfigFile names the file Reload reads.
func (s *Server) SetConfigFile(path string) {
	s.lifeMu.Lock()
	s.configPath = path
	s.lifeMu.Unlock()
}

// Reload re-reads the config file and applies it. A config that fails
// validation is rejected and the running one keeps serving.
func (s *Server) Reload() error {
	s.lifeMu.Lock()
	path := s.configPath
	s.lifeMu.Unlock()
	if path == "" {
		return errors.New("no config file to reload from")
	}
	cfg, err := topology.LoadConfig(path)
	if err != nil {
		return err
	}
	topology.WarnExposedSecrets(s.log, path, cfg)
	return s.Apply(cfg)
}

// OnApply has f called with every config Apply takes (a RELOAD, SIGHUP),
// after the proxy switched to it. It is for the settings of the process
// rather than of this proxy (workers: GOMAXPROCS), which the proxy must not
// change itself because tests and dev run several proxies in one process.
func (s *Server) OnApply(f func(*topology.Config)) {
	s.reloadMu.Lock()
	s.onApply = f
	s.reloadMu.Unlock()
}

// Apply switches to cfg: pool sizes and timeouts, users, TLS, tables and
// keyspace take effect for the next transaction of every client; pools of
// shards whose DSN changed are replaced. Shards may not be added, removed
// or renamed here (that is resharding).
func (s *Server) Apply(cfg *topology.Config) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.rt.Load()
	if !slices.EqualFunc(old.cfg.Shards, cfg.Shards, func(a, b topology.ShardConfig) bool { return a.Name == b.Name }) {
		return errors.New("reload cannot add, remove or rename shards; restart shardgate or reshard")
	}
	warnRestartOnly(s.log, old.cfg, cfg)
	topo, err := topology.New(cfg)
	if err != nil {
		return err
	}
	rt, err := newConfig(cfg)
	if err != nil {
		return err
	}
	if rt.backends, err = backend.New(cfg, old.backends, s.backendDeps()); err != nil {
		return err
	}
	s.router.SetTopology(topo)
	s.users.apply(cfg.Users, rt.backends)
	s.rt.Store(rt)
	rt.backends.Start()
	s.admin.retire(old.backends, rt.backends) // WAIT_CLOSE waits for them
	old.backends.CloseExcept(rt.backends)     // lent connections close as they come back
	select {
	case s.reloaded <- struct{}{}:
	default: // a wake-up is already pending
	}
	s.log.Info("configuration reloaded", "pool_size", cfg.Pool.Size, "mode", cfg.Pool.Mode)
	if s.onApply != nil {
		s.onApply(cfg)
	}
	return nil
}

// Drain stops accepting clients and waits, up to ctx, for every client to
// finish its transaction; clients are disconnected as soon as they are idle.
// Serve returns once they are all gone (or when its context ends).
func (s *Server) Drain(ctx context.Context) error {
	if s.draining.Swap(true) {
		return nil
	}
	s.lifeMu.Lock()
	closeAll(s.listeners) // a Unix socket's file goes with it
	s.lifeMu.Unlock()
	s.log.Info("draining: no new clients; waiting for transactions to finish")
	for {
		// A connection still logging in has no transaction to finish: it
		// must not hold the drain for up to client_login_timeout.
		s.logins.closeAll()
		n := s.wakeIdle() // to leave
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain: %d clients still connected: %w", n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Shutdown stops Serve now: every client and server connection closes.
func (s *Server) Shutdown() {
	s.lifeMu.Lock()
	stop := s.stop
	s.lifeMu.Unlock()
	if stop != nil {
		stop()
	}
}

// waitDrained blocks until every client has left or ctx ends.
func (s *Server) waitDrained(ctx context.Context) {
	for s.clientCount.Load() > 0 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

// warnRestartOnly warns of the settings a RELOAD changed that take effect
// only on restart: the listeners and the pidfile belong to the process.
func warnRestartOnly(log *slog.Logger, running, next *topology.Config) {
	for _, f := range []struct {
		name          string
		running, next any
	}{
		{"listen", running.Listen, next.Listen},
		{"unix_socket_dir", running.UnixSocketDir, next.UnixSocketDir},
		{"unix_socket_mode", running.UnixSocketMode, next.UnixSocketMode},
		{"unix_socket_group", running.UnixSocketGroup, next.UnixSocketGroup},
		{"pidfile", running.PidFile, next.PidFile},
	} {
		if f.running != f.next {
			log.Warn(f.name+" changes only on restart", "running", f.running, "config", f.next)
		}
	}
}
