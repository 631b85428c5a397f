package proxy

import (
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/shardgate/shardgate/pgerr"
	"github.com/shardgate/shardgate/pool"
	"github.com/shardgate/shardgate/router"
)

// Session settings in transaction pooling. A client's SETs are kept by the
// proxy (name → canonical SET statement) and replayed on each server
// connection that serves it, before its first statement, only when the
// connection's settings differ. Startup parameters (application_name,
// DateStyle, ...) are settings too; they are what RESET returns to.

// notSettings are startup parameters that are not session settings.
var notSettings = map[string]bool{"user": true, "database": true, "options": true, "replication": true}

// startupSettings turns a client's startup parameters into settings,
// leaving out those equal to what the server reports anyway.
func startupSettings(params map[string]string, server []param) map[string]string {
	defaults := make(map[string]string, len(server))
	for _, p := range server {
		defaults[strings.ToLower(p.name)] = p.value
	}
	out := make(map[string]string)
	for name, value := range params {
		name = strings.ToLower(name)
		if notSettings[name] || strings.HasPrefix(name, "_pq_.") || defaults[name] == value {
			continue
		}
		out[name] = "SET " + name + " TO " + quoteLiteral(value)
	}
	return out
}

// maxSharedStartups bounds the startup settings kept for sharing: clients
// come with few distinct sets of startup parameters (a driver's, an
// application name), so this many is plenty; beyond it clients get their
// own copy.
const maxSharedStartups = 256

// startupCache shares one settings map between the clients that started
// with the same parameters: 10,000 idle clients need not hold 10,000
// copies. The maps are read-only; a client copies its own before its first
// change (client.changeSetting). Server parameters are fetched once, so a
// key names the same settings for the life of the server.
type startupCache struct {
	mu   sync.Mutex
	maps map[string]map[string]string
}

// settings returns the startup settings of a client with params, shared.
func (sc *startupCache) settings(params map[string]string, server []param) map[string]string {
	key := startupKey(params)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if m, ok := sc.maps[string(key)]; ok {
		return m
	}
	m := startupSettings(params, server)
	if len(sc.maps) < maxSharedStartups {
		if sc.maps == nil {
			sc.maps = make(map[string]map[string]string)
		}
		sc.maps[string(key)] = m
	}
	return m
}

