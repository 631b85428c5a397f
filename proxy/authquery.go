package proxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/shardgate/shardgate/auth"
	"github.com/shardgate/shardgate/backend"
	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/topology"
)

// authQueryConns bounds the server connections auth.query lookups hold at
// once: a flood of logins with made-up names must not use up the server's
// max_connections, which its real clients need.
const authQueryConns = 4

// authQuery looks up the secrets of users the config does not list with
// auth.query, on its shard's primary (PgBouncer's auth_query).
//
// Each lookup opens a connection of its own, with the DSN's credentials, and
// closes it: the pools serve clients (a busy pool must not stall logins, nor
// logins a pool), and a connection kept idle here would outlive the config
// that opened it on RELOAD.
//
// Results are not cached: a changed password, DROP ROLE or NOLOGIN takes
// effect at the next login, as with PostgreSQL itself. What a cache would
// absorb, a storm of logins as one user (an application restarting its
// pool), is absorbed instead by sharing one run of the query among the
// logins of a user that arrive while it runs.
type authQuery struct {
	query     string
	shard     int
	shardName string
	// timeout bounds one run, connecting included: server_connect_timeout,
	// the time a working server is given to answer.
	timeout time.Duration
	slots   chan struct{} // authQueryConns tokens

	mu    sync.Mutex
	calls map[string]*lookupCall // by user: runs under way
}

// lookupCall is one run of the query, shared by the logins of its user.
type lookupCall struct {
	done    chan struct{} // closed once res is set
	res     lookupResult
	waiters int // logins waiting for res, under authQuery.mu
	cancel  context.CancelFunc
}

// lookupResult is what auth.query said of a user.
type lookupResult struct {
	secret auth.Secret
	found  bool
	// refused: the query found the user but its secret cannot log in
	// (NULL, empty, malformed): why, for the log only.
	refused string
	err     error // the lookup itself failed: *lookupError or a context error
}

// lookupError is a failed lookup: the server's fault, not the client's.
type lookupError struct {
	client string // what the client is told
	err    error  // what the log says
}

func (e *lookupError) Error() string { return e.client + ": " + e.err.Error() }
func (e *lookupError) Unwrap() error { return e.err }

// newAuthQuery returns nil when cfg has no auth.query.
func newAuthQuery(cfg *topology.Config) *authQuery {
	if cfg.Auth.Query == "" {
		return nil
	}
	shard := 0
	for _, name := range []string{cfg.Auth.QueryShard, cfg.DefaultShard} {
		if i := shardIndex(cfg, name); name != "" && i >= 0 {
			shard = i
			break
		}
	}
	return &authQuery{
		query:     cfg.Auth.Query,
		shard:     shard,
		shardName: cfg.Shards[shard].Name,
		timeout:   time.Duration(cfg.Pool.ServerConnectTimeout),
		slots:     make(chan struct{}, authQueryConns),
		calls:     make(map[string]*lookupCall),
	}
}

func shardIndex(cfg *topology.Config, name string) int {
	for i, s := range cfg.Shards {
		if s.Name == name {
			return i
		}
	}
	return -1
}

// lookup runs the query for user, or joins the run under way for user, and
// waits for its answer until ctx ends. A run whose logins all gave up is
// cancelled.
func (q *authQuery) lookup(ctx context.Context, set *backend.Set, user string) lookupResult {
	q.mu.Lock()
	call := q.calls[user]
	if call == nil {
		runCtx, cancel := context.WithCancel(context.Background())
		call = &lookupCall{done: make(chan struct{}), cancel: cancel}
		q.calls[user] = call
		go q.run(runCtx, set, user, call)
	}
	call.waiters++
	q.mu.Unlock()
	select {
	case <-call.done:
		return call.res
	case <-ctx.Done():
		q.mu.Lock()
		if call.waiters--; call.waiters == 0 {
			call.cancel()
			q.forget(user, call)
		}
		q.mu.Unlock()
		return lookupResult{err: ctx.Err()}
	}
}

// forget ends call's sharing: later logins start a run of their own.
// Called with q.mu held.
func (q *authQuery) forget(user string, call *lookupCall) {
	if q.calls[user] == call {
		delete(q.calls, user)
	}
}

func (q *authQuery) run(ctx context.Context, set *backend.Set, user string, call *lookupCall) {
	defer call.cancel()
	res := q.fetch(ctx, set, user)
	q.mu.Lock()
	q.forget(user, call)
	q.mu.Unlock()
	call.res = res
	close(call.done)
}

