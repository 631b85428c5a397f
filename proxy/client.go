package proxy

import (
	"bufio"
	"container/list"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/shardgate/shardgate/pgerr"
)

// txState is the client's transaction as the proxy sees it. Transaction
// pooling needs a fourth state Postgres does not have: a BEGIN the proxy has
// acknowledged but not yet sent, because no statement has chosen a shard.
type txState uint8

const (
	txIdle    txState = iota
	txPending         // BEGIN answered locally; sent with the first routed statement
	txActive          // a server connection holds the transaction
	txFailed          // aborted by the proxy (no server held); waiting for ROLLBACK
)

const (
	protocolVersion30 = 196608
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
	cancelRequestCode = 80877102
	// clientReadBuffer is small because idle clients hold it: 10,000 of
	// them must fit in little memory. Larger messages are read straight
	// into their own buffer, so the size costs no correctness.
	clientReadBuffer = 2 << 10
	// flushThreshold bounds how much of a result the proxy buffers before
	// writing to the client, so large results stream with flat memory.
	flushThreshold = 32 << 10
)

// client is one frontend connection: the socket and its buffers, and the
// state of its session, its transaction and its extended-protocol batch,
// each a struct of its own.
type client struct {
	srv   *Server
	rt    *config // config as of this client's startup
	conn  net.Conn
	rd    *bufio.Reader
	id    uint64 // for logs
	ctx   context.Context
	raw   net.Conn // the accepted socket, under TLS if any: other goroutines may close it
	tls   bool
	admin bool       // an admin console session
	mode  string     // pool mode, as of startup; session once pinned
	user  *userState // the users section's entry for the client's user; nil: none
	// pinned: a transaction-mode client that keeps its server connections
	// for session state (pin.go).
	pinned bool
	// listening: the client said LISTEN, on its session connection to
	// listenShard, whose notifications are relayed while it is idle.
	listening   bool
	listenShard int
	entry       loginState
	shown       shownState

	deadline time.Time    // the read deadline armed; zero: none
	inGate   bool         // counted busy by the SUSPEND gate (adminState.enter)
	target   cancelTarget // the server connection to cancel, while one runs
	// wait is what the client waits for, for other goroutines to wake
	// it (waitIdle...: park.go); idleSince is since when, in unix
	// nanoseconds, while it waits parkable.
	wait      atomic.Int32
	idleSince atomic.Int64

	in      []byte // last frontend message body
	out     []byte // pending bytes for the client
	scratch []byte // server messages larger than the read buffer
	sout    []byte // pending bytes for a server
	peeked  int    // bytes of the server reader still to discard

	sess  sessionState
	tx    transaction
	ext   extended
	fence fenceState
}

// loginState is the client's progress through startup and authentication.
type loginState struct {
	// loginSlot is the client's place in the server's login queue until
	// it has logged in; loggedIn: it holds a max_client_conn slot.
	loginSlot *list.Element
	loggedIn  bool
	// handshaking: a TLS handshake is under way, so a plaintext error
	// would only garble it.
	handshaking bool
}

// shownState is what other goroutines read: SHOW CLIENTS and cancel
// requests.
type shownState struct {
	info        atomic.Pointer[clientInfo]
	activeShard atomic.Int32 // shard of the held connection, -1 if none
	lastRequest atomic.Int64 // unix nanoseconds
	key         backendKey
}

func newClient(s *Server, conn net.Conn, id uint64) *client {
	rt := s.rt.Load()
	c := &client{
		srv:  s,
		rt:   rt,
		mode: rt.cfg.Pool.Mode,
		raw:  conn,
		tls:  isTLS(conn),
		id:   id,
	}
	conn = countingConn{conn, s.metrics.ClientBytesReceived, s.metrics.ClientBytesSent}
	c.conn, c.rd = conn, s.readers.get(conn)
	c.shown.activeShard.Store(-1)
	return c
}

