package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Parking: an idle client costs a goroutine blocked in read (a stack of
// 4-8 KB) and a read buffer, which 10,000 idle clients multiply into
// well over 100 MB. A client idle long enough, or one logging in while
// many others are connected, is parked instead: its goroutine ends, its
// buffers go, and its socket waits on one epoll instance the server
// shares between all parked clients (park_linux.go). When the socket is
// readable (or closes), a new goroutine takes the client up where it
// stopped. Parking is off where there is no epoll (park_other.go).
//
// Only a client with nothing in flight is parked: idle, no bytes
// buffered, no extended-protocol batch, not TLS (whose state lives in
// the tls.Conn, not the socket), not LISTENing (its notifications are
// relayed by a goroutine), not the admin console.

const (
	// parkAfter is how long a client waits idle on its goroutine before
	// it is parked: a busy client between two requests must not pay for
	// parking and waking.
	parkAfter = time.Second
	// parkSweep is how often one goroutine per server looks for clients
	// to park and parked clients whose client_idle_timeout has passed.
	parkSweep = parkAfter / 2
	// parkAtLogin: with more clients logged in than this, a client parks
	// as soon as it has logged in, so a connect storm of idle clients
	// never costs a goroutine each.
	parkAtLogin = 256
)

// What a client waits for, as other goroutines may see it (client.wait).
// Only a client waiting idle for the first byte of a request is woken:
// that read consumes nothing, so waking it loses no bytes.
const (
	waitBusy     int32 = iota // reading mid-request, or not reading
	waitIdle                  // idle, waiting for a request: a drain may wake it
	waitParkable              // the same, and it could park: the sweep may wake it to
	waitWoken                 // its read deadline was set to the past to wake it
)

// errParked ends a client's loop when the client has been parked: its
// goroutine returns without closing it.
var errParked = errors.New("client parked")

// parker holds the parked clients of one server. Its zero value parks
// nothing; startParking turns it on.
type parker struct {
	on     atomic.Bool // parking works: started and not stopped
	warned atomic.Bool // a failure to park has been logged

	mu     sync.Mutex
	ep     *epoller           // nil before start and after stop
	parked map[uint64]*client // by client id, which the poller's events carry
}

// startParking opens the poller and starts the goroutines that wake
// parked clients and park idle ones. It returns a function that waits for
// them to end: the sweep ends with ctx, the waker when unparkAll closes
// the poller.
func (s *Server) startParking(ctx context.Context) (wait func()) {
	ep, err := newEpoller()
	if err != nil {
		if !errors.Is(err, errors.ErrUnsupported) {
			s.log.Warn("idle clients will not be parked", "err", err)
		}
		return func() {}
	}
	p := &s.park
	p.mu.Lock()
	p.ep, p.parked = ep, make(map[uint64]*client)
	p.mu.Unlock()
	p.on.Store(true)
	var wg sync.WaitGroup
	wg.Go(func() { s.wakeParked(ep) })
	wg.Go(func() { s.sweepIdle(ctx) })
	return wg.Wait
}

// wakeParked resumes the clients whose sockets the poller reports, until
// the poller is closed. Should the poller fail, parking stops and every
// parked client is resumed: none may be left waiting on a dead poller.
func (s *Server) wakeParked(ep *epoller) {
	err := ep.wait(func(id uint64) {
		if c := s.park.take(id); c != nil {
			go c.resume()
		}
	})
	if s.park.on.Load() {
		s.log.Error("parked clients' poller failed: parking stops", "err", err)
		s.unparkAll()
	}
}

// take removes the client id from the parked and returns it, if it is
// there. Its registration with the poller stays, disarmed (one-shot),
// until the client parks again or its socket closes.
func (p *parker) take(id uint64) *client {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.parked[id]
	delete(p.parked, id)
	return c
}

// add parks c. After it returns nil, c belongs to whichever goroutine
// wakes it: its caller must not touch c again.
func (p *parker) add(c *client) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ep == nil {
		return errors.New("parking has stopped")
	}
	// Armed under the lock, so the waker finds c in the map however soon
	// the socket is readable.
	if err := withSocket(c.raw, func(fd int) error { return p.ep.arm(fd, c.id) }); err != nil {
		return err
	}
	p.parked[c.id] = c
	return nil
}

