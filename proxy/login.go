package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/shardgate/shardgate/auth"
	"github.com/shardgate/shardgate/backend"
	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/topology"
)

// adminDatabase is the database name that opens the admin console, as
// "pgbouncer" does for PgBouncer.
const adminDatabase = "shardgate"

// config is what RELOAD may change, swapped as a whole so a client sees
// one consistent version from startup to end: the settings, users and TLS
// of the proxy and the backends it serves.
type config struct {
	cfg   *topology.Config
	users *auth.Store
	tls   *tls.Config // nil when client TLS is disabled
	cbind []byte      // tls-server-end-point of tls's certificate; nil: no SCRAM-SHA-256-PLUS
	admin map[string]bool
	// authQuery looks up users that users lacks; nil: no auth.query.
	authQuery *authQuery

	backends *backend.Set
}

// primaryPool is the pool for anything that needs shard's primary; see
// backend.Set.PrimaryPool.
func (rt *config) primaryPool(shard int) (*pool.Pool, error) {
	return rt.backends.PrimaryPool(shard)
}

// acquirePrimary lends a connection to shard's primary, waiting within
// ctx, and says from which pool, for its Release.
func (rt *config) acquirePrimary(ctx context.Context, shard int) (*pool.Pool, *pool.Conn, error) {
	p, err := rt.primaryPool(shard)
	if err != nil {
		return nil, nil, err
	}
	sc, err := p.Acquire(ctx)
	return p, sc, err
}

// newConfig builds cfg's proxy settings; the caller gives it backends.
func newConfig(cfg *topology.Config) (*config, error) {
	users := make(map[string]string, len(cfg.Auth.Users))
	for _, u := range cfg.Auth.Users {
		users[u.Name] = u.Password
	}
	store, err := auth.NewStore(users, cfg.Auth.File)
	if err != nil {
		return nil, err
	}
	rt := &config{cfg: cfg, users: store, admin: make(map[string]bool), authQuery: newAuthQuery(cfg)}
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
	c.entry.handshaking = true
	if err := tc.HandshakeContext(c.ctx); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	c.entry.handshaking = false
	c.conn, c.tls = tc, true
	c.rd.Reset(tc)
	return nil
}

// authenticate checks the client's transport and credentials before any
// server connection is spent on it.
func (c *client) authenticate(user string) error {
	if c.rt.cfg.TLS.Mode == "require" && !c.tls {
		return c.fatal(pgerr.CodeInvalidAuthorization, "SSL required")
	}
	var cbind []byte
	if c.tls {
		cbind = c.rt.cbind // the certificate negotiateTLS presented
	}
	sec, known, err := c.findSecret(user)
	if err != nil {
		return err
	}
	err = auth.Exchange(authConn{c}, c.rt.cfg.Auth.Type, user, sec, known, cbind)
	var aerr *auth.Error
	if errors.As(err, &aerr) {
		c.log().Info("authentication failed", "user", user, "addr", c.conn.RemoteAddr(), "reason", aerr.Message)
		return c.fatal(aerr.Code, aerr.Message)
	}
	return err
}

// findSecret finds user's secret in the config's users and auth file,
// which take precedence, else with auth.query. known=false: no such user,
// or none that may log in.
func (c *client) findSecret(user string) (sec auth.Secret, known bool, err error) {
	sec, known = c.rt.users.Lookup(user)
	if known || c.rt.authQuery == nil || c.rt.cfg.Auth.Type == "trust" {
		return sec, known, nil
	}
	return c.queryUser(user)
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
	c.out = appendParameterStatus(c.out, "server_version", "15.0 (shardgate "+Version()+")")
	c.out = appendParameterStatus(c.out, "client_encoding", "UTF8")
	c.out = appendParameterStatus(c.out, "standard_conforming_strings", "on")
	c.out = appendParameterStatus(c.out, "DateStyle", "ISO, MDY")
	c.out = appendParameterStatus(c.out, "integer_datetimes", "on")
	c.out = appendReadyForQuery(c.out, 'I')
	return true, c.flush()
}
