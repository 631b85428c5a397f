package proxy

import (
	"context"
	"fmt"
	"time"

	"github.com/shardgate/shardgate/pgerr"
)

// Process-controlling commands, as PgBouncer's console has them. shardgate
// serves one database, so "db" can only name it; a command without one
// acts on it too.

// suspendTimeout is PgBouncer's suspend_timeout default: how long SUSPEND
// waits for requests under way to be answered.
const suspendTimeout = 10 * time.Second

// pauseTimeout bounds PAUSE's wait for lent connections.
const pauseTimeout = 60 * time.Second

func (c *client) adminAction(word, arg string) error {
	var err error
	switch word {
	case "RELOAD":
		err = c.noArg(word, arg)
		if err == nil {
			if err = c.srv.Reload(); err != nil {
				err = fmt.Errorf("reload failed, old configuration kept: %w", err)
			}
		}
	case "PAUSE":
		err = c.adminPause(arg)
	case "RESUME":
		err = c.adminResume(arg)
	case "RECONNECT":
		if err = c.checkDatabase(arg, true); err == nil {
			for _, n := range c.srv.rt.Load().backends.Nodes() {
				n.Pool().Reconnect()
			}
		}
	case "KILL":
		err = c.adminKill(arg)
	case "SUSPEND":
		err = c.adminSuspend(arg)
	case "DISABLE", "ENABLE":
		if err = c.checkDatabase(arg, false); err == nil {
			c.srv.admin.disabled.Store(word == "DISABLE")
		}
	case "WAIT_CLOSE":
		err = c.adminWaitClose(arg)
	default:
		return fmt.Errorf("unknown command %q: try SHOW HELP", word)
	}
	if err != nil {
		return err
	}
	c.out = appendCommandComplete(c.out, word)
	return nil
}

// stateError is PgBouncer's refusal of a command the proxy's state does
// not allow, with its SQLSTATE (08P01, which PgBouncer gives every
// console error).
func stateError(format string, args ...any) error {
	return &pgerr.Error{Code: pgerr.CodeProtocolViolation, Message: fmt.Sprintf(format, args...)}
}

func (c *client) noArg(word, arg string) error {
	if arg != "" {
		return fmt.Errorf("%s takes no argument", word)
	}
	return nil
}

// checkDatabase accepts the database shardgate serves, or none when
// optional.
func (c *client) checkDatabase(arg string, optional bool) error {
	switch arg {
	case c.srv.rt.Load().cfg.Database:
		return nil
	case "":
		if optional {
			return nil
		}
		return stateError("a database is required")
	case adminDatabase:
		return stateError("cannot use the admin database %s here", arg)
	}
	return &pgerr.Error{Code: pgerr.CodeInvalidCatalogName, Message: "no such database: " + arg}
}

func (c *client) paused() bool {
	for _, n := range c.srv.rt.Load().backends.Nodes() {
		if n.Pool().Stats().Paused {
			return true
		}
	}
	return false
}

func (c *client) adminPause(arg string) error {
	if err := c.checkDatabase(arg, true); err != nil {
		return err
	}
	if c.paused() || c.srv.admin.isSuspended() {
		return stateError("already suspended/paused")
	}
	ctx, cancel := context.WithTimeout(c.ctx, pauseTimeout)
	defer cancel()
	for _, n := range c.srv.rt.Load().backends.Nodes() {
		if err := n.Pool().Pause(ctx); err != nil {
			return err
		}
	}
	return nil
}

// adminResume undoes PAUSE, KILL and SUSPEND.
func (c *client) adminResume(arg string) error {
	if err := c.checkDatabase(arg, true); err != nil {
		return err
	}
	paused := c.paused()
	resumed := c.srv.admin.resume()
	if !paused && !resumed {
		return stateError("pooler is not paused/suspended")
	}
	for _, n := range c.srv.rt.Load().backends.Nodes() {
		n.Pool().Resume()
	}
	return nil
}

// adminKill drops every client of the database and every server
// connection now; the pools stay paused until RESUME, as PgBouncer's do.
func (c *client) adminKill(arg string) error {
	if err := c.checkDatabase(arg, true); err != nil {
		return err
	}
	if c.paused() || c.srv.admin.isSuspended() {
		return stateError("already suspended/paused")
	}
	for _, n := range c.srv.rt.Load().backends.Nodes() {
		n.Pool().Kill()
	}
	s := c.srv
	s.clientsMu.Lock()
	var clients []*client
	for cl := range s.clients {
		if info := cl.shown.info.Load(); info != nil && info.database != adminDatabase {
			clients = append(clients, cl)
		}
	}
	s.clientsMu.Unlock()
	for _, cl := range clients {
		s.closeClient(cl) // its goroutine ends it, closing what it held
	}
	return nil
}

// adminSuspend stops reading clients' requests once every request under
// way has been answered (PgBouncer flushes its socket buffers); RESUME
// lets them go on. Clients that connect meanwhile wait at their first
// request.
func (c *client) adminSuspend(arg string) error {
	if err := c.noArg("SUSPEND", arg); err != nil {
		return err
	}
	if c.srv.admin.isSuspended() {
		return stateError("already suspended/paused")
	}
	if c.paused() {
		return stateError("cannot suspend with paused databases")
	}
	ctx, cancel := context.WithTimeout(c.ctx, suspendTimeout)
	defer cancel()
	if err := c.srv.admin.suspend(ctx); err != nil {
		// Suspended all the same: RESUME undoes it.
		return stateError("suspend: requests still under way after %s: %v", suspendTimeout, err)
	}
	return nil
}

// adminWaitClose waits until the server connections a RECONNECT or
// RELOAD marked to close (close_needed in SHOW SERVERS) have closed.
func (c *client) adminWaitClose(arg string) error {
	if err := c.checkDatabase(arg, true); err != nil {
		return err
	}
	for c.srv.admin.closing(c.srv.rt.Load().backends) > 0 {
		select {
		case <-c.ctx.Done():
			return c.ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