// remove takes c out of the parked and out of the poller; the caller
// holds p.mu. It reports whether c was parked.
func (p *parker) remove(c *client) bool {
	if p.parked[c.id] != c {
		return false
	}
	delete(p.parked, c.id)
	// A socket closed meanwhile left the poller with its last descriptor.
	withSocket(c.raw, func(fd int) error { p.ep.disarm(fd); return nil })
	return true
}

// closeClient closes c's socket, for KILL, and resumes c if it was
// parked so that its goroutine ends it. Under the parker's lock c cannot
// park meanwhile and be left parked on a closed socket, which the poller
// would never report.
func (s *Server) closeClient(c *client) {
	p := &s.park
	p.mu.Lock()
	parked := p.remove(c)
	c.raw.Close()
	p.mu.Unlock()
	if parked {
		go c.resume()
	}
}

// unparkAll stops parking and resumes every parked client: before the
// server closes its clients, and when the poller fails.
func (s *Server) unparkAll() {
	p := &s.park
	p.on.Store(false)
	p.mu.Lock()
	ep, parked := p.ep, p.parked
	p.ep, p.parked = nil, nil
	p.mu.Unlock()
	if ep == nil {
		return
	}
	ep.close() // the waker returns
	for _, c := range parked {
		go c.resume()
	}
}

// parkedCount is the number of clients parked now.
func (p *parker) parkedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

// sweepIdle, every parkSweep until ctx ends, wakes the clients idle on
// their goroutine for parkAfter so that they park, and resumes the
// parked clients whose client_idle_timeout has passed: no goroutine
// watches their deadline meanwhile.
func (s *Server) sweepIdle(ctx context.Context) {
	t := time.NewTicker(parkSweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.wakeToPark(now)
			s.expireParked(now)
		}
	}
}

// wakeToPark wakes the clients that could park and have waited idle
// since before now - parkAfter.
func (s *Server) wakeToPark(now time.Time) {
	before := now.Add(-parkAfter).UnixNano()
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	s.wakeMu.Lock()
	defer s.wakeMu.Unlock()
	for c := range s.clients {
		if c.wait.Load() == waitParkable && c.idleSince.Load() <= before {
			c.wake(waitParkable)
		}
	}
}

// expireParked resumes the parked clients past their read deadline: on
// their goroutine, the read fails at once and they leave with the
// message of client_idle_timeout.
func (s *Server) expireParked(now time.Time) {
	s.resumeParked(func(c *client) bool { return !c.deadline.IsZero() && !now.Before(c.deadline) })
}

// wakeIdle wakes every client waiting idle, and resumes every parked
// one, for a drain: either way the client sees the drain and leaves. It
// returns the number of clients.
func (s *Server) wakeIdle() int {
	s.clientsMu.Lock()
	n := len(s.clients)
	s.wakeMu.Lock()
	for c := range s.clients {
		if !c.wake(waitIdle) {
			c.wake(waitParkable)
		}
	}
	s.wakeMu.Unlock()
	s.clientsMu.Unlock()
	s.resumeParked(func(*client) bool { return true })
	return n
}

// resumeParked takes the parked clients match picks (it runs under the
// parker's lock) out of the poller and resumes each on a new goroutine.
func (s *Server) resumeParked(match func(*client) bool) {
	var picked []*client
	p := &s.park
	p.mu.Lock()
	for _, c := range p.parked {
		if match(c) && p.remove(c) {
			picked = append(picked, c)
		}
	}
	p.mu.Unlock()
	for _, c := range picked {
		go c.resume()
	}
}

// wake wakes c if it waits as from says, by setting its read deadline to
// the past; the caller holds s.wakeMu, which c takes before it restores
// its deadline, so the two cannot cross. It reports whether it woke c.
func (c *client) wake(from int32) bool {
	if !c.wait.CompareAndSwap(from, waitWoken) {
		return false
	}
	c.conn.SetReadDeadline(time.Unix(1, 0))
	return true
}