// startupKey encodes the parameters startupSettings reads (user and
// database are not settings), in name order: equal keys, equal settings.
func startupKey(params map[string]string) []byte {
	names := make([]string, 0, len(params))
	for name := range params {
		if !notSettings[strings.ToLower(name)] {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var key []byte
	for _, name := range names {
		key = append(append(append(append(key, name...), 0), params[name]...), 0)
	}
	return key
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// applySetting records s in settings; reset names return to base (the
// client's startup settings, or nothing for a server connection).
func applySetting(settings map[string]string, s *router.Setting, base map[string]string) {
	switch {
	case s.ResetAll:
		clear(settings)
		maps.Copy(settings, base)
	case s.SQL == "":
		if sql, ok := base[s.Name]; ok {
			settings[s.Name] = sql
		} else {
			delete(settings, s.Name)
		}
	default:
		settings[s.Name] = s.SQL
	}
}

// syncSettings appends to c.sout what brings sc's settings in line with the
// client's, as one simple query whose answer is dropped.
func (c *client) syncSettings(sc *pool.Conn, ops []op) []op {
	q := appendSettingsSync(c.sess.syncBuf[:0], c.sess.settings, sc)
	c.sess.syncBuf = q
	if len(q) == 0 {
		return ops
	}
	c.sout = appendMessage(c.sout, 'Q', append(q, 0))
	return append(ops, op{typ: 'Q', drop: true})
}

// appendSettingsSync appends the SETs and RESETs that bring sc in line with
// settings, and records sc as in line. It only reads settings, so several
// goroutines may use one client's settings with different connections.
func appendSettingsSync(q []byte, settings map[string]string, sc *pool.Conn) []byte {
	if len(settings) == 0 && len(sc.Settings) == 0 {
		return q
	}
	start := len(q)
	for name, sql := range settings {
		if sc.Settings[name] != sql {
			q = append(append(q, sql...), ';')
		}
	}
	for name := range sc.Settings {
		if _, ok := settings[name]; !ok {
			q = append(append(append(q, "RESET "...), name...), ';')
		}
	}
	if len(q) > start {
		clear(sc.Settings)
		maps.Copy(sc.Settings, settings)
	}
	return q
}

// setting runs a session SET/RESET/DISCARD ALL and records it once it has
// committed. (In a transaction that has no shard yet, answerTx took it.)
func (c *client) setting(plan router.Plan, u unit) error {
	s := plan.Set
	switch {
	case s.Discard && c.tx.state != txIdle:
		return c.refuse(&pgerr.Error{Code: pgerr.CodeActiveTransaction, Message: "DISCARD ALL cannot run inside a transaction block"})
	case s.Discard && u.query == nil && len(u.sets) == 1:
		// Its own batch (a batch with more is refused by the server).
		c.answerBatch(func() { c.out = appendEmpty(c.out, 'n') }, func(*prepared) bool {
			c.discardAll(s)
			return true
		})
		return c.flush()
	case s.Discard:
		c.discardAll(s)
		c.out = appendReadyForQuery(c.out, c.status())
		return c.flush()
	case c.tx.state == txFailed:
		return c.refuse(errAborted)
	}
	if len(u.sets) == 0 {
		u.sets = []*router.Setting{s}
	}
	if c.tx.held != nil {
		return c.runHeld(u)
	}
	if err := c.acquire(c.srv.anyShard()); err != nil {
		return c.refuse(acquireError(err))
	}
	return c.runHeld(u)
}

// changeSetting records a committed SET, RESET or DISCARD ALL in the
// client's settings, copying them first if they are still the startup
// settings it shares (a RESET ALL shares them again).
func (c *client) changeSetting(s *router.Setting) {
	if s.ResetAll {
		c.sess.settings, c.sess.ownSettings = c.sess.baseline, false
		return
	}
	if !c.sess.ownSettings {
		c.sess.settings, c.sess.ownSettings = maps.Clone(c.sess.baseline), true
	}
	applySetting(c.sess.settings, s, c.sess.baseline)
}

func (c *client) discardAll(s *router.Setting) {
	c.changeSetting(s)
	clear(c.sess.stmts)
	c.out = appendCommandComplete(c.out, "DISCARD ALL")
}

// settleSettings applies the settings made in a transaction that just ended
// on sc: kept if it committed, dropped (the server undid them) if not.
func (c *client) settleSettings(sc *pool.Conn, committed bool) {
	if committed {
		for _, s := range c.sess.txSettings {
			c.changeSetting(s)
			applySetting(sc.Settings, s, nil)
		}
	}
	c.sess.txSettings = c.sess.txSettings[:0]
}

// request is what goes to a shard: when synced, a first query whose
// answer the reader skips (the client's session settings where the
// connection's differ, then the start of a transaction), then the
// statement.
type request struct {
	bytes  []byte
	synced bool
}

// withSettings puts before req the SETs that bring sc to the client's
// settings, then start (BEGIN, or nothing), as one query.
func withSettings(c *client, sc *pool.Conn, start, req []byte) request {
	q := append(appendSettingsSync(nil, c.sess.settings, sc), start...)
	if len(q) == 0 {
		return request{bytes: req}
	}
	return request{bytes: append(appendMessage(nil, 'Q', append(q, 0)), req...), synced: true}
}

// skipSettingsAnswer reads the answer to the settings query withSettings
// put first, up to its ReadyForQuery.
func skipSettingsAnswer(sc *pool.Conn, synced bool) error {
	for synced {
		typ, _, err := readMessage(sc.Reader, nil, maxServerMessage, "server messages")
		if err != nil {
			return err
		}
		synced = typ != 'Z'
	}
	return nil
}
