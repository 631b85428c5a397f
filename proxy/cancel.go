package proxy

import (
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/shardgate/shardgate/pool"
)

// Cancel requests arrive on a new connection carrying the BackendKeyData the
// proxy gave the client; the proxy forwards them, with the server's own key,
// to whatever server connection runs that client's statement now.

type backendKey struct{ pid, secret uint32 }

// cancelRegistry finds clients by the key they were given. Process ids
// are unique among live clients, as a server's are: clients use them to
// tell sessions apart (and pass them to pg_terminate_backend).
type cancelRegistry struct {
	mu      sync.Mutex
	clients map[uint32]registered // by pid
}

type registered struct {
	secret uint32
	c      *client
}

// claim registers k for c unless another live client has its pid.
func (r *cancelRegistry) claim(k backendKey, c *client) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, taken := r.clients[k.pid]; taken {
		return false
	}
	if r.clients == nil {
		r.clients = make(map[uint32]registered)
	}
	r.clients[k.pid] = registered{k.secret, c}
	return true
}

func (r *cancelRegistry) remove(k backendKey) {
	r.mu.Lock()
	if e, ok := r.clients[k.pid]; ok && e.secret == k.secret {
		delete(r.clients, k.pid)
	}
	r.mu.Unlock()
}

// lookup returns the client with key k; nil unless both halves match.
func (r *cancelRegistry) lookup(k backendKey) *client {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.clients[k.pid]; ok && e.secret == k.secret {
		return e.c
	}
	return nil
}

// cancelTarget is the server connections a client is using now: one for
// a statement on one shard, one per shard while a query fans out. It is
// guarded because cancel requests come from other goroutines.
type cancelTarget struct {
	mu      sync.Mutex
	scs     []*pool.Conn
	waiting chan struct{} // closed by a cancel while queued behind a reshard fence
}

// set makes sc (nil: none) the only connection in use.
func (t *cancelTarget) set(sc *pool.Conn) {
	t.mu.Lock()
	t.scs = t.scs[:0]
	if sc != nil {
		t.scs = append(t.scs, sc)
	}
	t.mu.Unlock()
}

// add and remove track the connections of a fan-out, used concurrently.
func (t *cancelTarget) add(sc *pool.Conn) {
	t.mu.Lock()
	t.scs = append(t.scs, sc)
	t.mu.Unlock()
}

func (t *cancelTarget) remove(sc *pool.Conn) {
	t.mu.Lock()
	t.scs = slices.DeleteFunc(t.scs, func(x *pool.Conn) bool { return x == sc })
	t.mu.Unlock()
}

// cancel sends a CancelRequest for every server connection in use.
func (t *cancelTarget) cancel() error {
	type target struct {
		addr   string
		pid    uint32
		secret []byte
	}
	t.mu.Lock()
	t.wakeWaiting()
	targets := make([]target, len(t.scs))
	for i, sc := range t.scs {
		targets[i] = target{sc.ServerAddr, sc.PID, sc.SecretKey}
	}
	t.mu.Unlock()
	errs := make([]error, len(targets))
	parallel(len(targets), func(i int) { errs[i] = sendCancel(targets[i].addr, targets[i].pid, targets[i].secret) })
	return errors.Join(errs...)
}

// sendCancel delivers one CancelRequest to a server.
func sendCancel(addr string, pid uint32, secret []byte) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	msg := make([]byte, 0, 12+len(secret))
	msg = binary.BigEndian.AppendUint32(msg, uint32(12+len(secret)))
	msg = binary.BigEndian.AppendUint32(msg, cancelRequestCode)
	msg = binary.BigEndian.AppendUint32(msg, pid)
	msg = append(msg, secret...)
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	// Postgres closes the connection when done; wait for that so the
	// cancel has been delivered before the proxy answers anything else.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	conn.Read(b[:])
	return nil
}