// awaitRequest waits, while the client is idle, for the first byte of
// its next request, which it leaves buffered. It reports whether another
// goroutine woke it (wake); if so the read deadline is restored, and err
// is os.ErrDeadlineExceeded unless bytes arrived meanwhile.
func (c *client) awaitRequest(idle bool) (woken bool, err error) {
	if !idle || c.rd.Buffered() > 0 {
		return false, nil
	}
	state := waitIdle
	if c.parkable() {
		state = waitParkable
		c.idleSince.Store(time.Now().UnixNano())
	}
	c.wait.Store(state)
	_, err = c.rd.Peek(1)
	if c.wait.Swap(waitBusy) != waitWoken {
		return false, err
	}
	// The waker holds wakeMu until it has set the deadline: restoring it
	// under the lock orders the restore after it.
	c.srv.wakeMu.Lock()
	c.conn.SetReadDeadline(c.deadline)
	c.srv.wakeMu.Unlock()
	return true, err
}

// parkAtLogin parks a client that has just logged in while more than
// parkAtLogin others are: it reports whether it did.
func (c *client) parkAtLogin() bool {
	if c.srv.loggedIn.Load() <= parkAtLogin {
		return false
	}
	c.setReadDeadline() // the idle clock starts now
	return c.park()
}

// parkable reports whether the client may be parked now (see the top of
// this file).
func (c *client) parkable() bool {
	return c.srv.park.on.Load() && !c.srv.draining.Load() &&
		!c.tls && !c.admin && !c.listening &&
		c.tx.state == txIdle && c.tx.held == nil &&
		len(c.ext.batch.msgs) == 0 && c.rd.Buffered() == 0
}

// park parks the client if it can; true means its goroutine must return
// errParked at once, without touching the client again.
func (c *client) park() bool {
	if _, ok := c.raw.(syscall.Conn); !ok || !c.parkable() {
		return false
	}
	rd := c.rd
	c.releaseBuffers()
	if err := c.srv.park.add(c); err != nil {
		// Logged once: a poller that refuses one socket may refuse all.
		if !c.srv.park.warned.Swap(true) {
			c.log().Warn("cannot park an idle client: it keeps its goroutine", "err", err)
		}
		c.rd = rd
		return false
	}
	c.srv.readers.put(rd) // c is not ours now, rd still is
	return true
}

// releaseBuffers lets go of everything an idle client can allocate again
// when it wakes: the read buffer above all.
func (c *client) releaseBuffers() {
	c.rd = nil
	c.in, c.out, c.sout, c.scratch = nil, nil, nil, nil
	c.sess.syncBuf = nil
	c.ext.batch = batch{}
}

// resume serves a parked client again, on the goroutine that woke it,
// from its wait for a request.
func (c *client) resume() {
	c.rd = c.srv.readers.get(c.conn)
	c.run(func() error { return c.logEnd(c.loop(true)) })
}

// readerPool recycles the read buffers of clients that park: in a
// connect storm, clients parking as soon as they have logged in pass a
// few buffers on instead of leaving one each to the collector, which
// would let the heap (and RSS) grow to twice what they keep.
type readerPool struct{ pool sync.Pool }

func (p *readerPool) get(conn net.Conn) *bufio.Reader {
	if rd, ok := p.pool.Get().(*bufio.Reader); ok {
		rd.Reset(conn)
		return rd
	}
	return bufio.NewReaderSize(conn, clientReadBuffer)
}

// put takes back rd, empty, which nothing else may use any more.
func (p *readerPool) put(rd *bufio.Reader) {
	rd.Reset(nil) // holds no socket while pooled
	p.pool.Put(rd)
}

// withSocket calls f with the descriptor of conn's socket, which cannot
// be closed (and its number reused) until f returns.
func withSocket(conn net.Conn, f func(fd int) error) error {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