func (c *client) serve(ctx context.Context) {
	c.ctx = ctx
	c.run(func() error {
		if ok, err := c.login(); err != nil || !ok {
			if err != nil && !errors.Is(err, io.EOF) {
				c.log().Debug("startup failed", "err", err)
			}
			return nil
		}
		c.logLogin()
		if c.admin {
			return c.logEnd(c.adminLoop())
		}
		if c.parkAtLogin() {
			return errParked
		}
		return c.logEnd(c.loop(false))
	})
}

// run serves the client on this goroutine with session, then ends it,
// unless session parked it (park.go): then its socket is another
// goroutine's to wake and it stays open.
func (c *client) run(session func() error) {
	parked := false
	defer func() {
		if !parked {
			c.end()
		}
	}()
	defer c.recoverSession()
	parked = session() == errParked
}

// recoverSession, deferred, keeps a bug in one session from taking down
// every other client, as net/http does: its server connections are
// closed, not reused.
func (c *client) recoverSession() {
	if r := recover(); r != nil {
		c.log().Error("client session panicked", "panic", r, "stack", string(debug.Stack()))
		if c.tx.held != nil {
			c.tx.held.MarkBroken()
		}
	}
}

// logEnd logs why a logged-in client's session ended, unless it parked,
// and returns err.
func (c *client) logEnd(err error) error {
	if err == errParked {
		return err
	}
	if !c.logDisconnect(err) && err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.log().Info("client connection ended", "err", err)
	}
	return err
}

// end closes the client and takes it off the server's books.
func (c *client) end() {
	c.close()
	c.srv.untrack(c)
}

func (c *client) close() {
	c.leaveGate()
	if c.pinned {
		c.srv.pinned.Add(-1)
	}
	if c.entry.loggedIn {
		c.srv.loggedIn.Add(-1)
	}
	if c.user != nil {
		c.user.leave()
	}
	if c.shown.key != (backendKey{}) {
		c.srv.cancels.remove(c.shown.key)
	}
	if c.tx.held != nil {
		// Mid-transaction disconnect: the server connection's state is
		// unknown to the pool, so it is not reused.
		c.tx.held.MarkBroken()
		for _, b := range c.tx.branches {
			b.sc.MarkBroken()
		}
		c.endBranches()
	}
	c.releaseSession()
	c.leaveFences(true)
	c.conn.Close()
}

// login runs startup within client_login_timeout, which covers the
// startup packet, TLS handshake and authentication, and leaves the login
// queue either way.
func (c *client) login() (bool, error) {
	defer func() {
		c.srv.logins.done(c.entry.loginSlot)
		c.entry.loginSlot = nil // the element holds the socket: 100 bytes an idle client need not keep
	}()
	timeout := time.Duration(c.rt.cfg.Pool.ClientLoginTimeout)
	if timeout > 0 {
		c.conn.SetDeadline(time.Now().Add(timeout))
	}
	ok, err := c.startup()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.log().Info("closing client: login took too long", "timeout", timeout, "addr", c.conn.RemoteAddr())
		if !c.entry.handshaking {
			c.conn.SetWriteDeadline(time.Now().Add(time.Second))
			return false, c.fatal(pgerr.CodeQueryCanceled, fmt.Sprintf("canceling authentication due to timeout (client_login_timeout %s)", timeout))
		}
		return false, err
	}
	if err == nil && ok && timeout > 0 {
		c.conn.SetDeadline(time.Time{})
	}
	return ok, err
}

// startup answers SSL/GSS negotiation and the StartupMessage. It returns
// false when the connection should just close (cancel request, refusal).
func (c *client) startup() (bool, error) {
	for {
		body, err := readStartup(c.rd)
		if err != nil {
			return false, err
		}
		code := binary.BigEndian.Uint32(body)
		switch {
		case code == sslRequestCode:
			if err := c.negotiateTLS(); err != nil {
				return false, err
			}
			continue
		case code == gssEncRequestCode:
			if _, err := c.conn.Write([]byte{'N'}); err != nil {
				return false, err
			}
			continue
		case code == cancelRequestCode:
			c.srv.cancel(body)
			return false, nil
		case code>>16 != 3:
			return false, c.fatal(pgerr.CodeFeatureNotSupported, fmt.Sprintf("unsupported frontend protocol %d.%d: server supports 3.0", code>>16, code&0xffff))
		}
		var msg pgproto3.StartupMessage
		if err := msg.Decode(body); err != nil {
			return false, c.fatal(pgerr.CodeProtocolViolation, "invalid startup packet: "+err.Error())
		}
		return c.accept(&msg, code)
	}
}

