// Package proxy is shardgate's client side: it speaks the Postgres wire
// protocol to applications, asks the router where each statement goes, and
// relays it over pooled server connections.
package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardgate/shardgate/backend"
	"github.com/shardgate/shardgate/metrics"
	"github.com/shardgate/shardgate/router"
	"github.com/shardgate/shardgate/topology"
)

// planCacheSize bounds the router's statement cache.
const planCacheSize = 10000

// Server accepts clients and owns the pools. One Server serves one config.
type Server struct {
	rt        atomic.Pointer[config]
	cancels   cancelRegistry
	decisions *decisionLog
	tokens    *tokenStore // shardgate.session read-your-writes positions
	fences    *fences     // the reshard cutover's write gate (fence.go)
	router    *router.Router
	log       *slog.Logger
	metrics   *metrics.Metrics

	nextConn    atomic.Uint64
	clientCount atomic.Int64 // connections open, logging in or not
	pinned      atomic.Int64 // transaction-mode clients pinned to a server (pin.go)
	// ddlGen counts DDL statements run, before and after each: statements
	// prepared under another count do not share server-side statements.
	ddlGen   atomic.Uint64
	loggedIn atomic.Int64 // logged-in clients: what max_client_conn bounds
	logins   loginQueue
	admin    adminState   // SUSPEND, DISABLE, WAIT_CLOSE (admin_state.go)
	users    userRegistry // the users section (userlimits.go)

	paramsMu sync.Mutex
	params   []param      // ParameterStatus a new client sees, from a real server
	startups startupCache // startup settings clients share (settings.go)

	clientsMu sync.Mutex
	clients   map[*client]struct{}
	wg        sync.WaitGroup
	park      parker     // idle clients without a goroutine (park.go)
	readers   readerPool // clients' read buffers, which parked clients give back
	wakeMu    sync.Mutex // orders waking an idle client with its waking up (client.wake)

	lifeMu    sync.Mutex
	listeners []net.Listener
	stop      context.CancelFunc // ends Serve
	// reloaded wakes the stats logger to pick up a new stats_period.
	reloaded   chan struct{}
	draining   atomic.Bool
	stopping   atomic.Bool // Serve is closing every client (Ready)
	configPath string
	reloadMu   sync.Mutex             // serialises Apply
	onApply    func(*topology.Config) // under reloadMu (OnApply)
}

type param struct{ name, value string }

// New builds a server for a validated config; it connects to nothing yet.
func New(cfg *topology.Config, log *slog.Logger) (*Server, error) {
	topo, err := topology.New(cfg)
	if err != nil {
		return nil, err
	}
	rt, err := newConfig(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		decisions: &decisionLog{path: cfg.DecisionLog},
		tokens:    newTokenStore(tokenCapacity, tokenTTL),
		fences:    newFences(len(cfg.Shards)),
		router:    router.New(topo, planCacheSize),
		log:       log,
		metrics:   metrics.New(),
		clients:   make(map[*client]struct{}),
		reloaded:  make(chan struct{}, 1),
	}
	s.registerStateMetrics()
	if rt.backends, err = backend.New(cfg, nil, s.backendDeps()); err != nil {
		return nil, err
	}
	s.users.apply(cfg.Users, rt.backends)
	s.rt.Store(rt)
	rt.backends.Start()
	return s, nil
}

func (s *Server) topo() *topology.Topology { return s.router.Topology() }

// backendDeps is what the server's backends use of it.
func (s *Server) backendDeps() backend.Deps {
	return backend.Deps{Log: s.log, Metrics: s.metrics}
}

// Router exposes the router, e.g. for the admin console and tests.
func (s *Server) Router() *router.Router { return s.router }

// ListenAndServe listens on cfg.Listen and, with unix_socket_dir, on a
// Unix socket for the same port, and serves both until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context) error {
	cfg := s.rt.Load().cfg
	ln, err := listenTCP(ctx, cfg.Listen, backend.KeepAlive(cfg.Pool))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	lns := []net.Listener{ln}
	if cfg.UnixSocketDir != "" {
		uln, err := listenUnix(cfg, ln.Addr().(*net.TCPAddr).Port)
		if err != nil {
			ln.Close()
			return err
		}
		s.log.Info("listening on a Unix socket", "path", uln.Addr().String())
		lns = append(lns, uln)
	}
	return s.Serve(ctx, lns...)
}

