package proxy

import (
	"fmt"

	"github.com/shardgate/shardgate/pgerr"
)

// Pinning, as AWS RDS Proxy does it: a statement that leaves state on its
// server past the transaction (router.Plan.SessionState: LISTEN, a
// temporary table, a cursor WITH HOLD) would, under transaction pooling,
// hand that state to whichever client gets the connection next, and lose
// it for its own client. So the client keeps the connection from then on,
// as in session mode; DISCARD ALL resets it when the client leaves. The
// cost is one server connection held for the client's lifetime, which
// shardgate_pinned_clients shows.

// checkPin refuses a unit whose plan leaves session state where the pool
// mode cannot keep it, and marks the unit to pin its connection otherwise.
func (c *client) checkPin(state string, u *unit) *pgerr.Error {
	u.state = state
	if state == "" || c.mode == modeSession {
		return nil
	}
	if c.mode == modeStatement || !c.rt.cfg.Pool.PinSessionState {
		return &pgerr.Error{
			Code:    pgerr.CodeFeatureNotSupported,
			Message: fmt.Sprintf("shardgate: %s would outlive the transaction on a server connection that %s pooling gives to other clients", state, c.mode),
			Hint:    "Connect to a shardgate user or database in session pool mode, or set pool.pin_session_state: true.",
		}
	}
	return nil
}

// keepState pins the held connection to the client, in transaction mode,
// for the session state the unit about to run on it leaves there, and
// remembers where the client listens for notifications.
func (c *client) keepState(state string) {
	if c.tx.held == nil || c.tx.heldNode != nil {
		return
	}
	if c.mode == modeTransaction {
		c.pin(state)
	}
	if state == "LISTEN" && c.mode == modeSession {
		c.listening, c.listenShard = true, c.tx.heldShard
	}
}

// pin makes the held connection the client's for the rest of its session.
func (c *client) pin(state string) {
	c.mode = modeSession
	if c.tx.sessionConns == nil {
		c.tx.sessionConns = make(map[int]sessionConn)
	}
	c.tx.sessionConns[c.tx.heldShard] = sessionConn{c.tx.held, c.tx.heldPool, c.srv.fences.gen(c.tx.heldShard)}
	c.pinned = true
	c.srv.pinned.Add(1)
	c.log().Info("client pinned to its server connection: the statement keeps session state", "state", state)
}