func (c *client) accept(msg *pgproto3.StartupMessage, code uint32) (bool, error) {
	user := msg.Parameters["user"]
	db := msg.Parameters["database"]
	if db == "" {
		db = user
	}
	if db != c.rt.cfg.Database && db != adminDatabase {
		return false, c.fatal(pgerr.CodeInvalidCatalogName, fmt.Sprintf("database %q does not exist", db))
	}
	if err := c.authenticate(user); err != nil {
		return false, err
	}
	if db != adminDatabase && c.srv.admin.disabled.Load() {
		// PgBouncer's words and SQLSTATE for DISABLE.
		return false, c.fatal(pgerr.CodeProtocolViolation, fmt.Sprintf("database %q is disabled", db))
	}
	c.srv.admin.logins.Add(1)
	// Counted once authenticated: a login stalled before that holds no
	// slot a real client needs (see loginQueue).
	c.entry.loggedIn = true
	if n, max := c.srv.loggedIn.Add(1), c.rt.cfg.Pool.MaxClientConn; n > int64(max) {
		return false, c.fatal(pgerr.CodeTooManyConnections, fmt.Sprintf("no more connections allowed (max_client_conn %d)", max))
	}
	c.shown.info.Store(&clientInfo{user: user, database: db, application: msg.Parameters["application_name"], connected: time.Now()})
	if db == adminDatabase {
		if !c.rt.admin[user] {
			return false, c.fatal(pgerr.CodeInvalidAuthorization, fmt.Sprintf("user %q is not an admin user (admin_users)", user))
		}
		return c.acceptAdmin()
	}
	if err := c.enterUser(user); err != nil {
		return false, err
	}
	params, err := c.srv.serverParams(c.ctx)
	if err != nil {
		c.log().Warn("startup: cannot fetch server parameters", "err", err)
		return false, c.fatal(pgerr.CodeConnectionFailure, "shardgate could not reach shard "+c.srv.topo().Shards[0].Name+": "+clientText(err))
	}
	c.sess.baseline = c.srv.startups.settings(msg.Parameters, params)
	c.sess.settings = c.sess.baseline
	if minor := code & 0xffff; minor > 0 {
		c.out = appendNegotiateProtocol(c.out, msg.Parameters)
	}
	// The answer is about 450 bytes: one allocation rather than the six of
	// growing it, in a connect storm of thousands of clients.
	c.out = slices.Grow(c.out, 512)
	c.out = append(c.out, 'R', 0, 0, 0, 8, 0, 0, 0, 0) // AuthenticationOk: trust
	for _, p := range params {
		value := p.value
		if v, ok := msg.Parameters[p.name]; ok {
			value = v // the client's own startup value, as Postgres would report it
		}
		c.out = appendParameterStatus(c.out, p.name, value)
	}
	c.shown.key = c.srv.newBackendKey(c)
	c.out = append(c.out, 'K', 0, 0, 0, 12)
	c.out = binary.BigEndian.AppendUint32(c.out, c.shown.key.pid)
	c.out = binary.BigEndian.AppendUint32(c.out, c.shown.key.secret)
	c.out = appendReadyForQuery(c.out, 'I')
	return true, c.flush()
}

// appendNegotiateProtocol answers a client asking for protocol 3.x, x > 0,
// that the proxy speaks 3.0 and none of its _pq_ options.
func appendNegotiateProtocol(dst []byte, params map[string]string) []byte {
	var body []byte
	body = binary.BigEndian.AppendUint32(body, 0)
	var opts []string
	for k := range params {
		if len(k) > 5 && k[:5] == "_pq_." {
			opts = append(opts, k)
		}
	}
	body = binary.BigEndian.AppendUint32(body, uint32(len(opts)))
	for _, o := range opts {
		body = append(append(body, o...), 0)
	}
	return appendMessage(dst, 'v', body)
}

