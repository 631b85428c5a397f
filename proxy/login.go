package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	"github.com/shardgate/shardgate/auth"
	"github.com/shardgate/shardgate/metrics"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/topology"
)

// adminDatabase is the database name that opens the admin console, as
// "pgbouncer" does for PgBouncer.
const adminDatabase = "shardgate"

// runtime is what RELOAD may change, swapped as a whole so a client sees
// one consistent version from startup to end.
type runtime struct {
	cfg   *topology.Config
	users *auth.Store
	tls   *tls.Config // nil when client TLS is disabled
	cbind []byte      // tls-server-end-point of tls's certificate; nil: no SCRAM-SHA-256-PLUS
	admin map[string]bool

	primaries []*node   // configured primary, by shard index; see primary
	replicas  [][]*node // by shard index, in config order
}

// errNoPrimary refuses work that needs a shard's primary while it is down.
type errNoPrimary struct{ shard string }

func (e errNoPrimary) Error() string {
	return "shard " + e.shard + " has no reachable primary"
}

// primary is the node that takes shard's writes: its configured primary,
// or the replica promoted in its place (see node.probe).
func (rt *runtime) primary(shard int) *node {
	for _, r := range rt.replicas[shard] {
		if r.promoted.Load() {
			return r
		}
	}
	return rt.primaries[shard]
}

// primaryPool is the pool for anything that needs shard's primary. While
// that primary is down (banned after a failed probe) it refuses at once (errNoPrimary, 08006) rather
// than let the client wait server_connect_timeout.
func (rt *runtime) primaryPool(shard int) (*pool.Pool, error) {
	n := rt.primary(shard)
	if n.down() {
		return nil, errNoPrimary{rt.cfg.Shards[shard].Name}
	}
	return n.pool, nil
}

// openPools gives rt a node (pool and monitor) per server, reusing (and
// resizing) those of old whose DSN is unchanged. The monitors of new nodes
// start with startMonitors once rt is the server's runtime.
func (rt *runtime) openPools(old *runtime, m *metrics.Metrics) error {
	var oldNodes []*node
	if old != nil && old.cfg.ServerTLS == rt.cfg.ServerTLS {
		oldNodes = old.nodes()
	}
	get := func(shard int, replica bool, name, dsn string) (*node, error) {
		pc := poolConfig(rt.cfg, name, dsn)
		for _, n := range oldNodes {
			if n.shard == shard && n.replica == replica && n.dsn == pc.DSN && !slices.Contains(rt.nodes(), n) {
				n.pool.Resize(pc)
				return n, nil
			}
		}
		pc.Observer = m.Server(rt.cfg.Shards[shard].Name, roleName(replica))
		p, err := pool.New(pc)
		if err != nil {
			return nil, err
		}
		return newNode(p, pc.DSN, shard, replica, name), nil
	}
	rt.replicas = make([][]*node, len(rt.cfg.Shards))
	for i, sh := range rt.cfg.Shards {
		n, err := get(i, false, sh.Name+"/primary", sh.Primary)
		if err != nil {
			rt.closeNewPools(old)
			return err
		}
		rt.primaries = append(rt.primaries, n)
		for j, dsn := range sh.Replicas {
			n, err := get(i, true, fmt.Sprintf("%s/replica%d", sh.Name, j), dsn)
			if err != nil {
				rt.closeNewPools(old)
				return err
			}
			rt.replicas[i] = append(rt.replicas[i], n)
		}
	}
	return nil
}

// startMonitors starts the health checks of rt's nodes not yet checked.
func (rt *runtime) startMonitors(s *Server) {
	for _, n := range rt.nodes() {
		n.start(s)
	}
}

// nodes lists every server of rt: primaries, then replicas.
func (rt *runtime) nodes() []*node {
	out := slices.Clone(rt.primaries)
	for _, reps := range rt.replicas {
		out = append(out, reps...)
	}
	return out
}

// closeNewPools closes the nodes of rt that old does not share.
func (rt *runtime) closeNewPools(old *runtime) {
	var keep []*node
	if old != nil {
		keep = old.nodes()
	}
	for _, n := range rt.nodes() {
		if !slices.Contains(keep, n) {
			n.close()
		}
	}
}

func poolConfig(cfg *topology.Config, name, dsn string) pool.Config {
	pc := cfg.Pool
	return pool.Config{
		Name:           name,
		DSN:            withServerTLS(dsn, cfg.ServerTLS),
		Size:           pc.Size,
		MinSize:        pc.MinSize,
		ReserveSize:    pc.ReserveSize,
		ReserveTimeout: time.Duration(pc.ReserveTimeout),
		WaitTimeout:    time.Duration(pc.QueryWaitTimeout),
		ConnectTimeout: time.Duration(pc.ServerConnectTimeout),
		IdleTimeout:    time.Duration(pc.ServerIdleTimeout),
		Lifetime:       time.Duration(pc.ServerLifetime),
		CheckDelay:     time.Duration(pc.ServerCheckDelay),
		QueryTimeout:   time.Duration(pc.QueryTimeout),
		KeepAlive:      keepAlive(pc),
	}
}

