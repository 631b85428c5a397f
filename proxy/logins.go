package proxy

import (
	"container/list"
	"net"
	"sync"
	"time"
)

// loginQueue holds the connections still logging in, oldest first.
//
// They do not count against max_client_conn, which bounds logged-in
// clients: half-open logins (slowloris) must not lock real clients out.
// Their own number is bounded too, by evicting the oldest: a login takes
// milliseconds, so the oldest of a full queue is the one most likely
// stalled on purpose. client_login_timeout ends the rest.
type loginQueue struct {
	mu    sync.Mutex
	conns list.List // of queuedLogin
}

// queuedLogin is the raw accepted socket and when it was accepted.
type queuedLogin struct {
	conn  net.Conn
	since time.Time
}

// queuedSince is when e's connection joined the queue. e's value is set
// once, before its client's goroutine starts, so it is read without the lock.
func queuedSince(e *list.Element) time.Time { return e.Value.(queuedLogin).since }

// add queues conn and, when more than max are queued, returns the oldest
// for the caller to close (outside the lock).
func (q *loginQueue) add(conn net.Conn, max int) (*list.Element, net.Conn) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.conns.PushBack(queuedLogin{conn, time.Now()})
	if q.conns.Len() <= max {
		return e, nil
	}
	oldest := q.conns.Front()
	q.conns.Remove(oldest)
	return e, oldest.Value.(queuedLogin).conn
}

// done takes a connection out of the queue once its login ended, either
// way. Removing an element already evicted is a no-op.
func (q *loginQueue) done(e *list.Element) {
	q.mu.Lock()
	q.conns.Remove(e)
	q.mu.Unlock()
}

func (q *loginQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.conns.Len()
}

// closeAll closes every connection still logging in, for a drain; their
// clients end and leave the queue themselves.
func (q *loginQueue) closeAll() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for e := q.conns.Front(); e != nil; e = e.Next() {
		e.Value.(queuedLogin).conn.Close()
	}
}