func (c *client) fatal(code, message string) error {
	c.srv.metrics.ProxyError(code)
	msg := pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: message}
	out, err := msg.Encode(nil)
	if err == nil {
		_, err = c.conn.Write(out)
	}
	if err != nil {
		return err
	}
	return errors.New(message)
}

func (c *client) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.conn.Write(c.out)
	c.out = c.out[:0]
	return err
}

// loop serves the client's requests until it leaves or parks; resumed:
// it was parked and continues its wait for a request.
func (c *client) loop(resumed bool) error {
	for {
		typ, body, err := c.nextMessage(resumed)
		resumed = false
		if err != nil {
			return err
		}
		if err := c.srv.admin.enter(c.ctx); err != nil {
			return err
		}
		c.inGate = true
		switch typ {
		case 'Q':
			err = c.simpleQuery(body)
		case 'P', 'B', 'D', 'E', 'C':
			if max := c.rt.cfg.Pool.MaxPacketSize; len(c.ext.batch.buf)+len(body) > max {
				// The batch is held until Sync to be routed whole, so its
				// size is what one message's would be.
				return c.fatal(pgerr.CodeProgramLimitExceeded, fmt.Sprintf("extended-protocol messages before Sync exceed max_packet_size (%d bytes)", max))
			}
			c.ext.batch.add(typ, body)
		case 'H', 'S':
			c.ext.batch.add(typ, body)
			err = c.runBatch()
		case 'X':
			return nil
		case 'd', 'c', 'f':
			// CopyData/Done/Fail outside COPY: Postgres ignores them too.
		default:
			c.out = appendError(c.out, &pgerr.Error{Code: pgerr.CodeProtocolViolation, Message: fmt.Sprintf("invalid frontend message type %q", typ)})
			c.flush()
			return fmt.Errorf("invalid frontend message type %q", typ)
		}
		c.leaveFences(false)
		if err != nil {
			return err
		}
	}
}

// nextMessage waits for the client's next message and reads it. While
// idle the client may be woken: by a drain, to leave, or by the sweep, to
// park (park.go), when it returns errParked. resumed skips what the wait
// before parking did already: its deadline runs on.
func (c *client) nextMessage(resumed bool) (byte, []byte, error) {
	for {
		c.leaveGate()
		idle := c.tx.state == txIdle && c.tx.held == nil
		if idle && c.srv.draining.Load() {
			return 0, nil, c.fatal(pgerr.CodeAdminShutdown, "terminating connection: shardgate is shutting down")
		}
		if !resumed {
			if idle {
				c.shrinkBuffers()
			}
			c.setReadDeadline()
		}
		typ, body, woken, err := c.readRequest(idle)
		if err == nil {
			c.shown.lastRequest.Store(time.Now().UnixNano())
			return typ, body, nil
		}
		if resumed, err = c.woke(woken, err); err != nil {
			return 0, nil, err
		}
	}
}

// readRequest waits for the client's next message, relaying a listening
// client's notifications meanwhile, and reads it; woken: see awaitRequest.
func (c *client) readRequest(idle bool) (typ byte, body []byte, woken bool, err error) {
	stopRelay := func() {}
	if idle {
		stopRelay = c.relayNotifications()
	}
	defer stopRelay()
	if woken, err = c.awaitRequest(idle); err == nil {
		typ, body, err = c.readMessage()
	}
	return typ, body, woken, err
}

// woke handles a failed wait for a request: an error ends the client;
// else it waits again, within the same deadline if resumed. A deadline
// passed because a drain or the sweep woke the client, or because
// client_idle_timeout or idle_transaction_timeout passed.
func (c *client) woke(woken bool, err error) (resumed bool, _ error) {
	switch {
	case !errors.Is(err, os.ErrDeadlineExceeded):
		return false, err
	case c.srv.draining.Load():
		// Woken by a drain: leave if idle, else finish the transaction.
		c.clearReadDeadline()
		return false, nil
	case woken && !c.idleExpired():
		if c.park() {
			return false, errParked
		}
		return true, nil // parking failed: wait on
	}
	return false, c.idleTimeout()
}