// keepAlive is the TCP keepalive setting for client and server sockets.
func keepAlive(pc topology.PoolConfig) net.KeepAliveConfig {
	count := pc.TCPKeepCount
	if count == 0 {
		count = -1 // the OS default
	}
	return net.KeepAliveConfig{Enable: pc.TCPKeepalive, Idle: time.Duration(pc.TCPKeepIdle), Interval: time.Duration(pc.TCPKeepInterval), Count: count}
}

// withServerTLS applies server_tls to a DSN as libpq parameters, so pgconn
// negotiates and verifies exactly as libpq would.
func withServerTLS(dsn string, st topology.ServerTLSConfig) string {
	if st.Mode == "" {
		return dsn
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn // validated already; pool.New reports anything left
	}
	q := u.Query()
	q.Set("sslmode", st.Mode)
	if st.CA != "" {
		q.Set("sslrootcert", st.CA)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func newRuntime(cfg *topology.Config) (*runtime, error) {
	users := make(map[string]string, len(cfg.Auth.Users))
	for _, u := range cfg.Auth.Users {
		users[u.Name] = u.Password
	}
	store, err := auth.NewStore(users, cfg.Auth.File)
	if err != nil {
		return nil, err
	}
	rt := &runtime{cfg: cfg, users: store, admin: make(map[string]bool)}
	for _, u := range cfg.AdminUsers {
		rt.admin[u] = true
	}
	if cfg.TLS.Mode != "disable" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		rt.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		// An error means the certificate's signature (Ed25519) defines no
		// binding: SCRAM then goes without it, as clients allow by default.
		rt.cbind, _ = auth.TLSServerEndPoint(cert.Leaf)
	}
	return rt, nil
}

// negotiateTLS answers an SSLRequest: 'S' and a handshake when TLS is on.
func (c *client) negotiateTLS() error {
	if c.rt.tls == nil || c.tls {
		_, err := c.conn.Write([]byte{'N'})
		return err
	}
	if _, err := c.conn.Write([]byte{'S'}); err != nil {
		return err
	}
	if c.rd.Buffered() > 0 {
		// Bytes after the SSLRequest and before the handshake could have
		// been injected by a man in the middle (CVE-2021-23222's cousin).
		return errors.New("unencrypted data after SSLRequest")
	}
	tc := tls.Server(c.conn, c.rt.tls)
	c.handshaking = true
	if err := tc.HandshakeContext(c.ctx); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	c.handshaking = false
	c.conn, c.tls = tc, true
	c.rd.Reset(tc)
	return nil
}

// authenticate checks the client's transport and credentials before any
// server connection is spent on it.
func (c *client) authenticate(user string) error {
	if c.rt.cfg.TLS.Mode == "require" && !c.tls {
		return c.fatal("28000", "SSL required")
	}
	var cbind []byte
	if c.tls {
		cbind = c.rt.cbind // the certificate negotiateTLS presented
	}
	err := auth.Authenticate(authConn{c}, c.rt.cfg.Auth.Type, user, c.rt.users, cbind)
	var aerr *auth.Error
	if errors.As(err, &aerr) {
		c.log().Info("authentication failed", "user", user, "addr", c.conn.RemoteAddr(), "reason", aerr.Message)
		return c.fatal(aerr.Code, aerr.Message)
	}
	return err
}

// authConn gives auth the client's framing.
type authConn struct{ c *client }

func (a authConn) ReadMessage() (byte, []byte, error) {
	return a.c.readLimited(maxAuthMessage, "the limit during authentication")
}

func (a authConn) WriteMessage(typ byte, body []byte) error {
	a.c.out = appendMessage(a.c.out, typ, body)
	return a.c.flush()
}

// isTLS reports whether a net.Conn is already encrypted (tests may hand the
// server TLS listeners).
func isTLS(conn net.Conn) bool {
	_, ok := conn.(*tls.Conn)
	return ok
}

// acceptAdmin finishes startup for the admin console.
func (c *client) acceptAdmin() (bool, error) {
	c.admin = true
	c.out = append(c.out, 'R', 0, 0, 0, 8, 0, 0, 0, 0)
	c.out = appendParameterStatus(c.out, "server_version", "15.0 (shardgate "+Version+")")
	c.out = appendParameterStatus(c.out, "client_encoding", "UTF8")
	c.out = appendParameterStatus(c.out, "standard_conforming_strings", "on")
	c.out = appendParameterStatus(c.out, "DateStyle", "ISO, MDY")
	c.out = appendParameterStatus(c.out, "integer_datetimes", "on")
	c.out = appendReadyForQuery(c.out, 'I')
	return true, c.flush()
}