// fetch runs the query on a connection of its own once a slot is free.
func (q *authQuery) fetch(ctx context.Context, set *backend.Set, user string) lookupResult {
	node := set.Primary(q.shard)
	if node.Down() {
		// The health checks failed it: connecting would only wait out
		// server_connect_timeout, holding a slot others may be waiting for.
		return q.failed("shard "+q.shardName+"'s primary is down", errors.New("banned after failed health checks"))
	}
	select {
	case q.slots <- struct{}{}:
		defer func() { <-q.slots }()
	case <-ctx.Done():
		return lookupResult{err: ctx.Err()}
	}
	if ctx.Err() != nil { // gave up while waiting for the slot
		return lookupResult{err: ctx.Err()}
	}
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	cfg, err := pgconn.ParseConfig(node.DSN())
	if err != nil {
		return q.failed("bad DSN for shard "+q.shardName+"'s primary", err)
	}
	cfg.ConnectTimeout = q.timeout
	cfg.RuntimeParams["application_name"] = "shardgate auth.query"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return q.failed(q.timedOut(ctx, "could not connect to shard "+q.shardName+"'s primary (see the shardgate log)"), err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()
	ans, err := readLookup(conn.ExecParams(ctx, q.query, [][]byte{[]byte(user)}, nil, nil, nil))
	if err != nil {
		return q.failed(q.timedOut(ctx, "auth.query failed on shard "+q.shardName+" (see the shardgate log)"), err)
	}
	return q.parse(user, ans)
}

// lookupAnswer is what the query returned: its column count, its row count, and
// its first row. Only that row is kept: a query that returns a whole table
// costs no memory.
type lookupAnswer struct {
	columns, rows int
	first         [][]byte // nil elements are NULLs
}

func readLookup(rr *pgconn.ResultReader) (lookupAnswer, error) {
	// ExecParams has read the RowDescription, sent even for no rows.
	ans := lookupAnswer{columns: len(rr.FieldDescriptions())}
	for rr.NextRow() {
		if ans.rows == 0 {
			for _, v := range rr.Values() {
				if v != nil {
					v = append([]byte{}, v...) // valid only until the next row
				}
				ans.first = append(ans.first, v)
			}
		}
		ans.rows++
	}
	_, err := rr.Close()
	return ans, err
}

// timedOut is the client's message for a failure: the timeout when ctx's
// deadline passed (the driver's error then only says i/o timeout), else msg.
func (q *authQuery) timedOut(ctx context.Context, msg string) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "shard " + q.shardName + "'s primary did not answer auth.query within " + q.timeout.String()
	}
	return msg
}

// failed is a failed lookup: msg for the client, err for the log.
func (q *authQuery) failed(msg string, err error) lookupResult {
	return lookupResult{err: &lookupError{client: msg, err: err}}
}

// parse reads the query's answer: no row (or a NULL user name, which a
// lookup function returning a record gives for no such user) is an unknown
// user; one row of (user name, secret) is the user's secret.
func (q *authQuery) parse(user string, ans lookupAnswer) lookupResult {
	if ans.columns != 2 {
		return q.failed(fmt.Sprintf("auth.query on shard %s returned %d columns, want 2 (user name, secret)", q.shardName, ans.columns), errors.New("wrong result shape"))
	}
	switch {
	case ans.rows == 0 || ans.first[0] == nil:
		return lookupResult{}
	case ans.rows > 1:
		return q.failed(fmt.Sprintf("auth.query on shard %s returned %d rows for one user, want at most 1", q.shardName, ans.rows), errors.New("wrong result shape"))
	}
	secret := ans.first[1]
	if len(secret) == 0 {
		return lookupResult{refused: "the user has no password (NULL or empty)"}
	}
	sec, err := auth.ParseSecret(user, string(secret))
	if err != nil {
		return lookupResult{refused: "unusable secret: " + err.Error()} // ParseSecret never quotes it
	}
	return lookupResult{secret: sec, found: true}
}

// queryUser looks user up with auth.query within the client's login time.
// known=false (with a nil error) fails the login with the same 28P01 as a
// wrong password, whether the user does not exist or cannot log in. When
// the lookup fails the client has been told (08006), or, when the login
// time ran out, the error is os.ErrDeadlineExceeded for login to report.
func (c *client) queryUser(user string) (sec auth.Secret, known bool, err error) {
	q := c.rt.authQuery
	ctx := c.ctx
	if deadline, ok := c.loginDeadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	began := time.Now()
	res := q.lookup(ctx, c.rt.backends, user)
	var lerr *lookupError
	switch {
	case errors.As(res.err, &lerr):
		c.log().Warn("auth.query failed", "user", user, "shard", q.shardName, "took", time.Since(began), "err", res.err)
		return auth.Secret{}, false, c.fatal(pgerr.CodeConnectionFailure, fmt.Sprintf("shardgate could not look up user %q: %s", user, lerr.client))
	case errors.Is(res.err, context.DeadlineExceeded):
		c.log().Warn("auth.query did not answer within the client's login time", "user", user, "shard", q.shardName, "took", time.Since(began))
		return auth.Secret{}, false, fmt.Errorf("auth.query: %w", os.ErrDeadlineExceeded)
	case res.err != nil: // shutting down
		return auth.Secret{}, false, res.err
	case res.refused != "":
		c.log().Info("auth.query: user cannot log in", "user", user, "reason", res.refused)
		return auth.Secret{}, false, nil
	case res.found && !res.secret.Serves(c.rt.cfg.Auth.Type):
		// Said to a client, this would tell any role on the server from
		// one that does not exist.
		c.log().Warn("auth.query: the user's secret cannot serve the auth type", "user", user, "type", c.rt.cfg.Auth.Type)
		return auth.Secret{}, false, nil
	}
	return res.secret, res.found, nil
}

// loginDeadline is when the client's login time (client_login_timeout)
// runs out, counted from its accept; ok=false: no limit.
func (c *client) loginDeadline() (deadline time.Time, ok bool) {
	timeout := time.Duration(c.rt.cfg.Pool.ClientLoginTimeout)
	if timeout <= 0 || c.entry.loginSlot == nil {
		return time.Time{}, false
	}
	return queuedSince(c.entry.loginSlot).Add(timeout), true
}