// Serve accepts clients on every listener until ctx ends, then closes
// every client and pool and returns. A drain (see Drain) ends it too, once
// its clients have left.
func (s *Server) Serve(ctx context.Context, lns ...net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.lifeMu.Lock()
	s.listeners, s.stop = lns, cancel
	s.lifeMu.Unlock()
	stop := context.AfterFunc(ctx, func() { closeAll(lns) })
	defer stop()
	var stats sync.WaitGroup
	stats.Go(func() { s.logStats(ctx) })
	parking := s.startParking(ctx)
	var accepting sync.WaitGroup
	for _, ln := range lns {
		accepting.Go(func() { s.accept(ctx, ln) })
	}
	accepting.Wait()
	if s.draining.Load() {
		s.waitDrained(ctx)
	}
	s.shutdown()
	cancel()
	stats.Wait()
	parking()
	return nil
}

// accept serves the clients of ln until it closes.
func (s *Server) accept(ctx context.Context, ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accept failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.metrics.ClientsAccepted.Inc()
		applyKeepAlive(ln, conn, backend.KeepAlive(s.rt.Load().cfg.Pool))
		s.start(ctx, conn)
	}
}

// start runs a client for conn.
func (s *Server) start(ctx context.Context, conn net.Conn) {
	c := newClient(s, conn, s.nextConn.Add(1))
	var evicted net.Conn
	c.entry.loginSlot, evicted = s.logins.add(conn, s.rt.Load().cfg.Pool.MaxClientConn)
	if evicted != nil {
		s.log.Warn("too many connections logging in: closing the oldest", "max_client_conn", s.rt.Load().cfg.Pool.MaxClientConn, "addr", evicted.RemoteAddr())
		evicted.Close()
	}
	s.track(c)
	go c.serve(ctx)
}

// track counts c among the server's clients until untrack: its goroutine,
// or the goroutines it is parked and woken on, run until then.
func (s *Server) track(c *client) {
	s.clientsMu.Lock()
	s.clients[c] = struct{}{}
	s.clientsMu.Unlock()
	s.wg.Add(1)
	s.clientCount.Add(1)
}

// untrack undoes track once c has ended.
func (s *Server) untrack(c *client) {
	s.clientsMu.Lock()
	delete(s.clients, c)
	s.clientsMu.Unlock()
	s.clientCount.Add(-1)
	s.wg.Done()
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

func (s *Server) shutdown() {
	s.stopping.Store(true)
	// Parked clients go back to goroutines first: a parked client whose
	// socket closed would never be woken (park.go).
	s.unparkAll()
	s.clientsMu.Lock()
	for c := range s.clients {
		c.conn.Close()
	}
	s.clientsMu.Unlock()
	s.wg.Wait()
	s.rt.Load().backends.Close()
}

// anyShard picks the shard for a statement any shard can answer; see
// backend.Set.AnyShard.
//
// With a default shard, it is the default shard: statements any shard
// could answer (catalogs, functions, sequences) see the tables the config
// does not name, which live there.
func (s *Server) anyShard() int {
	if d, ok := s.topo().DefaultShard(); ok && d < s.rt.Load().backends.Shards() {
		return d
	}
	return s.rt.Load().backends.AnyShard()
}

// newBackendKey gives a client the key it will cancel its queries with. Its
// process id is in 1..2^31-1, as a server's is: clients store it as int4.
func (s *Server) newBackendKey(c *client) backendKey {
	for {
		k := backendKey{pid: 1 + rand.Uint32N(math.MaxInt32), secret: rand.Uint32()}
		if s.cancels.claim(k, c) {
			return k
		}
	}
}

// cancel handles a CancelRequest body (code, pid, secret). Unknown keys are
// ignored silently, as Postgres does.
func (s *Server) cancel(body []byte) {
	if len(body) < 12 {
		return
	}
	k := backendKey{pid: binary.BigEndian.Uint32(body[4:]), secret: binary.BigEndian.Uint32(body[8:])}
	if c := s.cancels.lookup(k); c != nil {
		if err := c.target.cancel(); err != nil {
			s.log.Warn("forwarding cancel request", "err", err)
		}
	}
}

// reportedParams are the ParameterStatus names Postgres reports at startup;
// clients (pgx, psycopg, JDBC) read several of them.
var reportedParams = []string{
	"application_name", "client_encoding", "DateStyle", "default_transaction_read_only",
	"in_hot_standby", "integer_datetimes", "IntervalStyle", "is_superuser", "server_encoding",
	"server_version", "session_authorization", "standard_conforming_strings", "TimeZone",
}

// serverParams returns the first shard's startup parameters, fetched once.
func (s *Server) serverParams(ctx context.Context) ([]param, error) {
	s.paramsMu.Lock()
	defer s.paramsMu.Unlock()
	if s.params != nil {
		return s.params, nil
	}
	p := s.rt.Load().backends.Primary(0).Pool()
	sc, err := p.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer p.Release(sc)
	var params []param
	for _, name := range reportedParams {
		if v, ok := sc.Params[name]; ok {
			params = append(params, param{name, v})
		}
	}
	sort.Slice(params, func(i, j int) bool { return params[i].name < params[j].name })
	s.params = params
	return params, nil
}