// leaveGate ends the request the SUSPEND gate counted.
func (c *client) leaveGate() {
	if c.inGate {
		c.inGate = false
		c.srv.admin.leave()
	}
}

// readMessage reads the client's next message into c.in, within
// max_packet_size. A message over it ends the connection with 08P01, as an
// invalid length does in Postgres: the stream cannot be resynchronised
// without reading what the client claims to send.
func (c *client) readMessage() (byte, []byte, error) {
	return c.readLimited(c.rt.cfg.Pool.MaxPacketSize, "max_packet_size")
}

// readLimited reads the client's next message into c.in, refusing one
// over limit with a FATAL 08P01.
func (c *client) readLimited(limit int, limitName string) (byte, []byte, error) {
	c.in = shrink(c.in)
	typ, body, err := readMessage(c.rd, c.in, limit, limitName)
	c.in = body[:0]
	var tooLarge *errMessageTooLarge
	if errors.As(err, &tooLarge) {
		c.log().Warn("client message too large", "type", string(tooLarge.typ), "size", tooLarge.size, "limit", tooLarge.max)
		return 0, nil, c.fatal(pgerr.CodeProtocolViolation, "invalid message length: "+tooLarge.Error())
	}
	return typ, body, err
}

// shrinkBuffers lets go of buffers a large message grew, between round
// trips, so one big query does not cost its size for the connection's life.
func (c *client) shrinkBuffers() {
	// Between round trips what was sent to servers and read from them is
	// dead; the client's output and a deferred BEGIN may not be.
	c.sout, c.scratch, c.sess.syncBuf = shrink(c.sout[:0]), shrink(c.scratch[:0]), shrink(c.sess.syncBuf[:0])
	c.out, c.tx.pending = shrink(c.out), shrink(c.tx.pending)
	if len(c.ext.batch.msgs) == 0 {
		c.ext.batch.buf = shrink(c.ext.batch.buf)
	}
}

// setReadDeadline arms idle_transaction_timeout or client_idle_timeout for
// the wait for the client's next message.
func (c *client) setReadDeadline() {
	d := time.Duration(c.rt.cfg.Pool.ClientIdleTimeout)
	if c.tx.state != txIdle {
		d = time.Duration(c.rt.cfg.Pool.IdleTransactionTimeout)
	}
	switch {
	case d > 0:
		c.deadline = time.Now().Add(d)
		c.conn.SetReadDeadline(c.deadline)
	case !c.deadline.IsZero():
		c.clearReadDeadline()
	}
}

// clearReadDeadline disarms the read deadline.
func (c *client) clearReadDeadline() {
	c.deadline = time.Time{}
	c.conn.SetReadDeadline(c.deadline)
}

// idleExpired reports whether the read deadline has passed.
func (c *client) idleExpired() bool {
	return !c.deadline.IsZero() && !time.Now().Before(c.deadline)
}

// idleTimeout disconnects a client that sat idle too long, with the
// SQLSTATE Postgres's own idle timeouts use.
func (c *client) idleTimeout() error {
	if c.tx.state != txIdle {
		c.log().Info("closing client idle in transaction", "timeout", time.Duration(c.rt.cfg.Pool.IdleTransactionTimeout))
		return c.fatal(pgerr.CodeIdleInTransactionTimeout, "terminating connection due to idle-in-transaction timeout (idle_transaction_timeout)")
	}
	c.log().Info("closing idle client", "timeout", time.Duration(c.rt.cfg.Pool.ClientIdleTimeout))
	return c.fatal(pgerr.CodeIdleSessionTimeout, "terminating connection due to idle-session timeout (client_idle_timeout)")
}

// log is the server's logger with this client's id on every line. It is
// built when needed: idle clients should cost as little memory as possible.
func (c *client) log() *slog.Logger { return c.srv.log.With("conn", c.id) }

// status is the ReadyForQuery status the client should see now.
func (c *client) status() byte {
	switch c.tx.state {
	case txPending:
		return 'T'
	case txActive:
		return c.tx.srvStatus
	case txFailed:
		return 'E'
	}
	return 'I'
}
